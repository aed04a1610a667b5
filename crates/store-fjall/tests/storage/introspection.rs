//! Introspection of topics and subscriptions.

use courier_store_fjall::{DeliveryMode, LATENCY_BUCKETS, Outcome, Settlement};

use crate::common::*;

#[tokio::test]
async fn topic_and_subscription_introspection_reports_offsets_lag_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create_topic(&store, "t", 2).await;
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Unordered))
        .await
        .unwrap();
    let positions = store.append("t", &messages(20, |_| None)).await.unwrap();
    assert_eq!(positions.len(), 20);

    let topic = store.topic_info("t").unwrap();
    assert_eq!(topic.name, "t");
    assert_eq!(topic.messages, 20);
    assert_eq!(
        topic
            .partitions
            .iter()
            .map(|p| (p.start, p.end))
            .collect::<Vec<_>>(),
        vec![(0, 10), (0, 10)]
    );
    assert_eq!(store.topics().len(), 1);

    let lease = next_lease(&sub, 0, 4).await;
    let info = store.subscription_info("s", "t").unwrap();
    assert_eq!((info.lag, info.in_flight), (20, 4));
    let results = vec![
        Settlement::ack(0),
        Settlement {
            offset: 1,
            outcome: retry("x"),
            effects: Default::default(),
        },
        Settlement {
            offset: 2,
            outcome: Outcome::DeadLetter { reason: "y".into() },
            effects: Default::default(),
        },
        Settlement::ack(3),
    ];
    sub.settle(lease.ticket, results).await.unwrap();
    let info = store.subscription_info("s", "t").unwrap();
    assert_eq!(info.partitions[0].committed, 1);
    assert_eq!(
        (info.lag, info.in_flight, info.scheduled, info.dead_letters),
        (19, 0, 1, 1)
    );
    assert_eq!(store.subscriptions().len(), 1);
    let stats = store.stats();
    assert_eq!(
        (
            stats.appended,
            stats.acked,
            stats.retried,
            stats.dead_lettered
        ),
        (20, 2, 1, 1)
    );
    for latency in [&stats.fsync, &stats.commit] {
        assert!(latency.count > 0, "{latency:?}");
        assert_eq!(latency.buckets.iter().sum::<u64>(), latency.count);
        assert_eq!(latency.buckets.len(), LATENCY_BUCKETS.len() + 1);
    }
}
