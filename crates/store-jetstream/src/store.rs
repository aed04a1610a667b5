//! [`JetStreamStore`]: the cluster backend behind the storage seam.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{self, DirectGetErrorKind};
use courier_core::{
    BoxFuture, DeadLetter, Durability, EffectsCommit, Error, Guarantees, Health, LatencyStats,
    Message, NewMessage, Position, Result, SeekTarget, StoreStats, Subscription, SubscriptionInfo,
    SubscriptionPartitionInfo, SubscriptionSettings, TopicInfo, TopicSettings, validate_name,
};
use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backend;
use crate::codec::{SubscriberNames, last_of, message_from};
use crate::config::JetStreamConfig;
use crate::effects::{
    DEAD_ATTEMPTS, DEAD_FAILED_AT, DEAD_OFFSET, DEAD_PARTITION, DEAD_REASON, DEAD_TIMESTAMP,
    DEAD_TOPIC, DELETED_HEADER,
};
use crate::feed::Feed;
use crate::log::JetStreamLog;
use crate::presence::Presence;
use crate::record::Record;
use crate::shared::{Stats, SubShared};
use crate::subscription::{JsSubscription, consumer_config, ensure_consumers, subscriber_streams};

/// How often the introspection snapshot is refreshed.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// Most state keys one scan lists.
const MAX_SCAN: usize = 10_000;

#[derive(Default)]
struct Snapshot {
    topics: Vec<TopicInfo>,
    subscriptions: Vec<SubscriptionInfo>,
}

struct Inner {
    log: JetStreamLog,
    runtime: Handle,
    presence: Presence,
    stop: CancellationToken,
    subs: Mutex<BTreeMap<(String, String), Arc<JsSubscription>>>,
    /// Subscribers' streams, by subscriber.
    streams: tokio::sync::Mutex<HashMap<String, SubscriberStreams>>,
    snapshot: Mutex<Snapshot>,
    stats: Arc<Stats>,
    appended: AtomicU64,
    closed: AtomicBool,
}

#[derive(Clone)]
struct SubscriberStreams {
    state: stream::Stream,
    effects: stream::Stream,
}

/// The cluster backend: topics, subscriptions, effects, state and dead
/// letters on NATS JetStream, shared by every engine of a cluster.
#[derive(Clone)]
pub struct JetStreamStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("servers", &self.inner.log.config().servers)
            .field("engine", &self.inner.presence.me())
            .finish_non_exhaustive()
    }
}

