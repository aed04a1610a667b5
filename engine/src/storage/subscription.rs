//! Subscriptions: a subscriber's view of one topic, with a delivery state
//! per partition. This module reads messages for delivery (any thread, no
//! writer involved) and hands outcomes to the writer for durable settling.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot, watch};

use super::codec::{self, Counters};
use super::config::{Backoff, DeliveryMode, StartPosition, SubscriptionSettings};
use super::cursor::{LeaseKind, LeaseTicket, PartState, PollPlan};
use super::error::{Error, Result};
use super::keys;
use super::shared::{Shared, lock, now_ms};
use super::topic::{PartitionLog, Topic};
use super::types::{Effects, Message, NewMessage, Outcome, StateOp};
use super::writer::{Command, PreparedPublish, PreparedSettlement};

/// Largest batch one poll hands out.
pub const MAX_BATCH: usize = 4096;

/// Offsets leased plus the deliveries read, or the leased offsets (to give
/// back) with the error that stopped the read.
type ReadResult = std::result::Result<(Vec<u64>, Vec<Delivery>), (Vec<u64>, Error)>;

/// A subscription in memory, shared by its handles and the writer.
pub(crate) struct SubInner {
    pub id: u32,
    pub subscriber: Arc<str>,
    pub topic: Arc<Topic>,
    pub settings: RwLock<SubscriptionSettings>,
    /// One delivery state per partition. Locked per batch, never per
    /// message, and never across I/O.
    pub parts: Vec<Mutex<PartState>>,
    /// Written only by the writer.
    pub counters: Mutex<Counters>,
    /// Sequence number of the next dead letter. Written only by the writer.
    pub next_dead_seq: AtomicU64,
    /// Signalled when something other than new messages makes work
    /// available on any partition: a seek, a replay, new settings, removal.
    pub changed: Notify,
    /// Signalled per partition when a lease on it ends (settled or given
    /// back): a worker that found the partition busy, or its unordered
    /// window full, looks again. Per partition so that one partition's
    /// settles do not wake the idle workers of all the others.
    pub lease_ended: Vec<Notify>,
    pub removed: AtomicBool,
    /// Settles sent to the writer and not yet durable, per partition:
    /// shown as in flight, so "drained" means committed.
    pub settling: Vec<AtomicU64>,
}

impl SubInner {
    /// A subscription with one delivery state per partition of `topic`.
    pub fn new(
        record: &SubscriptionRecord,
        topic: &Arc<Topic>,
        parts: Vec<Mutex<PartState>>,
        counters: Counters,
        next_dead_seq: u64,
    ) -> SubInner {
        let partitions = parts.len();
        SubInner {
            id: record.id,
            subscriber: Arc::from(record.subscriber.as_str()),
            topic: Arc::clone(topic),
            settings: RwLock::new(record.settings()),
            parts,
            counters: Mutex::new(counters),
            next_dead_seq: AtomicU64::new(next_dead_seq),
            changed: Notify::new(),
            lease_ended: (0..partitions).map(|_| Notify::new()).collect(),
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

/// A message handed out for processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    /// 1 on first delivery, n after n-1 failed attempts.
    pub attempt: u32,
}

/// A batch handed out by [`Subscription::poll`]. Settle or release it.
#[derive(Debug)]
pub struct Lease {
    pub ticket: LeaseTicket,
    pub deliveries: Vec<Delivery>,
}

/// What a poll found.
#[derive(Debug)]
pub enum Poll {
    Ready(Lease),
    /// Nothing deliverable now. A retry falls due after `retry_in`; new
    /// messages are announced by [`Subscription::watch_partition`].
    Idle {
        retry_in: Option<Duration>,
    },
    /// Ordered mode: the partition's batch is still out.
    Busy,
}

/// The outcome of one delivered message, with the effects that commit
/// atomically with its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub offset: u64,
    pub outcome: Outcome,
    /// Applied only if the outcome is `Ack` (and the ack is accepted).
    pub effects: Effects,
}

impl Settlement {
    pub fn ack(offset: u64) -> Self {
        Settlement {
            offset,
            outcome: Outcome::Ack,
            effects: Effects::default(),
        }
    }
}

/// What settling a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SettleReport {
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// The lease predates a seek or a retention truncation: nothing applied.
    pub stale: bool,
}

/// A handle on a subscription. Cheap to clone.
#[derive(Clone)]
pub struct Subscription {
    pub(crate) inner: Arc<SubInner>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("subscriber", &self.inner.subscriber)
            .field("topic", &self.inner.topic.name)
            .finish()
    }
}

impl Subscription {
    pub fn subscriber(&self) -> &str {
        &self.inner.subscriber
    }

