//! The durable log: topics, partitions, subscriptions, acknowledgements,
//! retries, dead letters and subscriber state, on fjall.
//!
//! This module owns every byte on disk and is the only one that touches
//! fjall. It knows nothing of HTTP, JSON or Wasm.
//!
//! # Data path
//!
//! `append` encodes messages on the caller's task and queues them for the
//! writer thread ([`writer`]). The writer folds everything queued into one
//! atomic fjall batch, commits it, fsyncs once (group commit) and answers
//! all callers: many producers share one fsync. Consumers `poll` a batch of
//! a subscription partition from any thread (reads never involve the
//! writer), process it and `settle` the outcomes, which the writer commits
//! the same way, together with the effects of the acknowledged messages.
//! Within one group, state writes are folded per key (a counter every
//! message increments costs one write per group) and go to disk as one
//! changelog record; the committed values live in memory
//! (`state_table.rs`) until a checkpoint copies them into `state`
//! (`checkpoint.rs`). Plugin reads and increments consult that table
//! before fjall.
//!
//! # On disk (one fjall database)
//!
//! ```text
//! keyspace           key (big-endian)                 value
//! log.<topic>.<p>    first offset u64                 run of messages (see codec.rs)
//! meta               "topic/" name                    TopicRecord (JSON)
//!                    "sub/" sub_id u32                SubscriptionRecord (JSON)
//! offsets            'T' topic_id u32, partition u32  first retained offset u64
//!                    'C' sub_id u32, partition u32    committed cursor u64
//!                    'N' sub_id u32                   counters (dead letters, expired)
//!                    'S'                              state checkpoint: last changelog seq in `state`
//! acked              sub_id, partition, offset        (empty) unordered acks above the cursor
//! pending            sub_id, partition, offset        attempts, due time, reason[, message copy]
//! dead               sub_id u32, seq u64              DeadRecord (origin, reason, message)
//! state              len u8, namespace, key           value (as of the checkpoint)
//! statelog           seq u64                          changelog record (see codec.rs)
//! ```
//!
//! # Why it stays fast after 100M messages
//!
//! Each partition has its own keyspace whose keys are its offsets, so
//! appends always land at the end: flushed tables never overlap, leveled
//! compaction only *moves* them (no rewriting), and a read at a cursor is a
//! single seek. A group commit's appends to one partition are one entry (a
//! run of up to 512 messages or 16 KiB, keyed by the first offset), so the per-entry
//! costs of fjall (journal entry, memtable insert, flush, iteration) are
//! paid per run, not per message. Nothing is deleted per message: retention raises a
//! partition's *floor* and drops whole tables below it (`drop_range`, file
//! deletions, no tombstones), so there is no tombstone pile for scans to
//! wade through. Per-message bookkeeping is only a cursor per batch; the
//! out-of-order `acked` set of unordered subscriptions is bounded by
//! `max_unacked` and uses weak tombstones that vanish in compaction.
//! Recovery reads only the small keyspaces and the last key of each
//! partition, so reopening costs the same with 10 or 10M messages queued.
//!
//! # Invariants
//!
//! - Offsets of a partition are dense and strictly increasing; only the
//!   writer assigns them. Timestamps never decrease within a partition.
//! - A message is delivered only once it is durable per the fsync policy
//!   (consumers read below the partition's durable end, published by the
//!   writer after the fsync). `append` answers only after that point.
//! - A message leaves the log only when every subscription of its topic has
//!   passed it, or a retention limit forces it, in which case the lagging
//!   subscriptions count it as expired. Topics without subscriptions keep
//!   messages until a retention limit removes them.
//! - Outcomes are durable before `settle` returns, atomically with the
//!   effects (publishes, state writes) of the acknowledged messages. An
//!   acknowledged message of an ordered subscription is never delivered
//!   again; unordered acknowledgements above the cursor are durable too.
//! - Attempt counts are durable; after `max_attempts` a message is moved to
//!   the dead-letter store with its reason, never dropped.
//! - After a failed write the store refuses writes until reopened: it never
//!   answers "ok" for something that might not be on disk.
//! - Committed state is `state` plus the changelog records after the
//!   checkpoint; recovery replays those records into `state` before
//!   anything reads it.

