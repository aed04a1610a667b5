//! Plugin state as readers see it: the state table's newer values over
//! the `state` keyspace's checkpoint.

use std::collections::BTreeMap;

use super::FjallStore;
use crate::error::{FjallResult, Result};
use crate::keys;

impl FjallStore {
    /// A subscriber's committed state value. Blocking.
    pub fn state_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.state_read(namespace, key, |value| value.map(<[u8]>::to_vec))
    }

    /// `f` of a subscriber's committed state value (`None`: absent), read
    /// in place where it can be (a counter is parsed, not copied). Blocking;
    /// `f` may run under a lock of the state table, so keep it short.
    pub fn state_read<R>(
        &self,
        namespace: &str,
        key: &str,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        thread_local! {
            // Plugins read state on nearly every message: the full key is
            // built in a buffer of the calling thread, not a new one each time.
            static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        KEY.with_borrow_mut(|full| {
            keys::state_key_into(namespace, key, full);
            match self.shared.state_table.read(full, f) {
                Ok(result) => Ok(result),
                Err(f) => Ok(f(self.shared.ks.state.get(&full[..]).fjall()?.as_deref())),
            }
        })
    }

    /// Up to `limit` committed state entries of a namespace whose keys
    /// start with `prefix`, in key order: `state` (as of the checkpoint)
    /// merged with the values written since. Blocking.
    pub fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        self.state_scan_after(namespace, prefix, None, limit)
    }

    /// Like [`state_scan`](Self::state_scan), but only keys after
    /// `start_after` (the last key of the previous page): pages of a large
    /// namespace cost their own size, not everything before them.
    pub fn state_scan_after(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        use std::ops::Bound;

        let skip = keys::state_prefix(namespace).len();
        let full_prefix = keys::state_key(namespace, prefix);
        let after = start_after
            .map(|key| keys::state_key(namespace, key))
            .filter(|after| *after >= full_prefix);
        let mut newer: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .shared
            .state_table
            .dirty_with_prefix(&full_prefix)
            .into_iter()
            .filter(|(key, _)| after.as_ref().is_none_or(|after| key > after))
            .collect();
        let lower = match &after {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Included(full_prefix.clone()),
        };
        let mut merged = Vec::new();
        for guard in self.shared.ks.state.range((lower, Bound::Unbounded)) {
            if merged.len() >= limit {
                break;
            }
            let (key, value) = guard.into_inner().fjall()?;
            if !key.starts_with(&full_prefix) {
                break;
            }
            // Newer values of smaller keys come first.
            while let Some(entry) = newer.first_entry()
                && entry.key().as_slice() < &*key
            {
                let (key, value) = entry.remove_entry();
                if let Some(value) = value {
                    merged.push((key, value));
                }
            }
            match newer.remove(&*key) {
                Some(Some(value)) => merged.push((key.to_vec(), value)),
                Some(None) => {}
                None => merged.push((key.to_vec(), value.to_vec())),
            }
        }
        merged.extend(
            newer
                .into_iter()
                .filter_map(|(key, value)| value.map(|value| (key, value))),
        );
        merged.truncate(limit);
        Ok(merged
            .into_iter()
            .map(|(key, value)| (String::from_utf8_lossy(&key[skip..]).into_owned(), value))
            .collect())
    }
}