impl JetStreamStore {
    /// Connects, joins the cluster's engines and starts the introspection
    /// snapshot. Call on the runtime that will serve the store's I/O.
    pub async fn open(config: JetStreamConfig) -> Result<JetStreamStore> {
        let log = JetStreamLog::connect(config).await?;
        let stop = CancellationToken::new();
        let presence = Presence::start(&log, stop.clone()).await?;
        let store = JetStreamStore {
            inner: Arc::new(Inner {
                log,
                runtime: Handle::current(),
                presence,
                stop,
                subs: Mutex::default(),
                streams: tokio::sync::Mutex::default(),
                snapshot: Mutex::default(),
                stats: Arc::default(),
                appended: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        };
        store.refresh().await;
        let weak = Arc::downgrade(&store.inner);
        let stop = store.inner.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(SNAPSHOT_EVERY) => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                JetStreamStore { inner }.refresh().await;
            }
        });
        Ok(store)
    }

    /// This engine's name in the cluster.
    pub fn engine(&self) -> &str {
        self.inner.presence.me()
    }

    /// The live engines of the cluster, as this one sees them.
    pub fn engines(&self) -> Vec<String> {
        self.inner.presence.live()
    }

    /// The partitions of a subscription this engine owns now.
    pub fn owned_partitions(&self, subscriber: &str, topic: &str) -> Vec<u32> {
        self.local(subscriber, topic)
            .map(|sub| {
                sub.feeds
                    .iter()
                    .enumerate()
                    .filter(|(_, feed)| feed.owning())
                    .map(|(partition, _)| partition as u32)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn local(&self, subscriber: &str, topic: &str) -> Option<Arc<JsSubscription>> {
        self.inner
            .subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(subscriber.to_owned(), topic.to_owned()))
            .cloned()
    }

    /// Every subscription made through this engine.
    fn local_subscriptions(&self) -> Vec<Arc<JsSubscription>> {
        self.inner
            .subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Runs `future` on the store's runtime from a thread that may block.
    fn block_on<T>(&self, future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.check_open()?;
        self.inner.runtime.block_on(future)
    }

    async fn subscriber_streams(&self, subscriber: &str) -> Result<SubscriberStreams> {
        let mut streams = self.inner.streams.lock().await;
        if let Some(existing) = streams.get(subscriber) {
            return Ok(existing.clone());
        }
        let names = SubscriberNames::new(subscriber);
        // The dead-letter stream is created too; it is read by name.
        let (state, effects, _dead) = subscriber_streams(&self.inner.log, &names).await?;
        let opened = SubscriberStreams { state, effects };
        streams.insert(subscriber.to_owned(), opened.clone());
        Ok(opened)
    }

    /// A subscriber's stream if it exists (reads of a subscriber that never
    /// subscribed find nothing rather than creating streams).
    async fn existing_stream(&self, name: String) -> Result<Option<stream::Stream>> {
        match self.inner.log.context().get_stream(&name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(error)
                if matches!(
                    error.kind(),
                    async_nats::jetstream::context::GetStreamErrorKind::JetStream(inner)
                        if inner.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(backend("opening a stream", error)),
        }
    }

    async fn state_value(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let names = SubscriberNames::new(namespace);
        let stream = match self.cached_state(namespace).await {
            Some(stream) => stream,
            None => match self.existing_stream(names.state_stream()).await? {
                Some(stream) => stream,
                None => return Ok(None),
            },
        };
        match last_of(&stream, &names.state_subject(key)).await? {
            Some(raw) if raw.headers.get(DELETED_HEADER).is_some() => Ok(None),
            Some(raw) => Ok(Some(raw.payload.to_vec())),
            None => Ok(None),
        }
    }

    async fn cached_state(&self, namespace: &str) -> Option<stream::Stream> {
        self.inner
            .streams
            .lock()
            .await
            .get(namespace)
            .map(|streams| streams.state.clone())
    }

    async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let names = SubscriberNames::new(namespace);
        let Some(stream) = self.existing_stream(names.state_stream()).await? else {
            return Ok(Vec::new());
        };
        let mut subjects = stream
            .info_with_subjects(names.state_subjects())
            .await
            .map_err(|error| backend("listing state keys", error))?;
        let mut keys = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.map_err(|error| backend("listing state keys", error))?;
            if let Some(key) = names.state_key(&subject)
                && key.starts_with(prefix)
                && start_after.is_none_or(|after| key.as_str() > after)
            {
                keys.push(key);
            }
        }
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            if out.len() >= limit.min(MAX_SCAN) {
                break;
            }
            if let Some(value) = self.state_value(namespace, &key).await? {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    async fn list_dead(
        &self,
        subscriber: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let names = SubscriberNames::new(subscriber);
        let Some(stream) = self.existing_stream(names.dead_stream()).await? else {
            return Ok(Vec::new());
        };
        let filter = match topic {
            Some(topic) => names.dead_subject(topic),
            None => names.dead_subjects(),
        };
        let mut out = Vec::new();
        let mut from = 1;
        while out.len() < limit {
            let raw = match stream
                .direct_get_next_for_subject(filter.clone(), Some(from))
                .await
            {
                Ok(raw) => raw,
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => break,
                Err(error) => return Err(backend("reading dead letters", error)),
            };
            from = raw.sequence + 1;
            out.push(dead_letter(subscriber, &raw)?);
        }
        Ok(out)
    }

    async fn purge_dead(&self, subscriber: &str, topic: Option<&str>) -> Result<u64> {
        let names = SubscriberNames::new(subscriber);
        let Some(stream) = self.existing_stream(names.dead_stream()).await? else {
            return Ok(0);
        };
        let filter = match topic {
            Some(topic) => names.dead_subject(topic),
            None => names.dead_subjects(),
        };
        let purged = stream
            .purge()
            .filter(filter)
            .await
            .map_err(|error| backend("purging dead letters", error))?;
        Ok(purged.purged)
    }

    async fn subscribe_async(
        &self,
        subscriber: &str,
        topic: &str,
        settings: SubscriptionSettings,
    ) -> Result<Arc<JsSubscription>> {
        self.check_open()?;
        validate_name("subscriber", subscriber)?;
        settings.validate()?;
        if let Some(existing) = self.local(subscriber, topic) {
            *existing
                .shared
                .settings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
            existing.shared.signal_control();
            return Ok(existing);
        }
        let log = &self.inner.log;
        let topic = log.topic_or_default(topic).await?;
        let names = SubscriberNames::new(subscriber);
        let streams = self.subscriber_streams(subscriber).await?;
        let consumer = ensure_consumers(log, &topic, &names, settings).await?;
        let shared = Arc::new(SubShared {
            log: log.clone(),
            runtime: self.inner.runtime.clone(),
            presence: self.inner.presence.clone(),
            names,
            topic: Arc::clone(&topic),
            consumer,
            state: streams.state,
            effects: streams.effects,
            settings: Mutex::new(settings),
            active: AtomicBool::new(true),
            stop: self.inner.stop.child_token(),
            control: watch::channel(0).0,
            stats: Arc::clone(&self.inner.stats),
        });
        let feeds = (0..topic.settings.partitions)
            .map(|partition| Feed::new(Arc::clone(&shared), partition))
            .collect();
        let sub = Arc::new(JsSubscription { shared, feeds });
        self.inner
            .subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                (subscriber.to_owned(), topic.name.to_string()),
                Arc::clone(&sub),
            );
        Ok(sub)
    }

    async fn unsubscribe_async(&self, subscriber: &str, topic: &str) -> Result<()> {
        let removed = self
            .inner
            .subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(subscriber.to_owned(), topic.to_owned()));
        let Some(sub) = removed else {
            return Err(Error::UnknownSubscription {
                subscriber: subscriber.to_owned(),
                topic: topic.to_owned(),
            });
        };
        sub.stop();
        let shared = &sub.shared;
        for partition in 0..shared.topic.settings.partitions {
            let stream = shared.topic.stream(partition)?;
            if let Err(error) = stream.delete_consumer(&shared.consumer).await {
                tracing::debug!(%error, "deleting a consumer");
            }
            let subject = shared.names.effects_subject(topic, partition);
            if let Err(error) = shared.effects.purge().filter(subject).await {
                tracing::debug!(%error, "purging effects records");
            }
        }
        self.purge_dead(subscriber, Some(topic)).await?;
        Ok(())
    }

    /// Moves the cursors: each partition's consumer is recreated at the
    /// target, and a record of a new epoch says nothing before it is
    /// decided any more (so effects of re-delivered messages apply again).
    async fn seek_async(&self, subscriber: &str, topic: &str, target: SeekTarget) -> Result<()> {
        let Some(sub) = self.local(subscriber, topic) else {
            return Err(Error::UnknownSubscription {
                subscriber: subscriber.to_owned(),
                topic: topic.to_owned(),
            });
        };
        let shared = &sub.shared;
        let failover = self.inner.log.config().failover;
        for partition in 0..shared.topic.settings.partitions {
            let policy = match target {
                SeekTarget::Earliest => DeliverPolicy::All,
                SeekTarget::Latest => DeliverPolicy::New,
                SeekTarget::Offset {
                    partition: Some(only),
                    ..
                } if only != partition => continue,
                SeekTarget::Offset { offset, .. } => DeliverPolicy::ByStartSequence {
                    start_sequence: offset + 1,
                },
                SeekTarget::Timestamp(ms) => DeliverPolicy::ByStartTime {
                    start_time: time_of(ms)?,
                },
            };
            let stream = shared.topic.stream(partition)?;
            let subject = shared.names.effects_subject(topic, partition);
            let epoch = match last_of(&shared.effects, &subject).await? {
                Some(raw) => Record::decode(&raw.payload)?.epoch,
                None => 0,
            };
            let record = Record {
                epoch: epoch + 1,
                through: None,
                state: Vec::new(),
                outbox: Vec::new(),
                dead: Vec::new(),
            };
            if let Err(error) = stream.delete_consumer(&shared.consumer).await {
                tracing::debug!(%error, "deleting a consumer to seek");
            }
            let ack = self
                .inner
                .log
                .context()
                .publish(subject, record.encode().into())
                .await
                .map_err(|error| backend("writing a seek record", error))?;
            ack.await
                .map_err(|error| backend("writing a seek record", error))?;
            stream
                .create_consumer(consumer_config(
                    &shared.consumer,
                    &shared.names,
                    &shared.topic,
                    policy,
                    failover,
                    shared.settings().mode,
                ))
                .await
                .map_err(|error| backend("recreating a consumer to seek", error))?;
        }
        shared.signal_control();
        Ok(())
    }

    /// Reads what the sync introspection calls answer.
    async fn refresh(&self) {
        let log = &self.inner.log;
        let mut topics = Vec::new();
        match log.discover().await {
            Ok(names) => {
                for name in names {
                    let described = match log.topic(&name).await {
                        Ok(topic) => log.describe(&topic).await,
                        Err(error) => Err(error),
                    };
                    match described {
                        Ok(info) => topics.push(info),
                        Err(error) => tracing::debug!(%error, topic = name, "describing a topic"),
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "listing topics");
                return;
            }
        }
        let subs = self.local_subscriptions();
        let mut subscriptions = Vec::new();
        for sub in subs {
            match self.describe_subscription(&sub, &topics).await {
                Ok(info) => subscriptions.push(info),
                Err(error) => tracing::debug!(%error, "describing a subscription"),
            }
        }
        let mut snapshot = self
            .inner
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        snapshot.topics = topics;
        snapshot.subscriptions = subscriptions;
    }

    async fn describe_subscription(
        &self,
        sub: &JsSubscription,
        topics: &[TopicInfo],
    ) -> Result<SubscriptionInfo> {
        let shared = &sub.shared;
        let topic_info = topics.iter().find(|info| *info.name == *shared.topic.name);
        let mut partitions = Vec::new();
        let live = self.inner.presence.live();
        for partition in 0..shared.topic.settings.partitions {
            let stream = shared.topic.stream(partition)?;
            let info = stream
                .consumer_info(&shared.consumer)
                .await
                .map_err(|error| backend("reading a consumer", error))?;
            let end = topic_info
                .and_then(|topic| topic.partitions.get(partition as usize))
                .map_or(info.delivered.stream_sequence, |p| p.end);
            let committed = info.ack_floor.stream_sequence.min(end);
            let owner = Presence::owner(
                &live,
                &sub.feeds[partition as usize].subscription_key(),
                shared.topic.settings.partitions,
                partition,
            );
            partitions.push(SubscriptionPartitionInfo {
                partition,
                owner: owner.map(str::to_owned),
                committed,
                end,
                lag: end - committed,
                in_flight: info.num_ack_pending as u64,
                scheduled: 0,
            });
        }
        let dead_letters = match self.existing_stream(shared.names.dead_stream()).await? {
            Some(stream) => {
                let mut subjects = stream
                    .info_with_subjects(shared.names.dead_subject(&shared.topic.name))
                    .await
                    .map_err(|error| backend("counting dead letters", error))?;
                let mut count = 0;
                while let Some(entry) = subjects.next().await {
                    count += entry
                        .map_err(|error| backend("counting dead letters", error))?
                        .1 as u64;
                }
                count
            }
            None => 0,
        };
        Ok(SubscriptionInfo {
            subscriber: shared.names.subscriber.clone(),
            topic: shared.topic.name.to_string(),
            settings: shared.settings(),
            lag: partitions.iter().map(|p| p.lag).sum(),
            in_flight: partitions.iter().map(|p| p.in_flight).sum(),
            scheduled: 0,
            dead_letters,
            expired: 0,
            partitions,
        })
    }
}

fn time_of(ms: u64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|error| Error::InvalidArgument(format!("seek time {ms}: {error}")))
}

fn dead_letter(
    subscriber: &str,
    raw: &async_nats::jetstream::message::StreamMessage,
) -> Result<DeadLetter> {
    let header = |name: &str| {
        raw.headers
            .get(name)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default()
    };
    let number = |name: &str| header(name).parse::<u64>().unwrap_or(0);
    let topic: Arc<str> = Arc::from(header(DEAD_TOPIC));
    let offset = number(DEAD_OFFSET);
    let mut message: Message = message_from(
        &topic,
        number(DEAD_PARTITION) as u32,
        offset + 1,
        number(DEAD_TIMESTAMP),
        Some(&raw.headers),
        &raw.payload,
    )?;
    message.offset = offset;
    Ok(DeadLetter {
        id: raw.sequence,
        subscriber: subscriber.to_owned(),
        attempts: number(DEAD_ATTEMPTS) as u32,
        reason: header(DEAD_REASON),
        failed_at_ms: number(DEAD_FAILED_AT),
        message,
    })
}

fn empty_latency() -> LatencyStats {
    LatencyStats {
        count: 0,
        seconds: 0.0,
        buckets: vec![0; courier_core::LATENCY_BUCKETS.len() + 1],
    }
}

impl courier_core::Storage for JetStreamStore {
    fn guarantees(&self) -> Guarantees {
        Guarantees {
            durability: Durability::Replicated {
                replicas: self.inner.log.replicas(),
            },
            effects: EffectsCommit::Idempotent,
            delivers_durable_only: true,
        }
    }

    fn default_topic_settings(&self) -> TopicSettings {
        self.inner.log.config().default_topic
    }

    fn create_topic<'a>(
        &'a self,
        name: &'a str,
        settings: TopicSettings,
    ) -> BoxFuture<'a, Result<TopicInfo>> {
        Box::pin(async move {
            self.check_open()?;
            let info = self.inner.log.create_topic(name, settings).await?;
            let mut snapshot = self
                .inner
                .snapshot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !snapshot.topics.iter().any(|topic| topic.name == info.name) {
                snapshot.topics.push(info.clone());
                snapshot.topics.sort_by(|a, b| a.name.cmp(&b.name));
            }
            Ok(info)
        })
    }

    fn append<'a>(
        &'a self,
        topic: &'a str,
        messages: &'a [NewMessage],
    ) -> BoxFuture<'a, Result<Vec<Position>>> {
        Box::pin(async move {
            self.check_open()?;
            let positions = self.inner.log.append(topic, messages).await?;
            self.inner
                .appended
                .fetch_add(positions.len() as u64, Ordering::Relaxed);
            Ok(positions)
        })
    }

    fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<Message>> {
        self.block_on(self.inner.log.read(topic, partition, from, max))
    }

    fn subscribe<'a>(
        &'a self,
        subscriber: &'a str,
        topic: &'a str,
        settings: SubscriptionSettings,
    ) -> BoxFuture<'a, Result<Arc<dyn Subscription>>> {
        Box::pin(async move {
            let sub = self.subscribe_async(subscriber, topic, settings).await?;
            Ok(sub as Arc<dyn Subscription>)
        })
    }

    fn unsubscribe<'a>(&'a self, subscriber: &'a str, topic: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.unsubscribe_async(subscriber, topic))
    }

    fn seek<'a>(
        &'a self,
        subscriber: &'a str,
        topic: &'a str,
        target: SeekTarget,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.seek_async(subscriber, topic, target))
    }

    fn dead_letters(
        &self,
        subscriber: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.block_on(self.list_dead(subscriber, topic, limit))
    }

    fn replay_dead_letters<'a>(
        &'a self,
        _subscriber: &'a str,
        _topic: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async {
            Err(Error::InvalidArgument(
                "replaying dead letters is not available on the jetstream backend yet (list and purge are)".into(),
            ))
        })
    }

    fn purge_dead_letters<'a>(
        &'a self,
        subscriber: &'a str,
        topic: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.purge_dead(subscriber, topic))
    }

    fn state_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.block_on(self.state_value(namespace, key))
    }

    fn state_read(
        &self,
        namespace: &str,
        key: &str,
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        let value = self.state_get(namespace, key)?;
        f(value.as_deref());
        Ok(())
    }

    fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        self.block_on(self.scan(namespace, prefix, start_after, limit))
    }

    fn topics(&self) -> Vec<TopicInfo> {
        self.inner
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .topics
            .clone()
    }

    fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        self.topics()
            .into_iter()
            .find(|topic| topic.name == name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let snapshot = self
            .inner
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut subscriptions = snapshot.subscriptions.clone();
        subscriptions.sort_by(|a, b| (&a.subscriber, &a.topic).cmp(&(&b.subscriber, &b.topic)));
        subscriptions
    }

    fn subscription_info(&self, subscriber: &str, topic: &str) -> Result<SubscriptionInfo> {
        if let Some(info) = self
            .subscriptions()
            .into_iter()
            .find(|info| info.subscriber == subscriber && info.topic == topic)
        {
            return Ok(info);
        }
        match self.local(subscriber, topic) {
            // Subscribed since the last snapshot.
            Some(sub) => Ok(SubscriptionInfo {
                subscriber: subscriber.to_owned(),
                topic: topic.to_owned(),
                settings: sub.shared.settings(),
                partitions: Vec::new(),
                lag: 0,
                in_flight: 0,
                scheduled: 0,
                dead_letters: 0,
                expired: 0,
            }),
            None => Err(Error::UnknownSubscription {
                subscriber: subscriber.to_owned(),
                topic: topic.to_owned(),
            }),
        }
    }

    fn stats(&self) -> StoreStats {
        let stats = &self.inner.stats;
        StoreStats {
            appended: self.inner.appended.load(Ordering::Relaxed),
            acked: stats.acked.load(Ordering::Relaxed),
            retried: stats.retried.load(Ordering::Relaxed),
            dead_lettered: stats.dead_lettered.load(Ordering::Relaxed),
            expired: 0,
            group_commits: 0,
            state_checkpoints: 0,
            state_dirty_bytes: 0,
            fsync: empty_latency(),
            commit: empty_latency(),
            write_stalls: empty_latency(),
            disk_bytes: self.topics().iter().map(|topic| topic.disk_bytes).sum(),
            write_buffer_bytes: 0,
            journal_files: 0,
            flushes_queued: 0,
        }
    }

    fn health(&self) -> Health {
        use async_nats::connection::State;
        let failure = match self.inner.log.client().connection_state() {
            State::Connected => None,
            state => Some(format!(
                "NATS connection {state:?}: reconnecting to {}",
                self.inner.log.config().servers.join(", ")
            )),
        };
        Health {
            failure,
            full: None,
        }
    }

    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        // Everything answered was already on a quorum.
        Box::pin(async { Ok(()) })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.closed.store(true, Ordering::Release);
            let subs = self.local_subscriptions();
            for sub in subs {
                sub.stop();
            }
            self.inner.stop.cancel();
            if let Err(error) = self.inner.log.client().flush().await {
                tracing::debug!(%error, "flushing the NATS connection");
            }
        })
    }
}
