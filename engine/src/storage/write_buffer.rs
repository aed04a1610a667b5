//! Bounds the memory of fjall's memtables, summed over every keyspace.
//!
//! fjall 3.1 accepts `max_write_buffer_size` but does not enforce it (it is
//! marked "todo"): each keyspace only seals its own memtable once it passes
//! `max_memtable_size`. With one keyspace per partition, a burst filled
//! dozens of memtables at once and they summed to 40+ MiB. So the writer
//! enforces the budget itself: after a commit that leaves the unflushed
//! total over [`BUDGET_BYTES`] while no flush is queued, it seals the
//! largest active memtable, and fjall's flush frees it.

use fjall::{AbstractTree, Keyspace};

use super::error::Result;
use super::shared::{Shared, read};

/// Unflushed memtable bytes the store aims to stay under.
pub(crate) const BUDGET_BYTES: u64 = 16 * 1024 * 1024;
/// Memtables smaller than this are never sealed early: tiny tables only
/// make more work for compaction.
const MIN_SEAL_BYTES: u64 = 512 * 1024;

/// Seals the largest active memtable if the store is over budget and
/// nothing is being flushed yet. Cheap when under budget (two atomic loads).
pub(crate) fn bound(shared: &Shared) -> Result<()> {
    if shared.db.write_buffer_size() <= BUDGET_BYTES || shared.db.outstanding_flushes() > 0 {
        return Ok(());
    }
    let ks = &shared.ks;
    let mut largest: Option<(u64, Keyspace)> = None;
    let mut consider = |keyspace: &Keyspace| {
        let size = keyspace.tree.active_memtable().size();
        if size >= MIN_SEAL_BYTES && largest.as_ref().is_none_or(|(max, _)| size > *max) {
            largest = Some((size, keyspace.clone()));
        }
    };
    for keyspace in [
        &ks.meta,
        &ks.offsets,
        &ks.acked,
        &ks.pending,
        &ks.dead,
        &ks.state,
    ] {
        consider(keyspace);
    }
    for topic in read(&shared.topics).values() {
        for partition in 0..topic.partition_count() {
            if let Some(log) = topic.partition(partition) {
                consider(&log.keyspace);
            }
        }
    }
    if let Some((size, keyspace)) = largest {
        tracing::trace!(keyspace = %keyspace.name(), size, "sealing memtable to stay within the write buffer");
        keyspace.rotate_memtable()?;
    }
    Ok(())
}
