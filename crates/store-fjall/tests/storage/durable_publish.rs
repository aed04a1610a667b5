//! Durable publish with group commit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use courier_store_fjall::FsyncPolicy;

use crate::common::*;

#[tokio::test]
async fn acknowledged_appends_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let positions = {
        let store = open(dir.path());
        let positions = store
            .append("orders", &messages(100, |i| Some(format!("k{}", i % 7))))
            .await
            .unwrap();
        // No close: dropping the last handle must not be what makes it durable.
        std::mem::forget(store);
        positions
    };
    // The forgotten store still runs and holds its lock (a flock, which a
    // copy does not inherit). The journal was fsynced before `append`
    // answered, so a copy of the files holds every acknowledged message,
    // as a crashed process's directory would.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let store = open(copy.path());
    for position in positions {
        let read = store
            .read("orders", position.partition, position.offset, 1)
            .unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].offset, position.offset);
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_share_fsyncs_and_get_dense_unique_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for producer in 0..64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for round in 0..10 {
                let batch = messages(10, |i| Some(format!("p{producer}-{round}-{i}")));
                positions.extend(store.append("load", &batch).await.unwrap());
            }
            positions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), 6400);
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), 6400);
    // Offsets per partition are exactly 0..n.
    let info = store.topic_info("load").unwrap();
    for partition in &info.partitions {
        let mut offsets: Vec<u64> = all
            .iter()
            .filter(|p| p.partition == partition.partition)
            .map(|p| p.offset)
            .collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..partition.end).collect::<Vec<_>>());
    }
    let stats = store.stats();
    assert_eq!(stats.appended, 6400);
    assert!(
        stats.fsync.count < 640,
        "640 appends should share fsyncs, got {} fsyncs",
        stats.fsync.count
    );
}

#[tokio::test]
async fn lax_fsync_policies_still_store_everything() {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(20)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_with(dir.path(), |c| c.fsync = policy);
            store.append("t", &messages(30, |_| None)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.close().await;
        }
        let store = open(dir.path());
        assert_eq!(store.topic_info("t").unwrap().messages, 30, "{policy:?}");
    }
}

#[tokio::test]
async fn an_explicit_sync_fsyncs_under_any_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| c.fsync = FsyncPolicy::Never);
    store.append("t", &messages(3, |_| None)).await.unwrap();
    assert_eq!(store.stats().fsync.count, 0);
    store.sync().await.unwrap();
    assert_eq!(store.stats().fsync.count, 1);
}

/// fjall seals a keyspace's memtable only when that one is full, so many
/// partitions filling at once could hold far more than the store's budget
/// in memory; the store seals the largest ones early, and when flushes
/// fall behind, the writer waits for them (48 MiB) instead of growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memtables_stay_within_the_write_buffer_budget_across_many_partitions() {
    // fjall's default background threads, and a single one (flushes then
    // queue behind compactions).
    for background_threads in [None, Some(1)] {
        fill_wide_topic_and_check_memtables(background_threads).await;
    }
}

async fn fill_wide_topic_and_check_memtables(background_threads: Option<usize>) {
    const MIB: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |config| {
        config.fsync = FsyncPolicy::Never;
        config.background_threads = background_threads;
    });
    let settings = courier_store_fjall::TopicSettings {
        partitions: 32,
        ..Default::default()
    };
    store.create_topic("wide", settings).await.unwrap();
    let payload = "x".repeat(1000);
    let batch: Vec<_> = (0..1000).map(|_| message(None, &payload)).collect();
    let mut peak = 0;
    // 128 MiB spread evenly: 4 MiB per partition, where fjall would seal
    // each memtable by itself only at the very end.
    for _ in 0..128 {
        store.append("wide", &batch).await.unwrap();
        peak = peak.max(store.stats().write_buffer_bytes);
    }
    assert!(
        peak < 64 * MIB,
        "unflushed memtables reached {} MiB with background threads {background_threads:?}",
        peak / MIB
    );
    let read = store.read("wide", 31, 0, 10).unwrap();
    assert_eq!(read.len(), 10, "the last partition holds what was appended");
}