mod checkpoint;
mod codec;
mod config;
mod cursor;
mod error;
mod keys;
mod maintenance;
mod recovery;
mod shared;
mod state_table;
mod subscription;
mod topic;
mod types;
mod write_buffer;
mod writer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub use config::{
    Backoff, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PARTITIONS, DEFAULT_STATE_CHECKPOINT_BYTES, DeliveryMode,
    FsyncPolicy, MAX_ATTEMPTS_LIMIT, MAX_BACKGROUND_THREADS, MAX_PARTITIONS,
    MAX_STATE_CHECKPOINT_BYTES, MIN_STATE_CHECKPOINT_BYTES, Retention, StartPosition, StoreConfig,
    SubscriptionSettings, TopicSettings,
};
pub use cursor::LeaseTicket;
pub use error::{Error, Result};
pub use keys::{MAX_NAME_LEN, validate_name};
pub use shared::LATENCY_BUCKETS;
pub use subscription::{Delivery, Lease, MAX_BATCH, Poll, SettleReport, Settlement, Subscription};
pub use types::{Effects, Message, NewMessage, Outcome, Position, StateOp};

use shared::{Shared, lock, read};
use topic::Topic;
use writer::Command;

/// Most messages in one `append` call: bounds one group commit's memory.
pub const MAX_APPEND_BATCH: usize = 100_000;
/// Longest state key.
pub const MAX_STATE_KEY_BYTES: usize = 1024;
/// Capacity of the writer's queue: producers wait (back-pressure) beyond it.
const COMMAND_QUEUE: usize = 4096;

/// The durable log. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    lifecycle: Arc<Lifecycle>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.config.dir)
            .finish()
    }
}

/// The store's threads; shut down when the last `Store` clone goes.
struct Lifecycle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    maintenance: Mutex<Option<(flume::Sender<()>, JoinHandle<()>)>>,
}

