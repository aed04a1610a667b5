//! Retries with backoff, attempt counting and the dead-letter store.

use std::time::Duration;

use courier_store_fjall::{DeliveryMode, Outcome, Poll, Settlement, TopicSettings};

use crate::common::*;

async fn one_partition_topic(store: &courier_store_fjall::FjallStore, name: &str) {
    let settings = TopicSettings {
        partitions: 1,
        ..TopicSettings::default()
    };
    store.create_topic(name, settings).await.unwrap();
}

#[tokio::test]
async fn failures_are_retried_with_growing_attempts_then_dead_lettered() {
    for mode in [DeliveryMode::Ordered, DeliveryMode::Unordered] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        one_partition_topic(&store, "t").await;
        let sub = store.subscribe("s", "t", settings(mode)).await.unwrap();
        store
            .append("t", &[message(None, "poison"), message(None, "fine")])
            .await
            .unwrap();
        let mut attempts_seen = Vec::new();
        let mut fine_handled = false;
        while store.subscription_info("s", "t").unwrap().dead_letters == 0 || !fine_handled {
            let lease = next_lease(&sub, 0, 10).await;
            let mut results = Vec::new();
            for delivery in &lease.deliveries {
                let payload = delivery.message.payload.clone();
                if payload == b"poison" {
                    attempts_seen.push(delivery.attempt);
                    results.push(Settlement {
                        offset: delivery.message.offset,
                        outcome: retry("cannot parse"),
                        effects: Default::default(),
                    });
                    if mode == DeliveryMode::Ordered {
                        break;
                    }
                } else {
                    fine_handled = true;
                    results.push(Settlement::ack(delivery.message.offset));
                }
            }
            sub.settle(lease.ticket, results).await.unwrap();
        }
        assert_eq!(attempts_seen, vec![1, 2, 3], "{mode:?}");
        let dead = store.dead_letters("s", None, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(dead[0].message.payload, b"poison");
        assert!(
            dead[0].reason.contains("cannot parse"),
            "{}",
            dead[0].reason
        );
        let info = store.subscription_info("s", "t").unwrap();
        assert_eq!(
            (info.lag, info.scheduled, info.dead_letters),
            (0, 0, 1),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn a_dead_letter_outcome_skips_retries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    one_partition_topic(&store, "t").await;
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store.append("t", &messages(3, |_| None)).await.unwrap();
    let lease = next_lease(&sub, 0, 10).await;
    let results = vec![
        Settlement::ack(0),
        Settlement {
            offset: 1,
            outcome: Outcome::DeadLetter {
                reason: "invalid order".into(),
            },
            effects: Default::default(),
        },
        Settlement::ack(2),
    ];
    let report = sub.settle(lease.ticket, results).await.unwrap();
    assert_eq!((report.acked, report.dead_lettered), (2, 1));
    let dead = store.dead_letters("s", Some("t"), 10).unwrap();
    assert_eq!((dead[0].message.offset, dead[0].attempts), (1, 1));
    assert_eq!(dead[0].reason, "invalid order");
}

#[tokio::test]
async fn attempt_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        one_partition_topic(&store, "t").await;
        let sub = store
            .subscribe("s", "t", settings(DeliveryMode::Ordered))
            .await
            .unwrap();
        store.append("t", &[message(None, "x")]).await.unwrap();
        for _ in 0..2 {
            let lease = next_lease(&sub, 0, 1).await;
            let results = vec![Settlement {
                offset: 0,
                outcome: retry("down"),
                effects: Default::default(),
            }];
            sub.settle(lease.ticket, results).await.unwrap();
        }
        store.close().await;
    }
    let store = open(dir.path());
    let sub = store.subscription("s", "t").unwrap();
    let lease = next_lease(&sub, 0, 1).await;
    assert_eq!(lease.deliveries[0].attempt, 3);
}

