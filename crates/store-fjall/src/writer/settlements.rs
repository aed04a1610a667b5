//! Settlements: a batch's outcomes become cursor writes, retries and dead
//! letters, and its acknowledged messages' effects (publishes, state
//! writes) join the same group.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{CommitGroup, Writer, read_message};
use crate::codec::{self, DeadRecord};
use crate::command::EncodedSettlement;
use crate::context::Stats;
use crate::cursor::{CursorLease, CursorWrite};
use crate::error::{Error, FjallResult, Result};
use crate::keys;
use crate::subscription_state::SubscriptionState;
use crate::support::{lock, now_ms};
use crate::types::{Outcome, StateOp};
use courier_core::SettleReport;

impl Writer {
    /// Settles a batch. The outer `Result` is a read failure (fatal for the
    /// group); the inner one is this command's own answer.
    pub(super) fn settle(
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

    pub(super) fn write_ops(
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

    pub(super) fn write_counters(&self, sub: &SubscriptionState, group: &mut CommitGroup) {
        let counters = *lock(&sub.counters);
        let key = keys::counters_key(sub.id);
        group.batch.insert(
            &self.shared.ks.offsets,
            key,
            codec::encode_counters(&counters),
        );
    }

    pub(super) fn apply_effects(
        &mut self,
        namespace: &str,
        settlement: EncodedSettlement,
        group: &mut CommitGroup,
    ) -> Result<()> {
        let now = now_ms();
        for publish in settlement.publishes {
            // `FjallSubscription::settle` created every topic its effects
            // publish to before it sent them, and topics are never removed.
            let topic = self
                .shared
                .topic(&publish.topic)
                .ok_or_else(|| Error::UnknownTopic(publish.topic.clone()))?;
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

    pub(super) fn apply_state_op(
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
                        Err(_) => counter(state.get(&key).fjall()?.as_deref()),
                    },
                };
                let value = base.saturating_add(delta).to_string().into_bytes();
                group.overlay.insert(key, Some(value));
            }
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
