//! The writer thread: the only code that writes to fjall.
//!
//! Every mutation (appends, settlements with their effects, subscription
//! and topic changes, retention) is a [`Command`] on one bounded queue. The
//! writer takes whatever is queued (up to a bound), applies it all to one
//! atomic fjall batch, commits, fsyncs once (group commit), publishes the
//! new durable ends of the touched partitions and only then answers every
//! caller. One thread owning all writes means offsets need no locks and
//! one fsync is shared by every producer and consumer waiting at that
//! moment.
//!
//! It must never block on anything but fjall: no async, no network.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use fjall::{KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};

use super::checkpoint::Checkpointer;
use super::codec::{self, Counters, DeadRecord};
use super::command::{Command, EncodedSettlement, Reply};
use super::config::{FsyncPolicy, SubscriptionSettings, TopicSettings};
use super::context::{Stats, StoreContext};
use super::cursor::{CursorLease, CursorWrite, PartitionCursor};
use super::error::{Error, Result};
use super::keys;
use super::subscription_state::{SubscriptionRecord, SubscriptionState};
use super::support::{lock, now_ms, write};
use super::topic::{PartitionLog, Topic, TopicRecord};
use super::types::{Outcome, Position, StateOp};
use super::write_buffer;
use courier_core::SettleReport;

/// Most commands folded into one group commit: bounds the batch's memory
/// and the latency of the first command in it.
const MAX_GROUP_COMMANDS: usize = 1024;
/// Most dead letters one replay or purge command touches, so one huge
/// dead-letter store cannot stall every other writer for long.
pub(crate) const MAX_DEAD_PER_COMMAND: usize = 10_000;
/// Memtable size of every keyspace: small enough that dozens of partitions
/// stay within the memory budget, large enough for sequential flushes.
pub(crate) const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;
/// Most messages, and bytes, in one log entry (a run). A group's appends to
/// a partition become one entry instead of one per message (one journal
/// entry, one memtable insert, one item to flush and to iterate), up to
/// these bounds: a read at an offset decodes at most one run's worth of
/// messages before it. 16 KiB (~50 orders) keeps nearly all of the gain;
/// 64 KiB runs cost ~20 MB more peak RSS in a 1M-order bench.
const MAX_RUN_MESSAGES: u32 = 512;
const MAX_RUN_BYTES: usize = 16 * 1024;

/// Deferred answer to a command, sent once the group's fate is known.
type DeferredReply = Box<dyn FnOnce(Option<&Error>) + Send>;

fn done<T: Send + 'static>(reply: Reply<T>, value: T) -> DeferredReply {
    Box::new(move |failure| {
        let result = match failure {
            None => Ok(value),
            Some(error) => Err(Error::Failed(error.to_string())),
        };
        // The caller may have given up waiting; that is fine.
        let _ = reply.send(result);
    })
}

/// One group commit in the making.
struct CommitGroup {
    batch: OwnedWriteBatch,
    /// State values written in this group (None = deleted): increments
    /// read them, and only the last value of each key goes into the
    /// group's changelog record (at commit), so a hot counter costs one
    /// write per group, not one per message.
    overlay: foldhash::HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The partitions appended to, each with its run of messages not yet
    /// in the batch: their durable ends move after the commit.
    runs: Vec<Run>,
    /// (topic id, partition) -> index in `runs`.
    run_of: foldhash::HashMap<(u32, u32), usize>,
    /// Subscriptions whose waiters must be woken after the commit.
    woken: Vec<Arc<SubscriptionState>>,
    /// Partitions whose lease ended in this group (settled batches): their
    /// waiters are woken after the commit.
    leases_ended: Vec<(Arc<SubscriptionState>, u32)>,
    /// fsync with this group whatever the policy says.
    force_sync: bool,
    done: Vec<DeferredReply>,
}

/// A group's appends to one partition not yet in its batch.
struct Run {
    topic: Arc<Topic>,
    partition: u32,
    /// Offset of the run's first message.
    first: u64,
    messages: codec::RunBuilder,
}

impl Run {
    /// Puts the run (if any) into the batch as one entry; the next append
    /// starts a new one.
    fn close(&mut self, batch: &mut OwnedWriteBatch) {
        if self.messages.count() == 0 {
            return;
        }
        let messages = std::mem::take(&mut self.messages);
        // `append_one` opened this run by indexing this very partition.
        let log = &self.topic.partitions[self.partition as usize];
        batch.insert(
            &log.keyspace,
            keys::message_key(self.first),
            messages.finish(),
        );
    }
}

