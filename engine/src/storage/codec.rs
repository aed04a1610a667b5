//! Byte encodings of stored values. Hot-path records (messages, pending
//! redeliveries, dead letters, cursors) are compact little-endian binary;
//! the rarely written registry records are JSON so they stay readable and
//! can grow fields.
//!
//! Message value, format version 1:
//!
//! ```text
//! +----+--------------+------------+-------+--------+--------------------------+---------+
//! | 01 | timestamp u64| keylen+1 u32| key  | nhdr u16| (namelen u16, name,      | payload |
//! |    |  (ms, LE)    | (0 = none) |       |        |  valuelen u32, value)*   | (rest)  |
//! +----+--------------+------------+-------+--------+--------------------------+---------+
//! ```
//! The timestamp sits at a fixed position so the writer can stamp it
//! without re-encoding.

use std::sync::Arc;

use super::error::{Error, Result};
use super::types::{Message, NewMessage};

const MESSAGE_FORMAT_V1: u8 = 1;
/// Byte range of the timestamp inside an encoded message.
pub const TIMESTAMP_RANGE: std::ops::Range<usize> = 1..9;
/// Most headers one message may carry (the count is stored as u16).
pub const MAX_HEADERS: usize = 1024;

/// Size of `message` once encoded, without allocating.
pub fn encoded_len(message: &NewMessage) -> usize {
    let headers: usize = message
        .headers
        .iter()
        .map(|(name, value)| 2 + name.len() + 4 + value.len())
        .sum();
    1 + 8 + 4 + message.key.as_ref().map_or(0, Vec::len) + 2 + headers + message.payload.len()
}

/// Encodes `message` with a zero timestamp (the writer stamps it).
pub fn encode_message(message: &NewMessage) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded_len(message));
    write_message(message, &mut out)?;
    Ok(out)
}

/// Encodes `message` straight into the value type fjall stores, so the
/// writer inserts it without another copy.
pub fn encode_message_slice(message: &NewMessage) -> Result<fjall::Slice> {
    let len = encoded_len(message);
    let mut view = byteview::ByteView::with_size(len);
    match view.get_mut() {
        Some(mut bytes) => {
            let mut cursor = Cursor {
                bytes: &mut bytes,
                at: 0,
            };
            write_message(message, &mut cursor)?;
        }
        // A fresh view has no other owner; copy if that ever changes.
        None => return Ok(fjall::Slice::from(encode_message(message)?)),
    }
    Ok(fjall::Slice::from(view))
}

/// Where encoded bytes go.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes into a buffer sized by `encoded_len`.
struct Cursor<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl Sink for Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(slot) = self.bytes.get_mut(self.at..end) {
            slot.copy_from_slice(bytes);
        }
        self.at = end;
    }
}

fn write_message(message: &NewMessage, out: &mut impl Sink) -> Result<()> {
    if message.headers.len() > MAX_HEADERS {
        return Err(Error::InvalidArgument(format!(
            "{} headers exceed the limit of {MAX_HEADERS}",
            message.headers.len()
        )));
    }
    out.put(&[MESSAGE_FORMAT_V1]);
    out.put(&0u64.to_le_bytes());
    match &message.key {
        None => out.put(&0u32.to_le_bytes()),
        Some(key) => {
            out.put(&len_u32(key.len())?.saturating_add(1).to_le_bytes());
            out.put(key);
        }
    }
    out.put(&(message.headers.len() as u16).to_le_bytes());
    for (name, value) in &message.headers {
        let name_len = u16::try_from(name.len())
            .map_err(|_| Error::InvalidArgument("header name longer than 65535 bytes".into()))?;
        out.put(&name_len.to_le_bytes());
        out.put(name.as_bytes());
        out.put(&len_u32(value.len())?.to_le_bytes());
        out.put(value.as_bytes());
    }
    out.put(&message.payload);
    Ok(())
}

fn len_u32(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::InvalidArgument("field longer than 4 GiB".into()))
}

