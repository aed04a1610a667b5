//! State shared by the store's handles, its writer thread and its
//! maintenance thread: the fjall handles, the in-memory registry of topics
//! and subscriptions, health flags and counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fjall::{Database, Keyspace};

use super::command::{Command, Reply};
use super::config::StoreConfig;
use super::config::TopicSettings;
use super::error::{Error, Result};
use super::keys;
use super::state_table::StateTable;
use super::subscription_state::SubscriptionState;
use super::support::{lock, read};
use super::topic::{Topic, open_log_keyspace};
use super::{LATENCY_BUCKETS, LatencyStats};

/// The fixed keyspaces besides the partition logs.
pub(crate) struct Keyspaces {
    pub meta: Keyspace,
    pub offsets: Keyspace,
    pub acked: Keyspace,
    pub pending: Keyspace,
    pub dead: Keyspace,
    pub state: Keyspace,
    pub state_log: Keyspace,
}

/// Subscriptions by (subscriber, topic).
pub(crate) type SubscriptionMap = BTreeMap<(Arc<str>, Arc<str>), Arc<SubscriptionState>>;

pub(crate) struct StoreContext {
    pub db: Database,
    pub ks: Keyspaces,
    pub config: StoreConfig,
    pub topics: RwLock<BTreeMap<Arc<str>, Arc<Topic>>>,
    pub subscriptions: RwLock<SubscriptionMap>,
    pub commands: flume::Sender<Command>,
    /// Serializes topic creation (rare) and guards `next_topic_id`: the
    /// creating caller opens the partitions' keyspaces itself, off the
    /// writer thread (opening one syncs directories; a topic's worth on the
    /// writer stalled every producer and settlement for ~100 ms).
    creating: tokio::sync::Mutex<()>,
    next_topic_id: AtomicU32,
    /// Set once a write failed: the store then refuses writes until reopened.
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    /// Why appends are refused right now (disk limits), if they are.
    full: Mutex<Option<String>>,
    is_full: AtomicBool,
    closed: AtomicBool,
    pub stats: Stats,
    /// Committed state values not yet checkpointed, and a cache of the
    /// others; written by the writer after each commit.
    pub state_table: StateTable,
}

impl StoreContext {
    pub fn new(
        db: Database,
        ks: Keyspaces,
        config: StoreConfig,
        commands: flume::Sender<Command>,
        next_topic_id: u32,
    ) -> Self {
        StoreContext {
            db,
            ks,
            config,
            topics: RwLock::default(),
            subscriptions: RwLock::default(),
            commands,
            creating: tokio::sync::Mutex::new(()),
            next_topic_id: AtomicU32::new(next_topic_id),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            full: Mutex::new(None),
            is_full: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
            state_table: StateTable::default(),
        }
    }

