//! Helpers shared by the storage scenarios.

use std::path::Path;
use std::time::Duration;

use courier_store_fjall::{
    Backoff, DeliveryMode, FjallStore, FjallSubscription, Lease, NewMessage, Outcome, Poll,
    Settlement, StoreConfig, SubscriptionSettings, TopicSettings,
};

/// Creates topic `name` with `partitions` partitions and default retention.
pub async fn create_topic(store: &FjallStore, name: &str, partitions: u32) {
    let settings = TopicSettings {
        partitions,
        ..TopicSettings::default()
    };
    store
        .create_topic(name, settings)
        .await
        .expect("create topic");
}

/// Acknowledges every delivery of `lease`.
pub fn ack_all(lease: &Lease) -> Vec<Settlement> {
    lease
        .deliveries
        .iter()
        .map(|d| Settlement::ack(d.message.offset))
        .collect()
}

pub fn open(dir: &Path) -> FjallStore {
    FjallStore::open(StoreConfig::new(dir)).expect("open store")
}

pub fn open_with(dir: &Path, adjust: impl FnOnce(&mut StoreConfig)) -> FjallStore {
    let mut config = StoreConfig::new(dir);
    adjust(&mut config);
    FjallStore::open(config).expect("open store")
}

pub fn message(key: Option<&str>, payload: &str) -> NewMessage {
    NewMessage {
        key: key.map(|k| k.as_bytes().to_vec()),
        headers: vec![("kind".into(), "test".into())],
        payload: payload.as_bytes().to_vec(),
    }
}

pub fn messages(count: usize, key: impl Fn(usize) -> Option<String>) -> Vec<NewMessage> {
    (0..count)
        .map(|i| message(key(i).as_deref(), &format!("m{i}")))
        .collect()
}

pub fn settings(mode: DeliveryMode) -> SubscriptionSettings {
    SubscriptionSettings {
        mode,
        max_attempts: 3,
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        ..SubscriptionSettings::default()
    }
}

/// Polls on a blocking thread, as the dispatcher does.
pub async fn poll(sub: &FjallSubscription, partition: u32, max: usize) -> Poll {
    let sub = sub.clone();
    tokio::task::spawn_blocking(move || sub.poll(partition, max))
        .await
        .expect("poll task")
        .expect("poll")
}

/// Polls until a batch is ready (waiting out retry delays), or panics after
/// a generous timeout.
pub async fn next_lease(sub: &FjallSubscription, partition: u32, max: usize) -> Lease {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match poll(sub, partition, max).await {
            Poll::Ready(lease) => return lease,
            Poll::Idle { retry_in } => {
                assert!(tokio::time::Instant::now() < deadline, "no lease in time");
                let wait = retry_in
                    .unwrap_or(Duration::from_millis(5))
                    .min(Duration::from_millis(50));
                tokio::time::sleep(wait).await;
            }
            Poll::Busy => panic!("partition busy"),
        }
    }
}

/// Acknowledges everything deliverable in every partition; returns the
/// payloads handled, per partition in delivery order.
pub async fn drain(sub: &FjallSubscription) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); sub.partitions() as usize];
    for partition in 0..sub.partitions() {
        while let Poll::Ready(lease) = poll(sub, partition, 64).await {
            let results = ack_all(&lease);
            for delivery in &lease.deliveries {
                out[partition as usize]
                    .push(String::from_utf8_lossy(&delivery.message.payload).into_owned());
            }
            sub.settle(lease.ticket, results).await.expect("settle");
        }
    }
    out
}

pub fn retry(reason: &str) -> Outcome {
    Outcome::Retry {
        delay: None,
        reason: reason.into(),
    }
}

pub fn total(batches: &[Vec<String>]) -> usize {
    batches.iter().map(Vec::len).sum()
}