/// Writes `timestamp_ms` into an encoded message.
pub fn stamp(encoded: fjall::Slice, timestamp_ms: u64) -> fjall::Slice {
    let mut view = byteview::ByteView::from(encoded);
    let stamped = match view.get_mut() {
        Some(mut bytes) => {
            if let Some(slot) = bytes.get_mut(TIMESTAMP_RANGE) {
                slot.copy_from_slice(&timestamp_ms.to_le_bytes());
            }
            true
        }
        None => false,
    };
    if stamped {
        return fjall::Slice::from(view);
    }
    // Shared (never the case for freshly encoded messages): copy.
    let mut copy = view.to_vec();
    if let Some(slot) = copy.get_mut(TIMESTAMP_RANGE) {
        slot.copy_from_slice(&timestamp_ms.to_le_bytes());
    }
    fjall::Slice::from(copy)
}

/// Reads only the timestamp of an encoded message.
pub fn timestamp_of(encoded: &[u8]) -> Result<u64> {
    let mut reader = Reader::new(encoded, "message");
    reader.version(MESSAGE_FORMAT_V1)?;
    reader.u64()
}

/// Decodes a stored message.
pub fn decode_message(
    topic: &Arc<str>,
    partition: u32,
    offset: u64,
    encoded: &[u8],
) -> Result<Message> {
    let mut reader = Reader::new(encoded, "message");
    reader.version(MESSAGE_FORMAT_V1)?;
    let timestamp_ms = reader.u64()?;
    let key = match reader.u32()? {
        0 => None,
        n => Some(reader.bytes(n as usize - 1)?.to_vec()),
    };
    let header_count = reader.u16()?;
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let name_len = reader.u16()? as usize;
        let name = reader.string(name_len)?;
        let value_len = reader.u32()? as usize;
        let value = reader.string(value_len)?;
        headers.push((name, value));
    }
    Ok(Message {
        topic: Arc::clone(topic),
        partition,
        offset,
        timestamp_ms,
        key,
        headers,
        payload: reader.rest().to_vec(),
    })
}

/// A scheduled redelivery: a retry of a failed message, or a replayed dead
/// letter (which carries its own copy of the message, because the log may
/// no longer hold it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub due_ms: u64,
    pub reason: String,
    /// Encoded message, for replays only.
    pub copy: Option<Vec<u8>>,
}

pub fn encode_pending(record: &PendingRecord) -> Vec<u8> {
    let copy_len = record.copy.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(4 + 8 + 4 + record.reason.len() + 1 + copy_len);
    out.extend_from_slice(&record.attempts.to_le_bytes());
    out.extend_from_slice(&record.due_ms.to_le_bytes());
    put_str(&mut out, &record.reason);
    match &record.copy {
        None => out.push(0),
        Some(copy) => {
            out.push(1);
            out.extend_from_slice(copy);
        }
    }
    out
}

pub fn decode_pending(encoded: &[u8]) -> Result<PendingRecord> {
    let mut reader = Reader::new(encoded, "pending record");
    let attempts = reader.u32()?;
    let due_ms = reader.u64()?;
    let reason = reader.str()?;
    let copy = match reader.u8()? {
        0 => None,
        _ => Some(reader.rest().to_vec()),
    };
    Ok(PendingRecord {
        attempts,
        due_ms,
        reason,
        copy,
    })
}

/// A dead letter as stored: where the message came from, why it died, and
/// the message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRecord {
    pub partition: u32,
    pub offset: u64,
    pub attempts: u32,
    pub failed_at_ms: u64,
    pub reason: String,
    pub message: Vec<u8>,
}

pub fn encode_dead(record: &DeadRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + record.reason.len() + record.message.len());
    out.extend_from_slice(&record.partition.to_le_bytes());
    out.extend_from_slice(&record.offset.to_le_bytes());
    out.extend_from_slice(&record.attempts.to_le_bytes());
    out.extend_from_slice(&record.failed_at_ms.to_le_bytes());
    put_str(&mut out, &record.reason);
    out.extend_from_slice(&record.message);
    out
}

