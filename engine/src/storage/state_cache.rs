//! A bounded cache of committed subscriber state, written only by the
//! writer thread after a successful commit.
//!
//! Plugins read their state on almost every message (a member's points, a
//! user's profile) and the writer reads counters to apply increments; an
//! LSM point read costs microseconds, a cache hit a hash lookup. The cache
//! holds only values that are committed: the writer inserts the final value
//! of every key a group wrote *after* the group's commit succeeded, and
//! readers never insert (a reader could otherwise race a commit and put a
//! stale value back). A miss falls through to fjall, which holds the same
//! committed value, so eviction never changes what a read returns.
//!
//! Bounded by bytes with two generations per shard: new values go into the
//! current generation; when it is full it becomes the previous one and the
//! older previous is dropped. Lookups try current, then previous. That keeps
//! recently written keys (the hot ones) at the cost of a map swap, with no
//! per-entry bookkeeping.

use std::sync::Mutex;

use xxhash_rust::xxh3::xxh3_64;

use super::shared::lock;

/// Shards: readers on other threads rarely wait for each other.
const SHARDS: usize = 16;
/// Total bytes (keys + values) per generation, over all shards.
pub const CACHE_GENERATION_BYTES: usize = 8 * 1024 * 1024;
/// Larger values are not cached (they would crowd out the hot ones).
pub const MAX_CACHED_VALUE_BYTES: usize = 4096;
/// Rough per-entry overhead counted against the budget.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// `Some(None)` in a lookup means "committed as deleted".
type Generation = foldhash::HashMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Default)]
struct Shard {
    current: Generation,
    previous: Generation,
    current_bytes: usize,
}

pub(crate) struct StateCache {
    shards: Vec<Mutex<Shard>>,
}

impl Default for StateCache {
    fn default() -> Self {
        StateCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl StateCache {
    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        // Lossless: the modulo fits in usize.
        &self.shards[(xxh3_64(key) % SHARDS as u64) as usize]
    }

    /// The committed value of `key` if cached: `Some(None)` = deleted.
    pub fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let shard = lock(self.shard(key));
        shard
            .current
            .get(key)
            .or_else(|| shard.previous.get(key))
            .cloned()
    }

    /// Records a committed value. Writer thread only, after the commit.
    pub fn put(&self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let mut shard = lock(self.shard(&key));
        let too_big = value
            .as_ref()
            .is_some_and(|v| v.len() > MAX_CACHED_VALUE_BYTES);
        if too_big {
            // Forget any older cached value: reads go to fjall.
            shard.current.remove(&key);
            shard.previous.remove(&key);
            return;
        }
        let key_len = key.len();
        let size = |value: &Option<Vec<u8>>| {
            key_len + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES
        };
        let added = size(&value);
        let replaced = shard.current.insert(key, value).map_or(0, |old| size(&old));
        // Only growth counts: rewriting a hot key must not rotate the cache.
        shard.current_bytes = (shard.current_bytes + added).saturating_sub(replaced);
        if shard.current_bytes > CACHE_GENERATION_BYTES / SHARDS {
            let full = std::mem::take(&mut shard.current);
            shard.previous = full;
            shard.current_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_value_wins_and_deletions_are_remembered() {
        let cache = StateCache::default();
        assert_eq!(cache.get(b"k"), None);
        cache.put(b"k".to_vec(), Some(b"1".to_vec()));
        cache.put(b"k".to_vec(), Some(b"2".to_vec()));
        assert_eq!(cache.get(b"k"), Some(Some(b"2".to_vec())));
        cache.put(b"k".to_vec(), None);
        assert_eq!(cache.get(b"k"), Some(None));
    }

    #[test]
    fn memory_stays_bounded_and_old_keys_fall_out() {
        let cache = StateCache::default();
        let value = vec![7u8; 1000];
        for i in 0..100_000u32 {
            cache.put(i.to_be_bytes().to_vec(), Some(value.clone()));
        }
        let held: usize = cache
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
        assert_eq!(
            cache.get(&0u32.to_be_bytes()),
            None,
            "the oldest keys were evicted"
        );
        assert!(
            cache.get(&99_999u32.to_be_bytes()).is_some(),
            "the newest key is cached"
        );
    }

    #[test]
    fn rewriting_one_key_never_evicts_the_others() {
        let cache = StateCache::default();
        // A cold key in the hot key's shard, where a rotation would hit it.
        let cold = (0u32..)
            .map(|i| format!("cold/{i}").into_bytes())
            .find(|key| std::ptr::eq(cache.shard(key), cache.shard(b"hot")))
            .expect("some key shares the shard");
        cache.put(cold.clone(), Some(b"1".to_vec()));
        let value = vec![1u8; 1000];
        for _ in 0..100_000 {
            cache.put(b"hot".to_vec(), Some(value.clone()));
        }
        assert_eq!(cache.get(&cold), Some(Some(b"1".to_vec())));
    }

    #[test]
    fn oversized_values_are_not_cached_and_hide_older_ones() {
        let cache = StateCache::default();
        cache.put(b"k".to_vec(), Some(b"small".to_vec()));
        cache.put(b"k".to_vec(), Some(vec![0; MAX_CACHED_VALUE_BYTES + 1]));
        assert_eq!(cache.get(b"k"), None);
    }
}
