//! Effects that commit atomically with an acknowledgement.

use std::sync::Arc;

use courier_store_fjall::{DeliveryMode, Effects, NewMessage, Outcome, Settlement, StateOp};

use crate::common::*;

fn effects(points: i64, notice: &str) -> Effects {
    Effects {
        publishes: vec![(
            "notifications".into(),
            NewMessage {
                key: Some(b"merchant-1".to_vec()),
                headers: vec![],
                payload: notice.as_bytes().to_vec(),
            },
        )],
        state: vec![
            StateOp::Increment {
                key: "points/u1".into(),
                delta: points,
            },
            StateOp::Set {
                key: "last".into(),
                value: notice.as_bytes().to_vec(),
            },
            StateOp::Delete { key: "temp".into() },
        ],
    }
}

#[tokio::test]
async fn acknowledged_effects_commit_with_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sub = store
        .subscribe("membership", "orders", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    let partition = store
        .append("orders", &messages(2, |_| Some("u1".into())))
        .await
        .unwrap()[0]
        .partition;
    let lease = next_lease(&sub, partition, 10).await;
    let results = vec![
        Settlement {
            offset: 0,
            outcome: Outcome::Ack,
            effects: effects(10, "first"),
        },
        Settlement {
            offset: 1,
            outcome: Outcome::Ack,
            effects: effects(5, "second"),
        },
    ];
    sub.settle(lease.ticket, results).await.unwrap();
    assert_eq!(
        store.state_get("membership", "points/u1").unwrap(),
        Some(b"15".to_vec())
    );
    assert_eq!(
        store.state_get("membership", "last").unwrap(),
        Some(b"second".to_vec())
    );
    // Namespaces are private.
    assert_eq!(store.state_get("notification", "points/u1").unwrap(), None);
    let notices = store.topic_info("notifications").unwrap();
    assert_eq!(notices.messages, 2);
    let scanned = store.state_scan("membership", "points/", 10).unwrap();
    assert_eq!(scanned, vec![("points/u1".to_string(), b"15".to_vec())]);
}

#[tokio::test]
async fn effects_of_retried_or_dead_lettered_messages_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create_topic(&store, "orders", 1).await;
    let sub = store
        .subscribe("m", "orders", settings(DeliveryMode::Unordered))
        .await
        .unwrap();
    store
        .append("orders", &messages(2, |_| None))
        .await
        .unwrap();
    let lease = next_lease(&sub, 0, 10).await;
    let results = vec![
        Settlement {
            offset: 0,
            outcome: retry("later"),
            effects: effects(10, "a"),
        },
        Settlement {
            offset: 1,
            outcome: Outcome::DeadLetter {
                reason: "bad".into(),
            },
            effects: effects(10, "b"),
        },
    ];
    sub.settle(lease.ticket, results).await.unwrap();
    assert_eq!(store.state_get("m", "points/u1").unwrap(), None);
    assert!(
        store.topic_info("notifications").is_err(),
        "no publish may have happened"
    );
}

#[tokio::test]
async fn an_ack_ignored_after_a_retry_in_ordered_mode_commits_no_effects() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create_topic(&store, "orders", 1).await;
    let sub = store
        .subscribe("m", "orders", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store
        .append("orders", &messages(2, |_| None))
        .await
        .unwrap();
    let lease = next_lease(&sub, 0, 10).await;
    let results = vec![
        Settlement {
            offset: 0,
            outcome: retry("later"),
            effects: Effects::default(),
        },
        Settlement {
            offset: 1,
            outcome: Outcome::Ack,
            effects: effects(7, "too early"),
        },
    ];
    let report = sub.settle(lease.ticket, results).await.unwrap();
    assert_eq!((report.acked, report.retried), (0, 1));
    assert_eq!(store.state_get("m", "points/u1").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_on_different_partitions_never_lose_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let sub = store
        .subscribe("m", "orders", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store
        .append("orders", &messages(400, |i| Some(format!("user-{i}"))))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for partition in 0..sub.partitions() {
        let sub = sub.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let lease = match poll(&sub, partition, 7).await {
                    courier_store_fjall::Poll::Ready(lease) => lease,
                    _ => break,
                };
                let results = lease
                    .deliveries
                    .iter()
                    .map(|d| Settlement {
                        offset: d.message.offset,
                        outcome: Outcome::Ack,
                        effects: Effects {
                            publishes: vec![],
                            state: vec![StateOp::Increment {
                                key: "total".into(),
                                delta: 2,
                            }],
                        },
                    })
                    .collect();
                sub.settle(lease.ticket, results).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store.state_get("m", "total").unwrap(),
        Some(b"800".to_vec())
    );
}

#[tokio::test]
async fn invalid_effects_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sub = store
        .subscribe("m", "orders", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    let partition = store
        .append("orders", &[message(Some("k"), "x")])
        .await
        .unwrap()[0]
        .partition;
    let lease = next_lease(&sub, partition, 10).await;
    let bad = Effects {
        publishes: vec![("no/slashes".into(), NewMessage::default())],
        state: vec![],
    };
    let error = sub
        .settle(
            lease.ticket,
            vec![Settlement {
                offset: 0,
                outcome: Outcome::Ack,
                effects: bad,
            }],
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid topic name"), "{error}");
    assert_eq!(store.subscription_info("m", "orders").unwrap().lag, 1);
}
