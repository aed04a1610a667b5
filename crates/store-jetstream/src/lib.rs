//! Courier's cluster storage backend on NATS JetStream.
//!
//! Status: in progress. This crate has the **log**: topics as JetStream
//! streams, appends answered after every message's PubAck, reads back by
//! offset. Subscriptions, settlements with effects, dead letters, state and
//! partition ownership follow the design in `docs/cluster-design.md`; until
//! they exist this backend does not implement the storage seam and the
//! engine cannot select it.
//!
//! # Layout on JetStream
//!
//! A topic's partition `p` is the stream `courier-<h>-<p>` with the one
//! subject `courier.<h>.<p>`, where `<h>` is the xxh3 of the topic name in
//! hex (stream names may not hold a topic name's `.`); the stream's
//! description is the topic name, checked when it is opened. One stream
//! per partition makes the stream sequence the partition's offset (dense:
//! `offset = sequence - 1`) and keeps a key's order where JetStream keeps
//! it, within a stream. A message's key travels hex-encoded in the
//! `Courier-Key` header (NATS header values are text), its headers as NATS
//! headers, its payload as the payload; its timestamp is the server's.
//!
//! # Guarantees
//!
//! `append` answers once JetStream acknowledged every message: stored on a
//! quorum of the stream's replicas, fsynced there if the servers run with
//! `sync_interval: always` (the tests' setting), in memory on a quorum
//! otherwise. Its messages are published pipelined, not as one atomic
//! batch: a failure can leave a prefix of a request stored, which the
//! producer's retry (with idempotency keys, once they exist) must not
//! double.

#![deny(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use courier_core::{
    Error, Message, NewMessage, PartitionInfo, Position, Result, TopicInfo, TopicSettings,
    validate_name,
};

/// Header carrying a message's key, hex-encoded.
pub const KEY_HEADER: &str = "Courier-Key";
/// How long connecting to the servers may take before `connect` fails:
/// an unreachable cluster is an error at start, never a hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages one `read` returns.
pub const MAX_READ: usize = 1000;

/// Where the cluster is and how topics are stored on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// NATS server URLs (`nats://host:port`); any one of the cluster's.
    pub servers: Vec<String>,
    /// Replicas of every partition stream (3 for a quorum that survives
    /// one server's loss).
    pub replicas: usize,
    /// Settings of topics created by a first publish.
    pub default_topic: TopicSettings,
}

impl JetStreamConfig {
    /// A cluster at `servers`, R3 streams, the default topic settings.
    pub fn new(servers: Vec<String>) -> JetStreamConfig {
        JetStreamConfig {
            servers,
            replicas: 3,
            default_topic: TopicSettings::default(),
        }
    }
}

/// One topic's streams, as opened.
#[derive(Debug)]
struct Topic {
    name: String,
    settings: TopicSettings,
    /// The subject of each partition, by partition.
    subjects: Vec<String>,
    streams: Vec<stream::Stream>,
    /// Round-robin for messages without a key.
    next_unkeyed: AtomicU64,
}

impl Topic {
    fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        let partitions = u64::from(self.settings.partitions);
        let slot = match key {
            Some(key) => xxhash_rust::xxh3::xxh3_64(key),
            None => self.next_unkeyed.fetch_add(1, Ordering::Relaxed),
        };
        (slot % partitions) as u32
    }
}

/// The log of a Courier cluster, on JetStream. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamLog {
    context: jetstream::Context,
    config: Arc<JetStreamConfig>,
    topics: Arc<Mutex<HashMap<String, Arc<Topic>>>>,
    /// Serializes topic creation, so two callers never race on one name.
    creating: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("servers", &self.config.servers)
            .finish_non_exhaustive()
    }
}

fn backend(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Backend(format!("{what}: {error}"))
}

/// The stream (and subject) names of a topic's partition.
fn names(topic: &str, partition: u32) -> (String, String) {
    let hash = xxhash_rust::xxh3::xxh3_64(topic.as_bytes());
    (
        format!("courier-{hash:016x}-{partition}"),
        format!("courier.{hash:016x}.{partition}"),
    )
}

