//! What a backend tells about itself: topics, subscriptions, dead letters,
//! totals and health, plus the seek targets an operator can ask for. Plain
//! data; the API renders it.

use crate::settings::{SubscriptionSettings, TopicSettings};
use crate::types::Message;

/// Upper bounds (seconds) of the storage latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// Where to move a subscription's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTarget {
    /// The oldest retained message of every partition.
    Earliest,
    /// After the newest message of every partition.
    Latest,
    /// This offset, in one partition or (None) in all of them; clamped to
    /// what is retained.
    Offset { partition: Option<u32>, offset: u64 },
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(u64),
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Position in the subscriber's dead-letter store.
    pub id: u64,
    pub subscriber: String,
    pub attempts: u32,
    pub reason: String,
    pub failed_at_ms: u64,
    /// The message; its payload is empty if retention removed it before it
    /// died (possible only for messages expired while in flight).
    pub message: Message,
}

/// Introspection of one partition of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// First retained offset.
    pub start: u64,
    /// Next offset to be assigned (end of the durable log).
    pub end: u64,
}

/// Introspection of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub settings: TopicSettings,
    pub partitions: Vec<PartitionInfo>,
    /// Retained messages (sum over partitions of end - start).
    pub messages: u64,
    pub disk_bytes: u64,
}

/// Introspection of one partition of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionPartitionInfo {
    pub partition: u32,
    /// The engine that delivers this partition, on backends where several
    /// engines share the work (`None` on one machine).
    pub owner: Option<String>,
    pub committed: u64,
    pub end: u64,
    pub lag: u64,
    pub in_flight: u64,
    pub scheduled: u64,
}

/// Introspection of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub subscriber: String,
    pub topic: String,
    pub settings: SubscriptionSettings,
    pub partitions: Vec<SubscriptionPartitionInfo>,
    /// Messages not yet handled (sum of partitions' lag).
    pub lag: u64,
    pub in_flight: u64,
    /// Retries and replays waiting for their time.
    pub scheduled: u64,
    pub dead_letters: u64,
    pub expired: u64,
}

/// Totals since the store was opened.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStats {
    pub appended: u64,
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub expired: u64,
    pub group_commits: u64,
    /// Completed state checkpoints (changelog copied into `state`).
    pub state_checkpoints: u64,
    /// Bytes of state held in memory until the next checkpoint.
    pub state_dirty_bytes: u64,
    /// The writer's fsyncs.
    pub fsync: LatencyStats,
    /// The writer's batch commits into fjall: journal write and memtable
    /// inserts, including any wait for fjall's own locks (which it holds
    /// across file syncs while it seals memtables and registers tables).
    pub commit: LatencyStats,
    /// The writer's waits for memtable flushes before a commit (when the
    /// unflushed memtables were over their bound).
    pub write_stalls: LatencyStats,
    pub disk_bytes: u64,
    /// Bytes in memtables not yet flushed to tables.
    pub write_buffer_bytes: u64,
    /// Journal files not yet released by flushes (bounds replay on reopen).
    pub journal_files: usize,
    /// Memtables waiting for a flush.
    pub flushes_queued: usize,
}

/// A latency histogram's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyStats {
    pub count: u64,
    /// The sum of the observed latencies.
    pub seconds: f64,
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS`], plus
    /// overflow.
    pub buckets: Vec<u64>,
}

/// Why the store refuses work, if it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// A write failed: nothing is accepted until restart.
    pub failure: Option<String>,
    /// Appends are refused (disk limits); acknowledgements still work.
    pub full: Option<String>,
}