impl Lifecycle {
    /// Stops both threads; the writer makes everything durable first.
    fn shutdown(&self) {
        self.shared.mark_closed();
        if let Some((stop, handle)) = lock(&self.maintenance).take() {
            drop(stop);
            let _ = handle.join();
        }
        if let Some(handle) = lock(&self.writer).take() {
            let _ = self.shared.commands.send(Command::Shutdown);
            let _ = handle.join();
        }
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionPartitionInfo {
    pub partition: u32,
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

impl Store {
    /// Opens (or creates) the store in `config.dir`, recovering everything
    /// that was durable. Blocking; fails with [`Error::Locked`] if another
    /// process has the directory open.
    pub fn open(config: StoreConfig) -> Result<Store> {
        let recovered = recovery::open(&config)?;
        let (commands, queue) = flume::bounded(COMMAND_QUEUE);
        let shared = Arc::new(Shared::new(recovered.db, recovered.ks, config, commands));
        *shared::write(&shared.topics) = recovered.topics;
        {
            let mut subscriptions = shared::write(&shared.subscriptions);
            for sub in recovered.subscriptions {
                let key = (Arc::clone(&sub.subscriber), Arc::clone(&sub.topic.name));
                subscriptions.insert(key, sub);
            }
        }
        let writer = writer::Writer::new(
            Arc::clone(&shared),
            queue,
            recovered.next_topic_id,
            recovered.next_sub_id,
            recovered.next_state_seq,
        );
        let writer = std::thread::Builder::new()
            .name("courier-writer".into())
            .spawn(move || writer.run())?;
        let (stop, stopped) = flume::bounded(1);
        let maintenance_shared = Arc::clone(&shared);
        let maintenance = std::thread::Builder::new()
            .name("courier-maintenance".into())
            .spawn(move || maintenance::run(maintenance_shared, stopped))?;
        let lifecycle = Lifecycle {
            shared: Arc::clone(&shared),
            writer: Mutex::new(Some(writer)),
            maintenance: Mutex::new(Some((stop, maintenance))),
        };
        Ok(Store {
            shared,
            lifecycle: Arc::new(lifecycle),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Creates a topic, or returns the existing one if it has the same
    /// number of partitions.
    pub async fn create_topic(&self, name: &str, settings: TopicSettings) -> Result<TopicInfo> {
        validate_name("topic", name)?;
        settings.validate()?;
        let topic = self.create_topic_inner(name, settings).await?;
        Ok(self.describe_topic(&topic))
    }

    async fn create_topic_inner(&self, name: &str, settings: TopicSettings) -> Result<Arc<Topic>> {
        self.shared.check_writable()?;
        let (reply, answer) = oneshot::channel();
        let command = Command::CreateTopic {
            name: name.to_owned(),
            settings,
            reply,
        };
        self.shared.send(command).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>> {
        match self.shared.topic(name) {
            Some(topic) => Ok(topic),
            None => {
                validate_name("topic", name)?;
                let settings = self.shared.config.default_topic;
                self.create_topic_inner(name, settings).await
            }
        }
    }

    /// Appends messages to a topic (created with defaults if missing) and
    /// returns their positions once they are durable. All or nothing.
    pub async fn append(&self, topic: &str, messages: &[NewMessage]) -> Result<Vec<Position>> {
        self.shared.check_appendable()?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if messages.len() > MAX_APPEND_BATCH {
            return Err(Error::InvalidArgument(format!(
                "{} messages in one append exceed the limit of {MAX_APPEND_BATCH}",
                messages.len()
            )));
        }
        // Check sizes first: a refused append must not create its topic.
        let limit = self.shared.config.max_message_bytes;
        let mut total = 0;
        for message in messages {
            let size = codec::encoded_len(message);
            if size > limit {
                return Err(Error::MessageTooLarge { size, limit });
            }
            total += size;
        }
        let topic = self.topic_or_create(topic).await?;
        let mut encoded = Vec::with_capacity(total);
        let mut records = Vec::with_capacity(messages.len());
        for message in messages {
            let partition = topic.partition_for(message.key.as_deref());
            let start = encoded.len();
            codec::write_message(message, &mut encoded)?;
            records.push((partition, start..encoded.len()));
        }
        let (reply, answer) = oneshot::channel();
        self.shared
            .send(Command::Append {
                topic,
                encoded,
                records,
                reply,
            })
            .await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Creates a subscription (starting per `settings.start`) or updates the
    /// settings of an existing one, whose cursors are kept.
    pub async fn subscribe(
        &self,
        subscriber: &str,
        topic: &str,
        settings: SubscriptionSettings,
    ) -> Result<Subscription> {
        validate_name("subscriber", subscriber)?;
        settings.validate()?;
        self.shared.check_writable()?;
        let topic = self.topic_or_create(topic).await?;
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe {
            subscriber: subscriber.to_owned(),
            topic,
            settings,
            reply,
        };
        self.shared.send(command).await?;
        let inner = answer.await.map_err(|_| Error::Closed)??;
        Ok(self.handle(inner))
    }

    fn handle(&self, inner: Arc<subscription::SubInner>) -> Subscription {
        Subscription {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }

    /// An existing subscription.
    pub fn subscription(&self, subscriber: &str, topic: &str) -> Result<Subscription> {
        self.find_subscription(subscriber, topic)
            .map(|inner| self.handle(inner))
    }

    fn find_subscription(
        &self,
        subscriber: &str,
        topic: &str,
    ) -> Result<Arc<subscription::SubInner>> {
        self.shared
            .subscription(subscriber, topic)
            .ok_or_else(|| Error::UnknownSubscription {
                subscriber: subscriber.to_owned(),
                topic: topic.to_owned(),
            })
    }

    /// Removes a subscription with its cursors, retries and dead letters.
    /// The subscriber's state namespace is kept.
    pub async fn unsubscribe(&self, subscriber: &str, topic: &str) -> Result<()> {
        let sub = self.find_subscription(subscriber, topic)?;
        let (reply, answer) = oneshot::channel();
        self.shared
            .send(Command::Unsubscribe { sub, reply })
            .await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Moves a subscription's cursors. Scheduled retries are forgotten,
    /// batches in flight settle as no-ops.
    pub async fn seek(&self, subscriber: &str, topic: &str, target: SeekTarget) -> Result<()> {
        let sub = self.find_subscription(subscriber, topic)?;
        let reader = sub.clone();
        let targets = tokio::task::spawn_blocking(move || seek_targets(&reader.topic, target))
            .await
            .map_err(|_| Error::Closed)??;
        let (reply, answer) = oneshot::channel();
        let command = Command::Seek {
            sub,
            targets,
            reply,
        };
        self.shared.send(command).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Lists up to `limit` dead letters of a subscriber (all its topics, or
    /// one), oldest first. Blocking.
    pub fn dead_letters(
        &self,
        subscriber: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        for sub in self.subscriptions_of(subscriber, topic)? {
            for guard in self
                .shared
                .ks
                .dead
                .prefix(keys::subscription_prefix(sub.id))
            {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (key, value) = guard.into_inner()?;
                let (_, id) = keys::decode_dead_key(&key)?;
                let record = codec::decode_dead(&value)?;
                let message = if record.message.is_empty() {
                    Message {
                        topic: Arc::clone(&sub.topic.name),
                        partition: record.partition,
                        offset: record.offset,
                        timestamp_ms: 0,
                        key: None,
                        headers: Vec::new(),
                        payload: Vec::new(),
                    }
                } else {
                    let topic = &sub.topic.name;
                    codec::decode_message(topic, record.partition, record.offset, &record.message)?
                };
                out.push(DeadLetter {
                    id,
                    subscriber: subscriber.to_owned(),
                    attempts: record.attempts,
                    reason: record.reason,
                    failed_at_ms: record.failed_at_ms,
                    message,
                });
            }
        }
        Ok(out)
    }

    fn subscriptions_of(
        &self,
        subscriber: &str,
        topic: Option<&str>,
    ) -> Result<Vec<Arc<subscription::SubInner>>> {
        if let Some(topic) = topic {
            return Ok(vec![self.find_subscription(subscriber, topic)?]);
        }
        let subs: Vec<_> = read(&self.shared.subscriptions)
            .values()
            .filter(|sub| &*sub.subscriber == subscriber)
            .cloned()
            .collect();
        if subs.is_empty() {
            return Err(Error::UnknownSubscription {
                subscriber: subscriber.to_owned(),
                topic: "*".to_owned(),
            });
        }
        Ok(subs)
    }

    /// Re-enqueues a subscriber's dead letters for immediate redelivery to
    /// that subscriber only, with fresh attempt counts. Returns how many.
    pub async fn replay_dead_letters(&self, subscriber: &str, topic: Option<&str>) -> Result<u64> {
        let mut total = 0;
        for sub in self.subscriptions_of(subscriber, topic)? {
            loop {
                let (reply, answer) = oneshot::channel();
                let command = Command::ReplayDead {
                    sub: Arc::clone(&sub),
                    reply,
                };
                self.shared.send(command).await?;
                let count = answer.await.map_err(|_| Error::Closed)??;
                total += count;
                if count < writer::MAX_DEAD_PER_COMMAND as u64 {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Deletes a subscriber's dead letters. Returns how many.
    pub async fn purge_dead_letters(&self, subscriber: &str, topic: Option<&str>) -> Result<u64> {
        let mut total = 0;
        for sub in self.subscriptions_of(subscriber, topic)? {
            loop {
                let (reply, answer) = oneshot::channel();
                let command = Command::PurgeDead {
                    sub: Arc::clone(&sub),
                    reply,
                };
                self.shared.send(command).await?;
                let count = answer.await.map_err(|_| Error::Closed)??;
                total += count;
                if count < writer::MAX_DEAD_PER_COMMAND as u64 {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Reads up to `max` durable messages of a partition from `from`
    /// (inspection and tests; consumers use subscriptions). Blocking.
    pub fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<Message>> {
        let topic = self
            .shared
            .topic(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
        let log = topic.partition(partition).ok_or(Error::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partition_count(),
        })?;
        let from = from.max(log.start());
        let end = log
            .durable_end()
            .min(from.saturating_add(max.try_into().unwrap_or(u64::MAX)));
        let mut out = Vec::new();
        log.scan(from, end, |offset, encoded| {
            out.push(codec::decode_message(
                &topic.name,
                partition,
                offset,
                encoded,
            )?);
            Ok(())
        })?;
        Ok(out)
    }

    /// A subscriber's committed state value. Blocking.
    pub fn state_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.state_read(namespace, key, |value| value.map(<[u8]>::to_vec))
    }

    /// `f` of a subscriber's committed state value (`None`: absent), read
    /// in place where it can be (a counter is parsed, not copied). Blocking;
    /// `f` may run under a lock of the state table, so keep it short.
    pub fn state_read<R>(
        &self,
        namespace: &str,
        key: &str,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        thread_local! {
            // Plugins read state on nearly every message: the full key is
            // built in a buffer of the calling thread, not a new one each time.
            static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        KEY.with_borrow_mut(|full| {
            keys::state_key_into(namespace, key, full);
            match self.shared.state_table.read(full, f) {
                Ok(result) => Ok(result),
                Err(f) => Ok(f(self.shared.ks.state.get(&full[..])?.as_deref())),
            }
        })
    }

    /// Up to `limit` committed state entries of a namespace whose keys
    /// start with `prefix`, in key order: `state` (as of the checkpoint)
    /// merged with the values written since. Blocking.
    pub fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let skip = keys::state_prefix(namespace).len();
        let full_prefix = keys::state_key(namespace, prefix);
        let mut newer: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .shared
            .state_table
            .dirty_with_prefix(&full_prefix)
            .into_iter()
            .collect();
        let mut merged = Vec::new();
        for guard in self.shared.ks.state.prefix(&full_prefix) {
            if merged.len() >= limit {
                break;
            }
            let (key, value) = guard.into_inner()?;
            // Newer values of smaller keys come first.
            while let Some(entry) = newer.first_entry()
                && entry.key().as_slice() < &*key
            {
                let (key, value) = entry.remove_entry();
                if let Some(value) = value {
                    merged.push((key, value));
                }
            }
            match newer.remove(&*key) {
                Some(Some(value)) => merged.push((key.to_vec(), value)),
                Some(None) => {}
                None => merged.push((key.to_vec(), value.to_vec())),
            }
        }
        merged.extend(
            newer
                .into_iter()
                .filter_map(|(key, value)| value.map(|value| (key, value))),
        );
        merged.truncate(limit);
        Ok(merged
            .into_iter()
            .map(|(key, value)| (String::from_utf8_lossy(&key[skip..]).into_owned(), value))
            .collect())
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let topics: Vec<Arc<Topic>> = read(&self.shared.topics).values().cloned().collect();
        topics
            .iter()
            .map(|topic| self.describe_topic(topic))
            .collect()
    }

    pub fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        let topic = self
            .shared
            .topic(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
        Ok(self.describe_topic(&topic))
    }

    fn describe_topic(&self, topic: &Topic) -> TopicInfo {
        let partitions: Vec<PartitionInfo> = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(index, log)| PartitionInfo {
                partition: index as u32,
                start: log.start(),
                end: log.durable_end(),
            })
            .collect();
        TopicInfo {
            name: topic.name.to_string(),
            settings: topic.settings,
            messages: partitions
                .iter()
                .map(|p| p.end.saturating_sub(p.start))
                .sum(),
            partitions,
            disk_bytes: topic
                .partitions
                .iter()
                .map(|log| log.keyspace.disk_space())
                .sum(),
        }
    }

    /// Every subscription, by subscriber then topic.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let subs: Vec<_> = read(&self.shared.subscriptions).values().cloned().collect();
        subs.iter().map(|sub| describe_subscription(sub)).collect()
    }

    pub fn subscription_info(&self, subscriber: &str, topic: &str) -> Result<SubscriptionInfo> {
        let sub = self.find_subscription(subscriber, topic)?;
        Ok(describe_subscription(&sub))
    }

    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.shared.stats;
        StoreStats {
            appended: stats.appended.load(Relaxed),
            acked: stats.acked.load(Relaxed),
            retried: stats.retried.load(Relaxed),
            dead_lettered: stats.dead_lettered.load(Relaxed),
            expired: stats.expired.load(Relaxed),
            group_commits: stats.group_commits.load(Relaxed),
            state_checkpoints: stats.state_checkpoints.load(Relaxed),
            state_dirty_bytes: self.shared.state_table.dirty_bytes() as u64,
            fsync: stats.fsync.snapshot(),
            commit: stats.commit.snapshot(),
            write_stalls: stats.write_stalls.snapshot(),
            disk_bytes: self.shared.db.disk_space().unwrap_or(0),
            write_buffer_bytes: self.shared.db.write_buffer_size(),
            journal_files: self.shared.db.journal_count(),
            flushes_queued: self.shared.db.outstanding_flushes(),
        }
    }

    pub fn health(&self) -> Health {
        Health {
            failure: self.shared.failure(),
            full: self.shared.full_reason(),
        }
    }

    /// Makes everything written so far durable, whatever the fsync policy.
    pub async fn sync(&self) -> Result<()> {
        self.shared.check_writable()?;
        let (reply, answer) = oneshot::channel();
        self.shared.send(Command::Sync { reply }).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Runs one retention and disk-check pass now (normally periodic).
    pub async fn run_maintenance(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            maintenance::check_disk(&shared);
            maintenance::apply_retention(&shared, &mut Default::default())
        })
        .await
        .map_err(|_| Error::Closed)?
    }

    /// Stops accepting work, makes everything durable and stops the threads.
    /// Other clones of this store fail with [`Error::Closed`] afterwards.
    /// The data directory is released once every `Store` and `Subscription`
    /// handle is dropped.
    pub async fn close(&self) {
        let lifecycle = Arc::clone(&self.lifecycle);
        let _ = tokio::task::spawn_blocking(move || lifecycle.shutdown()).await;
    }
}

fn describe_subscription(sub: &subscription::SubInner) -> SubscriptionInfo {
    let partitions: Vec<SubscriptionPartitionInfo> = sub
        .parts
        .iter()
        .zip(&sub.topic.partitions)
        .enumerate()
        .map(|(index, (part, log))| {
            let state = lock(part);
            let end = log.durable_end();
            SubscriptionPartitionInfo {
                partition: index as u32,
                committed: state.committed(),
                end,
                lag: end.saturating_sub(state.committed()),
                // Batches being committed count too: "drained" means their
                // effects are readable.
                in_flight: state.in_flight()
                    + sub.settling[index].load(std::sync::atomic::Ordering::Acquire),
                scheduled: state.scheduled(),
            }
        })
        .collect();
    let counters = *lock(&sub.counters);
    SubscriptionInfo {
        subscriber: sub.subscriber.to_string(),
        topic: sub.topic.name.to_string(),
        settings: sub.settings(),
        lag: partitions.iter().map(|p| p.lag).sum(),
        in_flight: partitions.iter().map(|p| p.in_flight).sum(),
        scheduled: partitions.iter().map(|p| p.scheduled).sum(),
        partitions,
        dead_letters: counters.dead_letters,
        expired: counters.expired,
    }
}

/// Per partition, where a seek lands (None = leave it), clamped to the
/// retained range. Blocking (timestamp seeks read the log).
fn seek_targets(topic: &Topic, target: SeekTarget) -> Result<Vec<Option<u64>>> {
    if let SeekTarget::Offset {
        partition: Some(partition),
        ..
    } = target
        && topic.partition(partition).is_none()
    {
        return Err(Error::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partition_count(),
        });
    }
    topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, log)| {
            let (start, end) = (log.start(), log.durable_end());
            let wanted = match target {
                SeekTarget::Earliest => start,
                SeekTarget::Latest => end,
                SeekTarget::Offset { partition, offset } => match partition {
                    Some(only) if only as usize != index => return Ok(None),
                    _ => offset,
                },
                SeekTarget::Timestamp(ms) => maintenance::first_at_or_after(log, start, end, ms)?,
            };
            Ok(Some(wanted.clamp(start, end)))
        })
        .collect()
}