pub(crate) struct Writer {
    shared: Arc<StoreContext>,
    commands: flume::Receiver<Command>,
    next_topic_id: u32,
    next_sub_id: u32,
    checkpoints: Checkpointer,
    last_sync: Instant,
    unsynced: bool,
}

impl Writer {
    pub fn new(
        shared: Arc<StoreContext>,
        commands: flume::Receiver<Command>,
        next_topic_id: u32,
        next_sub_id: u32,
        next_state_seq: u64,
    ) -> Self {
        let threshold = shared.config.state_checkpoint_bytes;
        Writer {
            shared,
            commands,
            next_topic_id,
            next_sub_id,
            checkpoints: Checkpointer::new(next_state_seq, threshold),
            last_sync: Instant::now(),
            unsynced: false,
        }
    }

    /// Runs until a `Shutdown` command (or every sender is gone), then
    /// makes everything durable.
    pub fn run(mut self) {
        while let Some(first) = self.next_command() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP_COMMANDS {
                match self.commands.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            let shutdown = group.iter().any(|c| matches!(c, Command::Shutdown));
            self.commit_group(group);
            if shutdown {
                break;
            }
        }
        if self.shared.failure().is_none()
            && let Err(error) = self.shared.db.persist(PersistMode::SyncAll)
        {
            self.shared.fail(format!("final fsync failed: {error}"));
        }
    }

