//! A subscription on the cluster: one durable pull consumer per partition
//! stream, shared by every engine of the cluster, and this engine's feeds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PriorityPolicy, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream;
use courier_core::{
    DeliveryMode, PartitionFeed, Result, StartPosition, Subscription, SubscriptionSettings,
};

use crate::backend;
use crate::codec::SubscriberNames;
use crate::feed::{Feed, FeedHandle};
use crate::shared::{GROUP, SubShared};

/// Most unacknowledged messages a consumer hands out (the feed's buffer).
const MAX_ACK_PENDING: i64 = 4096;

use crate::log::{DUPLICATE_WINDOW, JetStreamLog, Topic};

/// One subscriber's view of one topic on this engine.
pub(crate) struct JsSubscription {
    pub shared: Arc<SubShared>,
    pub feeds: Vec<Arc<Feed>>,
}

impl JsSubscription {
    pub fn stop(&self) {
        self.shared.active.store(false, Ordering::Release);
        self.shared.stop.cancel();
        self.shared.signal_control();
    }
}

impl Subscription for JsSubscription {
    fn subscriber(&self) -> &str {
        &self.shared.names.subscriber
    }

    fn topic(&self) -> &str {
        &self.shared.topic.name
    }

    fn partitions(&self) -> u32 {
        self.shared.topic.settings.partitions
    }

    fn settings(&self) -> SubscriptionSettings {
        self.shared.settings()
    }

    fn is_active(&self) -> bool {
        self.shared.is_active()
    }

    fn partition(&self, partition: u32) -> Result<Arc<dyn PartitionFeed>> {
        let feed = self.feeds.get(partition as usize).ok_or_else(|| {
            courier_core::Error::UnknownPartition {
                topic: self.shared.topic.name.to_string(),
                partition,
                partitions: self.partitions(),
            }
        })?;
        Ok(Arc::new(FeedHandle(Arc::clone(feed))))
    }
}

/// The subscriber's own streams (state, effects records, dead letters),
/// created if missing.
pub(crate) async fn subscriber_streams(
    log: &JetStreamLog,
    names: &SubscriberNames,
) -> Result<(stream::Stream, stream::Stream, stream::Stream)> {
    let replicas = log.config().replicas;
    let config = |name: String, subjects: String, per_subject: i64, what: &str| stream::Config {
        name,
        subjects: vec![subjects],
        description: Some(format!("{what} of {}", names.subscriber)),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: per_subject,
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        ..Default::default()
    };
    let context = log.context();
    let state = context
        .get_or_create_stream(config(
            names.state_stream(),
            names.state_subjects(),
            1,
            "state",
        ))
        .await
        .map_err(|error| backend("creating a state stream", error))?;
    let effects = context
        .get_or_create_stream(config(
            names.effects_stream(),
            names.effects_subjects(),
            1,
            "effects records",
        ))
        .await
        .map_err(|error| backend("creating an effects stream", error))?;
    let dead = context
        .get_or_create_stream(config(
            names.dead_stream(),
            names.dead_subjects(),
            -1,
            "dead letters",
        ))
        .await
        .map_err(|error| backend("creating a dead-letter stream", error))?;
    Ok((state, effects, dead))
}

/// Creates the durable consumer of every partition (keeping existing ones:
/// their cursors are the subscription's).
pub(crate) async fn ensure_consumers(
    log: &JetStreamLog,
    topic: &Topic,
    names: &SubscriberNames,
    settings: SubscriptionSettings,
) -> Result<String> {
    let consumer = names.consumer(&log.config().cluster);
    let failover = log.config().failover;
    for partition in 0..topic.settings.partitions {
        let stream = topic.stream(partition)?;
        match stream.consumer_info(&consumer).await {
            Ok(_) => continue,
            Err(error) if consumer_missing(&error.kind()) => {}
            Err(error) => return Err(backend("reading a consumer", error)),
        }
        let deliver_policy = match settings.start {
            StartPosition::Earliest => DeliverPolicy::All,
            StartPosition::Latest => DeliverPolicy::New,
        };
        stream
            .create_consumer(consumer_config(
                &consumer,
                names,
                topic,
                deliver_policy,
                failover,
                settings.mode,
            ))
            .await
            .map_err(|error| backend("creating a consumer", error))?;
    }
    Ok(consumer)
}

pub(crate) fn consumer_config(
    consumer: &str,
    names: &SubscriberNames,
    topic: &Topic,
    deliver_policy: DeliverPolicy,
    failover: Duration,
    mode: DeliveryMode,
) -> pull::Config {
    pull::Config {
        durable_name: Some(consumer.to_owned()),
        description: Some(format!("{} on {} ({mode:?})", names.subscriber, topic.name)),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: failover,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        priority_policy: PriorityPolicy::PinnedClient,
        priority_groups: vec![GROUP.to_owned()],
        priority_timeout: failover,
        num_replicas: 0,
        ..Default::default()
    }
}

/// Whether a consumer lookup failed because the consumer does not exist.
pub(crate) fn consumer_missing(kind: &ConsumerInfoErrorKind) -> bool {
    match kind {
        ConsumerInfoErrorKind::NotFound => true,
        ConsumerInfoErrorKind::JetStream(inner) => {
            inner.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND
        }
        _ => false,
    }
}
