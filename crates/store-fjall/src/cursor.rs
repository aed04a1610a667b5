//! The delivery state of one subscription partition, as a pure state
//! machine: no I/O, no locks, no clocks (time is passed in).
//!
//! It decides what to deliver next (`plan_poll`) and turns outcomes into the
//! durable operations the writer must commit (`settle`, `release`, `seek`,
//! `truncate`, `replay`). Keeping it pure lets the property tests drive it
//! through millions of steps and lets recovery rebuild it from disk alone.
//!
//! Invariants:
//! - Every offset below `committed` is done (acknowledged, dead-lettered or
//!   expired), except replays, which carry their own copy in `pending`.
//! - Every offset in `[committed, next)` is in flight, in `acked`, or in
//!   `pending`; nothing there is forgotten.
//! - Ordered mode: at most one lease at a time, and a lease always starts at
//!   `committed` (or consists only of replays below it).
//! - Unordered mode: `next - committed <= max_unacked`, which bounds `acked`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::codec::PendingRecord;
use super::config::{DeliveryMode, SubscriptionSettings};
use super::types::Outcome;

/// Longest failure reason kept with a retry or dead letter.
pub const MAX_REASON_BYTES: usize = 4096;

/// A durable change the writer must commit for this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CursorWrite {
    /// New committed cursor.
    Cursor(u64),
    /// Remember an out-of-order acknowledgement.
    AckedInsert(u64),
    /// Forget one (the cursor passed it).
    AckedRemove(u64),
    PendingPut(u64, PendingRecord),
    PendingRemove(u64),
    /// Move a message to the dead-letter store. `copy` is the message for
    /// replays; otherwise the writer reads it from the log.
    Dead {
        offset: u64,
        attempts: u32,
        reason: String,
        copy: Option<Vec<u8>>,
    },
}

/// What a poll should deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PollPlan {
    /// Read the log in `[from, to)` except `skip`; `attempts` lists offsets
    /// that already failed (attempts so far).
    Log {
        from: u64,
        to: u64,
        skip: Vec<u64>,
        attempts: Vec<(u64, u32)>,
    },
    /// Redeliver scheduled entries: (offset, attempts so far, copy).
    Pending(Vec<(u64, u32, Option<Vec<u8>>)>),
    /// Nothing to do before `wake_at_ms` (or before new messages arrive).
    Idle { wake_at_ms: Option<u64> },
    /// Ordered mode: a batch is already out.
    Busy,
}

/// Which kind of lease a ticket stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseKind {
    Log,
    Pending,
}

/// What the state machine needs back to settle or release a batch: the
/// record inside the seam's opaque `LeaseTicket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorLease {
    pub(crate) partition: u32,
    pub(crate) generation: u64,
    pub(crate) kind: LeaseKind,
    /// Offsets handed out, ascending.
    pub(crate) offsets: Vec<u64>,
}

impl CursorLease {
    pub fn len(&self) -> usize {
        self.offsets.len()
    }
}

/// The result of settling a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CursorSettlement {
    pub ops: Vec<CursorWrite>,
    /// Indices (into the given results) of acknowledged messages whose
    /// effects must commit.
    pub accepted: Vec<usize>,
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// The lease was from before a seek or truncation; nothing applied.
    pub stale: bool,
}

#[derive(Debug, Clone)]
struct Pending {
    record: PendingRecord,
    /// Handed out and not settled yet.
    leased: bool,
    /// Exists on disk (in-memory-only entries come from released leases).
    durable: bool,
}

/// Delivery state of one (subscription, partition).
#[derive(Debug, Clone)]
pub(crate) struct PartitionCursor {
    committed: u64,
    /// Next offset never handed out (unordered); equals `committed` while
    /// idle in ordered mode.
    next: u64,
    /// Ordered mode: a lease is out.
    leased: bool,
    /// Bumped by seeks and truncations: older leases settle as no-ops.
    generation: u64,
    /// Out-of-order acknowledgements at or above `committed` -> on disk yet.
    acked: BTreeMap<u64, bool>,
    pending: BTreeMap<u64, Pending>,
    in_flight: u64,
}

