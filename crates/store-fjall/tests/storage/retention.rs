//! Retention and replay (seek).

use std::time::Duration;

use courier_store_fjall::{DeliveryMode, Retention, SeekTarget, TopicSettings};

use crate::common::*;

fn one_partition(retention: Retention) -> TopicSettings {
    TopicSettings {
        partitions: 1,
        retention,
    }
}

#[tokio::test]
async fn messages_go_only_after_every_subscription_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .create_topic("t", one_partition(Retention::default()))
        .await
        .unwrap();
    let fast = store
        .subscribe("fast", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    let slow = store
        .subscribe("slow", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store.append("t", &messages(100, |_| None)).await.unwrap();
    drain(&fast).await;
    store.run_maintenance().await.unwrap();
    assert_eq!(store.topic_info("t").unwrap().partitions[0].start, 0);
    drain(&slow).await;
    store.run_maintenance().await.unwrap();
    let info = store.topic_info("t").unwrap();
    assert_eq!((info.partitions[0].start, info.messages), (100, 0));
    // A new subscription from "earliest" gets only what is retained.
    let late = store
        .subscribe("late", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store.append("t", &messages(2, |_| None)).await.unwrap();
    assert_eq!(total(&drain(&late).await), 2);
}

#[tokio::test]
async fn without_subscriptions_messages_wait_for_the_retention_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .create_topic("t", one_partition(Retention::default()))
        .await
        .unwrap();
    store.append("t", &messages(10, |_| None)).await.unwrap();
    store.run_maintenance().await.unwrap();
    assert_eq!(store.topic_info("t").unwrap().messages, 10);
}

#[tokio::test]
async fn the_age_limit_expires_what_a_lagging_subscription_never_handled() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let retention = Retention {
        max_age: Some(Duration::from_secs(1)),
        max_bytes: None,
    };
    store
        .create_topic("t", one_partition(retention))
        .await
        .unwrap();
    let lagging = store
        .subscribe("lagging", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store.append("t", &messages(30, |_| None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    store.append("t", &messages(5, |_| None)).await.unwrap();
    store.run_maintenance().await.unwrap();
    let info = store.subscription_info("lagging", "t").unwrap();
    assert_eq!(info.expired, 30);
    assert_eq!(info.partitions[0].committed, 30);
    assert_eq!(store.stats().expired, 30);
    // The young messages are still delivered.
    assert_eq!(total(&drain(&lagging).await), 5);
}

#[tokio::test]
async fn the_size_limit_removes_the_oldest_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let limit = 4 * 1024 * 1024;
    let retention = Retention {
        max_age: None,
        max_bytes: Some(limit),
    };
    store
        .create_topic("t", one_partition(retention))
        .await
        .unwrap();
    // 12 MB of incompressible payloads: more than a memtable, so tables
    // reach the disk, where the size limit is measured.
    let mut rng = 7u64;
    for _ in 0..24 {
        let batch: Vec<_> = (0..250)
            .map(|_| {
                let payload: String = (0..2000)
                    .map(|_| {
                        rng = rng
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        char::from(b'a' + (rng >> 59) as u8)
                    })
                    .collect();
                message(None, &payload)
            })
            .collect();
        store.append("t", &batch).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.topic_info("t").unwrap().disk_bytes <= limit {
        assert!(
            std::time::Instant::now() < deadline,
            "tables never reached the disk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.run_maintenance().await.unwrap();
    let info = store.topic_info("t").unwrap();
    assert_eq!(info.partitions[0].end, 6000);
    let start = info.partitions[0].start;
    assert!(
        start > 0 && start < 6000,
        "oldest messages must go, the newest stay: {info:?}"
    );
}

#[tokio::test]
async fn seeking_replays_from_an_offset_or_a_time_and_skips_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .create_topic("t", one_partition(Retention::default()))
        .await
        .unwrap();
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .unwrap();
    store.append("t", &messages(10, |_| None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = courier_now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append("t", &messages(5, |_| None)).await.unwrap();
    assert_eq!(total(&drain(&sub).await), 15);

    store
        .seek(
            "s",
            "t",
            SeekTarget::Offset {
                partition: None,
                offset: 7,
            },
        )
        .await
        .unwrap();
    assert_eq!(total(&drain(&sub).await), 8);
    store
        .seek("s", "t", SeekTarget::Timestamp(middle))
        .await
        .unwrap();
    assert_eq!(total(&drain(&sub).await), 5);
    store.seek("s", "t", SeekTarget::Earliest).await.unwrap();
    assert_eq!(store.subscription_info("s", "t").unwrap().lag, 15);
    store.seek("s", "t", SeekTarget::Latest).await.unwrap();
    assert_eq!(store.subscription_info("s", "t").unwrap().lag, 0);
    // Beyond the end is clamped.
    store
        .seek(
            "s",
            "t",
            SeekTarget::Offset {
                partition: Some(0),
                offset: 1_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.subscription_info("s", "t").unwrap().partitions[0].committed,
        15
    );
    let error = store
        .seek(
            "s",
            "t",
            SeekTarget::Offset {
                partition: Some(9),
                offset: 0,
            },
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("partition 9"), "{error}");
}

fn courier_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
