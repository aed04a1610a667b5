//! Committed subscriber state in memory: every value written since the
//! last checkpoint (*dirty*, pinned), plus a bounded cache of clean values.
//! Written only by the writer thread, after each commit; read by plugins
//! (through `FjallStore::state_get`) and by the writer's increments.
//!
//! Why it exists: a group commit does not write state into the `state`
//! keyspace. It appends one changelog record (`statelog`) holding the
//! final value of every key the group wrote, and this table holds those
//! values until a checkpoint has copied them into `state` (see
//! `checkpoint.rs`). Until then the table is the only place besides the
//! changelog that has them, so dirty entries are never evicted. Clean
//! entries are a cache: the same value is in `state`, so dropping one never
//! changes what a read returns.
//!
//! Readers never insert: only the writer does, after its commit succeeded,
//! so a reader cannot race a commit and put a stale value back.
//!
//! The cache part is bounded by bytes with two generations per shard: new
//! clean values go into the current generation; when it is full it becomes
//! the previous one and the older previous is dropped. Lookups try dirty,
//! then current, then previous. That keeps recently used keys at the cost
//! of a map swap, with no per-entry bookkeeping.

use std::sync::Mutex;

use xxhash_rust::xxh3::xxh3_64;

use super::support::lock;

/// Shards: readers on other threads rarely wait for each other.
const SHARDS: usize = 16;
/// Clean bytes (keys + values) per cache generation, over all shards.
pub const CACHE_GENERATION_BYTES: usize = 8 * 1024 * 1024;
/// Larger clean values are not cached (they would crowd out the hot ones);
/// dirty values are kept whatever their size.
pub const MAX_CACHED_VALUE_BYTES: usize = 4096;
/// Rough per-entry overhead counted against the budgets.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// `None` = committed as deleted.
type Value = Option<Vec<u8>>;
type Map<V> = foldhash::HashMap<Vec<u8>, V>;

/// A value not yet checkpointed, with the changelog record that holds it.
struct Dirty {
    value: Value,
    seq: u64,
}

#[derive(Default)]
struct Shard {
    dirty: Map<Dirty>,
    dirty_bytes: usize,
    current: Map<Value>,
    previous: Map<Value>,
    current_bytes: usize,
}

fn entry_bytes(key_len: usize, value: &Value) -> usize {
    key_len + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES
}

impl Shard {
    fn cache(&mut self, key: Vec<u8>, value: Value) {
        if value
            .as_ref()
            .is_some_and(|v| v.len() > MAX_CACHED_VALUE_BYTES)
        {
            // Forget any older cached value: reads go to fjall.
            self.current.remove(&key);
            self.previous.remove(&key);
            return;
        }
        let key_len = key.len();
        let added = entry_bytes(key_len, &value);
        let replaced = self
            .current
            .insert(key, value)
            .map_or(0, |old| entry_bytes(key_len, &old));
        // Only growth counts: rewriting a hot key must not rotate the cache.
        self.current_bytes = (self.current_bytes + added).saturating_sub(replaced);
        if self.current_bytes > CACHE_GENERATION_BYTES / SHARDS {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
    }
}

pub(crate) struct StateTable {
    shards: Vec<Mutex<Shard>>,
}

impl Default for StateTable {
    fn default() -> Self {
        StateTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl StateTable {
    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        // Lossless: the modulo fits in usize.
        &self.shards[(xxh3_64(key) % SHARDS as u64) as usize]
    }

    /// The committed value of `key` if held: `Some(None)` = deleted.
    #[cfg(test)]
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        self.read(key, |value| value.map(<[u8]>::to_vec)).ok()
    }

    /// `f` of the committed value of `key` (`None` = deleted) if held,
    /// without copying it; `f` back if not. `f` runs under the shard's
    /// lock, so keep it short.
    pub fn read<R, F: FnOnce(Option<&[u8]>) -> R>(&self, key: &[u8], f: F) -> Result<R, F> {
        let shard = lock(self.shard(key));
        let value = match shard.dirty.get(key) {
            Some(dirty) => &dirty.value,
            None => match shard.current.get(key).or_else(|| shard.previous.get(key)) {
                Some(value) => value,
                None => return Err(f),
            },
        };
        Ok(f(value.as_deref()))
    }

    /// Records a value committed in changelog record `seq`. Writer only,
    /// after the commit. Pinned until [`StateTable::checkpointed`].
    pub fn commit(&self, key: Vec<u8>, value: Value, seq: u64) {
        let mut shard = lock(self.shard(&key));
        let key_len = key.len();
        let added = entry_bytes(key_len, &value);
        let dirty = Dirty { value, seq };
        let replaced = match shard.dirty.insert(key, dirty) {
            Some(old) => entry_bytes(key_len, &old.value),
            None => 0,
        };
        shard.dirty_bytes = (shard.dirty_bytes + added).saturating_sub(replaced);
    }

    /// Calls `f` with the dirty value of `key` (`None` = deleted), for a
    /// checkpoint to copy into `state`, and answers the record it came
    /// from; `None` (and no call) if the key is clean. `f` runs under the
    /// shard's lock.
    pub fn read_dirty(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>)) -> Option<u64> {
        let shard = lock(self.shard(key));
        let dirty = shard.dirty.get(key)?;
        f(dirty.value.as_deref());
        Some(dirty.seq)
    }