impl JetStreamLog {
    /// Connects to the cluster; fails within [`CONNECT_TIMEOUT`] if no
    /// server answers.
    pub async fn connect(config: JetStreamConfig) -> Result<JetStreamLog> {
        if config.servers.is_empty() {
            return Err(Error::InvalidArgument(
                "jetstream: no servers configured".into(),
            ));
        }
        if !(1..=5).contains(&config.replicas) {
            return Err(Error::InvalidArgument(format!(
                "jetstream: replicas must be between 1 and 5, got {}",
                config.replicas
            )));
        }
        let addresses = config.servers.join(", ");
        let servers = config
            .servers
            .iter()
            .map(|url| {
                url.parse::<async_nats::ServerAddr>().map_err(|error| {
                    Error::InvalidArgument(format!("jetstream: server {url:?}: {error}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let connecting = async_nats::ConnectOptions::new()
            .name("courier")
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(servers);
        let client = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                backend(
                    "connecting to NATS",
                    format!("no server of {addresses} answered within {CONNECT_TIMEOUT:?}"),
                )
            })?
            .map_err(|error| backend(&format!("connecting to NATS at {addresses}"), error))?;
        Ok(JetStreamLog {
            context: jetstream::new(client),
            config: Arc::new(config),
            topics: Arc::default(),
            creating: Arc::default(),
        })
    }

    fn cached(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Creates a topic (its partition streams), or opens the existing one
    /// if it has as many partitions.
    pub async fn create_topic(&self, name: &str, settings: TopicSettings) -> Result<TopicInfo> {
        let topic = self.open_or_create(name, settings).await?;
        self.describe(&topic).await
    }

    async fn open_or_create(&self, name: &str, settings: TopicSettings) -> Result<Arc<Topic>> {
        validate_name("topic", name)?;
        settings.validate()?;
        if let Some(topic) = self.cached(name) {
            return check_partitions(topic, settings);
        }
        let _creating = self.creating.lock().await;
        if let Some(topic) = self.cached(name) {
            return check_partitions(topic, settings);
        }
        let existing = self.open_streams(name).await?;
        let topic = match existing {
            Some(topic) => check_partitions(Arc::new(topic), settings)?,
            None => Arc::new(self.create_streams(name, settings).await?),
        };
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), Arc::clone(&topic));
        Ok(topic)
    }

    /// The topic's streams if its partition 0 exists (a topic is created
    /// partition by partition from 0; a crash in between leaves a prefix,
    /// which `create_streams` completes).
    async fn open_streams(&self, name: &str) -> Result<Option<Topic>> {
        let (first, _) = names(name, 0);
        let mut stream = match self.context.get_stream(&first).await {
            Ok(stream) => stream,
            Err(error)
                if matches!(
                    error.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(inner)
                        if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(backend("looking up a topic's stream", error)),
        };
        let info = stream
            .info()
            .await
            .map_err(|error| backend("reading a topic's stream", error))?;
        let description = info.config.description.clone().unwrap_or_default();
        let Some(partitions) = description
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(" partitions="))
            .and_then(|count| count.parse::<u32>().ok())
        else {
            return Err(Error::Corrupt {
                what: "jetstream topic stream",
                detail: format!("stream {first} describes {description:?}, not topic {name:?}"),
            });
        };
        let settings = TopicSettings {
            partitions,
            ..self.config.default_topic
        };
        Ok(Some(self.create_streams(name, settings).await?))
    }

    /// Creates (or opens) every partition stream of a topic.
    async fn create_streams(&self, name: &str, settings: TopicSettings) -> Result<Topic> {
        let mut streams = Vec::with_capacity(settings.partitions as usize);
        let mut subjects = Vec::with_capacity(settings.partitions as usize);
        for partition in 0..settings.partitions {
            let (stream_name, subject) = names(name, partition);
            let config = stream::Config {
                name: stream_name,
                subjects: vec![subject.clone()],
                description: Some(format!("{name} partitions={}", settings.partitions)),
                storage: stream::StorageType::File,
                num_replicas: self.config.replicas,
                max_age: settings.retention.max_age.unwrap_or_default(),
                max_bytes: settings
                    .retention
                    .max_bytes
                    .map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
                allow_direct: true,
                ..Default::default()
            };
            let stream = self
                .context
                .get_or_create_stream(config)
                .await
                .map_err(|error| backend(&format!("creating topic {name:?}"), error))?;
            streams.push(stream);
            subjects.push(subject);
        }
        tracing::info!(
            topic = name,
            partitions = settings.partitions,
            replicas = self.config.replicas,
            "opened topic streams"
        );
        Ok(Topic {
            name: name.to_owned(),
            settings,
            subjects,
            streams,
            next_unkeyed: AtomicU64::new(0),
        })
    }

    async fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        match self.cached(name) {
            Some(topic) => Ok(topic),
            None => {
                validate_name("topic", name)?;
                let _creating = self.creating.lock().await;
                match self.open_streams(name).await? {
                    Some(topic) => {
                        let topic = Arc::new(topic);
                        self.topics
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(name.to_owned(), Arc::clone(&topic));
                        Ok(topic)
                    }
                    None => Err(Error::UnknownTopic(name.to_owned())),
                }
            }
        }
    }

    /// Appends messages to a topic (created with the default settings if
    /// missing); answers with their positions once JetStream acknowledged
    /// every one.
    pub async fn append(&self, topic: &str, messages: &[NewMessage]) -> Result<Vec<Position>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let topic = match self.topic(topic).await {
            Ok(existing) => existing,
            Err(Error::UnknownTopic(_)) => {
                self.open_or_create(topic, self.config.default_topic)
                    .await?
            }
            Err(error) => return Err(error),
        };
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let partition = topic.partition_for(message.key.as_deref());
            let headers = headers_of(message)?;
            let payload = Bytes::copy_from_slice(&message.payload);
            let subject = topic.subjects[partition as usize].clone();
            let ack = self
                .context
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|error| backend("publishing", error))?;
            pending.push((partition, ack));
        }
        let mut positions = Vec::with_capacity(pending.len());
        for (partition, ack) in pending {
            let ack = ack
                .await
                .map_err(|error| backend("awaiting a publish acknowledgement", error))?;
            positions.push(Position {
                partition,
                offset: ack.sequence.saturating_sub(1),
            });
        }
        Ok(positions)
    }

    /// Up to `max` (at most [`MAX_READ`]) messages of a partition from
    /// offset `from`, in offset order.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Message>> {
        let topic = self.topic(topic).await?;
        let stream = topic
            .streams
            .get(partition as usize)
            .ok_or(Error::UnknownPartition {
                topic: topic.name.clone(),
                partition,
                partitions: topic.settings.partitions,
            })?;
        let (first, last) = self.bounds(stream).await?;
        let name: Arc<str> = Arc::from(topic.name.as_str());
        let mut out = Vec::new();
        let mut sequence = (from + 1).max(first);
        while sequence <= last && out.len() < max.min(MAX_READ) {
            let raw = stream
                .direct_get(sequence)
                .await
                .map_err(|error| backend("reading a message", error))?;
            out.push(message_of(&name, partition, raw)?);
            sequence += 1;
        }
        Ok(out)
    }

    /// The first and last sequence a partition stream holds.
    async fn bounds(&self, stream: &stream::Stream) -> Result<(u64, u64)> {
        let mut stream = stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|error| backend("reading a stream's state", error))?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    async fn describe(&self, topic: &Topic) -> Result<TopicInfo> {
        let mut partitions = Vec::with_capacity(topic.streams.len());
        let mut disk_bytes = 0;
        for (index, stream) in topic.streams.iter().enumerate() {
            let mut stream = stream.clone();
            let info = stream
                .info()
                .await
                .map_err(|error| backend("reading a stream's state", error))?;
            disk_bytes += info.state.bytes;
            let end = info.state.last_sequence;
            let start = if info.state.messages == 0 {
                end
            } else {
                info.state.first_sequence.saturating_sub(1)
            };
            partitions.push(PartitionInfo {
                partition: index as u32,
                start,
                end,
            });
        }
        Ok(TopicInfo {
            name: topic.name.clone(),
            settings: topic.settings,
            messages: partitions.iter().map(|p| p.end - p.start).sum(),
            partitions,
            disk_bytes,
        })
    }

    /// Replicas of every stream, as configured.
    pub fn replicas(&self) -> usize {
        self.config.replicas
    }
}

