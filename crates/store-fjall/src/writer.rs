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
use std::time::{Duration, Instant};

use fjall::{OwnedWriteBatch, PersistMode};

use super::checkpoint::Checkpointer;
use super::codec::{self};
use super::command::{Command, Reply};
use super::config::FsyncPolicy;
use super::context::{Stats, StoreContext};
use super::error::{Error, FjallResult, Result};
use super::keys;
use super::subscription_state::SubscriptionState;
use super::topic::Topic;
use super::write_buffer;

mod appends;
mod dead_letters;
mod retention;
mod settlements;
mod subscriptions;

use dead_letters::read_message;

/// Most commands folded into one group commit: bounds the batch's memory
/// and the latency of the first command in it.
const MAX_GROUP_COMMANDS: usize = 1024;
/// Most dead letters one replay or purge command touches, so one huge
/// dead-letter store cannot stall every other writer for long.
pub(crate) const MAX_DEAD_PER_COMMAND: usize = 10_000;
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
    next_sub_id: u32,
    checkpoints: Checkpointer,
    last_sync: Instant,
    unsynced: bool,
    slow: SlowWrites,
}

/// A group's write into fjall (commit and fsync) longer than this held
/// every producer and settlement waiting behind it: it is logged.
const SLOW_WRITE: Duration = Duration::from_millis(50);
/// At most one slow-write warning this often; the others are counted in
/// the next one.
const SLOW_WRITE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs the writes that stall everyone, rate-limited: what an operator
/// needs to tell a disk or fjall stall from the rest of a latency tail
/// (the histograms in `/metrics` have the distribution).
#[derive(Default)]
struct SlowWrites {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl SlowWrites {
    /// Logs the write if it was slow and no warning went out lately;
    /// answers whether it logged.
    fn observe(&mut self, throttle: Duration, commit: Duration, fsync: Duration) -> bool {
        let total = throttle + commit + fsync;
        if total < SLOW_WRITE {
            return false;
        }
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < SLOW_WRITE_LOG_EVERY)
        {
            self.unlogged += 1;
            return false;
        }
        tracing::warn!(
            total_ms = total.as_millis() as u64,
            throttle_ms = throttle.as_millis() as u64,
            commit_ms = commit.as_millis() as u64,
            fsync_ms = fsync.as_millis() as u64,
            unlogged_since_last = self.unlogged,
            "slow write: every producer and settlement waited for it"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
        true
    }
}

impl Writer {
    pub fn new(
        shared: Arc<StoreContext>,
        commands: flume::Receiver<Command>,
        next_sub_id: u32,
        next_state_seq: u64,
    ) -> Self {
        let threshold = shared.config.state_checkpoint_bytes;
        Writer {
            shared,
            commands,
            next_sub_id,
            checkpoints: Checkpointer::new(next_state_seq, threshold),
            last_sync: Instant::now(),
            unsynced: false,
            slow: SlowWrites::default(),
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

    fn fsync(&mut self) -> Result<Duration> {
        let started = Instant::now();
        self.shared.db.persist(PersistMode::SyncData).fjall()?;
        let took = started.elapsed();
        self.shared.stats.fsync.observe(took);
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(took)
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
        let (mut throttle, mut commit) = (Duration::ZERO, Duration::ZERO);
        if !batch.is_empty() {
            let started = Instant::now();
            write_buffer::throttle(&self.shared);
            let committing = Instant::now();
            throttle = committing - started;
            batch.commit().fjall()?;
            commit = committing.elapsed();
            self.shared.stats.commit.observe(commit);
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
        let fsync = if due { self.fsync()? } else { Duration::ZERO };
        self.slow.observe(throttle, commit, fsync);
        Ok(())
    }

    /// Applies one command to the group. Validation errors are answered
    /// right away and write nothing; an `Err` means a read failed midway.
    fn apply(&mut self, command: Command, group: &mut CommitGroup) -> Result<()> {
        match command {
            Command::CreateTopic {
                name,
                settings,
                id,
                partitions,
                reply,
            } => match self.create_topic(&name, settings, id, partitions, group) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_writes_are_logged_at_most_once_per_period_and_the_rest_counted() {
        let ms = Duration::from_millis;
        let mut slow = SlowWrites::default();
        assert!(!slow.observe(ms(1), ms(2), ms(40)), "49 ms is not slow");
        assert!(slow.observe(ms(0), ms(1), ms(60)), "61 ms is");
        assert!(!slow.observe(ms(0), ms(0), ms(200)), "within the period");
        assert!(!slow.observe(ms(70), ms(0), ms(0)), "throttling counts too");
        assert_eq!(slow.unlogged, 2);
        slow.last_logged = slow.last_logged.map(|at| at - SLOW_WRITE_LOG_EVERY);
        assert!(slow.observe(ms(0), ms(0), ms(51)), "a new period");
        assert_eq!(slow.unlogged, 0);
    }
}