    /// `key`'s value of record `seq` is now in `state` (committed): it
    /// becomes a clean, evictable cache entry, unless the key was written
    /// again since (then the newer value stays dirty).
    pub fn checkpointed(&self, key: &[u8], seq: u64) {
        let mut shard = lock(self.shard(key));
        if shard.dirty.get(key).is_none_or(|dirty| dirty.seq != seq) {
            return;
        }
        if let Some((key, dirty)) = shard.dirty.remove_entry(key) {
            shard.dirty_bytes = shard
                .dirty_bytes
                .saturating_sub(entry_bytes(key.len(), &dirty.value));
            shard.cache(key, dirty.value);
        }
    }

    /// Dirty entries whose key starts with `prefix`, unsorted: what a scan
    /// of `state` must overlay. Visits every dirty entry (admin reads only).
    pub fn dirty_with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Value)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = lock(shard);
            for (key, dirty) in &shard.dirty {
                if key.starts_with(prefix) {
                    out.push((key.clone(), dirty.value.clone()));
                }
            }
        }
        out
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The keys of the dirty entries of shard `index`, unsorted.
    pub fn dirty_keys_of(&self, index: usize) -> Vec<Vec<u8>> {
        self.shards
            .get(index)
            .map(|shard| lock(shard).dirty.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Bytes held by dirty entries (keys, values, overhead).
    pub fn dirty_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).dirty_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(value: &[u8]) -> Option<Value> {
        Some(Some(value.to_vec()))
    }

    #[test]
    fn the_newest_value_wins_and_deletions_are_remembered() {
        let table = StateTable::default();
        assert_eq!(table.get(b"k"), None);
        table.commit(b"k".to_vec(), Some(b"1".to_vec()), 1);
        table.commit(b"k".to_vec(), Some(b"2".to_vec()), 2);
        assert_eq!(table.get(b"k"), some(b"2"));
        table.commit(b"k".to_vec(), None, 3);
        assert_eq!(table.get(b"k"), Some(None));
    }

    #[test]
    fn dirty_values_are_never_evicted_whatever_their_number_or_size() {
        let table = StateTable::default();
        let big = vec![7u8; MAX_CACHED_VALUE_BYTES * 2];
        table.commit(b"big".to_vec(), Some(big.clone()), 1);
        // Far more than both cache generations hold.
        let value = vec![1u8; 1000];
        for i in 0..40_000u32 {
            table.commit(i.to_be_bytes().to_vec(), Some(value.clone()), 2);
        }
        assert_eq!(table.get(b"big"), Some(Some(big)));
        assert_eq!(table.get(&0u32.to_be_bytes()), Some(Some(value)));
        assert!(table.dirty_bytes() >= 40_000 * 1000);
    }

    #[test]
    fn a_checkpointed_value_becomes_a_bounded_cache_entry() {
        let table = StateTable::default();
        let value = vec![1u8; 1000];
        for i in 0..100_000u32 {
            let key = i.to_be_bytes().to_vec();
            table.commit(key.clone(), Some(value.clone()), u64::from(i));
            table.checkpointed(&key, u64::from(i));
        }
        assert_eq!(table.dirty_bytes(), 0);
        let held: usize = table
            .shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.current.len() + s.previous.len()
            })
            .sum();
        assert!(
            held * 1000 <= 2 * CACHE_GENERATION_BYTES + SHARDS * 2000,
            "{held} entries"
        );
        assert_eq!(table.get(&0u32.to_be_bytes()), None, "the oldest went");
        assert!(table.get(&99_999u32.to_be_bytes()).is_some());
    }

    #[test]
    fn a_key_written_again_stays_dirty_past_an_older_checkpoint() {
        let table = StateTable::default();
        table.commit(b"k".to_vec(), Some(b"1".to_vec()), 1);
        table.commit(b"k".to_vec(), Some(b"2".to_vec()), 2);
        table.checkpointed(b"k", 1);
        let mut value = None;
        let seq = table.read_dirty(b"k", |v| value = v.map(<[u8]>::to_vec));
        assert_eq!((value, seq), (Some(b"2".to_vec()), Some(2)), "still dirty");
        table.checkpointed(b"k", 2);
        assert_eq!(table.read_dirty(b"k", |_| panic!("clean")), None);
        assert_eq!(table.get(b"k"), some(b"2"), "now a cache entry");
    }

    #[test]
    fn oversized_values_are_not_cached_once_clean() {
        let table = StateTable::default();
        table.commit(b"k".to_vec(), Some(b"small".to_vec()), 1);
        table.checkpointed(b"k", 1);
        table.commit(b"k".to_vec(), Some(vec![0; MAX_CACHED_VALUE_BYTES + 1]), 2);
        table.checkpointed(b"k", 2);
        assert_eq!(table.get(b"k"), None, "reads go to fjall");
    }

    #[test]
    fn scans_see_dirty_entries_with_their_prefix_only() {
        let table = StateTable::default();
        table.commit(b"a/1".to_vec(), Some(b"x".to_vec()), 1);
        table.commit(b"a/2".to_vec(), None, 1);
        table.commit(b"b/1".to_vec(), Some(b"y".to_vec()), 1);
        table.commit(b"a/3".to_vec(), Some(b"z".to_vec()), 1);
        table.checkpointed(b"a/3", 1);
        let mut found = table.dirty_with_prefix(b"a/");
        found.sort();
        assert_eq!(
            found,
            [
                (b"a/1".to_vec(), Some(b"x".to_vec())),
                (b"a/2".to_vec(), None)
            ]
        );
    }
}