    /// Waits for the next command; under the interval policy, wakes up to
    /// fsync when the interval has passed.
    fn next_command(&mut self) -> Option<Command> {
        loop {
            let interval = match self.shared.config.fsync {
                FsyncPolicy::Interval(interval) if self.unsynced => interval,
                _ => return self.commands.recv().ok(),
            };
            let wait = interval.saturating_sub(self.last_sync.elapsed());
            match self.commands.recv_timeout(wait) {
                Ok(command) => return Some(command),
                Err(flume::RecvTimeoutError::Timeout) => {
                    if let Err(error) = self.fsync() {
                        self.shared.fail(format!("fsync failed: {error}"));
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn fsync(&mut self) -> Result<()> {
        let started = Instant::now();
        self.shared.db.persist(PersistMode::SyncData)?;
        self.shared.stats.fsync.observe(started.elapsed());
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    fn commit_group(&mut self, commands: Vec<Command>) {
        let mut group = CommitGroup {
            batch: self.shared.db.batch(),
            overlay: Default::default(),
            runs: Vec::new(),
            run_of: Default::default(),
            woken: Vec::new(),
            leases_ended: Vec::new(),
            force_sync: false,
            done: Vec::with_capacity(commands.len()),
        };
        let mut failure = self.shared.check_writable().err();
        for command in commands {
            if let Some(error) = &failure {
                refuse(command, error);
                continue;
            }
            if let Err(error) = self.apply(command, &mut group) {
                // A read failed halfway through a command: the batch may hold
                // part of it, so nothing of this group may commit.
                self.shared
                    .fail(format!("storage read failed while writing: {error}"));
                failure = Some(error);
            }
        }
        if let Some(error) = failure {
            finish(group.done, Some(&error));
            return;
        }
        for run in &mut group.runs {
            run.close(&mut group.batch);
        }
        let writes = group.overlay.drain().collect();
        let staged = self
            .checkpoints
            .stage(&self.shared, &mut group.batch, writes);
        let outcome = self.commit(group.batch, group.force_sync);
        match outcome {
            Ok(()) => {
                // Committed: now (and only now) readers may see the values.
                self.checkpoints.committed(&self.shared, staged);
                Stats::add(&self.shared.stats.group_commits, 1);
                for Run {
                    topic, partition, ..
                } in &group.runs
                {
                    if let Some(log) = topic.partition(*partition) {
                        let next = log.next.load(Ordering::Acquire);
                        log.durable.send_if_modified(|end| {
                            let moved = *end != next;
                            *end = next;
                            moved
                        });
                    }
                }
                for sub in &group.woken {
                    sub.changed.bump();
                }
                for (sub, partition) in &group.leases_ended {
                    if let Some(ended) = sub.lease_ended.get(*partition as usize) {
                        ended.bump();
                    }
                }
                finish(group.done, None);
            }
            Err(error) => {
                self.shared.fail(format!("commit failed: {error}"));
                finish(group.done, Some(&error));
            }
        }
    }

    fn commit(&mut self, batch: OwnedWriteBatch, force_sync: bool) -> Result<()> {
        if !batch.is_empty() {
            write_buffer::throttle(&self.shared);
            let started = Instant::now();
            batch.commit()?;
            self.shared.stats.commit.observe(started.elapsed());
            self.unsynced = true;
        }
        let due = force_sync
            || match self.shared.config.fsync {
                FsyncPolicy::Always => self.unsynced,
                FsyncPolicy::Interval(interval) => {
                    self.unsynced && self.last_sync.elapsed() >= interval
                }
                FsyncPolicy::Never => false,
            };
        if due {
            self.fsync()?;
        }
        Ok(())
    }

    /// Applies one command to the group. Validation errors are answered
    /// right away and write nothing; an `Err` means a read failed midway.
    fn apply(&mut self, command: Command, group: &mut CommitGroup) -> Result<()> {
        match command {
            Command::CreateTopic {
                name,
                settings,
                reply,
            } => match self.create_topic(&name, settings, group) {
                Ok(topic) => group.done.push(done(reply, topic)),
                Err(error) => answer(reply, Err(error)),
            },
            Command::Append {
                topic,
                encoded,
                records,
                reply,
            } => {
                let positions = self.append(&topic, &encoded, records, group);
                group.done.push(done(reply, positions));
            }
            Command::Subscribe {
                subscriber,
                topic,
                settings,
                reply,
            } => {
                let sub = self.subscribe(&subscriber, topic, settings, group)?;
                group.done.push(done(reply, sub));
            }
            Command::Unsubscribe { sub, reply } => {
                self.unsubscribe(&sub, group)?;
                group.done.push(done(reply, ()));
            }
            Command::Settle {
                sub,
                lease,
                results,
                reply,
            } => match self.settle(&sub, &lease, results, group)? {
                Ok(report) => group.done.push(done(reply, report)),
                Err(error) => answer(reply, Err(error)),
            },
            Command::Seek {
                sub,
                targets,
                reply,
            } => {
                self.seek(&sub, &targets, group)?;
                group.done.push(done(reply, ()));
            }
            Command::ReplayDead { sub, reply } => {
                let count = self.replay_dead(&sub, group)?;
                group.done.push(done(reply, count));
            }
            Command::PurgeDead { sub, reply } => {
                let count = self.purge_dead(&sub, group)?;
                group.done.push(done(reply, count));
            }
            Command::Truncate {
                topic,
                partition,
                floor,
                reply,
            } => {
                self.truncate(&topic, partition, floor, group)?;
                group.done.push(done(reply, ()));
            }
            Command::Sync { reply } => {
                // fsync with this group whatever the policy says.
                group.force_sync = true;
                group.done.push(done(reply, ()));
            }
            Command::Shutdown => {}
        }
        Ok(())
    }

    fn create_topic(
        &mut self,
        name: &str,
        settings: TopicSettings,
        group: &mut CommitGroup,
    ) -> Result<Arc<Topic>> {
        if let Some(existing) = self.shared.topic(name) {
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
        let id = self.next_topic_id;
        let partitions = (0..settings.partitions)
            .map(|partition| {
                let keyspace = open_log_keyspace(&self.shared.db, id, partition)?;
                Ok(PartitionLog::new(keyspace, 0, 0, 0))
            })
            .collect::<Result<Vec<_>>>()?;
        self.next_topic_id += 1;
        let record = TopicRecord::new(id, &settings, now_ms());
        let json =
            serde_json::to_vec(&record).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        group
            .batch
            .insert(&self.shared.ks.meta, keys::topic_record_key(name), json);
        let topic = Arc::new(Topic::new(id, Arc::from(name), settings, partitions));
        write(&self.shared.topics).insert(Arc::clone(&topic.name), Arc::clone(&topic));
        tracing::info!(
            topic = name,
            partitions = settings.partitions,
            "created topic"
        );
        Ok(topic)
    }

    fn append(
        &mut self,
        topic: &Arc<Topic>,
        encoded: &[u8],
        records: Vec<(u32, std::ops::Range<usize>)>,
        group: &mut CommitGroup,
    ) -> Vec<Position> {
        let now = now_ms();
        let mut positions = Vec::with_capacity(records.len());
        for (partition, at) in records {
            positions.push(self.append_one(topic, partition, &encoded[at], now, group));
        }
        Stats::add(&self.shared.stats.appended, positions.len() as u64);
        positions
    }

    fn append_one(
        &mut self,
        topic: &Arc<Topic>,
        partition: u32,
        encoded: &[u8],
        now: u64,
        group: &mut CommitGroup,
    ) -> Position {
        // Callers validated the partition against this very topic.
        let log = &topic.partitions[partition as usize];
        let offset = log.next.fetch_add(1, Ordering::AcqRel);
        let timestamp = now.max(log.last_timestamp_ms.load(Ordering::Relaxed));
        log.last_timestamp_ms.store(timestamp, Ordering::Relaxed);
        let CommitGroup {
            runs,
            run_of,
            batch,
            ..
        } = group;
        let index = *run_of.entry((topic.id, partition)).or_insert_with(|| {
            runs.push(Run {
                topic: Arc::clone(topic),
                partition,
                first: offset,
                messages: codec::RunBuilder::default(),
            });
            runs.len() - 1
        });
        let run = &mut runs[index];
        let full = run.messages.count() >= MAX_RUN_MESSAGES
            || run.messages.len() + encoded.len() > MAX_RUN_BYTES;
        if full {
            run.close(batch);
        }
        if run.messages.count() == 0 {
            run.first = offset;
        }
        run.messages.push(encoded, timestamp);
        Position { partition, offset }
    }

    fn subscribe(
        &mut self,
        subscriber: &str,
        topic: Arc<Topic>,
        settings: SubscriptionSettings,
        group: &mut CommitGroup,
    ) -> Result<Arc<SubscriptionState>> {
        if let Some(existing) = self.shared.subscription(subscriber, &topic.name) {
            if existing.settings() != settings {
                *write(&existing.settings) = settings;
                let record =
                    SubscriptionRecord::new(existing.id, subscriber, &topic.name, &settings);
                self.put_subscription_record(&record, group)?;
                group.woken.push(Arc::clone(&existing));
            }
            return Ok(existing);
        }
        let id = self.next_sub_id;
        self.next_sub_id += 1;
        let record = SubscriptionRecord::new(id, subscriber, &topic.name, &settings);
        self.put_subscription_record(&record, group)?;
        let mut parts = Vec::with_capacity(topic.partitions.len());
        for (partition, log) in topic.partitions.iter().enumerate() {
            let start = match settings.start {
                super::config::StartPosition::Earliest => log.start(),
                super::config::StartPosition::Latest => log.next.load(Ordering::Acquire),
            };
            let key = keys::cursor_key(id, partition as u32);
            group
                .batch
                .insert(&self.shared.ks.offsets, key, codec::encode_u64(start));
            parts.push(std::sync::Mutex::new(PartitionCursor::recover(
                start,
                [],
                [],
            )));
        }
        let sub = Arc::new(SubscriptionState::new(
            &record,
            &topic,
            parts,
            Counters::default(),
            0,
        ));
        let key = (Arc::clone(&sub.subscriber), Arc::clone(&topic.name));
        write(&self.shared.subscriptions).insert(key, Arc::clone(&sub));
        tracing::info!(subscriber, topic = %topic.name, "created subscription");
        Ok(sub)
    }

    fn put_subscription_record(
        &self,
        record: &SubscriptionRecord,
        group: &mut CommitGroup,
    ) -> Result<()> {
        let json = serde_json::to_vec(record).map_err(std::io::Error::from)?;
        let key = keys::subscription_record_key(record.id);
        group.batch.insert(&self.shared.ks.meta, key, json);
        Ok(())
    }

    fn unsubscribe(&mut self, sub: &Arc<SubscriptionState>, group: &mut CommitGroup) -> Result<()> {
        if sub.removed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let ks = &self.shared.ks;
        group
            .batch
            .remove(&ks.meta, keys::subscription_record_key(sub.id));
        group.batch.remove(&ks.offsets, keys::counters_key(sub.id));
        for partition in 0..sub.topic.partition_count() {
            group
                .batch
                .remove(&ks.offsets, keys::cursor_key(sub.id, partition));
        }
        let prefix = keys::subscription_prefix(sub.id);
        for keyspace in [&ks.acked, &ks.pending, &ks.dead] {
            for guard in keyspace.prefix(prefix) {
                let key = guard.key()?;
                group.batch.remove(keyspace, key);
            }
        }
        let key = (Arc::clone(&sub.subscriber), Arc::clone(&sub.topic.name));
        write(&self.shared.subscriptions).remove(&key);
        group.woken.push(Arc::clone(sub));
        tracing::info!(subscriber = %sub.subscriber, topic = %sub.topic.name, "removed subscription");
        Ok(())
    }

    /// Settles a batch. The outer `Result` is a read failure (fatal for the
    /// group); the inner one is this command's own answer.
    fn settle(
        &mut self,
        sub: &Arc<SubscriptionState>,
        ticket: &CursorLease,
        results: Vec<EncodedSettlement>,
        group: &mut CommitGroup,
    ) -> Result<Result<SettleReport>> {
        if sub.removed.load(Ordering::Acquire) {
            return Ok(Err(Error::UnknownSubscription {
                subscriber: sub.subscriber.to_string(),
                topic: sub.topic.name.to_string(),
            }));
        }
        let Some(part) = sub.parts.get(ticket.partition as usize) else {
            return Ok(Err(Error::InvalidArgument(
                "lease of an unknown partition".into(),
            )));
        };
        let settings = sub.settings();
        let outcomes: Vec<(u64, &Outcome)> =
            results.iter().map(|r| (r.offset, &r.outcome)).collect();
        let settled = lock(part).settle(&settings, ticket, &outcomes, now_ms());
        drop(outcomes);
        self.write_ops(sub, ticket.partition, settled.ops, group)?;
        let mut results: Vec<Option<EncodedSettlement>> = results.into_iter().map(Some).collect();
        for index in settled.accepted {
            if let Some(result) = results.get_mut(index).and_then(Option::take) {
                self.apply_effects(&sub.subscriber, result, group)?;
            }
        }
        let stats = &self.shared.stats;
        Stats::add(&stats.acked, settled.acked);
        Stats::add(&stats.retried, settled.retried);
        Stats::add(&stats.dead_lettered, settled.dead_lettered);
        // Wake whoever waits for this partition's lease to end: a worker of
        // another plugin version that found it busy. Cheap when nobody waits.
        group.leases_ended.push((Arc::clone(sub), ticket.partition));
        Ok(Ok(SettleReport {
            acked: settled.acked,
            retried: settled.retried,
            dead_lettered: settled.dead_lettered,
            stale: settled.stale,
        }))
    }

    fn write_ops(
        &mut self,
        sub: &Arc<SubscriptionState>,
        partition: u32,
        ops: Vec<CursorWrite>,
        group: &mut CommitGroup,
    ) -> Result<()> {
        let ks = &self.shared.ks;
        let mut counters_changed = false;
        for op in ops {
            match op {
                CursorWrite::Cursor(offset) => {
                    let key = keys::cursor_key(sub.id, partition);
                    group
                        .batch
                        .insert(&ks.offsets, key, codec::encode_u64(offset));
                }
                CursorWrite::AckedInsert(offset) => {
                    let key = keys::delivery_key(sub.id, partition, offset);
                    group.batch.insert(&ks.acked, key, []);
                }
                CursorWrite::AckedRemove(offset) => {
                    // Written once, removed once: a weak tombstone vanishes
                    // with the value in compaction instead of piling up.
                    let key = keys::delivery_key(sub.id, partition, offset);
                    group.batch.remove_weak(&ks.acked, key);
                }
                CursorWrite::PendingPut(offset, record) => {
                    let key = keys::delivery_key(sub.id, partition, offset);
                    group
                        .batch
                        .insert(&ks.pending, key, codec::encode_pending(&record));
                }
                CursorWrite::PendingRemove(offset) => {
                    let key = keys::delivery_key(sub.id, partition, offset);
                    group.batch.remove(&ks.pending, key);
                }
                CursorWrite::Dead {
                    offset,
                    attempts,
                    reason,
                    copy,
                } => {
                    let message = match copy {
                        Some(copy) => copy,
                        None => read_message(&sub.topic, partition, offset)?,
                    };
                    let record = DeadRecord {
                        partition,
                        offset,
                        attempts,
                        failed_at_ms: now_ms(),
                        reason,
                        message,
                    };
                    let seq = sub.next_dead_seq.fetch_add(1, Ordering::AcqRel);
                    let key = keys::dead_key(sub.id, seq);
                    group
                        .batch
                        .insert(&ks.dead, key, codec::encode_dead(&record));
                    lock(&sub.counters).dead_letters += 1;
                    counters_changed = true;
                    tracing::debug!(subscriber = %sub.subscriber, topic = %sub.topic.name, partition, offset, "dead-lettered");
                }
            }
        }
        if counters_changed {
            self.write_counters(sub, group);
        }
        Ok(())
    }

    fn write_counters(&self, sub: &SubscriptionState, group: &mut CommitGroup) {
        let counters = *lock(&sub.counters);
        let key = keys::counters_key(sub.id);
        group.batch.insert(
            &self.shared.ks.offsets,
            key,
            codec::encode_counters(&counters),
        );
    }

    fn apply_effects(
        &mut self,
        namespace: &str,
        settlement: EncodedSettlement,
        group: &mut CommitGroup,
    ) -> Result<()> {
        let now = now_ms();
        for publish in settlement.publishes {
            let topic = match self.shared.topic(&publish.topic) {
                Some(topic) => topic,
                None => {
                    self.create_topic(&publish.topic, self.shared.config.default_topic, group)?
                }
            };
            let partition = match publish.key_hash {
                Some(hash) => (hash % u64::from(topic.partition_count())) as u32,
                None => topic.partition_for(None),
            };
            self.append_one(&topic, partition, &publish.encoded, now, group);
            Stats::add(&self.shared.stats.appended, 1);
        }
        for op in settlement.state {
            self.apply_state_op(namespace, op, group)?;
        }
        Ok(())
    }

    fn apply_state_op(
        &mut self,
        namespace: &str,
        op: StateOp,
        group: &mut CommitGroup,
    ) -> Result<()> {
        let state = &self.shared.ks.state;
        match op {
            // Written to the batch at commit (see `CommitGroup::overlay`).
            StateOp::Set { key, value } => {
                group
                    .overlay
                    .insert(keys::state_key(namespace, &key), Some(value));
            }
            StateOp::Delete { key } => {
                group.overlay.insert(keys::state_key(namespace, &key), None);
            }
            StateOp::Increment { key, delta } => {
                let key = keys::state_key(namespace, &key);
                // Read in place: the value is only parsed, never copied.
                let base = match group.overlay.get(&key) {
                    Some(value) => counter(value.as_deref()),
                    None => match self.shared.state_table.read(&key, counter) {
                        Ok(base) => base,
                        Err(_) => counter(state.get(&key)?.as_deref()),
                    },
                };
                let value = base.saturating_add(delta).to_string().into_bytes();
                group.overlay.insert(key, Some(value));
            }
        }
        Ok(())
    }

    fn seek(
        &mut self,
        sub: &Arc<SubscriptionState>,
        targets: &[Option<u64>],
        group: &mut CommitGroup,
    ) -> Result<()> {
        for (partition, target) in targets.iter().enumerate() {
            let (Some(part), Some(target)) = (sub.parts.get(partition), target) else {
                continue;
            };
            let ops = lock(part).seek(*target);
            self.write_ops(sub, partition as u32, ops, group)?;
        }
        group.woken.push(Arc::clone(sub));
        Ok(())
    }

    fn replay_dead(
        &mut self,
        sub: &Arc<SubscriptionState>,
        group: &mut CommitGroup,
    ) -> Result<u64> {
        let ks = &self.shared.ks;
        let now = now_ms();
        let mut count = 0;
        for guard in ks.dead.prefix(keys::subscription_prefix(sub.id)) {
            if count as usize >= MAX_DEAD_PER_COMMAND {
                break;
            }
            let (key, value) = guard.into_inner()?;
            let record = codec::decode_dead(&value)?;
            let Some(part) = sub.parts.get(record.partition as usize) else {
                continue;
            };
            let op = lock(part).replay(record.offset, record.message, now);
            if let CursorWrite::PendingPut(offset, pending) = op {
                let pending_key = keys::delivery_key(sub.id, record.partition, offset);
                group
                    .batch
                    .insert(&ks.pending, pending_key, codec::encode_pending(&pending));
            }
            group.batch.remove(&ks.dead, key);
            count += 1;
        }
        if count > 0 {
            let mut counters = lock(&sub.counters);
            counters.dead_letters = counters.dead_letters.saturating_sub(count);
            drop(counters);
            self.write_counters(sub, group);
            group.woken.push(Arc::clone(sub));
        }
        Ok(count)
    }

    fn purge_dead(&mut self, sub: &Arc<SubscriptionState>, group: &mut CommitGroup) -> Result<u64> {
        let ks = &self.shared.ks;
        let mut count = 0;
        for guard in ks.dead.prefix(keys::subscription_prefix(sub.id)) {
            if count as usize >= MAX_DEAD_PER_COMMAND {
                break;
            }
            group.batch.remove(&ks.dead, guard.key()?);
            count += 1;
        }
        if count > 0 {
            let mut counters = lock(&sub.counters);
            counters.dead_letters = counters.dead_letters.saturating_sub(count);
            drop(counters);
            self.write_counters(sub, group);
        }
        Ok(count)
    }

    fn truncate(
        &mut self,
        topic: &Arc<Topic>,
        partition: u32,
        floor: u64,
        group: &mut CommitGroup,
    ) -> Result<()> {
        let log = topic.partition(partition).ok_or(Error::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partition_count(),
        })?;
        let floor = floor.min(log.durable_end());
        if floor <= log.start() {
            return Ok(());
        }
        log.start.store(floor, Ordering::Release);
        let key = keys::start_offset_key(topic.id, partition);
        group
            .batch
            .insert(&self.shared.ks.offsets, key, codec::encode_u64(floor));
        for sub in self.shared.subscriptions_of(topic) {
            let mode = sub.settings().mode;
            let (ops, expired) = lock(&sub.parts[partition as usize]).truncate(mode, floor);
            if ops.is_empty() {
                continue;
            }
            self.write_ops(&sub, partition, ops, group)?;
            if expired > 0 {
                lock(&sub.counters).expired += expired;
                self.write_counters(&sub, group);
                Stats::add(&self.shared.stats.expired, expired);
                tracing::warn!(subscriber = %sub.subscriber, topic = %topic.name, partition, expired, "retention removed messages this subscription never handled");
            }
            group.woken.push(sub);
        }
        Ok(())
    }
}

/// A counter's value for an increment; a value that is not a decimal
/// integer counts as 0 (the host refuses to stage increments on such values,
/// so this only happens when a concurrent `set` raced the increment).
fn counter(value: Option<&[u8]>) -> i64 {
    value
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

/// Opens (or creates) the log keyspace of one partition. Without bloom
/// filters: a log is read by range from a cursor, and its only point reads
/// (dead-letter copies) look up offsets that exist, so filters would only
/// cost every flush and compaction (profiles showed their construction at
/// about 0.7% of the engine's CPU under the fan-out).
pub(crate) fn open_log_keyspace(
    db: &fjall::Database,
    topic_id: u32,
    partition: u32,
) -> Result<fjall::Keyspace> {
    let name = keys::partition_keyspace(topic_id, partition);
    Ok(db.keyspace(&name, || {
        KeyspaceCreateOptions::default()
            .max_memtable_size(MEMTABLE_BYTES)
            .filter_policy(fjall::config::FilterPolicy::disabled())
    })?)
}

/// Reads one encoded message from the log; an empty vector if retention
/// removed it meanwhile (the dead letter then says so through its size).
fn read_message(topic: &Topic, partition: u32, offset: u64) -> Result<Vec<u8>> {
    let Some(log) = topic.partition(partition) else {
        return Ok(Vec::new());
    };
    Ok(log.get(offset)?.unwrap_or_default())
}

fn answer<T>(reply: Reply<T>, result: Result<T>) {
    let _ = reply.send(result);
}

fn finish(done: Vec<DeferredReply>, failure: Option<&Error>) {
    for callback in done {
        callback(failure);
    }
}

/// Answers a command without applying it.
fn refuse(command: Command, error: &Error) {
    let error = || match error {
        Error::Closed => Error::Closed,
        other => Error::Failed(other.to_string()),
    };
    match command {
        Command::CreateTopic { reply, .. } => answer(reply, Err(error())),
        Command::Append { reply, .. } => answer(reply, Err(error())),
        Command::Subscribe { reply, .. } => answer(reply, Err(error())),
        Command::Unsubscribe { reply, .. } => answer(reply, Err(error())),
        Command::Settle { reply, .. } => answer(reply, Err(error())),
        Command::Seek { reply, .. } => answer(reply, Err(error())),
        Command::ReplayDead { reply, .. } => answer(reply, Err(error())),
        Command::PurgeDead { reply, .. } => answer(reply, Err(error())),
        Command::Truncate { reply, .. } => answer(reply, Err(error())),
        Command::Sync { reply } => answer(reply, Err(error())),
        Command::Shutdown => {}
    }
}
