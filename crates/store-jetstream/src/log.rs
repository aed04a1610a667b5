//! The log: topics as one JetStream stream per partition, appends answered
//! after every message's PubAck, reads back by offset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use courier_core::{
    Error, Message, NewMessage, PartitionInfo, Position, Result, TopicInfo, TopicSettings,
    validate_name,
};

use crate::backend;
use crate::codec::{epoch_ms, headers_of, message_from, partition_names};
use crate::config::JetStreamConfig;

/// How long connecting to the servers may take before `connect` fails:
/// an unreachable cluster is an error at start, never a hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish waits for a stream created elsewhere a moment ago.
const STREAM_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages one `read` returns.
pub const MAX_READ: usize = 1000;
/// How long the streams remember a `Nats-Msg-Id` to drop a second copy:
/// bounds how late a dead engine's effects may be re-applied without
/// doubling its outbox messages.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// One topic's streams, as opened.
#[derive(Debug)]
pub(crate) struct Topic {
    pub name: Arc<str>,
    pub settings: TopicSettings,
    /// The subject of each partition, by partition.
    subjects: Vec<String>,
    pub streams: Vec<stream::Stream>,
    /// Round-robin for messages without a key (or an id).
    next_unkeyed: AtomicU64,
}

impl Topic {
    /// A message's partition: by key, else by its id (so a re-published
    /// outbox message lands where its first copy did and is deduplicated),
    /// else round-robin.
    fn partition_for(&self, key: Option<&[u8]>, id: Option<&str>) -> u32 {
        let partitions = u64::from(self.settings.partitions);
        let slot = match (key, id) {
            (Some(key), _) => xxhash_rust::xxh3::xxh3_64(key),
            (None, Some(id)) => xxhash_rust::xxh3::xxh3_64(id.as_bytes()),
            (None, None) => self.next_unkeyed.fetch_add(1, Ordering::Relaxed),
        };
        (slot % partitions) as u32
    }

    pub fn stream(&self, partition: u32) -> Result<&stream::Stream> {
        self.streams
            .get(partition as usize)
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.name.to_string(),
                partition,
                partitions: self.settings.partitions,
            })
    }
}

/// The log of a Courier cluster, on JetStream. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamLog {
    client: async_nats::Client,
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

impl JetStreamLog {
    /// Connects to the cluster; fails within [`CONNECT_TIMEOUT`] if no
    /// server answers.
    pub async fn connect(config: JetStreamConfig) -> Result<JetStreamLog> {
        config.validate()?;
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
        let mut options = async_nats::ConnectOptions::new();
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        let connecting = options
            .name(config.engine.clone())
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
        let context = jetstream::new(client.clone());
        // A server without JetStream (or one that is not part of a cluster
        // with a leader) is refused here, not at the first publish.
        tokio::time::timeout(CONNECT_TIMEOUT, context.query_account())
            .await
            .map_err(|_| {
                backend(
                    "querying JetStream",
                    format!("no answer from {addresses} within {CONNECT_TIMEOUT:?}"),
                )
            })?
            .map_err(|error| backend(&format!("querying JetStream at {addresses}"), error))?;
        Ok(JetStreamLog {
            client,
            context,
            config: Arc::new(config),
            topics: Arc::default(),
            creating: Arc::default(),
        })
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub(crate) fn context(&self) -> &jetstream::Context {
        &self.context
    }

    pub(crate) fn config(&self) -> &JetStreamConfig {
        &self.config
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
        self.remember(&topic);
        Ok(topic)
    }

    fn remember(&self, topic: &Arc<Topic>) {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.name.to_string(), Arc::clone(topic));
    }

