//! Storage benchmark (reported, never asserted). 300-byte messages, default
//! durable settings (fsync before every answer, group-committed).
//!
//! ```sh
//! cargo bench -p courier-store-fjall --bench store                 # all scenarios
//! cargo bench -p courier-store-fjall --bench store -- append drain  # some of them
//! COURIER_BENCH_BACKLOG=10000000 cargo bench -p courier-store-fjall --bench store -- backlog
//! ```
//! Scenarios: `append` (64 concurrent producers), `drain` (fetch + durable
//! ack, one subscription), `fanout` (3 subscriptions draining while
//! producers append), `backlog` (RSS and reopen time with a big backlog).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier_core::{PartitionFeed, Waiting};
use courier_store_fjall::{
    DeliveryMode, FjallPartition, FjallStore, FjallSubscription, NewMessage, Poll, Settlement,
    StoreConfig, SubscriptionSettings, TopicSettings,
};

const PAYLOAD_BYTES: usize = 300;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| scenario | result |\n| --- | --- |");
    if run("append") {
        runtime.block_on(append(1));
        runtime.block_on(append(100));
    }
    if run("drain") {
        runtime.block_on(drain());
    }
    if run("fanout") {
        runtime.block_on(fanout());
    }
    if wanted.iter().any(|w| w == "reopen") {
        runtime.block_on(reopen());
        return;
    }
    if run("backlog") {
        let count = std::env::var("COURIER_BENCH_BACKLOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000_000);
        runtime.block_on(backlog(count));
    }
}

fn payload(i: u64) -> Vec<u8> {
    let mut bytes = format!("{{\"order\":{i},\"data\":\"").into_bytes();
    bytes.resize(PAYLOAD_BYTES - 2, b'x');
    bytes.extend_from_slice(b"\"}");
    bytes
}

fn batch(start: u64, size: usize) -> Vec<NewMessage> {
    (0..size as u64)
        .map(|i| NewMessage {
            key: Some(format!("user-{}", (start + i) % 10_000).into_bytes()),
            headers: vec![],
            payload: payload(start + i),
        })
        .collect()
}

fn open() -> (tempfile::TempDir, FjallStore) {
    let dir =
        tempfile::tempdir_in(std::env::var("COURIER_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("temp dir");
    let store = FjallStore::open(StoreConfig::new(dir.path())).expect("open");
    (dir, store)
}

/// 64 producers, each appending `batch_size` messages per call.
async fn append(batch_size: usize) {
    let (_dir, store) = open();
    let total = if batch_size == 1 { 200_000 } else { 2_000_000 };
    let per_producer = total / 64;
    let mut tasks = Vec::new();
    let started = Instant::now();
    for producer in 0..64u64 {
        let store = store.clone();
        // Messages are built before the clock starts: this measures the
        // store, not the benchmark's string formatting.
        let messages = batch(producer * 1_000_000, batch_size);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per_producer {
                store.append("bench", &messages).await.expect("append");
                sent += batch_size;
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "| durable append, 64 producers x {batch_size} msg/call | {:.0} msgs/s ({} msgs, {} fsyncs, {:.0} msgs/fsync) |",
        (per_producer * 64) as f64 / elapsed,
        stats.appended,
        stats.fsync.count,
        stats.appended as f64 / stats.fsync.count.max(1) as f64
    );
    store.close().await;
}

fn ordered() -> SubscriptionSettings {
    SubscriptionSettings {
        mode: DeliveryMode::Ordered,
        ..SubscriptionSettings::default()
    }
}

/// Drains one partition with acks until `stop` is set and nothing is left.
async fn consume(
    sub: FjallSubscription,
    partition: u32,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let feed = FjallPartition::new(sub.clone(), partition).expect("partition");
    loop {
        let watch = feed.watch();
        let polled = {
            let sub = sub.clone();
            tokio::task::spawn_blocking(move || sub.poll(partition, 1000))
                .await
                .expect("poll task")
                .expect("poll")
        };
        match polled {
            Poll::Ready(lease) => {
                let n = lease.deliveries.len() as u64;
                let acks = lease
                    .deliveries
                    .iter()
                    .map(|d| Settlement::ack(d.message.offset))
                    .collect();
                sub.settle(lease.ticket, acks).await.expect("settle");
                done.fetch_add(n, Ordering::Relaxed);
            }
            _ if stop.load(Ordering::Relaxed) => return,
            _ => {
                let _ =
                    tokio::time::timeout(Duration::from_millis(5), watch.wait(Waiting::Idle)).await;
            }
        }
    }
}

async fn fill(store: &FjallStore, count: u64) {
    let mut tasks = Vec::new();
    for producer in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = producer * 1000;
            while sent < count {
                store
                    .append("bench", &batch(sent, 1000))
                    .await
                    .expect("append");
                sent += 8 * 1000;
            }
        }));
    }
    for task in tasks {
        task.await.expect("fill");
    }
}

