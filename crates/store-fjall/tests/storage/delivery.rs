//! Delivery and acknowledgement in ordered and unordered mode.

use std::collections::HashMap;

use courier_store_fjall::{DeliveryMode, Poll, Settlement};

use crate::common::*;

#[tokio::test]
async fn ordered_mode_hands_out_one_batch_per_partition_in_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create_topic(&store, "t", 1).await;
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store
        .append("t", &messages(10, |i| Some(format!("k{}", i % 3))))
        .await
        .unwrap();
    let lease = next_lease(&sub, 0, 4).await;
    assert!(matches!(poll(&sub, 0, 4).await, Poll::Busy));
    let offsets: Vec<u64> = lease.deliveries.iter().map(|d| d.message.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    assert!(lease.deliveries.iter().all(|d| d.attempt == 1));
    let results = offsets.iter().map(|o| Settlement::ack(*o)).collect();
    let report = sub.settle(lease.ticket, results).await.unwrap();
    assert_eq!(report.acked, 4);
    let next = next_lease(&sub, 0, 100).await;
    assert_eq!(next.deliveries.first().map(|d| d.message.offset), Some(4));
}

#[tokio::test]
async fn ordered_mode_keeps_per_key_order_across_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create_topic(&store, "t", 1).await;
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store
        .append("t", &messages(6, |_| Some("same".into())))
        .await
        .unwrap();
    let mut handled = Vec::new();
    let mut failed_once = false;
    while handled.len() < 6 {
        let lease = next_lease(&sub, 0, 10).await;
        let mut results = Vec::new();
        for delivery in &lease.deliveries {
            let offset = delivery.message.offset;
            if offset == 2 && !failed_once {
                failed_once = true;
                results.push(Settlement {
                    offset,
                    outcome: retry("flaky"),
                    effects: Default::default(),
                });
                break;
            }
            handled.push(offset);
            results.push(Settlement::ack(offset));
        }
        sub.settle(lease.ticket, results).await.unwrap();
    }
    assert_eq!(handled, vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn acknowledged_messages_are_never_redelivered_after_restart_in_ordered_mode() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let sub = store
            .subscribe("s", "t", settings(DeliveryMode::Ordered))
            .await
            .unwrap();
        store
            .append("t", &messages(64, |i| Some(format!("k{i}"))))
            .await
            .unwrap();
        for partition in 0..sub.partitions() {
            if let Poll::Ready(lease) = poll(&sub, partition, 3).await {
                let results = ack_all(&lease);
                sub.settle(lease.ticket, results).await.unwrap();
            }
            // Leave a second batch in flight: it must come back.
            let _ = poll(&sub, partition, 2).await;
        }
        store.close().await;
    }
    let store = open(dir.path());
    let sub = store.subscription("s", "t").unwrap();
    let handled = drain(&sub).await;
    let mut acked_before = 0;
    for partition in store.topic_info("t").unwrap().partitions {
        acked_before += partition.end.min(3);
    }
    assert_eq!(total(&handled) as u64, 64 - acked_before);
}

#[tokio::test]
async fn unordered_mode_has_many_batches_in_flight_and_remembers_individual_acks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        create_topic(&store, "t", 1).await;
        let sub = store
            .subscribe("s", "t", settings(DeliveryMode::Unordered))
            .await
            .unwrap();
        store.append("t", &messages(10, |_| None)).await.unwrap();
        let first = next_lease(&sub, 0, 5).await;
        let second = next_lease(&sub, 0, 5).await;
        assert_eq!(second.deliveries[0].message.offset, 5);
        // Ack 5..10 and only 1 and 3 of the first batch; 0, 2, 4 stay out.
        let results = ack_all(&second);
        sub.settle(second.ticket, results).await.unwrap();
        sub.settle(first.ticket, vec![Settlement::ack(1), Settlement::ack(3)])
            .await
            .unwrap();
        let info = store.subscription_info("s", "t").unwrap();
        assert_eq!(info.partitions[0].committed, 0);
        store.close().await;
    }
    let store = open(dir.path());
    let sub = store.subscription("s", "t").unwrap();
    let redelivered: Vec<String> = drain(&sub).await.concat();
    assert_eq!(redelivered, vec!["m0", "m2", "m4"]);
    assert_eq!(
        store.subscription_info("s", "t").unwrap().partitions[0].committed,
        10
    );
}

#[tokio::test]
async fn released_batches_come_back_without_an_attempt_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    let partition = store.append("t", &[message(Some("k"), "x")]).await.unwrap()[0].partition;
    let lease = next_lease(&sub, partition, 10).await;
    sub.release(lease.ticket);
    let again = next_lease(&sub, partition, 10).await;
    assert_eq!(again.deliveries[0].attempt, 1);
}

#[tokio::test]
async fn new_messages_wake_the_watch_of_their_partition_only() {
    use courier_core::{PartitionFeed, Waiting};
    use courier_store_fjall::FjallPartition;
    use futures_util::FutureExt;

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    // Armed before the append, as a worker arms before it polls.
    let mut waits: HashMap<u32, _> = (0..sub.partitions())
        .map(|p| {
            let feed = FjallPartition::new(sub.clone(), p).unwrap();
            (p, feed.watch().wait(Waiting::Idle))
        })
        .collect();
    let position = store.append("t", &[message(Some("k"), "x")]).await.unwrap()[0];
    let wait = waits.remove(&position.partition).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), wait)
        .await
        .expect("the append woke its partition's watch");
    for (partition, wait) in waits {
        assert!(
            wait.now_or_never().is_none(),
            "an append to partition {} woke partition {partition}",
            position.partition
        );
    }
    let lease = next_lease(&sub, position.partition, 1).await;
    assert_eq!(lease.deliveries[0].message.payload, b"x");
}

#[tokio::test]
async fn an_ended_lease_wakes_the_watches_of_its_own_partition_only() {
    use courier_core::{PartitionFeed, Waiting};
    use courier_store_fjall::FjallPartition;
    use futures_util::FutureExt;

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create_topic(&store, "t", 2).await;
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    // Unkeyed messages go round-robin: one per partition.
    store
        .append("t", &[message(None, "a"), message(None, "b")])
        .await
        .unwrap();
    let feeds: Vec<_> = (0..2)
        .map(|p| FjallPartition::new(sub.clone(), p).unwrap())
        .collect();
    // Busy: only an ended lease (or a control change) may wake it, not the
    // appends that already happened.
    let mut settled = feeds[0].watch().wait(Waiting::Busy);
    let mut other = feeds[1].watch().wait(Waiting::Busy);
    assert!((&mut settled).now_or_never().is_none(), "woken by nothing");

    // Settling partition 0 wakes its watches, and none on partition 1.
    let lease = next_lease(&sub, 0, 10).await;
    let acks = ack_all(&lease);
    sub.settle(lease.ticket, acks).await.unwrap();
    assert!(
        settled.now_or_never().is_some(),
        "a settle wakes its partition's watches"
    );
    assert!(
        (&mut other).now_or_never().is_none(),
        "a settle on partition 0 woke a watch of partition 1"
    );

    // Giving a batch back ends its lease too.
    let lease = next_lease(&sub, 1, 10).await;
    sub.release(lease.ticket);
    assert!(
        other.now_or_never().is_some(),
        "a release wakes its partition's watches"
    );
    assert!(
        FjallPartition::new(sub.clone(), 2).is_err(),
        "no such partition"
    );
}