fn check_partitions(topic: Arc<Topic>, settings: TopicSettings) -> Result<Arc<Topic>> {
    if topic.settings.partitions != settings.partitions {
        return Err(Error::TopicConflict {
            name: topic.name.clone(),
            existing: topic.settings.partitions,
            requested: settings.partitions,
        });
    }
    Ok(topic)
}

fn headers_of(message: &NewMessage) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in &message.headers {
        if name.eq_ignore_ascii_case(KEY_HEADER)
            || is_nats_header(name)
            || name.is_empty()
            || name.contains([':', ' ', '\r', '\n'])
            || value.contains(['\r', '\n'])
        {
            return Err(Error::InvalidArgument(format!(
                "header {name:?} cannot be carried by NATS (reserved: Courier-Key and Nats-*; empty; or with ':', spaces or line breaks)"
            )));
        }
        headers.append(name.as_str(), value.as_str());
    }
    if let Some(key) = &message.key {
        headers.insert(KEY_HEADER, hex(key).as_str());
    }
    Ok(headers)
}

fn message_of(
    topic: &Arc<str>,
    partition: u32,
    raw: jetstream::message::StreamMessage,
) -> Result<Message> {
    let mut key = None;
    let mut headers = Vec::new();
    for (name, values) in raw.headers.iter() {
        let name = name.to_string();
        for value in values {
            if is_nats_header(&name) {
                // The server's own (stream, sequence, time of a direct get).
                continue;
            }
            if name.eq_ignore_ascii_case(KEY_HEADER) {
                key = Some(unhex(value.as_str()).ok_or_else(|| Error::Corrupt {
                    what: "jetstream message key",
                    detail: format!("{topic}/{partition}@{}: {value:?}", raw.sequence - 1),
                })?);
            } else {
                headers.push((name.clone(), value.to_string()));
            }
        }
    }
    let timestamp_ms = u64::try_from(raw.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Ok(Message {
        topic: Arc::clone(topic),
        partition,
        offset: raw.sequence.saturating_sub(1),
        timestamp_ms,
        key,
        headers,
        payload: raw.payload.to_vec(),
    })
}

/// Headers named `Nats-*` belong to the server.
fn is_nats_header(name: &str) -> bool {
    name.get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("nats-"))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
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
        let (stream, subject) = names("orders.eu", 3);
        assert!(!stream.contains('.'), "{stream}");
        assert!(stream.ends_with("-3") && subject.ends_with(".3"));
        assert_ne!(names("orders.eu", 0).0, names("orders_eu", 0).0);
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
            ("Nats-Msg-Id", "x"),
            ("a:b", "x"),
            ("", "x"),
            ("type", "line\nbreak"),
        ] {
            assert!(headers_of(&message(name, value)).is_err(), "{name:?}");
        }
    }
}
