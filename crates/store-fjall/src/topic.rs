//! Topics and their partitions in memory: the handles of the partition logs,
//! the offset counters the writer owns, the durable watermark consumers
//! read up to, the partitioner, and reading a partition's log.
//!
//! A log entry holds a run of consecutive messages under the first one's
//! offset (`codec.rs`), so a read at offset `o` starts at the last entry
//! whose key is at most `o` (one reverse seek) and skips the messages of
//! that run below `o`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fjall::{Keyspace, KeyspaceCreateOptions};

use super::codec;
use super::error::{Error, FjallResult, Result};
use super::keys;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config::{Retention, TopicSettings};

/// One partition's log.
pub(crate) struct PartitionLog {
    pub keyspace: Keyspace,
    /// Next offset to assign. Written only by the writer thread.
    pub next: AtomicU64,
    /// First retained offset; everything below is logically gone even if
    /// its table has not been dropped yet. Written only by the writer.
    pub start: AtomicU64,
    /// Timestamp of the newest message, so timestamps never go backwards
    /// within a partition. Written only by the writer.
    pub last_timestamp_ms: AtomicU64,
    /// End (exclusive) of the prefix that is durable per the fsync policy.
    /// Consumers read only below it, so nothing is delivered that a crash
    /// could take back. Published by the writer after each group commit.
    pub durable: watch::Sender<u64>,
}

impl PartitionLog {
    pub fn new(keyspace: Keyspace, start: u64, next: u64, last_timestamp_ms: u64) -> Self {
        PartitionLog {
            keyspace,
            next: AtomicU64::new(next),
            start: AtomicU64::new(start),
            last_timestamp_ms: AtomicU64::new(last_timestamp_ms),
            durable: watch::Sender::new(next),
        }
    }

    pub fn durable_end(&self) -> u64 {
        *self.durable.borrow()
    }

    pub fn start(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    /// Calls `each` with the offset and encoded bytes of every stored
    /// message in `[from, to)`, in order; stops at the first error. Blocking.
    ///
    /// Readers usually start where an earlier read ended, on the first
    /// offset of a run, so the scan first reads forward from `from` and
    /// only seeks back to the run holding `from` (a reverse seek through
    /// every layer of the tree, the costlier part of a small read) when
    /// `from` turns out to be inside one.
    pub fn scan(
        &self,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let range = |first: u64| {
            self.keyspace
                .range(keys::message_key(first)..keys::message_key(to))
                .map(fjall::Guard::into_inner)
        };
        let mut forward = range(from);
        let head = forward.next().transpose().fjall()?;
        if let Some((key, value)) = head
            && keys::decode_message_key(&key)? == from
        {
            let entries = std::iter::once(Ok((key, value))).chain(forward);
            return Self::scan_runs(entries, from, to, &mut each);
        }
        drop(forward);
        Self::scan_runs(range(self.run_start(from)?), from, to, &mut each)
    }

    /// The messages in `[from, to)` of the runs (key, value) `entries`
    /// yields, in key order.
    fn scan_runs(
        entries: impl Iterator<Item = fjall::Result<(fjall::UserKey, fjall::UserValue)>>,
        from: u64,
        to: u64,
        each: &mut impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        for entry in entries {
            let (key, value) = entry.fjall()?;
            let run_first = keys::decode_message_key(&key)?;
            for (index, message) in codec::run_messages(&value)?.enumerate() {
                let offset = run_first + index as u64;
                if offset >= to {
                    return Ok(());
                }
                let message = message?;
                if offset >= from {
                    each(offset, message)?;
                }
            }
        }
        Ok(())
    }

    /// The encoded message at `offset`, if stored. Blocking.
    pub fn get(&self, offset: u64) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        self.scan(offset, offset.saturating_add(1), |_, message| {
            found = Some(message.to_vec());
            Ok(())
        })?;
        Ok(found)
    }

    /// Key (first offset) of the entry that holds `offset`, or `offset`
    /// itself if no entry starts at or below it. Blocking.
    pub fn run_start(&self, offset: u64) -> Result<u64> {
        match self
            .keyspace
            .range(..=keys::message_key(offset))
            .next_back()
        {
            Some(guard) => keys::decode_message_key(&guard.key().fjall()?),
            None => Ok(offset),
        }
    }
}