#[tokio::test]
async fn a_scheduled_retry_reports_when_it_is_due_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    one_partition_topic(&store, "t").await;
    let mut slow = settings(DeliveryMode::Ordered);
    slow.backoff.base = Duration::from_secs(10);
    slow.backoff.max = Duration::from_secs(10);
    let sub = store.subscribe("s", "t", slow).await.unwrap();
    store.append("t", &[message(None, "x")]).await.unwrap();
    let lease = next_lease(&sub, 0, 1).await;
    let explicit = Outcome::Retry {
        delay: Some(Duration::from_secs(60)),
        reason: "later".into(),
    };
    sub.settle(
        lease.ticket,
        vec![Settlement {
            offset: 0,
            outcome: explicit,
            effects: Default::default(),
        }],
    )
    .await
    .unwrap();
    match poll(&sub, 0, 1).await {
        Poll::Idle {
            retry_in: Some(wait),
        } => {
            assert!(
                wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
                "{wait:?}"
            )
        }
        other => panic!("expected an idle poll with a due time, got {other:?}"),
    }
    assert_eq!(store.subscription_info("s", "t").unwrap().scheduled, 1);
}

#[tokio::test]
async fn dead_letters_can_be_replayed_to_that_subscription_only_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    one_partition_topic(&store, "t").await;
    let failing = store
        .subscribe("failing", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    let other = store
        .subscribe("other", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store.append("t", &messages(4, |_| None)).await.unwrap();
    assert_eq!(total(&drain(&other).await), 4);
    let lease = next_lease(&failing, 0, 10).await;
    let results = lease
        .deliveries
        .iter()
        .map(|d| Settlement {
            offset: d.message.offset,
            outcome: Outcome::DeadLetter {
                reason: "bug".into(),
            },
            effects: Default::default(),
        })
        .collect();
    failing.settle(lease.ticket, results).await.unwrap();
    assert_eq!(
        store
            .subscription_info("failing", "t")
            .unwrap()
            .dead_letters,
        4
    );

    // Replay two rounds: the first time they die again, then they succeed.
    assert_eq!(store.replay_dead_letters("failing", None).await.unwrap(), 4);
    assert_eq!(
        store
            .subscription_info("failing", "t")
            .unwrap()
            .dead_letters,
        0
    );
    let again = next_lease(&failing, 0, 10).await;
    assert_eq!(again.deliveries.len(), 4);
    assert!(again.deliveries.iter().all(|d| d.attempt == 1));
    let results = ack_all(&again);
    failing.settle(again.ticket, results).await.unwrap();
    // Nothing was redelivered to the other subscription.
    assert!(matches!(poll(&other, 0, 10).await, Poll::Idle { .. }));
    assert!(matches!(poll(&failing, 0, 10).await, Poll::Idle { .. }));

    // Purge.
    store.append("t", &[message(None, "late")]).await.unwrap();
    let lease = next_lease(&failing, 0, 10).await;
    let dead = Settlement {
        offset: lease.deliveries[0].message.offset,
        outcome: Outcome::DeadLetter {
            reason: "bug".into(),
        },
        effects: Default::default(),
    };
    failing.settle(lease.ticket, vec![dead]).await.unwrap();
    assert_eq!(store.purge_dead_letters("failing", None).await.unwrap(), 1);
    assert!(store.dead_letters("failing", None, 10).unwrap().is_empty());
    assert_eq!(
        store
            .subscription_info("failing", "t")
            .unwrap()
            .dead_letters,
        0
    );
}

#[tokio::test]
async fn replayed_dead_letters_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        one_partition_topic(&store, "t").await;
        let sub = store
            .subscribe("s", "t", settings(DeliveryMode::Unordered))
            .await
            .unwrap();
        store.append("t", &[message(None, "x")]).await.unwrap();
        let lease = next_lease(&sub, 0, 1).await;
        let dead = Settlement {
            offset: 0,
            outcome: Outcome::DeadLetter { reason: "r".into() },
            effects: Default::default(),
        };
        sub.settle(lease.ticket, vec![dead]).await.unwrap();
        store.replay_dead_letters("s", Some("t")).await.unwrap();
        store.close().await;
    }
    let store = open(dir.path());
    let sub = store.subscription("s", "t").unwrap();
    let lease = next_lease(&sub, 0, 1).await;
    assert_eq!(lease.deliveries[0].message.payload, b"x");
}
