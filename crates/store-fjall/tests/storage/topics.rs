//! Topics and partitions: creation, partitioning, offsets.

use courier_store_fjall::{DEFAULT_PARTITIONS, Error, Retention, TopicSettings};

use crate::common::*;

#[tokio::test]
async fn first_publish_auto_creates_a_topic_with_default_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("orders", &[message(None, "a")]).await.unwrap();
    let info = store.topic_info("orders").unwrap();
    assert_eq!(info.partitions.len() as u32, DEFAULT_PARTITIONS);
    assert_eq!(info.messages, 1);
}

#[tokio::test]
async fn explicit_creation_takes_settings_and_refuses_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let settings = TopicSettings {
        partitions: 3,
        retention: Retention {
            max_age: None,
            max_bytes: Some(1 << 30),
        },
    };
    let info = store.create_topic("payments", settings).await.unwrap();
    assert_eq!(info.partitions.len(), 3);
    assert_eq!(info.settings, settings);
    // Same partition count: idempotent.
    store.create_topic("payments", settings).await.unwrap();
    let other = TopicSettings {
        partitions: 4,
        ..settings
    };
    let error = store.create_topic("payments", other).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::TopicConflict {
                existing: 3,
                requested: 4,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn same_key_lands_in_one_partition_with_increasing_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let batch = messages(50, |_| Some("user-7".into()));
    let positions = store.append("orders", &batch).await.unwrap();
    let partition = positions[0].partition;
    assert!(positions.iter().all(|p| p.partition == partition));
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (0..50).collect::<Vec<_>>());
    let more = store.append("orders", &batch[..1]).await.unwrap();
    assert_eq!(more[0].offset, 50);
    assert_eq!(more[0].partition, partition);
}

#[tokio::test]
async fn keyless_messages_spread_evenly_over_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create_topic(&store, "events", 4).await;
    let positions = store
        .append("events", &messages(400, |_| None))
        .await
        .unwrap();
    let mut counts = [0; 4];
    for position in positions {
        counts[position.partition as usize] += 1;
    }
    assert_eq!(counts, [100; 4]);
}

#[tokio::test]
async fn timestamps_are_stamped_and_never_decrease_within_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for _ in 0..5 {
        store
            .append("t", &messages(20, |_| Some("k".into())))
            .await
            .unwrap();
    }
    let partition = store.append("t", &[message(Some("k"), "x")]).await.unwrap()[0].partition;
    let read = store.read("t", partition, 0, 1000).unwrap();
    assert_eq!(read.len(), 101);
    assert!(
        read.windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
    );
    assert!(read[0].timestamp_ms > 1_600_000_000_000);
}
