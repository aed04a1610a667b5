//! Bounds the memory of fjall's memtables, summed over every keyspace.
//!
//! fjall 3.1 accepts `max_write_buffer_size` but does not enforce it (it is
//! marked "todo"): each keyspace only seals its own memtable once it passes
//! `max_memtable_size`. With one keyspace per partition, a burst filled
//! dozens of memtables at once and they summed to 40+ MiB. So the store
//! enforces a budget itself, in two steps:
//!
//! - [`seal`] (the maintenance thread, every [`CHECK_INTERVAL`]) seals the
//!   largest active memtables while the active ones hold more than
//!   [`BUDGET_BYTES`]; fjall's flushes then free them. Sealing takes the
//!   journal lock only briefly, but fjall then runs housekeeping over every
//!   keyspace (milliseconds): that is why it is not the writer's job.
//! - [`throttle`] (the writer, before each commit) waits while the
//!   unflushed total is over [`STALL_BYTES`] and flushes are running: when
//!   writes outpace flushes, producers wait instead of memory growing.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use fjall::{AbstractTree, Keyspace};

use super::context::StoreContext;
use super::error::{FjallResult, Result};
use super::support::read;

/// Active memtable bytes above which the largest ones are sealed; also
/// handed to fjall, for when it enforces its own limit.
pub(crate) const BUDGET_BYTES: u64 = 16 * 1024 * 1024;
/// Unflushed bytes above which the writer waits for flushes.
const STALL_BYTES: u64 = 3 * BUDGET_BYTES;
/// Memtables smaller than this are never sealed early: tiny tables only
/// make more work for compaction.
const MIN_SEAL_BYTES: u64 = 512 * 1024;
/// How often the maintenance thread checks the active memtables.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// Longest the writer waits for flushes before one group commit: a flush
/// that never ends must not stop every write for good.
const MAX_STALL: Duration = Duration::from_secs(1);

/// Seals the largest active memtables until the active ones fit within
/// [`BUDGET_BYTES`]. Cheap when under budget (one atomic load).
pub(crate) fn seal(shared: &StoreContext) -> Result<()> {
    if shared.db.write_buffer_size() <= BUDGET_BYTES {
        return Ok(());
    }
    let ks = &shared.ks;
    let mut active: Vec<(u64, Keyspace)> = Vec::new();
    let mut add = |keyspace: &Keyspace| {
        active.push((keyspace.tree.active_memtable().size(), keyspace.clone()));
    };
    for keyspace in [
        &ks.meta,
        &ks.offsets,
        &ks.acked,
        &ks.pending,
        &ks.dead,
        &ks.state,
        &ks.state_log,
    ] {
        add(keyspace);
    }
    for topic in read(&shared.topics).values() {
        for partition in 0..topic.partition_count() {
            if let Some(log) = topic.partition(partition) {
                add(&log.keyspace);
            }
        }
    }
    let mut total: u64 = active.iter().map(|(size, _)| size).sum();
    active.sort_unstable_by_key(|(size, _)| Reverse(*size));
    for (size, keyspace) in active {
        if total <= BUDGET_BYTES || size < MIN_SEAL_BYTES {
            break;
        }
        tracing::trace!(keyspace = %keyspace.name(), size, "sealing a memtable to stay within the write buffer");
        keyspace.rotate_memtable().fjall()?;
        total -= size;
    }
    Ok(())
}

/// Waits (up to [`MAX_STALL`]) while the unflushed memtables exceed
/// [`STALL_BYTES`] and flushes are under way to bring them down.
pub(crate) fn throttle(shared: &StoreContext) {
    let over =
        || shared.db.write_buffer_size() > STALL_BYTES && shared.db.outstanding_flushes() > 0;
    if !over() {
        return;
    }
    let started = Instant::now();
    while over() && started.elapsed() < MAX_STALL {
        std::thread::sleep(Duration::from_millis(1));
    }
    let waited = started.elapsed();
    shared.stats.write_stalls.observe(waited);
    tracing::debug!(?waited, "writes waited for memtable flushes");
}
