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
//!
//! A log entry holds a *run* of consecutive messages of one partition,
//! stored under the first one's offset (format version 2):
//!
//! ```text
//! +----+-----------+--------------------------------------+
//! | 02 | count u32 | (len u32, message as above)*  count  |
//! +----+-----------+--------------------------------------+
//! ```
//! Stores written before runs existed hold one message per entry (an entry
//! that starts with 01); readers take both.

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

/// Appends `message`, encoded as [`encode_message`] does, to `out`.
pub fn write_message(message: &NewMessage, out: &mut Vec<u8>) -> Result<()> {
    if message.headers.len() > MAX_HEADERS {
        return Err(Error::InvalidArgument(format!(
            "{} headers exceed the limit of {MAX_HEADERS}",
            message.headers.len()
        )));
    }
    out.extend_from_slice(&[MESSAGE_FORMAT_V1]);
    out.extend_from_slice(&0u64.to_le_bytes());
    match &message.key {
        None => out.extend_from_slice(&0u32.to_le_bytes()),
        Some(key) => {
            out.extend_from_slice(&len_u32(key.len())?.saturating_add(1).to_le_bytes());
            out.extend_from_slice(key);
        }
    }
    out.extend_from_slice(&(message.headers.len() as u16).to_le_bytes());
    for (name, value) in &message.headers {
        let name_len = u16::try_from(name.len())
            .map_err(|_| Error::InvalidArgument("header name longer than 65535 bytes".into()))?;
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&len_u32(value.len())?.to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&message.payload);
    Ok(())
}

fn len_u32(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::InvalidArgument("field longer than 4 GiB".into()))
}

const RUN_FORMAT_V2: u8 = 2;
/// Bytes before a run's first message.
const RUN_HEADER_LEN: usize = 5;

/// Builds the value of a run: messages appended in offset order, each
/// stamped with its timestamp on the way in.
#[derive(Debug)]
pub struct RunBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl Default for RunBuilder {
    fn default() -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.push(RUN_FORMAT_V2);
        buf.extend_from_slice(&0u32.to_le_bytes());
        RunBuilder { buf, count: 0 }
    }
}

impl RunBuilder {
    /// Appends an encoded message (from [`encode_message`]) with its
    /// timestamp.
    pub fn push(&mut self, encoded: &[u8], timestamp_ms: u64) {
        // Encoded messages are far below 4 GiB (the store's message limit).
        self.buf
            .extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(encoded);
        if let Some(slot) = self
            .buf
            .get_mut(at + TIMESTAMP_RANGE.start..at + TIMESTAMP_RANGE.end)
        {
            slot.copy_from_slice(&timestamp_ms.to_le_bytes());
        }
        self.count += 1;
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of the value so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[1..RUN_HEADER_LEN].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// The messages of a stored log entry, in offset order: a run, or the one
/// message of an entry from before runs.
pub fn run_messages(value: &[u8]) -> Result<RunMessages<'_>> {
    match value.first() {
        Some(&MESSAGE_FORMAT_V1) => Ok(RunMessages {
            rest: value,
            remaining: 1,
            single: true,
        }),
        _ => {
            let mut reader = Reader::new(value, "message run");
            reader.version(RUN_FORMAT_V2)?;
            let remaining = reader.u32()?;
            Ok(RunMessages {
                rest: reader.rest(),
                remaining,
                single: false,
            })
        }
    }
}

/// Iterator over the encoded messages of a log entry.
pub struct RunMessages<'a> {
    rest: &'a [u8],
    remaining: u32,
    single: bool,
}

impl RunMessages<'_> {
    /// How many messages the entry holds (those not yet iterated).
    pub fn remaining(&self) -> u32 {
        self.remaining
    }
}

impl<'a> Iterator for RunMessages<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        if self.single {
            return Some(Ok(std::mem::take(&mut self.rest)));
        }
        let mut reader = Reader::new(self.rest, "message run");
        let message = reader.u32().and_then(|len| reader.bytes(len as usize));
        self.rest = reader.rest();
        if message.is_err() {
            // A torn run yields its error once, then nothing.
            self.remaining = 0;
        }
        Some(message)
    }
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

/// FjallSubscription counters kept durably (so introspection needs no scans).
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
    fn messages_round_trip_through_a_run_with_their_timestamps() {
        let encoded = encode_message(&sample()).unwrap();
        assert_eq!(encoded.len(), encoded_len(&sample()));
        let mut run = RunBuilder::default();
        run.push(&encoded, 1_700_000_000_123);
        run.push(
            &encode_message(&NewMessage::default()).unwrap(),
            1_700_000_000_124,
        );
        assert_eq!(run.count(), 2);
        let value = run.finish();
        let messages: Vec<&[u8]> = run_messages(&value)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(timestamp_of(messages[0]).unwrap(), 1_700_000_000_123);
        assert_eq!(timestamp_of(messages[1]).unwrap(), 1_700_000_000_124);
        let topic: Arc<str> = Arc::from("orders");
        let decoded = decode_message(&topic, 3, 42, messages[0]).unwrap();
        assert_eq!(decoded.timestamp_ms, 1_700_000_000_123);
        assert_eq!(decoded.key, sample().key);
        assert_eq!(decoded.headers, sample().headers);
        assert_eq!(decoded.payload, sample().payload);
        assert_eq!((decoded.partition, decoded.offset), (3, 42));
        assert!(
            decode_message(&topic, 3, 43, messages[1])
                .unwrap()
                .payload
                .is_empty()
        );
    }

    #[test]
    fn entries_from_before_runs_read_as_one_message() {
        let encoded = encode_message(&sample()).unwrap();
        let messages = run_messages(&encoded).unwrap();
        assert_eq!(messages.remaining(), 1);
        let all: Vec<&[u8]> = messages.collect::<Result<_>>().unwrap();
        assert_eq!(all, [&encoded[..]]);
    }

    #[test]
    fn a_torn_run_is_reported_as_corrupt_once() {
        let mut run = RunBuilder::default();
        for _ in 0..3 {
            run.push(&encode_message(&sample()).unwrap(), 1);
        }
        let value = run.finish();
        let torn = &value[..value.len() - 5];
        let results: Vec<Result<&[u8]>> = run_messages(torn).unwrap().collect();
        assert_eq!(results.len(), 3);
        assert!(results[..2].iter().all(Result::is_ok));
        assert!(matches!(results[2], Err(Error::Corrupt { .. })));
        assert!(run_messages(&[7, 0, 0]).is_err(), "unknown version");
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