    /// The topic's streams if its partition 0 exists (a topic is created
    /// partition by partition from 0; a crash in between leaves a prefix,
    /// which `create_streams` completes).
    async fn open_streams(&self, name: &str) -> Result<Option<Topic>> {
        let (first, _) = partition_names(name, 0);
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
            let (stream_name, subject) = partition_names(name, partition);
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
                duplicate_window: DUPLICATE_WINDOW,
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
            name: Arc::from(name),
            settings,
            subjects,
            streams,
            next_unkeyed: AtomicU64::new(0),
        })
    }

    /// An existing topic (opened from the cluster if this handle has not
    /// seen it yet).
    pub(crate) async fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(topic) = self.cached(name) {
            return Ok(topic);
        }
        validate_name("topic", name)?;
        let _creating = self.creating.lock().await;
        if let Some(topic) = self.cached(name) {
            return Ok(topic);
        }
        match self.open_streams(name).await? {
            Some(topic) => {
                let topic = Arc::new(topic);
                self.remember(&topic);
                Ok(topic)
            }
            None => Err(Error::UnknownTopic(name.to_owned())),
        }
    }

    /// A topic, created with the default settings if missing.
    pub(crate) async fn topic_or_default(&self, name: &str) -> Result<Arc<Topic>> {
        match self.topic(name).await {
            Err(Error::UnknownTopic(_)) => {
                self.open_or_create(name, self.config.default_topic).await
            }
            other => other,
        }
    }

    /// Appends messages to a topic (created with the default settings if
    /// missing); answers with their positions once JetStream acknowledged
    /// every one.
    pub async fn append(&self, topic: &str, messages: &[NewMessage]) -> Result<Vec<Position>> {
        self.append_with_ids(topic, messages, None).await
    }

    /// [`append`](Self::append), each message with a `Nats-Msg-Id` if
    /// `ids` are given: a second copy with the same id within
    /// [`DUPLICATE_WINDOW`] is not stored again (its first position is
    /// answered).
    pub(crate) async fn append_with_ids(
        &self,
        topic: &str,
        messages: &[NewMessage],
        ids: Option<&[String]>,
    ) -> Result<Vec<Position>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let topic = self.topic_or_default(topic).await?;
        let mut pending = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let id = ids.and_then(|ids| ids.get(index)).map(String::as_str);
            let partition = topic.partition_for(message.key.as_deref(), id);
            let mut headers = headers_of(message)?;
            if let Some(id) = id {
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
            }
            let payload = Bytes::copy_from_slice(&message.payload);
            let subject = topic.subjects[partition as usize].clone();
            let ack = self
                .context
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|error| backend("publishing", error))?;
            pending.push((partition, ack, subject, headers, payload));
        }
        let mut positions = Vec::with_capacity(pending.len());
        for (partition, ack, subject, headers, payload) in pending {
            let ack = match ack.await {
                Ok(ack) => ack,
                // A stream created a moment ago may not be known yet to
                // the server this connection talks to: nothing was stored.
                Err(error) if error.kind() == PublishErrorKind::StreamNotFound => {
                    self.publish_when_ready(subject, headers, payload).await?
                }
                Err(error) => return Err(backend("awaiting a publish acknowledgement", error)),
            };
            positions.push(Position {
                partition,
                offset: ack.sequence.saturating_sub(1),
            });
        }
        Ok(positions)
    }

    /// Publishes one message, retrying for a while if its stream is not
    /// known yet (just created elsewhere).
    pub(crate) async fn publish_when_ready(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck> {
        let started = std::time::Instant::now();
        loop {
            let ack = self
                .context
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|error| backend("publishing", error))?;
            match ack.await {
                Ok(ack) => return Ok(ack),
                Err(error)
                    if error.kind() == PublishErrorKind::StreamNotFound
                        && started.elapsed() < STREAM_READY_TIMEOUT =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => return Err(backend("awaiting a publish acknowledgement", error)),
            }
        }
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
        let stream = topic.stream(partition)?;
        let (first, last) = bounds(stream).await?;
        let mut out = Vec::new();
        let mut sequence = (from + 1).max(first);
        while sequence <= last && out.len() < max.min(MAX_READ) {
            // None: removed by retention meanwhile.
            if let Some(message) = read_one(&topic, partition, sequence).await? {
                out.push(message);
            }
            sequence += 1;
        }
        Ok(out)
    }

    pub(crate) async fn describe(&self, topic: &Topic) -> Result<TopicInfo> {
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
            name: topic.name.to_string(),
            settings: topic.settings,
            messages: partitions.iter().map(|p| p.end - p.start).sum(),
            partitions,
            disk_bytes,
        })
    }

    /// Names of every topic on the cluster (from their partition 0
    /// streams).
    pub(crate) async fn discover(&self) -> Result<Vec<String>> {
        use futures_util::StreamExt;
        let mut names = self.context.streams();
        let mut topics = Vec::new();
        while let Some(info) = names.next().await {
            let info = info.map_err(|error| backend("listing streams", error))?;
            let mut parts = info.config.name.split('-');
            let (Some("courier"), Some(hash), Some("0"), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if hash.len() != 16 {
                continue;
            }
            let description = info.config.description.unwrap_or_default();
            if let Some((name, _)) = description.rsplit_once(" partitions=") {
                topics.push(name.to_owned());
            }
        }
        topics.sort();
        Ok(topics)
    }

    /// Replicas of every stream, as configured.
    pub fn replicas(&self) -> usize {
        self.config.replicas
    }
}

/// One message of a partition; `None` if the stream no longer holds it.
pub(crate) async fn read_one(
    topic: &Topic,
    partition: u32,
    sequence: u64,
) -> Result<Option<Message>> {
    let stream = topic.stream(partition)?;
    match stream.direct_get(sequence).await {
        Ok(raw) => Ok(Some(message_from(
            &topic.name,
            partition,
            raw.sequence,
            epoch_ms(raw.time.unix_timestamp_nanos()),
            Some(&raw.headers),
            &raw.payload,
        )?)),
        Err(error) if error.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
        Err(error) => Err(backend("reading a message", error)),
    }
}

/// The first and last sequence a partition stream holds.
pub(crate) async fn bounds(stream: &stream::Stream) -> Result<(u64, u64)> {
    let mut stream = stream.clone();
    let info = stream
        .info()
        .await
        .map_err(|error| backend("reading a stream's state", error))?;
    Ok((info.state.first_sequence, info.state.last_sequence))
}

fn check_partitions(topic: Arc<Topic>, settings: TopicSettings) -> Result<Arc<Topic>> {
    if topic.settings.partitions != settings.partitions {
        return Err(Error::TopicConflict {
            name: topic.name.to_string(),
            existing: topic.settings.partitions,
            requested: settings.partitions,
        });
    }
    Ok(topic)
}
