//! The maintenance thread: retention, disk-space checks, dropping the
//! state changelog below the last checkpoint, and keeping the memtables
//! within their budget (`write_buffer`).
//!
//! Retention never deletes messages one by one. For each partition it
//! computes a *floor*: the lowest committed cursor of the topic's
//! subscriptions (everything below was handled by all of them), raised if
//! the age or size limit forces it. The writer records the new floor (and
//! expires lagging cursors, counting what they lost) in one durable write;
//! then this thread drops every table that lies wholly below the floor with
//! fjall's `drop_range`, which deletes files instead of writing tombstones.
//! Entries of a table that straddles the floor stay on disk (logically
//! gone: reads start at the floor) until a later floor passes that table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fjall::AbstractTree;
use tokio::sync::oneshot;

use super::codec;
use super::command::Command;
use super::context::StoreContext;
use super::error::{FjallResult, Result};
use super::keys;
use super::support::{lock, now_ms, read};
use super::topic::{PartitionLog, Topic};
use super::write_buffer;

/// Runs until `stop` fires (or its sender is dropped). Between passes it
/// keeps the memtables within their budget (`write_buffer::seal`, every
/// `write_buffer::CHECK_INTERVAL`).
pub(crate) fn run(shared: Arc<StoreContext>, stop: flume::Receiver<()>) {
    let interval = shared.config.maintenance_interval;
    let mut dropped = HashMap::new();
    let mut state_log_dropped = 0;
    let mut passes: u64 = 0;
    let mut next_pass = Instant::now();
    loop {
        if let Err(error) = write_buffer::seal(&shared) {
            tracing::warn!(%error, "could not seal a memtable to bound memory");
        }
        if Instant::now() >= next_pass {
            check_disk(&shared);
            // Tables that straddled the floor at the last drop may lie wholly
            // below it by now (memtables get flushed): recheck now and then.
            if passes.is_multiple_of(RECHECK_EVERY_PASSES) {
                dropped.clear();
            }
            passes += 1;
            if let Err(error) = apply_retention(&shared, &mut dropped) {
                tracing::warn!(%error, "retention pass failed; will try again");
            }
            if let Err(error) = drop_state_log(&shared, &mut state_log_dropped) {
                tracing::warn!(%error, "dropping the checkpointed state changelog failed; will try again");
            }
            next_pass = Instant::now() + interval;
        }
        let wait =
            write_buffer::CHECK_INTERVAL.min(next_pass.saturating_duration_since(Instant::now()));
        match stop.recv_timeout(wait) {
            Err(flume::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Drops the changelog tables that lie wholly at or below the last state
/// checkpoint (recovery would skip them anyway). `dropped` is the
/// checkpoint of the last drop: unchanged ones are skipped.
fn drop_state_log(shared: &StoreContext, dropped: &mut u64) -> Result<()> {
    let checkpoint = shared
        .stats
        .state_checkpoint
        .load(std::sync::atomic::Ordering::Acquire);
    if checkpoint > *dropped {
        shared
            .ks
            .state_log
            .tree
            .drop_range(..=keys::state_log_key(checkpoint))
            .map_err(fjall::Error::from)
            .fjall()?;
        *dropped = checkpoint;
    }
    Ok(())
}

/// Every this many passes, `drop_range` runs again even without a new floor.
const RECHECK_EVERY_PASSES: u64 = 12;

/// Refuses appends while the database exceeds its size limit or the file
/// system runs low on space.
pub(crate) fn check_disk(shared: &StoreContext) {
    let mut reason = None;
    if let Some(limit) = shared.config.max_disk_bytes {
        let used = shared.db.disk_space().unwrap_or(0);
        if used > limit {
            reason = Some(format!(
                "database uses {used} bytes, over the limit of {limit}"
            ));
        }
    }
    if let Ok(stats) = rustix::fs::statvfs(&shared.config.dir) {
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        let min = shared.config.min_free_disk_bytes;
        if free < min {
            reason = Some(format!(
                "{free} bytes free on disk, below the minimum of {min}"
            ));
        }
    }
    shared.set_full(reason);
}

/// One retention pass over every partition. `dropped` remembers the floor
/// of the last `drop_range` per partition so unchanged ones are skipped.
pub(crate) fn apply_retention(
    shared: &Arc<StoreContext>,
    dropped: &mut HashMap<(u32, u32), u64>,
) -> Result<()> {
    let topics: Vec<Arc<Topic>> = read(&shared.topics).values().cloned().collect();
    for topic in topics {
        let subscriptions = shared.subscriptions_of(&topic);
        for (index, log) in topic.partitions.iter().enumerate() {
            let partition = index as u32;
            let consumed = subscriptions
                .iter()
                .map(|sub| lock(&sub.parts[index]).committed())
                .min();
            let floor = floor(&topic, log, consumed)?;
            if floor > log.start() && !truncate(shared, &topic, partition, floor) {
                return Ok(());
            }
            let start = log.start();
            if start > 0 && dropped.get(&(topic.id, partition)) != Some(&start) {
                // Not below `start` itself: the entry holding it is a run
                // that may begin below.
                let bound = keys::message_key(log.run_start(start)?);
                log.keyspace
                    .tree
                    .drop_range(..bound)
                    .map_err(fjall::Error::from)
                    .fjall()?;
                dropped.insert((topic.id, partition), start);
            }
        }
    }
    Ok(())
}

/// The offset below which a partition's messages may go.
fn floor(topic: &Topic, log: &PartitionLog, consumed: Option<u64>) -> Result<u64> {
    let start = log.start();
    let end = log.durable_end();
    // Without subscriptions nothing is consumed: only limits remove data.
    let mut floor = consumed.unwrap_or(start);
    if let Some(max_age) = topic.settings.retention.max_age {
        let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
        floor = floor.max(first_at_or_after(log, start, end, cutoff)?);
    }
    if let Some(max_bytes) = topic.settings.retention.max_bytes {
        floor = floor.max(size_floor(
            log,
            start,
            end,
            max_bytes / u64::from(topic.partition_count()).max(1),
        ));
    }
    Ok(floor.min(end))
}

/// First offset in `[start, end)` whose timestamp is at least `cutoff_ms`
/// (timestamps never decrease within a partition): a binary search with
/// point reads, O(log n).
pub(crate) fn first_at_or_after(
    log: &PartitionLog,
    start: u64,
    end: u64,
    cutoff_ms: u64,
) -> Result<u64> {
    let (mut low, mut high) = (start, end);
    while low < high {
        let mid = low + (high - low) / 2;
        let timestamp = match log.get(mid)? {
            Some(encoded) => codec::timestamp_of(&encoded)?,
            None => 0,
        };
        if timestamp < cutoff_ms {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(low)
}

/// Estimated offset to cut so the partition fits in `max_bytes`, from its
/// size on disk and its average message size. Approximate by design: it
/// errs towards keeping data, and the next pass corrects it.
fn size_floor(log: &PartitionLog, start: u64, end: u64, max_bytes: u64) -> u64 {
    let size = log.keyspace.disk_space();
    let count = end.saturating_sub(start);
    if size <= max_bytes || count == 0 {
        return start;
    }
    let average = (size / count).max(1);
    start + ((size - max_bytes) / average).min(count)
}

/// Asks the writer to move the floor; false if the store is closing.
fn truncate(shared: &StoreContext, topic: &Arc<Topic>, partition: u32, floor: u64) -> bool {
    let (reply, answer) = oneshot::channel();
    let command = Command::Truncate {
        topic: Arc::clone(topic),
        partition,
        floor,
        reply,
    };
    if shared.commands.send(command).is_err() {
        return false;
    }
    match answer.blocking_recv() {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, topic = %topic.name, partition, "retention could not truncate");
            false
        }
        Err(_) => false,
    }
}
