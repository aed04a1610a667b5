//! Subscriptions: a subscriber's view of one topic, with a delivery state
//! per partition. This module reads messages for delivery (any thread, no
//! writer involved) and hands outcomes to the writer for durable settling.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use super::codec;
use super::command::{Command, EncodedPublish, EncodedSettlement};
use super::config::SubscriptionSettings;
use super::context::StoreContext;
use super::cursor::{CursorLease, LeaseKind, PollPlan};
use super::error::{Error, Result};
use super::keys;
use super::subscription_state::SubscriptionState;
use super::support::{lock, now_ms};
use super::topic::PartitionLog;
use super::types::{Effects, NewMessage, Outcome, StateOp};
use courier_core::{Delivery, Lease, LeaseTicket, Poll, SettleReport, Settlement};

pub use courier_core::MAX_BATCH;

/// Offsets leased plus the deliveries read, or the leased offsets (to give
/// back) with the error that stopped the read.
type ReadResult = std::result::Result<(Vec<u64>, Vec<Delivery>), (Vec<u64>, Error)>;

/// A handle on a subscription. Cheap to clone.
#[derive(Clone)]
pub struct FjallSubscription {
    pub(crate) inner: Arc<SubscriptionState>,
    pub(crate) shared: Arc<StoreContext>,
}

impl std::fmt::Debug for FjallSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallSubscription")
            .field("subscriber", &self.inner.subscriber)
            .field("topic", &self.inner.topic.name)
            .finish()
    }
}

impl FjallSubscription {
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

    pub(crate) fn log(&self, partition: u32) -> Result<&PartitionLog> {
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
                let lease = CursorLease {
                    partition,
                    generation,
                    kind,
                    offsets,
                };
                let ticket = LeaseTicket::new(partition, lease.len(), lease);
                Ok(Poll::Ready(Lease { ticket, deliveries }))
            }
            Err((offsets, error)) => {
                let lease = CursorLease {
                    partition,
                    generation,
                    kind,
                    offsets,
                };
                self.release_lease(lease);
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
        let lease = own_lease(ticket)?;
        let results = self.prepare(results)?;
        self.create_missing_topics(&results).await?;
        let partition = lease.partition as usize;
        let (reply, answer) = oneshot::channel();
        let command = Command::Settle {
            sub: Arc::clone(&self.inner),
            lease,
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

    /// Creates the topics the effects publish to that do not exist yet,
    /// before the writer sees the settlement: creating one on the writer
    /// would stall every other write while its keyspaces open. One lookup
    /// per run of publishes to the same topic (a batch's usually go to one
    /// or two).
    async fn create_missing_topics(&self, results: &[EncodedSettlement]) -> Result<()> {
        let mut last: Option<&str> = None;
        for publish in results.iter().flat_map(|result| &result.publishes) {
            if last == Some(publish.topic.as_str()) {
                continue;
            }
            last = Some(&publish.topic);
            if self.shared.topic(&publish.topic).is_none() {
                self.shared.topic_or_create(&publish.topic).await?;
            }
        }
        Ok(())
    }

    /// Validates and encodes the effects of acknowledged messages, on the
    /// caller's thread, so the writer only has to place them.
    fn prepare(&self, results: Vec<Settlement>) -> Result<Vec<EncodedSettlement>> {
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
                Ok(EncodedSettlement {
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
        match own_lease(ticket) {
            Ok(lease) => self.release_lease(lease),
            Err(error) => tracing::error!(%error, "release of a foreign lease ignored"),
        }
    }

    fn release_lease(&self, lease: CursorLease) {
        if let Some(state) = self.inner.parts.get(lease.partition as usize) {
            lock(state).release(&lease, now_ms());
        }
        if let Some(ended) = self.inner.lease_ended.get(lease.partition as usize) {
            ended.bump();
        }
    }
}

/// The cursor's record inside a ticket this store handed out.
fn own_lease(ticket: LeaseTicket) -> Result<CursorLease> {
    ticket.into_inner::<CursorLease>().map_err(|ticket| {
        Error::InvalidArgument(format!(
            "a lease ticket of another backend (partition {}) cannot settle here",
            ticket.partition()
        ))
    })
}

fn prepare_publish(topic: String, message: &NewMessage, limit: usize) -> Result<EncodedPublish> {
    keys::validate_name("topic", &topic)?;
    let size = codec::encoded_len(message);
    if size > limit {
        return Err(Error::MessageTooLarge { size, limit });
    }
    Ok(EncodedPublish {
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
    if key.len() > courier_core::MAX_STATE_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "state key of {} bytes exceeds the limit of {}",
            key.len(),
            courier_core::MAX_STATE_KEY_BYTES
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