impl PartitionCursor {
    /// State as recovered from disk.
    pub fn recover(
        committed: u64,
        acked: impl IntoIterator<Item = u64>,
        pending: impl IntoIterator<Item = (u64, PendingRecord)>,
    ) -> Self {
        PartitionCursor {
            committed,
            next: committed,
            leased: false,
            generation: 0,
            acked: acked
                .into_iter()
                .filter(|offset| *offset >= committed)
                .map(|offset| (offset, true))
                .collect(),
            pending: pending
                .into_iter()
                .map(|(offset, record)| {
                    let entry = Pending {
                        record,
                        leased: false,
                        durable: true,
                    };
                    (offset, entry)
                })
                .collect(),
            in_flight: 0,
        }
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Scheduled redeliveries (retries and replays).
    pub fn scheduled(&self) -> u64 {
        self.pending.len() as u64
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Offsets acknowledged above the committed cursor (unordered mode).
    #[cfg(test)]
    pub fn acked_above(&self) -> u64 {
        self.acked.len() as u64
    }

    /// Checks the invariants of the module doc that hold in every mode,
    /// after each transition (debug builds: the unit and property tests
    /// drive every transition through it).
    fn debug_check(&self) {
        debug_assert!(
            self.next >= self.committed,
            "next {} below committed {}",
            self.next,
            self.committed
        );
        debug_assert!(
            self.acked
                .keys()
                .next()
                .is_none_or(|first| *first >= self.committed),
            "an acknowledgement below committed {} is kept",
            self.committed
        );
        debug_assert!(
            self.pending
                .range(..self.committed)
                .all(|(_, entry)| entry.record.copy.is_some()),
            "below committed {} only replays (with their copy) are pending",
            self.committed
        );
        debug_assert!(
            !self.leased || self.in_flight > 0 || self.pending.values().any(|e| e.leased),
            "a lease is out with nothing in flight"
        );
    }

    /// Decides what to deliver next, and marks it as leased.
    pub fn plan_poll(
        &mut self,
        settings: &SubscriptionSettings,
        now_ms: u64,
        durable_end: u64,
        max: usize,
    ) -> PollPlan {
        let max = max.max(1);
        let plan = match settings.mode {
            DeliveryMode::Ordered => self.plan_ordered(now_ms, durable_end, max),
            DeliveryMode::Unordered => {
                self.plan_unordered(now_ms, durable_end, max, settings.max_unacked)
            }
        };
        self.debug_check();
        plan
    }

    fn plan_ordered(&mut self, now_ms: u64, durable_end: u64, max: usize) -> PollPlan {
        if self.leased {
            return PollPlan::Busy;
        }
        // Replayed dead letters (all below the cursor) go first.
        let committed = self.committed;
        let replays = self.lease_due(now_ms, max, |offset| offset < committed);
        if !replays.is_empty() {
            self.leased = true;
            return PollPlan::Pending(replays);
        }
        let mut attempts = Vec::new();
        if let Some(entry) = self.pending.get(&self.committed) {
            if entry.record.due_ms > now_ms {
                let wake = self.earliest_due().unwrap_or(entry.record.due_ms);
                return PollPlan::Idle {
                    wake_at_ms: Some(wake),
                };
            }
            attempts.push((self.committed, entry.record.attempts));
        }
        if self.committed >= durable_end {
            return PollPlan::Idle {
                wake_at_ms: self.earliest_due(),
            };
        }
        let to = durable_end.min(self.committed.saturating_add(max as u64));
        // Acknowledgements above the cursor exist only if the subscription
        // was unordered before; they are skipped, never delivered twice.
        let skip: Vec<u64> = self
            .acked
            .range(self.committed..to)
            .map(|(o, _)| *o)
            .collect();
        self.leased = true;
        self.next = to;
        self.in_flight = to - self.committed - skip.len() as u64;
        PollPlan::Log {
            from: self.committed,
            to,
            skip,
            attempts,
        }
    }

    fn plan_unordered(
        &mut self,
        now_ms: u64,
        durable_end: u64,
        max: usize,
        max_unacked: u64,
    ) -> PollPlan {
        let due = self.lease_due(now_ms, max, |_| true);
        if !due.is_empty() {
            self.in_flight += due.len() as u64;
            return PollPlan::Pending(due);
        }
        let window_end = self.committed.saturating_add(max_unacked);
        let end = durable_end.min(window_end);
        let from = self.next.max(self.committed);
        if from >= end {
            return PollPlan::Idle {
                wake_at_ms: self.earliest_due(),
            };
        }
        let to = end.min(from.saturating_add(max as u64));
        let skip: Vec<u64> = self
            .acked
            .range(from..to)
            .map(|(offset, _)| *offset)
            .chain(self.pending.range(from..to).map(|(offset, _)| *offset))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.next = to;
        self.in_flight += to - from - skip.len() as u64;
        PollPlan::Log {
            from,
            to,
            skip,
            attempts: Vec::new(),
        }
    }

    /// Leases up to `max` due, unleased pending entries accepted by `filter`.
    fn lease_due(
        &mut self,
        now_ms: u64,
        max: usize,
        filter: impl Fn(u64) -> bool,
    ) -> Vec<(u64, u32, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for (offset, entry) in self.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if entry.leased || entry.record.due_ms > now_ms || !filter(*offset) {
                continue;
            }
            entry.leased = true;
            out.push((*offset, entry.record.attempts, entry.record.copy.clone()));
        }
        out
    }

    fn earliest_due(&self) -> Option<u64> {
        self.pending
            .values()
            .filter(|entry| !entry.leased)
            .map(|entry| entry.record.due_ms)
            .min()
    }

    /// Applies the outcomes of a batch. `results` are (offset, outcome);
    /// offsets outside the lease are ignored. In ordered mode, results must
    /// follow the log from the cursor: the first retry stops the batch and
    /// everything after it is redelivered later.
    pub fn settle(
        &mut self,
        settings: &SubscriptionSettings,
        ticket: &CursorLease,
        results: &[(u64, &Outcome)],
        now_ms: u64,
    ) -> CursorSettlement {
        if ticket.generation != self.generation {
            return CursorSettlement {
                stale: true,
                ..CursorSettlement::default()
            };
        }
        let mut settled = CursorSettlement::default();
        if settings.mode == DeliveryMode::Ordered && ticket.kind == LeaseKind::Log {
            self.settle_ordered(settings, results, now_ms, &mut settled);
        } else {
            self.settle_individually(settings, ticket, results, now_ms, &mut settled);
        }
        self.debug_check();
        settled
    }

    fn settle_ordered(
        &mut self,
        settings: &SubscriptionSettings,
        results: &[(u64, &Outcome)],
        now_ms: u64,
        settled: &mut CursorSettlement,
    ) {
        let mut expected = self.committed;
        self.skip_acked(&mut expected, &mut settled.ops);
        for (index, (offset, outcome)) in results.iter().enumerate() {
            if *offset != expected {
                break;
            }
            let attempt = self.attempts_of(*offset) + 1;
            match outcome {
                Outcome::Ack => {
                    self.remove_pending(*offset, &mut settled.ops);
                    settled.accepted.push(index);
                    settled.acked += 1;
                }
                Outcome::DeadLetter { reason } => {
                    self.dead_letter(*offset, attempt, reason, &mut settled.ops);
                    // The cursor passes it right here: it leaves no
                    // acknowledgement behind (one per dead letter, before).
                    self.acked.remove(offset);
                    settled.dead_lettered += 1;
                }
                Outcome::Retry { delay, reason } => {
                    if attempt >= settings.max_attempts {
                        let reason = exhausted(reason, attempt);
                        self.dead_letter(*offset, attempt, &reason, &mut settled.ops);
                        self.acked.remove(offset);
                        settled.dead_lettered += 1;
                    } else {
                        self.schedule(settings, *offset, attempt, *delay, reason, now_ms, settled);
                        break;
                    }
                }
            }
            expected += 1;
            self.skip_acked(&mut expected, &mut settled.ops);
        }
        if expected != self.committed {
            self.committed = expected;
            settled.ops.push(CursorWrite::Cursor(expected));
        }
        self.next = self.committed;
        self.leased = false;
        self.in_flight = 0;
    }

    fn settle_individually(
        &mut self,
        settings: &SubscriptionSettings,
        ticket: &CursorLease,
        results: &[(u64, &Outcome)],
        now_ms: u64,
        settled: &mut CursorSettlement,
    ) {
        let mut unsettled: HashSet<u64> = ticket.offsets.iter().copied().collect();
        for (index, (offset, outcome)) in results.iter().enumerate() {
            if !unsettled.remove(offset) {
                continue;
            }
            let attempt = self.attempts_of(*offset) + 1;
            match outcome {
                Outcome::Ack => {
                    self.mark_done(*offset, &mut settled.ops);
                    settled.accepted.push(index);
                    settled.acked += 1;
                }
                Outcome::DeadLetter { reason } => {
                    self.dead_letter(*offset, attempt, reason, &mut settled.ops);
                    settled.dead_lettered += 1;
                }
                Outcome::Retry { delay, reason } => {
                    if attempt >= settings.max_attempts {
                        let reason = exhausted(reason, attempt);
                        self.dead_letter(*offset, attempt, &reason, &mut settled.ops);
                        settled.dead_lettered += 1;
                    } else {
                        self.schedule(settings, *offset, attempt, *delay, reason, now_ms, settled);
                    }
                }
            }
        }
        let leftover: Vec<u64> = unsettled.into_iter().collect();
        self.requeue(&leftover, now_ms);
        self.in_flight = self.in_flight.saturating_sub(ticket.offsets.len() as u64);
        if settings.mode == DeliveryMode::Ordered {
            self.leased = false;
        }
        self.advance(&mut settled.ops);
    }

    /// Gives back a batch without outcomes (e.g. at shutdown): everything in
    /// it is delivered again, with no attempt counted.
    pub fn release(&mut self, ticket: &CursorLease, now_ms: u64) {
        if ticket.generation != self.generation {
            return;
        }
        match ticket.kind {
            LeaseKind::Log if self.leased => {
                self.next = self.committed;
                self.leased = false;
                self.in_flight = 0;
            }
            _ => {
                self.requeue(&ticket.offsets, now_ms);
                self.in_flight = self.in_flight.saturating_sub(ticket.offsets.len() as u64);
                self.leased = false;
            }
        }
        self.debug_check();
    }

    /// Makes handed-out offsets deliverable again (unordered and replays).
    fn requeue(&mut self, offsets: &[u64], now_ms: u64) {
        for offset in offsets {
            if let Some(entry) = self.pending.get_mut(offset) {
                entry.leased = false;
            } else if *offset >= self.committed && !self.acked.contains_key(offset) {
                let record = PendingRecord {
                    attempts: 0,
                    due_ms: now_ms,
                    reason: String::new(),
                    copy: None,
                };
                let entry = Pending {
                    record,
                    leased: false,
                    durable: false,
                };
                self.pending.insert(*offset, entry);
            }
        }
    }

    fn attempts_of(&self, offset: u64) -> u32 {
        self.pending
            .get(&offset)
            .map_or(0, |entry| entry.record.attempts)
    }

    #[allow(clippy::too_many_arguments)]
    fn schedule(
        &mut self,
        settings: &SubscriptionSettings,
        offset: u64,
        attempts: u32,
        delay: Option<Duration>,
        reason: &str,
        now_ms: u64,
        settled: &mut CursorSettlement,
    ) {
        let delay = delay
            .map(|delay| delay.min(super::config::MAX_RETRY_DELAY))
            .unwrap_or_else(|| settings.backoff.delay(attempts));
        let copy = self
            .pending
            .get(&offset)
            .and_then(|entry| entry.record.copy.clone());
        let record = PendingRecord {
            attempts,
            due_ms: now_ms.saturating_add(delay.as_millis() as u64),
            reason: truncate_reason(reason),
            copy,
        };
        settled
            .ops
            .push(CursorWrite::PendingPut(offset, record.clone()));
        let entry = Pending {
            record,
            leased: false,
            durable: true,
        };
        self.pending.insert(offset, entry);
        settled.retried += 1;
    }

    fn dead_letter(
        &mut self,
        offset: u64,
        attempts: u32,
        reason: &str,
        ops: &mut Vec<CursorWrite>,
    ) {
        let copy = self
            .pending
            .get(&offset)
            .and_then(|entry| entry.record.copy.clone());
        ops.push(CursorWrite::Dead {
            offset,
            attempts,
            reason: truncate_reason(reason),
            copy,
        });
        self.mark_done(offset, ops);
    }

    fn remove_pending(&mut self, offset: u64, ops: &mut Vec<CursorWrite>) {
        if let Some(entry) = self.pending.remove(&offset)
            && entry.durable
        {
            ops.push(CursorWrite::PendingRemove(offset));
        }
    }

    /// Records that `offset` needs no further delivery.
    fn mark_done(&mut self, offset: u64, ops: &mut Vec<CursorWrite>) {
        self.remove_pending(offset, ops);
        if offset >= self.committed {
            self.acked.insert(offset, false);
        }
    }

    /// Steps `expected` over offsets acknowledged out of order earlier.
    fn skip_acked(&mut self, expected: &mut u64, ops: &mut Vec<CursorWrite>) {
        while let Some(durable) = self.acked.remove(expected) {
            if durable {
                ops.push(CursorWrite::AckedRemove(*expected));
            }
            *expected += 1;
        }
    }

    /// Moves the cursor over every done offset and persists what remains
    /// acknowledged above it.
    fn advance(&mut self, ops: &mut Vec<CursorWrite>) {
        let before = self.committed;
        while let Some(durable) = self.acked.remove(&self.committed) {
            if durable {
                ops.push(CursorWrite::AckedRemove(self.committed));
            }
            self.committed += 1;
        }
        if self.committed != before {
            ops.push(CursorWrite::Cursor(self.committed));
        }
        self.next = self.next.max(self.committed);
        for (offset, durable) in self.acked.iter_mut() {
            if !*durable {
                *durable = true;
                ops.push(CursorWrite::AckedInsert(*offset));
            }
        }
    }

    /// Moves the cursor to `target`: forgets acknowledgements and scheduled
    /// retries, keeps replays below the target (the log delivers the rest),
    /// and turns outstanding leases stale.
    pub fn seek(&mut self, target: u64) -> Vec<CursorWrite> {
        let mut ops = Vec::new();
        for (offset, durable) in std::mem::take(&mut self.acked) {
            if durable {
                ops.push(CursorWrite::AckedRemove(offset));
            }
        }
        let pending = std::mem::take(&mut self.pending);
        for (offset, mut entry) in pending {
            if entry.record.copy.is_some() && offset < target {
                entry.leased = false;
                self.pending.insert(offset, entry);
            } else if entry.durable {
                ops.push(CursorWrite::PendingRemove(offset));
            }
        }
        self.committed = target;
        self.next = target;
        self.leased = false;
        self.in_flight = 0;
        self.generation += 1;
        ops.push(CursorWrite::Cursor(target));
        self.debug_check();
        ops
    }

    /// Retention removed everything below `floor`. Returns the durable
    /// changes and how many messages this subscription never handled.
    pub fn truncate(&mut self, mode: DeliveryMode, floor: u64) -> (Vec<CursorWrite>, u64) {
        let mut ops = Vec::new();
        if self.committed >= floor {
            return (ops, 0);
        }
        let mut done_below = 0;
        let above = self.acked.split_off(&floor);
        for (offset, durable) in std::mem::replace(&mut self.acked, above) {
            done_below += 1;
            if durable {
                ops.push(CursorWrite::AckedRemove(offset));
            }
        }
        let range: Vec<u64> = self
            .pending
            .range(self.committed..floor)
            .filter(|(_, entry)| entry.record.copy.is_none())
            .map(|(offset, _)| *offset)
            .collect();
        for offset in range {
            self.remove_pending(offset, &mut ops);
        }
        let expired = floor - self.committed - done_below;
        self.committed = floor;
        self.next = self.next.max(floor);
        if mode == DeliveryMode::Ordered && self.leased {
            // The batch out covers expired offsets: its outcomes no longer
            // apply, and the partition continues from the floor.
            self.generation += 1;
            self.leased = false;
            self.in_flight = 0;
            self.next = floor;
        }
        ops.push(CursorWrite::Cursor(floor));
        self.debug_check();
        (ops, expired)
    }

    /// Schedules a replayed dead letter for immediate redelivery.
    pub fn replay(&mut self, offset: u64, copy: Vec<u8>, now_ms: u64) -> CursorWrite {
        let record = PendingRecord {
            attempts: 0,
            due_ms: now_ms,
            reason: String::new(),
            copy: Some(copy),
        };
        let entry = Pending {
            record: record.clone(),
            leased: false,
            durable: true,
        };
        self.pending.insert(offset, entry);
        self.debug_check();
        CursorWrite::PendingPut(offset, record)
    }
}

fn exhausted(reason: &str, attempts: u32) -> String {
    format!("{reason} (gave up after {attempts} attempts)")
}

fn truncate_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod tests;