pub fn decode_dead(encoded: &[u8]) -> Result<DeadRecord> {
    let mut reader = Reader::new(encoded, "dead letter");
    Ok(DeadRecord {
        partition: reader.u32()?,
        offset: reader.u64()?,
        attempts: reader.u32()?,
        failed_at_ms: reader.u64()?,
        reason: reader.str()?,
        message: reader.rest().to_vec(),
    })
}

pub fn encode_u64(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

pub fn decode_u64(encoded: &[u8], what: &'static str) -> Result<u64> {
    Reader::new(encoded, what).u64()
}

/// Subscription counters kept durably (so introspection needs no scans).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Dead letters currently stored.
    pub dead_letters: u64,
    /// Messages removed by retention before this subscription handled them.
    pub expired: u64,
}

pub fn encode_counters(counters: &Counters) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&counters.dead_letters.to_le_bytes());
    out[8..].copy_from_slice(&counters.expired.to_le_bytes());
    out
}

pub fn decode_counters(encoded: &[u8]) -> Result<Counters> {
    let mut reader = Reader::new(encoded, "counters");
    Ok(Counters {
        dead_letters: reader.u64()?,
        expired: reader.u64()?,
    })
}

const STATE_RECORD_FORMAT_V1: u8 = 1;

/// Encodes a state changelog record: the final value of each key one group
/// commit wrote (`None` = deleted). Keys are full `state` keys (at most
/// `1 + MAX_NAME_LEN + MAX_STATE_KEY_BYTES` bytes), values at most 1 MiB.
///
/// ```text
/// 01 | (keylen u16, key, 0 = deleted | 1, valuelen u32, value)*
/// ```
pub fn encode_state_record<'a>(
    entries: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    size_hint: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + size_hint);
    out.push(STATE_RECORD_FORMAT_V1);
    for (key, value) in entries {
        out.extend_from_slice(&(key.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                out.extend_from_slice(&(value.len().min(u32::MAX as usize) as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
    }
    out
}

/// Bytes one entry adds to a state record.
pub fn state_entry_len(key: &[u8], value: Option<&[u8]>) -> usize {
    2 + key.len() + 1 + value.map_or(0, |v| 4 + v.len())
}

/// A decoded state record's entries, in record order.
pub type StateEntries = Vec<(Vec<u8>, Option<Vec<u8>>)>;

pub fn decode_state_record(encoded: &[u8]) -> Result<StateEntries> {
    let mut reader = Reader::new(encoded, "state changelog record");
    reader.version(STATE_RECORD_FORMAT_V1)?;
    let mut entries = Vec::new();
    while !reader.bytes.is_empty() {
        let key_len = reader.u16()? as usize;
        let key = reader.bytes(key_len)?.to_vec();
        let value = match reader.u8()? {
            0 => None,
            _ => {
                let len = reader.u32()? as usize;
                Some(reader.bytes(len)?.to_vec())
            }
        };
        entries.push((key, value));
    }
    Ok(entries)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // Reasons are truncated by callers long before 4 GiB.
    out.extend_from_slice(&(text.len().min(u32::MAX as usize) as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A bounds-checked cursor over encoded bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, what }
    }

    fn corrupt(&self, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what: self.what,
            detail: detail.into(),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(self.corrupt(format!("needs {n} more bytes, {} left", self.bytes.len())));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.bytes(N)?;
        bytes.try_into().map_err(|_| self.corrupt("short read"))
    }

    fn version(&mut self, expected: u8) -> Result<()> {
        let found = self.u8()?;
        if found == expected {
            Ok(())
        } else {
            Err(self.corrupt(format!("unknown format version {found}")))
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self, n: usize) -> Result<String> {
        let bytes = self.bytes(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
    }

    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        self.string(n)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewMessage {
        NewMessage {
            key: Some(b"user-1".to_vec()),
            headers: vec![
                ("type".into(), "order".into()),
                ("empty".into(), String::new()),
            ],
            payload: br#"{"total": 12.5}"#.to_vec(),
        }
    }

    #[test]
    fn state_records_round_trip_and_refuse_truncation() {
        let entries: Vec<(&[u8], Option<&[u8]>)> = vec![
            (b"\x01nkey", Some(b"value")),
            (b"\x01ngone", None),
            (b"\x01nempty", Some(b"")),
        ];
        let size: usize = entries.iter().map(|(k, v)| state_entry_len(k, *v)).sum();
        let encoded = encode_state_record(entries.iter().copied(), size);
        assert_eq!(encoded.len(), 1 + size);
        let decoded = decode_state_record(&encoded).unwrap();
        let expected: StateEntries = entries
            .iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(decoded, expected);
        for cut in 1..encoded.len() {
            if decode_state_record(&encoded[..cut]).is_ok() {
                // Only cuts at entry boundaries decode (to fewer entries).
                assert!(decode_state_record(&encoded[..cut]).unwrap().len() < 3);
            }
        }
        assert!(decode_state_record(&[9]).is_err(), "unknown version");
    }

    #[test]
    fn messages_round_trip_with_the_stamped_timestamp() {
        let encoded = encode_message_slice(&sample()).unwrap();
        assert_eq!(encoded.len(), encoded_len(&sample()));
        assert_eq!(&*encoded, &encode_message(&sample()).unwrap()[..]);
        let encoded = stamp(encoded, 1_700_000_000_123);
        assert_eq!(timestamp_of(&encoded).unwrap(), 1_700_000_000_123);
        let topic: Arc<str> = Arc::from("orders");
        let decoded = decode_message(&topic, 3, 42, &encoded).unwrap();
        assert_eq!(decoded.timestamp_ms, 1_700_000_000_123);
        assert_eq!(decoded.key, sample().key);
        assert_eq!(decoded.headers, sample().headers);
        assert_eq!(decoded.payload, sample().payload);
        assert_eq!((decoded.partition, decoded.offset), (3, 42));
    }

    #[test]
    fn keyless_and_empty_messages_round_trip() {
        let message = NewMessage::default();
        let encoded = encode_message(&message).unwrap();
        let decoded = decode_message(&Arc::from("t"), 0, 0, &encoded).unwrap();
        assert_eq!(decoded.key, None);
        assert!(decoded.headers.is_empty() && decoded.payload.is_empty());
        let empty_key = NewMessage {
            key: Some(vec![]),
            ..NewMessage::default()
        };
        let decoded =
            decode_message(&Arc::from("t"), 0, 0, &encode_message(&empty_key).unwrap()).unwrap();
        assert_eq!(decoded.key, Some(vec![]));
    }

    #[test]
    fn truncated_or_foreign_bytes_are_reported_as_corrupt() {
        let encoded = encode_message(&sample()).unwrap();
        for cut in [0, 1, 5, 12, 14, 20] {
            let result = decode_message(&Arc::from("t"), 0, 0, &encoded[..cut]);
            assert!(matches!(result, Err(Error::Corrupt { .. })), "cut at {cut}");
        }
        let mut foreign = encoded.clone();
        foreign[0] = 9;
        assert!(decode_message(&Arc::from("t"), 0, 0, &foreign).is_err());
    }

    #[test]
    fn pending_dead_and_counters_round_trip() {
        let pending = PendingRecord {
            attempts: 3,
            due_ms: 99,
            reason: "db down".into(),
            copy: Some(vec![1, 2, 3]),
        };
        assert_eq!(decode_pending(&encode_pending(&pending)).unwrap(), pending);
        let no_copy = PendingRecord {
            copy: None,
            ..pending
        };
        assert_eq!(decode_pending(&encode_pending(&no_copy)).unwrap(), no_copy);
        let dead = DeadRecord {
            partition: 1,
            offset: 2,
            attempts: 5,
            failed_at_ms: 7,
            reason: "bad json".into(),
            message: vec![9; 10],
        };
        assert_eq!(decode_dead(&encode_dead(&dead)).unwrap(), dead);
        let counters = Counters {
            dead_letters: 4,
            expired: 8,
        };
        assert_eq!(
            decode_counters(&encode_counters(&counters)).unwrap(),
            counters
        );
    }
}
