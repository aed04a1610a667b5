//! A subscription as the store keeps it in memory: its delivery state per
//! partition (`cursor.rs`), its counters, the signals that wake its
//! consumers, and its registry record on disk. StoreContext by the handles
//! (`subscription.rs`), the writer and recovery; it sends no commands
//! itself.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::codec::Counters;
use super::config::{Backoff, DeliveryMode, StartPosition, SubscriptionSettings};
use super::cursor::PartitionCursor;
use super::support::now_ms;
use super::topic::Topic;

/// A subscription in memory, shared by its handles and the writer.
pub(crate) struct SubscriptionState {
    pub id: u32,
    pub subscriber: Arc<str>,
    pub topic: Arc<Topic>,
    pub settings: RwLock<SubscriptionSettings>,
    /// One delivery state per partition. Locked per batch, never per
    /// message, and never across I/O.
    pub parts: Vec<Mutex<PartitionCursor>>,
    /// Written only by the writer.
    pub counters: Mutex<Counters>,
    /// Sequence number of the next dead letter. Written only by the writer.
    pub next_dead_seq: AtomicU64,
    /// Bumped when something other than new messages makes work
    /// available on any partition: a seek, a replay, new settings, removal.
    pub changed: Signal,
    /// Bumped per partition when a lease on it ends (settled or given
    /// back): a worker that found the partition busy, or its unordered
    /// window full, looks again. Per partition so that one partition's
    /// settles do not wake the idle workers of all the others.
    pub lease_ended: Vec<Signal>,
    pub removed: AtomicBool,
    /// Settles sent to the writer and not yet durable, per partition:
    /// shown as in flight, so "drained" means committed.
    pub settling: Vec<AtomicU64>,
}

impl SubscriptionState {
    /// A subscription with one delivery state per partition of `topic`.
    pub fn new(
        record: &SubscriptionRecord,
        topic: &Arc<Topic>,
        parts: Vec<Mutex<PartitionCursor>>,
        counters: Counters,
        next_dead_seq: u64,
    ) -> SubscriptionState {
        let partitions = parts.len();
        SubscriptionState {
            id: record.id,
            subscriber: Arc::from(record.subscriber.as_str()),
            topic: Arc::clone(topic),
            settings: RwLock::new(record.settings()),
            parts,
            counters: Mutex::new(counters),
            next_dead_seq: AtomicU64::new(next_dead_seq),
            changed: Signal::default(),
            lease_ended: (0..partitions).map(|_| Signal::default()).collect(),
            removed: AtomicBool::new(false),
            settling: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn settings(&self) -> SubscriptionSettings {
        match self.settings.read() {
            Ok(settings) => *settings,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// A version counter that wakes whoever watches it: a watcher armed
/// before a look sees every bump after it (see `seam.rs`).
#[derive(Default)]
pub(crate) struct Signal(watch::Sender<u64>);

impl Signal {
    pub fn bump(&self) {
        self.0
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The registry record of a subscription (JSON in the `meta` keyspace).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionRecord {
    pub id: u32,
    pub subscriber: String,
    pub topic: String,
    pub ordered: bool,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub start_earliest: bool,
    pub max_unacked: u64,
    pub created_ms: u64,
}

impl SubscriptionRecord {
    pub fn new(id: u32, subscriber: &str, topic: &str, settings: &SubscriptionSettings) -> Self {
        SubscriptionRecord {
            id,
            subscriber: subscriber.to_owned(),
            topic: topic.to_owned(),
            ordered: settings.mode == DeliveryMode::Ordered,
            max_attempts: settings.max_attempts,
            backoff_base_ms: settings.backoff.base.as_millis() as u64,
            backoff_max_ms: settings.backoff.max.as_millis() as u64,
            start_earliest: settings.start == StartPosition::Earliest,
            max_unacked: settings.max_unacked,
            created_ms: now_ms(),
        }
    }

    pub fn settings(&self) -> SubscriptionSettings {
        SubscriptionSettings {
            mode: if self.ordered {
                DeliveryMode::Ordered
            } else {
                DeliveryMode::Unordered
            },
            max_attempts: self.max_attempts,
            backoff: Backoff {
                base: Duration::from_millis(self.backoff_base_ms),
                max: Duration::from_millis(self.backoff_max_ms),
            },
            start: if self.start_earliest {
                StartPosition::Earliest
            } else {
                StartPosition::Latest
            },
            max_unacked: self.max_unacked,
        }
    }
}
