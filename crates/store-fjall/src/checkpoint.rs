//! Subscriber state as a changelog plus checkpoints (the writer's side).
//!
//! Plugins write a handful of state keys per message (a member's points, a
//! user's profile), scattered over the key space. Inserting each of them
//! into the `state` keyspace cost a random skiplist insert in fjall's
//! memtable (cache misses on every level), a journal entry, and later
//! flushes and compactions of values that were overwritten seconds after.
//! So a group commit instead appends **one** changelog record to `statelog`
//! (a sequential key): the final value of every key the group wrote. The
//! values themselves live in the [`StateTable`] (pinned while dirty), and a
//! **checkpoint** copies them into `state` now and then, once per key
//! however often it was written meanwhile.
//!
//! A checkpoint pass starts at sequence number `upto` once
//! [`StoreConfig::state_checkpoint_bytes`] of changelog piled up since the
//! last one began *and* the values only the table holds (the dirty ones)
//! add up to as much; or, whatever they add up to, once [`REPLAY_FACTOR`]
//! times that much changelog piled up. The first bounds the memory pinned
//! by dirty values, the second what a reopen replays. A pass copies every
//! dirty key once, so when plugins rewrite the same keys over and over (a
//! member's points, a user's profile) the dirty set stays small and passes
//! come up to [`REPLAY_FACTOR`] times less often: fewer random inserts into
//! `state` and less for fjall to flush and compact.
//! It walks the state table shard by shard, lists each shard's dirty keys
//! (sorted, so neighbouring inserts share their skiplist path) and copies
//! a chunk of them into `state` with each following group commit: no
//! commit stalls on a whole pass (listing and sorting every dirty key at
//! once stalled the writer for tens of milliseconds). A chunk is twice the
//! keys the group itself wrote, within [`MIN_CHUNK_KEYS`]..=[`CHUNK_KEYS`]:
//! a pass outpaces the writes that make keys dirty, and the small groups
//! of a light load (where each commit's latency is what a producer sees)
//! carry small chunks (512 random inserts cost a commit 2-3 ms). Every key
//! dirty at `upto` is still dirty when its shard is listed, so the commit that
//! copies the last chunk records `upto` as the checkpoint (`offsets`,
//! [`keys::STATE_CHECKPOINT_KEY`]). Keys written after `upto` may be copied
//! too, which is harmless.
//!
//! # Invariants
//!
//! - Every changelog record holds absolute values (the writer resolves
//!   increments before), so applying records again is harmless.
//! - `state` holds, for every key, a value at least as new as the
//!   checkpoint: recovery replays the records after it, in order, and gets
//!   the exact committed state.
//! - A dirty value leaves the table's pinned set only once a commit that
//!   copied it into `state` succeeded; reads never see an older value.
//!
//! [`StoreConfig::state_checkpoint_bytes`]: super::StoreConfig::state_checkpoint_bytes

use std::sync::atomic::Ordering;

use fjall::OwnedWriteBatch;

use super::codec;
use super::context::StoreContext;
use super::keys;
use super::state_table::StateTable;

/// Most keys one group commit copies into `state` during a pass: bounds
/// what a pass adds to any one commit (a few milliseconds at most).
pub(crate) const CHUNK_KEYS: usize = 512;
/// Fewest keys a group commit copies during a pass, however little state
/// it wrote itself, so a pass ends even when writes trickle in.
pub(crate) const MIN_CHUNK_KEYS: usize = 32;
/// A pass starts at the latest once this many times
/// `state_checkpoint_bytes` of changelog piled up since the last one began.
pub(crate) const REPLAY_FACTOR: u64 = 8;
/// Largest changelog record: a group that wrote more state gets several
/// (fjall values should stay far below its limits, and replay decodes one
/// record at a time).
const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

/// A group's state writes: the final value of each key (`None` = deleted).
pub(crate) type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What one group put into its batch, applied to the table once the group
/// committed (and dropped if it did not: the store then refuses writes).
pub(crate) struct Staged {
    /// The sequence number of the group's (last) changelog record.
    seq: u64,
    writes: Writes,
    /// Keys copied into `state`, with the record their value came from.
    copied: Vec<(Vec<u8>, u64)>,
    /// This group completed a pass: the checkpoint it recorded.
    finished: Option<u64>,
}

/// A running checkpoint pass.
struct Pass {
    /// `state` will hold every value of the records up to this one.
    upto: u64,
    /// The next shard of the state table to list.
    next_shard: usize,
    /// Keys of the listed shard still to copy, sorted descending (copied
    /// from the end, so in ascending order).
    keys: Vec<Vec<u8>>,
}

pub(crate) struct Checkpointer {
    /// Sequence number of the next changelog record.
    next_seq: u64,
    /// Start a pass once this many changelog bytes piled up.
    threshold: u64,
    /// Changelog bytes written since the last pass began.
    since_pass: u64,
    pass: Option<Pass>,
}