    pub fn topic(&self) -> &str {
        &self.inner.topic.name
    }

    pub fn partitions(&self) -> u32 {
        self.inner.topic.partition_count()
    }

    pub fn settings(&self) -> SubscriptionSettings {
        self.inner.settings()
    }

    /// False once the subscription was removed; its handles then stop.
    pub fn is_active(&self) -> bool {
        !self.inner.removed.load(Ordering::Acquire)
    }

    /// Announces the durable end of a partition: changes when new messages
    /// become deliverable.
    pub fn watch_partition(&self, partition: u32) -> Result<watch::Receiver<u64>> {
        Ok(self.log(partition)?.durable.subscribe())
    }

    /// Resolves when a seek, replay or settings change may have made work
    /// available. Create it before polling so no signal is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.changed.notified()
    }

    /// Resolves when a lease on `partition` ends (a batch settled or given
    /// back). Create it before polling so no signal is missed.
    pub fn lease_ended(&self, partition: u32) -> Result<tokio::sync::futures::Notified<'_>> {
        self.log(partition)?;
        Ok(self.inner.lease_ended[partition as usize].notified())
    }

    fn log(&self, partition: u32) -> Result<&PartitionLog> {
        let topic = &self.inner.topic;
        topic.partition(partition).ok_or(Error::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partition_count(),
        })
    }

    /// Hands out the next batch of up to `max` messages of `partition`.
    ///
    /// Blocking (reads fjall): call it where blocking is allowed (a
    /// dispatch thread between runtime rounds, a blocking task).
    pub fn poll(&self, partition: u32, max: usize) -> Result<Poll> {
        let log = self.log(partition)?;
        let settings = self.inner.settings();
        let now = now_ms();
        let (plan, generation) = {
            let mut state = lock(&self.inner.parts[partition as usize]);
            let plan = state.plan_poll(&settings, now, log.durable_end(), max.min(MAX_BATCH));
            (plan, state.generation())
        };
        let (kind, read) = match plan {
            PollPlan::Busy => return Ok(Poll::Busy),
            PollPlan::Idle { wake_at_ms } => {
                let retry_in = wake_at_ms.map(|at| Duration::from_millis(at.saturating_sub(now)));
                return Ok(Poll::Idle { retry_in });
            }
            PollPlan::Log {
                from,
                to,
                skip,
                attempts,
            } => {
                let read = self.read_log(log, partition, from..to, &skip, &attempts);
                (LeaseKind::Log, read)
            }
            PollPlan::Pending(entries) => {
                let read = self.read_pending(log, partition, entries);
                (LeaseKind::Pending, read)
            }
        };
        match read {
            Ok((offsets, deliveries)) => {
                let ticket = LeaseTicket {
                    partition,
                    generation,
                    kind,
                    offsets,
                };
                Ok(Poll::Ready(Lease { ticket, deliveries }))
            }
            Err((offsets, error)) => {
                let ticket = LeaseTicket {
                    partition,
                    generation,
                    kind,
                    offsets,
                };
                self.release(ticket);
                Err(error)
            }
        }
    }

    fn read_log(
        &self,
        log: &PartitionLog,
        partition: u32,
        range: std::ops::Range<u64>,
        skip: &[u64],
        attempts: &[(u64, u32)],
    ) -> ReadResult {
        let (from, to) = (range.start, range.end);
        let wanted = || {
            range
                .clone()
                .filter(|offset| skip.binary_search(offset).is_err())
        };
        let topic = &self.inner.topic.name;
        let mut deliveries = Vec::with_capacity((to - from) as usize);
        let scanned = log.scan(from, to, |offset, encoded| {
            if skip.binary_search(&offset).is_ok() {
                return Ok(());
            }
            let message = codec::decode_message(topic, partition, offset, encoded)?;
            let failed = attempts
                .iter()
                .find(|(at, _)| *at == offset)
                .map_or(0, |(_, attempts)| *attempts);
            deliveries.push(Delivery {
                message,
                attempt: failed + 1,
            });
            Ok(())
        });
        if let Err(error) = scanned {
            return Err((wanted().collect(), error));
        }
        let offsets: Vec<u64> = wanted().collect();
        if deliveries.len() != offsets.len() {
            let error = Error::Corrupt {
                what: "partition log",
                detail: format!(
                    "{topic}/{partition}: expected {} messages in [{from}, {to}), found {}",
                    offsets.len(),
                    deliveries.len()
                ),
            };
            return Err((offsets, error));
        }
        Ok((offsets, deliveries))
    }

    fn read_pending(
        &self,
        log: &PartitionLog,
        partition: u32,
        entries: Vec<(u64, u32, Option<Vec<u8>>)>,
    ) -> ReadResult {
        let offsets: Vec<u64> = entries.iter().map(|(offset, _, _)| *offset).collect();
        let topic = &self.inner.topic.name;
        let mut deliveries = Vec::with_capacity(entries.len());
        for (offset, failed, copy) in entries {
            let encoded = match copy {
                Some(copy) => copy,
                None => match log.get(offset) {
                    Ok(Some(value)) => value,
                    Ok(None) => {
                        let detail = format!("{topic}/{partition}@{offset} is scheduled but gone");
                        let error = Error::Corrupt {
                            what: "pending redelivery",
                            detail,
                        };
                        return Err((offsets, error));
                    }
                    Err(error) => return Err((offsets, error)),
                },
            };
            match codec::decode_message(topic, partition, offset, &encoded) {
                Ok(message) => deliveries.push(Delivery {
                    message,
                    attempt: failed + 1,
                }),
                Err(error) => return Err((offsets, error)),
            }
        }
        Ok((offsets, deliveries))
    }

    /// Records the outcomes of a leased batch durably, with the effects of
    /// the acknowledged messages, in one atomic group commit. Returns once
    /// durable (per the fsync policy).
    ///
    /// Ordered subscriptions: give outcomes in offset order from the start
    /// of the batch; after the first `Retry` the rest of the batch is
    /// delivered again later, whatever outcomes follow. Messages without an
    /// outcome are delivered again without counting an attempt.
    pub async fn settle(
        &self,
        ticket: LeaseTicket,
        results: Vec<Settlement>,
    ) -> Result<SettleReport> {
        self.shared.check_writable()?;
        let results = self.prepare(results)?;
        let partition = ticket.partition as usize;
        let (reply, answer) = oneshot::channel();
        let command = Command::Settle {
            sub: Arc::clone(&self.inner),
            ticket,
            results,
            reply,
        };
        let settling = &self.inner.settling[partition];
        settling.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let sent = self.shared.send(command).await;
        let answered = match sent {
            Ok(()) => answer.await.map_err(|_| Error::Closed),
            Err(error) => Err(error),
        };
        settling.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        answered?
    }

    /// Validates and encodes the effects of acknowledged messages, on the
    /// caller's thread, so the writer only has to place them.
    fn prepare(&self, results: Vec<Settlement>) -> Result<Vec<PreparedSettlement>> {
        let limit = self.shared.config.max_message_bytes;
        results
            .into_iter()
            .map(|settlement| {
                let Effects { publishes, state } = settlement.effects;
                let acked = settlement.outcome == Outcome::Ack;
                let publishes = if acked {
                    publishes
                        .into_iter()
                        .map(|(topic, message)| prepare_publish(topic, &message, limit))
                        .collect::<Result<Vec<_>>>()?
                } else {
                    Vec::new()
                };
                let state = if acked { state } else { Vec::new() };
                for op in &state {
                    check_state_op(op, limit)?;
                }
                Ok(PreparedSettlement {
                    offset: settlement.offset,
                    outcome: settlement.outcome,
                    publishes,
                    state,
                })
            })
            .collect()
    }

    /// Gives a batch back without outcomes: it is delivered again later
    /// with no attempt counted (e.g. a worker stopping mid-batch).
    pub fn release(&self, ticket: LeaseTicket) {
        if let Some(state) = self.inner.parts.get(ticket.partition as usize) {
            lock(state).release(&ticket, now_ms());
        }
        if let Some(ended) = self.inner.lease_ended.get(ticket.partition as usize) {
            ended.notify_waiters();
        }
    }
}

fn prepare_publish(topic: String, message: &NewMessage, limit: usize) -> Result<PreparedPublish> {
    keys::validate_name("topic", &topic)?;
    let size = codec::encoded_len(message);
    if size > limit {
        return Err(Error::MessageTooLarge { size, limit });
    }
    Ok(PreparedPublish {
        topic,
        key_hash: message.key.as_deref().map(xxhash_rust::xxh3::xxh3_64),
        encoded: codec::encode_message(message)?,
    })
}

fn check_state_op(op: &StateOp, max_value: usize) -> Result<()> {
    let (key, value_len) = match op {
        StateOp::Set { key, value } => (key, value.len()),
        StateOp::Delete { key } | StateOp::Increment { key, .. } => (key, 0),
    };
    if key.len() > super::MAX_STATE_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "state key of {} bytes exceeds the limit of {}",
            key.len(),
            super::MAX_STATE_KEY_BYTES
        )));
    }
    if value_len > max_value {
        return Err(Error::MessageTooLarge {
            size: value_len,
            limit: max_value,
        });
    }
    Ok(())
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