/// The end of a partition's stored log: the offset after its last message
/// and that message's timestamp, or `None` if it holds nothing. Blocking.
pub(crate) fn stored_end(keyspace: &Keyspace) -> Result<Option<(u64, u64)>> {
    let Some(guard) = keyspace.last_key_value() else {
        return Ok(None);
    };
    let (key, value) = guard.into_inner().fjall()?;
    let first = keys::decode_message_key(&key)?;
    let messages = codec::run_messages(&value)?;
    let count = u64::from(messages.remaining());
    let last = messages.last().ok_or_else(|| Error::Corrupt {
        what: "message run",
        detail: format!("the entry at offset {first} holds no message"),
    })??;
    Ok(Some((first + count, codec::timestamp_of(last)?)))
}

/// A topic: a fixed set of partitions.
pub(crate) struct Topic {
    pub id: u32,
    pub name: Arc<str>,
    pub settings: TopicSettings,
    pub partitions: Vec<PartitionLog>,
    /// Spreads keyless messages round-robin.
    round_robin: AtomicU64,
}

impl Topic {
    pub fn new(
        id: u32,
        name: Arc<str>,
        settings: TopicSettings,
        partitions: Vec<PartitionLog>,
    ) -> Self {
        Topic {
            id,
            name,
            settings,
            partitions,
            round_robin: AtomicU64::new(0),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn partition(&self, partition: u32) -> Option<&PartitionLog> {
        self.partitions.get(partition as usize)
    }

    /// The partition of a message: a stable hash of the key (xxh3, fixed
    /// across versions and platforms), or round-robin without a key.
    pub fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        let count = self.partitions.len().max(1) as u64;
        let slot = match key {
            Some(key) => xxhash_rust::xxh3::xxh3_64(key) % count,
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % count,
        };
        slot as u32
    }
}

/// The registry record of a topic (JSON in the `meta` keyspace).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicRecord {
    pub id: u32,
    pub partitions: u32,
    pub retention_max_age_secs: Option<u64>,
    pub retention_max_bytes: Option<u64>,
    pub created_ms: u64,
}

impl TopicRecord {
    pub fn new(id: u32, settings: &TopicSettings, created_ms: u64) -> Self {
        TopicRecord {
            id,
            partitions: settings.partitions,
            retention_max_age_secs: settings.retention.max_age.map(|age| age.as_secs().max(1)),
            retention_max_bytes: settings.retention.max_bytes,
            created_ms,
        }
    }

    pub fn settings(&self) -> TopicSettings {
        TopicSettings {
            partitions: self.partitions,
            retention: Retention {
                max_age: self.retention_max_age_secs.map(Duration::from_secs),
                max_bytes: self.retention_max_bytes,
            },
        }
    }
}