impl Checkpointer {
    pub fn new(next_seq: u64, threshold: u64) -> Checkpointer {
        Checkpointer {
            next_seq: next_seq.max(1),
            threshold: threshold.max(1),
            since_pass: 0,
            pass: None,
        }
    }

    /// Adds the group's changelog record(s) and the next chunk of a running
    /// pass to `batch`.
    pub fn stage(
        &mut self,
        shared: &StoreContext,
        batch: &mut OwnedWriteBatch,
        writes: Writes,
    ) -> Staged {
        let seq = if writes.is_empty() {
            self.next_seq.saturating_sub(1)
        } else {
            self.append_records(shared, batch, &writes)
        };
        let chunk = (2 * writes.len()).clamp(MIN_CHUNK_KEYS, CHUNK_KEYS);
        let (copied, finished) = self.copy_chunk(shared, batch, chunk);
        Staged {
            seq,
            writes,
            copied,
            finished,
        }
    }

    fn append_records(
        &mut self,
        shared: &StoreContext,
        batch: &mut OwnedWriteBatch,
        writes: &Writes,
    ) -> u64 {
        let statelog = &shared.ks.state_log;
        let mut start = 0;
        while start < writes.len() {
            let mut end = start;
            let mut size = 0;
            while end < writes.len() {
                let (key, value) = &writes[end];
                let len = codec::state_entry_len(key, value.as_deref());
                if end > start && size + len > MAX_RECORD_BYTES {
                    break;
                }
                size += len;
                end += 1;
            }
            let entries = writes[start..end]
                .iter()
                .map(|(key, value)| (key.as_slice(), value.as_deref()));
            let record = codec::encode_state_record(entries, size);
            self.since_pass += record.len() as u64;
            batch.insert(statelog, keys::state_log_key(self.next_seq), record);
            self.next_seq += 1;
            start = end;
        }
        self.next_seq - 1
    }

    /// Copies the next keys of the running pass into `state`; the last
    /// chunk also records the checkpoint.
    fn copy_chunk(
        &mut self,
        shared: &StoreContext,
        batch: &mut OwnedWriteBatch,
        chunk: usize,
    ) -> (Vec<(Vec<u8>, u64)>, Option<u64>) {
        let Some(pass) = &mut self.pass else {
            return (Vec::new(), None);
        };
        let state = &shared.ks.state;
        let table = &shared.state_table;
        let mut copied = Vec::with_capacity(chunk);
        while copied.len() < chunk {
            let Some(key) = pass.keys.pop() else {
                if pass.next_shard == table.shard_count() {
                    break;
                }
                pass.keys = table.dirty_keys_of(pass.next_shard);
                pass.keys.sort_unstable_by(|a, b| b.cmp(a));
                pass.next_shard += 1;
                continue;
            };
            // Clean already means copied since the shard was listed.
            let seq = table.read_dirty(&key, |value| match value {
                Some(value) => batch.insert(state, key.as_slice(), value),
                None => batch.remove(state, key.as_slice()),
            });
            if let Some(seq) = seq {
                copied.push((key, seq));
            }
        }
        if !pass.keys.is_empty() || pass.next_shard < table.shard_count() {
            return (copied, None);
        }
        let upto = pass.upto;
        self.pass = None;
        batch.insert(
            &shared.ks.offsets,
            keys::STATE_CHECKPOINT_KEY,
            codec::encode_u64(upto),
        );
        (copied, Some(upto))
    }

    /// Whether a pass should start now (see the module docs).
    fn pass_due(&self, table: &StateTable) -> bool {
        self.since_pass >= self.threshold.saturating_mul(REPLAY_FACTOR)
            || (self.since_pass >= self.threshold && table.dirty_bytes() as u64 >= self.threshold)
    }

    /// The group committed: its values enter the table, the copied ones
    /// turn clean, and a new pass starts if the changelog grew enough.
    pub fn committed(&mut self, shared: &StoreContext, staged: Staged) {
        let table = &shared.state_table;
        for (key, value) in staged.writes {
            table.commit(key, value, staged.seq);
        }
        for (key, seq) in &staged.copied {
            table.checkpointed(key, *seq);
        }
        if let Some(upto) = staged.finished {
            shared.stats.state_checkpoint.store(upto, Ordering::Release);
            super::context::Stats::add(&shared.stats.state_checkpoints, 1);
        }
        if self.pass.is_none() && self.pass_due(table) {
            // Between two commits every dirty value is in a record up to the
            // last one: the pass copies them all.
            self.since_pass = 0;
            self.pass = Some(Pass {
                upto: self.next_seq - 1,
                next_shard: 0,
                keys: Vec::new(),
            });
        }
    }
}