/// Fetch + durable ack of a backlog by one subscription (8 partitions).
async fn drain() {
    let (_dir, store) = open();
    store
        .create_topic("bench", TopicSettings::default())
        .await
        .expect("topic");
    let sub = store
        .subscribe("drain", "bench", ordered())
        .await
        .expect("sub");
    let count = 2_000_000;
    fill(&store, count).await;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let tasks: Vec<_> = (0..sub.partitions())
        .map(|p| {
            tokio::spawn(consume(
                sub.clone(),
                p,
                Arc::clone(&done),
                Arc::clone(&stop),
            ))
        })
        .collect();
    for task in tasks {
        task.await.expect("consumer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "| fetch + durable ack, 1 subscription, backlog of {count} | {:.0} msgs/s |",
        done.load(Ordering::Relaxed) as f64 / elapsed
    );
    store.close().await;
}

/// Producers append while three subscriptions drain.
async fn fanout() {
    let (_dir, store) = open();
    store
        .create_topic("bench", TopicSettings::default())
        .await
        .expect("topic");
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    let mut counters = Vec::new();
    for name in ["notification", "recommendation", "membership"] {
        let sub = store
            .subscribe(name, "bench", ordered())
            .await
            .expect("sub");
        let done = Arc::new(AtomicU64::new(0));
        counters.push(Arc::clone(&done));
        for partition in 0..sub.partitions() {
            consumers.push(tokio::spawn(consume(
                sub.clone(),
                partition,
                Arc::clone(&done),
                Arc::clone(&stop),
            )));
        }
    }
    let count = 2_000_000;
    let started = Instant::now();
    fill(&store, count).await;
    let appended_in = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
    let drained_in = started.elapsed().as_secs_f64();
    let handled: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!(
        "| append with 3 subscriptions draining | {:.0} msgs/s appended; all 3 done after {:.2}s (append took {:.2}s); handled {:?} |",
        count as f64 / appended_in,
        drained_in,
        appended_in,
        handled
    );
    store.close().await;
}

/// Resident and peak memory of this process, from /proc (Linux).
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Fills a backlog in this process, then measures a fresh process (this
/// bench again, `reopen` scenario) that opens it: reopen time and RSS, as
/// an engine restarted with that backlog would see them.
async fn backlog(count: u64) {
    let (dir, store) = open();
    store
        .create_topic("bench", TopicSettings::default())
        .await
        .expect("topic");
    store
        .subscribe("lagging", "bench", ordered())
        .await
        .expect("sub");
    let started = Instant::now();
    fill(&store, count).await;
    let fill_secs = started.elapsed().as_secs_f64();
    let (rss, peak) = memory_mb();
    println!(
        "| fill a backlog of {count} messages | {:.0} msgs/s; RSS of the filling process {rss:.0} MB (peak {peak:.0} MB) |",
        count as f64 / fill_secs
    );
    store.close().await;
    drop(store);
    let exe = std::env::current_exe().expect("exe");
    let status = std::process::Command::new(exe)
        .arg("reopen")
        .env("COURIER_BENCH_REOPEN_DIR", dir.path())
        .status()
        .expect("reopen process");
    assert!(status.success(), "reopen process failed");
}

/// Runs in a fresh process: opens the backlog left by `backlog`.
async fn reopen() {
    let Ok(dir) = std::env::var("COURIER_BENCH_REOPEN_DIR") else {
        return;
    };
    let started = Instant::now();
    let store = FjallStore::open(StoreConfig::new(&dir)).expect("reopen");
    let reopen = started.elapsed();
    let info = store.subscription_info("lagging", "bench").expect("info");
    let (rss, _) = memory_mb();
    println!(
        "| reopen with a backlog of {} | {:.0} ms; RSS after reopen {rss:.0} MB; {:.1} GB on disk |",
        info.lag,
        reopen.as_secs_f64() * 1000.0,
        store.stats().disk_bytes as f64 / 1e9
    );
    let sub = store.subscription("lagging", "bench").expect("sub");
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    consume_some(sub, Arc::clone(&done), 1_000_000).await;
    let (rss, peak) = memory_mb();
    println!(
        "| drain 1M of that backlog after reopen | {:.0} msgs/s; RSS {rss:.0} MB (peak {peak:.0} MB) |",
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    );
    store.close().await;
}

async fn consume_some(sub: FjallSubscription, done: Arc<AtomicU64>, limit: u64) {
    let mut partition = 0;
    while done.load(Ordering::Relaxed) < limit {
        let polled = {
            let sub = sub.clone();
            tokio::task::spawn_blocking(move || sub.poll(partition, 1000))
                .await
                .expect("task")
                .expect("poll")
        };
        if let Poll::Ready(lease) = polled {
            let n = lease.deliveries.len() as u64;
            let acks = lease
                .deliveries
                .iter()
                .map(|d| Settlement::ack(d.message.offset))
                .collect();
            sub.settle(lease.ticket, acks).await.expect("settle");
            done.fetch_add(n, Ordering::Relaxed);
        }
        partition = (partition + 1) % sub.partitions();
    }
}
