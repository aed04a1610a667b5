//! What the store tells about itself: topics, subscriptions, totals and
//! health.

use std::sync::Arc;

use super::FjallStore;
use crate::error::Result;
use crate::subscription_state::SubscriptionState;
use crate::support::{lock, read};
use crate::topic::Topic;
use crate::{
    Error, Health, PartitionInfo, StoreStats, SubscriptionInfo, SubscriptionPartitionInfo,
    TopicInfo,
};

impl FjallStore {
    /// Every topic, by name.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let topics: Vec<Arc<Topic>> = read(&self.shared.topics).values().cloned().collect();
        topics
            .iter()
            .map(|topic| self.describe_topic(topic))
            .collect()
    }

    pub fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        let topic = self
            .shared
            .topic(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
        Ok(self.describe_topic(&topic))
    }

    pub(super) fn describe_topic(&self, topic: &Topic) -> TopicInfo {
        let partitions: Vec<PartitionInfo> = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(index, log)| PartitionInfo {
                partition: index as u32,
                start: log.start(),
                end: log.durable_end(),
            })
            .collect();
        TopicInfo {
            name: topic.name.to_string(),
            settings: topic.settings,
            messages: partitions
                .iter()
                .map(|p| p.end.saturating_sub(p.start))
                .sum(),
            partitions,
            disk_bytes: topic
                .partitions
                .iter()
                .map(|log| log.keyspace.disk_space())
                .sum(),
        }
    }

    /// Every subscription, by subscriber then topic.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let subs: Vec<_> = read(&self.shared.subscriptions).values().cloned().collect();
        subs.iter().map(|sub| describe_subscription(sub)).collect()
    }

    pub fn subscription_info(&self, subscriber: &str, topic: &str) -> Result<SubscriptionInfo> {
        let sub = self.find_subscription(subscriber, topic)?;
        Ok(describe_subscription(&sub))
    }

    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.shared.stats;
        StoreStats {
            appended: stats.appended.load(Relaxed),
            acked: stats.acked.load(Relaxed),
            retried: stats.retried.load(Relaxed),
            dead_lettered: stats.dead_lettered.load(Relaxed),
            expired: stats.expired.load(Relaxed),
            group_commits: stats.group_commits.load(Relaxed),
            state_checkpoints: stats.state_checkpoints.load(Relaxed),
            state_dirty_bytes: self.shared.state_table.dirty_bytes() as u64,
            fsync: stats.fsync.snapshot(),
            commit: stats.commit.snapshot(),
            write_stalls: stats.write_stalls.snapshot(),
            disk_bytes: self.shared.db.disk_space().unwrap_or(0),
            write_buffer_bytes: self.shared.db.write_buffer_size(),
            journal_files: self.shared.db.journal_count(),
            flushes_queued: self.shared.db.outstanding_flushes(),
        }
    }

    pub fn health(&self) -> Health {
        Health {
            failure: self.shared.failure(),
            full: self.shared.full_reason(),
        }
    }
}

fn describe_subscription(sub: &SubscriptionState) -> SubscriptionInfo {
    let partitions: Vec<SubscriptionPartitionInfo> = sub
        .parts
        .iter()
        .zip(&sub.topic.partitions)
        .enumerate()
        .map(|(index, (part, log))| {
            let state = lock(part);
            let end = log.durable_end();
            SubscriptionPartitionInfo {
                partition: index as u32,
                owner: None,
                committed: state.committed(),
                end,
                lag: end.saturating_sub(state.committed()),
                // Batches being committed count too: "drained" means their
                // effects are readable.
                in_flight: state.in_flight()
                    + sub.settling[index].load(std::sync::atomic::Ordering::Acquire),
                scheduled: state.scheduled(),
            }
        })
        .collect();
    let counters = *lock(&sub.counters);
    SubscriptionInfo {
        subscriber: sub.subscriber.to_string(),
        topic: sub.topic.name.to_string(),
        settings: sub.settings(),
        lag: partitions.iter().map(|p| p.lag).sum(),
        in_flight: partitions.iter().map(|p| p.in_flight).sum(),
        scheduled: partitions.iter().map(|p| p.scheduled).sum(),
        partitions,
        dead_letters: counters.dead_letters,
        expired: counters.expired,
    }
}