    /// Errors if the store can take no writes at all.
    pub fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            let reason = lock(&self.failure).clone().unwrap_or_default();
            return Err(Error::Failed(reason));
        }
        Ok(())
    }

    /// Errors if appends are refused (disk limits), or no writes work.
    pub fn check_appendable(&self) -> Result<()> {
        self.check_writable()?;
        if self.is_full.load(Ordering::Acquire) {
            let reason = lock(&self.full).clone().unwrap_or_default();
            return Err(Error::StorageFull(reason));
        }
        Ok(())
    }

    pub fn fail(&self, reason: String) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            tracing::error!(%reason, "storage write failed; refusing writes until restart");
            *failure = Some(reason);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    pub fn set_full(&self, reason: Option<String>) {
        let mut full = lock(&self.full);
        match (&*full, &reason) {
            (None, Some(why)) => tracing::warn!(reason = %why, "refusing appends: storage is full"),
            (Some(_), None) => tracing::info!("accepting appends again: storage has room"),
            _ => {}
        }
        self.is_full.store(reason.is_some(), Ordering::Release);
        *full = reason;
    }

    pub fn full_reason(&self) -> Option<String> {
        lock(&self.full).clone()
    }

    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Sends the writer the command `command` builds around a reply
    /// channel, and waits for its answer.
    pub async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(command(reply)).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Queues a command for the writer, waiting while its queue is full.
    pub async fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send_async(command)
            .await
            .map_err(|_| Error::Closed)
    }

    /// The topic `name`, created with `settings` if it does not exist (an
    /// existing one must have as many partitions). Its keyspaces are opened
    /// here, on a blocking thread; the writer only registers the topic.
    pub async fn create_topic(
        self: &Arc<Self>,
        name: &str,
        settings: TopicSettings,
    ) -> Result<Arc<Topic>> {
        self.check_writable()?;
        let _creating = self.creating.lock().await;
        if let Some(existing) = self.topic(name) {
            if existing.settings.partitions != settings.partitions {
                return Err(Error::TopicConflict {
                    name: name.to_owned(),
                    existing: existing.settings.partitions,
                    requested: settings.partitions,
                });
            }
            return Ok(existing);
        }
        keys::validate_name("topic", name)?;
        settings.validate()?;
        let id = self.next_topic_id.fetch_add(1, Ordering::AcqRel);
        let context = Arc::clone(self);
        let partitions = tokio::task::spawn_blocking(move || {
            (0..settings.partitions)
                .map(|partition| open_log_keyspace(&context.db, id, partition))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|_| Error::Closed)??;
        self.ask(|reply| Command::CreateTopic {
            name: name.to_owned(),
            settings,
            id,
            partitions,
            reply,
        })
        .await
    }

    /// The topic `name`, created with the store's defaults if missing.
    pub async fn topic_or_create(self: &Arc<Self>, name: &str) -> Result<Arc<Topic>> {
        match self.topic(name) {
            Some(topic) => Ok(topic),
            None => self.create_topic(name, self.config.default_topic).await,
        }
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
    }

    pub fn subscription(&self, subscriber: &str, topic: &str) -> Option<Arc<SubscriptionState>> {
        let key = (Arc::from(subscriber), Arc::from(topic));
        read(&self.subscriptions).get(&key).cloned()
    }

    /// Subscriptions of one topic.
    pub fn subscriptions_of(&self, topic: &Topic) -> Vec<Arc<SubscriptionState>> {
        read(&self.subscriptions)
            .values()
            .filter(|sub| sub.topic.id == topic.id)
            .cloned()
            .collect()
    }
}

/// A latency histogram over [`LATENCY_BUCKETS`], written by one thread
/// (relaxed atomics: readers only need eventually consistent totals).
#[derive(Default)]
pub(crate) struct Latency {
    count: AtomicU64,
    micros: AtomicU64,
    /// Per bucket of `LATENCY_BUCKETS`, plus one for larger values.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

impl Latency {
    pub fn observe(&self, took: Duration) {
        Stats::add(&self.count, 1);
        Stats::add(&self.micros, took.as_micros() as u64);
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencyStats {
        LatencyStats {
            count: self.count.load(Ordering::Relaxed),
            seconds: self.micros.load(Ordering::Relaxed) as f64 / 1e6,
            buckets: self
                .buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// Monotonic counters, updated by the writer (relaxed atomics: readers
/// only need eventually consistent totals).
#[derive(Default)]
pub(crate) struct Stats {
    pub appended: AtomicU64,
    pub acked: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub expired: AtomicU64,
    pub group_commits: AtomicU64,
    /// Completed state checkpoints, and the last one's sequence number.
    pub state_checkpoints: AtomicU64,
    pub state_checkpoint: AtomicU64,
    /// The writer's fsyncs.
    pub fsync: Latency,
    /// The writer's batch commits into fjall (journal write, memtable
    /// inserts, and any wait for fjall's locks).
    pub commit: Latency,
    /// The writer's waits for memtable flushes (only those that happened).
    pub write_stalls: Latency,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}
