//! The key layout: keyspace names and big-endian keys, in one place.
//!
//! Every key is big-endian so that byte order equals numeric order: offsets
//! of a partition are appended at the end of their keyspace, and all entries
//! of one subscription (or one subscription partition) form one contiguous,
//! prefix-scannable range.

pub use courier_core::validate_name;

use super::error::{Error, Result};

/// Keyspace of the topic and subscription registry (small JSON records).
pub const META: &str = "meta";
/// Keyspace of cursors, partition start offsets and subscription counters.
pub const OFFSETS: &str = "offsets";
/// Keyspace of unordered acknowledgements above the committed cursor.
pub const ACKED: &str = "acked";
/// Keyspace of scheduled redeliveries (retries and replays).
pub const PENDING: &str = "pending";
/// Keyspace of dead letters.
pub const DEAD: &str = "dead";
/// Keyspace of subscribers' private state, as of the last checkpoint.
pub const STATE: &str = "state";
/// Keyspace of the state changelog: one record per group commit that wrote
/// state, keyed by its sequence number (see `checkpoint.rs`).
pub const STATE_LOG: &str = "statelog";

/// `offsets` key of the state checkpoint: `state` holds every value of the
/// changelog records up to this sequence number.
pub const STATE_CHECKPOINT_KEY: &[u8] = b"S";

/// Key of a changelog record.
pub fn state_log_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn decode_state_log_key(key: &[u8]) -> Result<u64> {
    decode_u64_key("state changelog key", key)
}

/// The message log of one partition: its own keyspace, so that offsets are
/// strictly increasing within it and its tables never overlap.
pub fn partition_keyspace(topic_id: u32, partition: u32) -> String {
    format!("log.{topic_id}.{partition}")
}

/// Key of a message in its partition's keyspace.
pub fn message_key(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

pub fn decode_message_key(key: &[u8]) -> Result<u64> {
    decode_u64_key("message key", key)
}

/// A key that is one big-endian u64.
fn decode_u64_key(what: &'static str, key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| Error::Corrupt {
        what,
        detail: format!("expected 8 bytes, got {}", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// `meta` key of a topic record.
pub fn topic_record_key(name: &str) -> Vec<u8> {
    [b"topic/".as_slice(), name.as_bytes()].concat()
}

pub const TOPIC_RECORD_PREFIX: &[u8] = b"topic/";

/// `meta` key of a subscription record.
pub fn subscription_record_key(sub_id: u32) -> Vec<u8> {
    [b"sub/".as_slice(), &sub_id.to_be_bytes()].concat()
}

pub const SUBSCRIPTION_RECORD_PREFIX: &[u8] = b"sub/";

/// `offsets` key of a partition's first retained offset.
pub fn start_offset_key(topic_id: u32, partition: u32) -> [u8; 9] {
    tagged_pair(b'T', topic_id, partition)
}

/// `offsets` key of a subscription partition's committed cursor.
pub fn cursor_key(sub_id: u32, partition: u32) -> [u8; 9] {
    tagged_pair(b'C', sub_id, partition)
}

/// `offsets` key of a subscription's counters (dead letters, expired).
pub fn counters_key(sub_id: u32) -> [u8; 5] {
    let mut key = [b'N'; 5];
    key[1..].copy_from_slice(&sub_id.to_be_bytes());
    key
}

fn tagged_pair(tag: u8, a: u32, b: u32) -> [u8; 9] {
    let mut key = [tag; 9];
    key[1..5].copy_from_slice(&a.to_be_bytes());
    key[5..].copy_from_slice(&b.to_be_bytes());
    key
}

/// Prefix of everything a subscription owns in `acked`, `pending` and `dead`.
pub fn subscription_prefix(sub_id: u32) -> [u8; 4] {
    sub_id.to_be_bytes()
}

/// Key of a (subscription, partition, offset) entry in `acked` or `pending`.
pub fn delivery_key(sub_id: u32, partition: u32, offset: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..4].copy_from_slice(&sub_id.to_be_bytes());
    key[4..8].copy_from_slice(&partition.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

pub fn decode_delivery_key(key: &[u8]) -> Result<(u32, u32, u64)> {
    if key.len() != 16 {
        return Err(Error::Corrupt {
            what: "delivery key",
            detail: format!("expected 16 bytes, got {}", key.len()),
        });
    }
    let (sub, rest) = key.split_at(4);
    let (partition, offset) = rest.split_at(4);
    Ok((
        u32::from_be_bytes(sub.try_into().unwrap_or_default()),
        u32::from_be_bytes(partition.try_into().unwrap_or_default()),
        u64::from_be_bytes(offset.try_into().unwrap_or_default()),
    ))
}

/// Key of a dead letter: per subscription, in the order they died.
pub fn dead_key(sub_id: u32, seq: u64) -> [u8; 12] {
    let mut key = [0; 12];
    key[..4].copy_from_slice(&sub_id.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn decode_dead_key(key: &[u8]) -> Result<(u32, u64)> {
    if key.len() != 12 {
        return Err(Error::Corrupt {
            what: "dead-letter key",
            detail: format!("expected 12 bytes, got {}", key.len()),
        });
    }
    let (sub, seq) = key.split_at(4);
    Ok((
        u32::from_be_bytes(sub.try_into().unwrap_or_default()),
        u64::from_be_bytes(seq.try_into().unwrap_or_default()),
    ))
}

/// Key of a state entry: the namespace, length-prefixed so that one
/// namespace can never be a prefix of another, then the user's key.
pub fn state_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + namespace.len() + key.len());
    state_key_into(namespace, key, &mut out);
    out
}

/// [`state_key`] into `out` (cleared first), reusing its buffer.
pub fn state_key_into(namespace: &str, key: &str, out: &mut Vec<u8>) {
    out.clear();
    // Names are validated to at most MAX_NAME_LEN (< 256) bytes.
    out.push(namespace.len().min(255) as u8);
    out.extend_from_slice(namespace.as_bytes());
    out.extend_from_slice(key.as_bytes());
}

pub fn state_prefix(namespace: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + namespace.len() + 16);
    state_key_into(namespace, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_like_offsets() {
        let mut keys: Vec<_> = [5u64, 256, 1, 1 << 40, 0]
            .iter()
            .map(|o| message_key(*o))
            .collect();
        keys.sort();
        let offsets: Vec<_> = keys
            .iter()
            .map(|k| decode_message_key(k).unwrap())
            .collect();
        assert_eq!(offsets, vec![0, 1, 5, 256, 1 << 40]);
    }

    #[test]
    fn delivery_keys_round_trip_and_group_by_subscription() {
        let key = delivery_key(7, 3, 99);
        assert_eq!(decode_delivery_key(&key).unwrap(), (7, 3, 99));
        assert!(key.starts_with(&subscription_prefix(7)));
        assert!(delivery_key(7, 3, u64::MAX) < delivery_key(7, 4, 0));
        assert_eq!(decode_dead_key(&dead_key(2, 10)).unwrap(), (2, 10));
    }

    #[test]
    fn state_namespaces_never_prefix_each_other() {
        assert!(!state_key("ab", "c").starts_with(&state_prefix("a")));
        assert!(state_key("a", "bc").starts_with(&state_prefix("a")));
        let mut reused = b"left over from before".to_vec();
        state_key_into("a", "bc", &mut reused);
        assert_eq!(reused, state_key("a", "bc"));
    }
}
