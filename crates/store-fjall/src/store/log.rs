//! The log: creating topics, appending (encoded here, placed by the
//! writer), and reading messages back for inspection.

use std::sync::Arc;

use super::FjallStore;
use crate::codec;
use crate::command::Command;
use crate::error::{Error, Result};
use crate::topic::Topic;
use crate::{Message, NewMessage, Position, TopicInfo, TopicSettings, validate_name};

/// Most messages in one `append` call: bounds one group commit's memory.
pub const MAX_APPEND_BATCH: usize = 100_000;

impl FjallStore {
    /// Creates a topic, or returns the existing one if it has the same
    /// number of partitions.
    pub async fn create_topic(&self, name: &str, settings: TopicSettings) -> Result<TopicInfo> {
        validate_name("topic", name)?;
        settings.validate()?;
        let topic = self.shared.create_topic(name, settings).await?;
        Ok(self.describe_topic(&topic))
    }

    pub(super) async fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>> {
        self.shared.topic_or_create(name).await
    }

    /// Appends messages to a topic (created with defaults if missing) and
    /// returns their positions once they are durable. All or nothing.
    pub async fn append(&self, topic: &str, messages: &[NewMessage]) -> Result<Vec<Position>> {
        self.shared.check_appendable()?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if messages.len() > MAX_APPEND_BATCH {
            return Err(Error::InvalidArgument(format!(
                "{} messages in one append exceed the limit of {MAX_APPEND_BATCH}",
                messages.len()
            )));
        }
        // Check sizes first: a refused append must not create its topic.
        let limit = self.shared.config.max_message_bytes;
        let mut total = 0;
        for message in messages {
            let size = codec::encoded_len(message);
            if size > limit {
                return Err(Error::MessageTooLarge { size, limit });
            }
            total += size;
        }
        let topic = self.topic_or_create(topic).await?;
        let mut encoded = Vec::with_capacity(total);
        let mut records = Vec::with_capacity(messages.len());
        for message in messages {
            let partition = topic.partition_for(message.key.as_deref());
            let start = encoded.len();
            codec::write_message(message, &mut encoded)?;
            records.push((partition, start..encoded.len()));
        }
        self.shared
            .ask(|reply| Command::Append {
                topic,
                encoded,
                records,
                reply,
            })
            .await
    }

    /// Reads up to `max` durable messages of a partition from `from`
    /// (inspection and tests; consumers use subscriptions). Blocking.
    pub fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<Message>> {
        let topic = self
            .shared
            .topic(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
        let log = topic.partition(partition).ok_or(Error::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partition_count(),
        })?;
        let from = from.max(log.start());
        let end = log
            .durable_end()
            .min(from.saturating_add(max.try_into().unwrap_or(u64::MAX)));
        let mut out = Vec::new();
        log.scan(from, end, |offset, encoded| {
            out.push(codec::decode_message(
                &topic.name,
                partition,
                offset,
                encoded,
            )?);
            Ok(())
        })?;
        Ok(out)
    }
}