/// Memtable size of every keyspace: small enough that dozens of partitions
/// stay within the memory budget, large enough for sequential flushes.
pub(crate) const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

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
    db.keyspace(&name, || {
        KeyspaceCreateOptions::default()
            .max_memtable_size(MEMTABLE_BYTES)
            .filter_policy(fjall::config::FilterPolicy::disabled())
    })
    .fjall()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NewMessage;
    use fjall::AbstractTree;

    /// A message whose payload is its offset, encoded.
    fn encoded(offset: u64) -> Vec<u8> {
        let message = NewMessage {
            payload: offset.to_string().into_bytes(),
            ..NewMessage::default()
        };
        codec::encode_message(&message).unwrap()
    }

    /// A log whose entries are runs of `runs[i]` messages each (payload =
    /// offset), every run flushed into a table of its own.
    fn log_of_runs(dir: &std::path::Path, runs: &[u64]) -> PartitionLog {
        let db = fjall::Database::builder(dir).open().unwrap();
        let ks = db
            .keyspace("p", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let mut offset = 0;
        for &count in runs {
            let first = offset;
            let mut run = codec::RunBuilder::default();
            for _ in 0..count {
                run.push(&encoded(offset), offset);
                offset += 1;
            }
            ks.insert(keys::message_key(first), run.finish()).unwrap();
            ks.rotate_memtable_and_wait().unwrap();
        }
        PartitionLog::new(ks, 0, offset, 0)
    }

    fn payloads(log: &PartitionLog, from: u64, to: u64) -> Vec<String> {
        let mut out = Vec::new();
        log.scan(from, to, |offset, encoded| {
            let message = codec::decode_message(&Arc::from("t"), 0, offset, encoded)?;
            assert_eq!(
                String::from_utf8_lossy(&message.payload),
                offset.to_string()
            );
            out.push(offset.to_string());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn reads_start_inside_runs_and_cross_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_of_runs(dir.path(), &[10, 1, 5]);
        let all: Vec<String> = (0..16).map(|o| o.to_string()).collect();
        assert_eq!(payloads(&log, 0, 16), all);
        assert_eq!(payloads(&log, 3, 12), all[3..12]);
        assert_eq!(payloads(&log, 10, 11), ["10"]);
        assert_eq!(payloads(&log, 15, 99), ["15"]);
        assert!(payloads(&log, 16, 20).is_empty());
        assert_eq!(log.run_start(13).unwrap(), 11);
        assert_eq!(log.run_start(10).unwrap(), 10);
        assert!(log.get(7).unwrap().is_some());
        assert!(log.get(16).unwrap().is_none());
        assert_eq!(stored_end(&log.keyspace).unwrap(), Some((16, 15)));
    }

    #[test]
    fn entries_from_before_runs_read_alongside_runs() {
        // A store written before runs holds one message per entry; runs
        // follow it after an upgrade.
        let dir = tempfile::tempdir().unwrap();
        let log = log_of_runs(dir.path(), &[]);
        for offset in 0..3u64 {
            log.keyspace
                .insert(keys::message_key(offset), encoded(offset))
                .unwrap();
        }
        let mut run = codec::RunBuilder::default();
        for offset in 3..6u64 {
            run.push(&encoded(offset), offset);
        }
        log.keyspace
            .insert(keys::message_key(3), run.finish())
            .unwrap();
        let all: Vec<String> = (0..6).map(|o| o.to_string()).collect();
        assert_eq!(payloads(&log, 0, 6), all);
        assert_eq!(payloads(&log, 2, 4), all[2..4]);
        assert_eq!(
            stored_end(&log.keyspace).unwrap().map(|(next, _)| next),
            Some(6)
        );
    }

    #[test]
    fn dropping_below_the_run_that_holds_the_floor_keeps_the_floor() {
        // Runs [0, 10) and [10, 20), each alone in a table. With the floor
        // at 15, only the first table may go: its run lies wholly below.
        let dir = tempfile::tempdir().unwrap();
        let log = log_of_runs(dir.path(), &[10, 10]);
        let bound = keys::message_key(log.run_start(15).unwrap());
        log.keyspace.tree.drop_range(..bound).unwrap();
        assert!(log.get(5).unwrap().is_none(), "the old table went");
        let kept: Vec<String> = (15..20).map(|o| o.to_string()).collect();
        assert_eq!(payloads(&log, 15, 20), kept);
        // Reads from below what is kept (a cursor behind retention) start
        // at the first kept run, aligned or not.
        let kept: Vec<String> = (10..20).map(|o| o.to_string()).collect();
        assert_eq!(payloads(&log, 0, 20), kept);
        assert_eq!(payloads(&log, 3, 12), kept[..2]);
        assert!(log.get(9).unwrap().is_none());
    }

    #[test]
    fn the_partitioner_is_stable_for_keys_and_spreads_keyless_messages() {
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let partitions = (0..4)
            .map(|p| {
                let ks = db
                    .keyspace(&format!("p{p}"), fjall::KeyspaceCreateOptions::default)
                    .unwrap();
                PartitionLog::new(ks, 0, 0, 0)
            })
            .collect();
        let topic = Topic::new(1, Arc::from("t"), TopicSettings::default(), partitions);
        // xxh3 is a published, fixed algorithm: this value must never change,
        // or keys would move partitions (and lose their order) on upgrade.
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(b"user-42"),
            5_836_184_775_705_692_621
        );
        assert_eq!(
            topic.partition_for(Some(b"user-42")),
            (5_836_184_775_705_692_621u64 % 4) as u32
        );
        let first = topic.partition_for(Some(b"user-42"));
        assert!((0..100).all(|_| topic.partition_for(Some(b"user-42")) == first));
        let mut counts = [0; 4];
        for _ in 0..400 {
            counts[topic.partition_for(None) as usize] += 1;
        }
        assert_eq!(counts, [100; 4]);
    }
}
