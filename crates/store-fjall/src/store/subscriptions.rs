//! Subscribing, unsubscribing and seeking.

use std::sync::Arc;

use super::FjallStore;
use crate::command::Command;
use crate::error::{Error, Result};
use crate::maintenance;
use crate::subscription::FjallSubscription;
use crate::subscription_state::SubscriptionState;
use crate::topic::Topic;
use crate::{SeekTarget, SubscriptionSettings, validate_name};

impl FjallStore {
    /// Creates a subscription (starting per `settings.start`) or updates the
    /// settings of an existing one, whose cursors are kept.
    pub async fn subscribe(
        &self,
        subscriber: &str,
        topic: &str,
        settings: SubscriptionSettings,
    ) -> Result<FjallSubscription> {
        validate_name("subscriber", subscriber)?;
        settings.validate()?;
        self.shared.check_writable()?;
        let topic = self.topic_or_create(topic).await?;
        let inner = self
            .shared
            .ask(|reply| Command::Subscribe {
                subscriber: subscriber.to_owned(),
                topic,
                settings,
                reply,
            })
            .await?;
        Ok(self.handle(inner))
    }

    fn handle(&self, inner: Arc<SubscriptionState>) -> FjallSubscription {
        FjallSubscription {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }

    /// An existing subscription.
    pub fn subscription(&self, subscriber: &str, topic: &str) -> Result<FjallSubscription> {
        self.find_subscription(subscriber, topic)
            .map(|inner| self.handle(inner))
    }

    pub(super) fn find_subscription(
        &self,
        subscriber: &str,
        topic: &str,
    ) -> Result<Arc<SubscriptionState>> {
        self.shared
            .subscription(subscriber, topic)
            .ok_or_else(|| Error::UnknownSubscription {
                subscriber: subscriber.to_owned(),
                topic: topic.to_owned(),
            })
    }

    /// Removes a subscription with its cursors, retries and dead letters.
    /// The subscriber's state namespace is kept.
    pub async fn unsubscribe(&self, subscriber: &str, topic: &str) -> Result<()> {
        let sub = self.find_subscription(subscriber, topic)?;
        self.shared
            .ask(|reply| Command::Unsubscribe { sub, reply })
            .await
    }

    /// Moves a subscription's cursors. Scheduled retries are forgotten,
    /// batches in flight settle as no-ops.
    pub async fn seek(&self, subscriber: &str, topic: &str, target: SeekTarget) -> Result<()> {
        let sub = self.find_subscription(subscriber, topic)?;
        let reader = sub.clone();
        let targets = tokio::task::spawn_blocking(move || seek_targets(&reader.topic, target))
            .await
            .map_err(|_| Error::Closed)??;
        self.shared
            .ask(|reply| Command::Seek {
                sub,
                targets,
                reply,
            })
            .await
    }
}

/// Per partition, where a seek lands (None = leave it), clamped to the
/// retained range. Blocking (timestamp seeks read the log).
fn seek_targets(topic: &Topic, target: SeekTarget) -> Result<Vec<Option<u64>>> {
    if let SeekTarget::Offset {
        partition: Some(partition),
        ..
    } = target
        && topic.partition(partition).is_none()
    {
        return Err(Error::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partition_count(),
        });
    }
    topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, log)| {
            let (start, end) = (log.start(), log.durable_end());
            let wanted = match target {
                SeekTarget::Earliest => start,
                SeekTarget::Latest => end,
                SeekTarget::Offset { partition, offset } => match partition {
                    Some(only) if only as usize != index => return Ok(None),
                    _ => offset,
                },
                SeekTarget::Timestamp(ms) => maintenance::first_at_or_after(log, start, end, ms)?,
            };
            Ok(Some(wanted.clamp(start, end)))
        })
        .collect()
}
