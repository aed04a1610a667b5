//! How Courier's records look on JetStream: stream and subject names,
//! message headers, and the conversions between NATS messages and
//! Courier's.

use std::sync::Arc;

use async_nats::HeaderMap;
use courier_core::{Error, Message, NewMessage, Result};

/// Header carrying a message's key, hex-encoded.
pub const KEY_HEADER: &str = "Courier-Key";

/// The xxh3 of a name, in hex: stream names may not hold a topic's or a
/// subscriber's `.`, and subjects stay short.
pub(crate) fn hash(name: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(name.as_bytes()))
}

/// The stream and subject of a topic's partition.
pub(crate) fn partition_names(topic: &str, partition: u32) -> (String, String) {
    let hash = hash(topic);
    (
        format!("courier-{hash}-{partition}"),
        format!("courier.{hash}.{partition}"),
    )
}

/// The streams one subscriber owns: its state, its effects records and its
/// dead letters.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberNames {
    pub subscriber: String,
    hash: String,
}

impl SubscriberNames {
    pub fn new(subscriber: &str) -> SubscriberNames {
        SubscriberNames {
            subscriber: subscriber.to_owned(),
            hash: hash(subscriber),
        }
    }

    pub fn state_stream(&self) -> String {
        format!("courier-state-{}", self.hash)
    }

    /// A state key's subject (the key hex-encoded after a `k`, so an empty
    /// key still makes a valid token and a key prefix a subject prefix).
    pub fn state_subject(&self, key: &str) -> String {
        format!("courier.state.{}.k{}", self.hash, hex(key.as_bytes()))
    }

    pub fn state_subjects(&self) -> String {
        format!("courier.state.{}.>", self.hash)
    }

    /// The key of a state subject, if it is one of this subscriber's.
    pub fn state_key(&self, subject: &str) -> Option<String> {
        let hex = subject
            .strip_prefix("courier.state.")?
            .strip_prefix(self.hash.as_str())?
            .strip_prefix(".k")?;
        String::from_utf8(unhex(hex)?).ok()
    }

    pub fn effects_stream(&self) -> String {
        format!("courier-fx-{}", self.hash)
    }

    /// The subject of the last effects record of one source partition.
    pub fn effects_subject(&self, topic: &str, partition: u32) -> String {
        format!("courier.fx.{}.{}.{partition}", self.hash, hash(topic))
    }

    pub fn effects_subjects(&self) -> String {
        format!("courier.fx.{}.>", self.hash)
    }

    pub fn dead_stream(&self) -> String {
        format!("courier-dead-{}", self.hash)
    }

    pub fn dead_subject(&self, topic: &str) -> String {
        format!("courier.dead.{}.{}", self.hash, hash(topic))
    }

    pub fn dead_subjects(&self) -> String {
        format!("courier.dead.{}.>", self.hash)
    }

    /// The durable consumer of this subscriber on every partition stream,
    /// per cluster (engines of one cluster share it, others do not).
    pub fn consumer(&self, cluster: &str) -> String {
        format!("{cluster}-{}", self.hash)
    }
}

/// The NATS headers of a message: its own (refused if NATS cannot carry
/// them) and its key.
pub(crate) fn headers_of(message: &NewMessage) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in &message.headers {
        if is_reserved(name)
            || name.is_empty()
            || name.contains([':', ' ', '\r', '\n'])
            || value.contains(['\r', '\n'])
        {
            return Err(Error::InvalidArgument(format!(
                "header {name:?} cannot be carried by NATS (reserved: Courier-* and Nats-*; empty; or with ':', spaces or line breaks)"
            )));
        }
        headers.append(name.as_str(), value.as_str());
    }
    if let Some(key) = &message.key {
        headers.insert(KEY_HEADER, hex(key).as_str());
    }
    Ok(headers)
}

/// A stored message from the parts NATS gives back.
pub(crate) fn message_from(
    topic: &Arc<str>,
    partition: u32,
    sequence: u64,
    timestamp_ms: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Message> {
    let mut key = None;
    let mut out = Vec::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name = name.to_string();
        for value in values {
            if name.eq_ignore_ascii_case(KEY_HEADER) {
                key = Some(unhex(value.as_str()).ok_or_else(|| Error::Corrupt {
                    what: "jetstream message key",
                    detail: format!("{topic}/{partition}@{}: {value:?}", sequence - 1),
                })?);
            } else if !is_reserved(&name) {
                out.push((name.clone(), value.to_string()));
            }
        }
    }
    Ok(Message {
        topic: Arc::clone(topic),
        partition,
        offset: sequence.saturating_sub(1),
        timestamp_ms,
        key,
        headers: out,
        payload: payload.to_vec(),
    })
}

/// Milliseconds since the epoch of a NATS timestamp's nanoseconds.
pub(crate) fn epoch_ms(unix_nanos: i128) -> u64 {
    u64::try_from(unix_nanos / 1_000_000).unwrap_or(0)
}

/// The last message of a subject, read from the stream's leader (a direct
/// get may be answered by a replica that lags: a compare-and-set or a
/// decision must never start from a stale value). `None`: no message.
pub(crate) async fn last_of(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<async_nats::jetstream::message::StreamMessage>> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message)),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(error) => Err(crate::backend(
            "reading the last message of a subject",
            error,
        )),
    }
}

/// Whether a publish was refused by its expected last subject sequence
/// (error codes 10071 and, since NATS 2.12 on some paths, 10164).
pub(crate) fn is_wrong_last_sequence(error: &async_nats::jetstream::context::PublishError) -> bool {
    error.kind() == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence
        || error.to_string().contains("wrong last sequence")
}

/// Headers named `Nats-*` belong to the server, `Courier-*` to Courier.
fn is_reserved(name: &str) -> bool {
    let lower = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    };
    lower("nats-") || lower("courier-")
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    out
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex() {
        for key in [&b""[..], b"u-00042", &[0, 255, 16, 1]] {
            assert_eq!(unhex(&hex(key)).as_deref(), Some(key));
        }
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn topic_names_map_to_valid_distinct_stream_names() {
        let (stream, subject) = partition_names("orders.eu", 3);
        assert!(!stream.contains('.'), "{stream}");
        assert!(stream.ends_with("-3") && subject.ends_with(".3"));
        assert_ne!(
            partition_names("orders.eu", 0).0,
            partition_names("orders_eu", 0).0
        );
    }

    #[test]
    fn state_subjects_give_their_keys_back() {
        let names = SubscriberNames::new("membership");
        for key in ["points:u-1", "", "a.b c*>"] {
            let subject = names.state_subject(key);
            assert!(
                !subject.contains(' ') && !subject.contains('*'),
                "{subject}"
            );
            assert_eq!(names.state_key(&subject).as_deref(), Some(key));
        }
        assert_eq!(
            SubscriberNames::new("other").state_key(&names.state_subject("k")),
            None
        );
    }

    #[test]
    fn headers_nats_cannot_carry_are_refused() {
        let message = |name: &str, value: &str| NewMessage {
            headers: vec![(name.into(), value.into())],
            ..NewMessage::default()
        };
        assert!(headers_of(&message("type", "order")).is_ok());
        for (name, value) in [
            ("Courier-Key", "x"),
            ("courier-applied", "x"),
            ("Nats-Msg-Id", "x"),
            ("a:b", "x"),
            ("", "x"),
            ("type", "line\nbreak"),
        ] {
            assert!(headers_of(&message(name, value)).is_err(), "{name:?}");
        }
    }
}
