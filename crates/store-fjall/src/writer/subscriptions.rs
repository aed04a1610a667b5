//! Subscriptions: created, updated, removed and moved (seek).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{CommitGroup, Writer};
use crate::codec::{self, Counters};
use crate::config::SubscriptionSettings;
use crate::cursor::PartitionCursor;
use crate::error::{FjallResult, Result};
use crate::keys;
use crate::subscription_state::{SubscriptionRecord, SubscriptionState};
use crate::support::{lock, write};
use crate::topic::Topic;

impl Writer {
    pub(super) fn subscribe(
        &mut self,
        subscriber: &str,
        topic: Arc<Topic>,
        settings: SubscriptionSettings,
        group: &mut CommitGroup,
    ) -> Result<Arc<SubscriptionState>> {
        if let Some(existing) = self.shared.subscription(subscriber, &topic.name) {
            if existing.settings() != settings {
                *write(&existing.settings) = settings;
                let record =
                    SubscriptionRecord::new(existing.id, subscriber, &topic.name, &settings);
                self.put_subscription_record(&record, group)?;
                group.woken.push(Arc::clone(&existing));
            }
            return Ok(existing);
        }
        let id = self.next_sub_id;
        self.next_sub_id += 1;
        let record = SubscriptionRecord::new(id, subscriber, &topic.name, &settings);
        self.put_subscription_record(&record, group)?;
        let mut parts = Vec::with_capacity(topic.partitions.len());
        for (partition, log) in topic.partitions.iter().enumerate() {
            let start = match settings.start {
                crate::config::StartPosition::Earliest => log.start(),
                crate::config::StartPosition::Latest => log.next.load(Ordering::Acquire),
            };
            let key = keys::cursor_key(id, partition as u32);
            group
                .batch
                .insert(&self.shared.ks.offsets, key, codec::encode_u64(start));
            parts.push(std::sync::Mutex::new(PartitionCursor::recover(
                start,
                [],
                [],
            )));
        }
        let sub = Arc::new(SubscriptionState::new(
            &record,
            &topic,
            parts,
            Counters::default(),
            0,
        ));
        let key = (Arc::clone(&sub.subscriber), Arc::clone(&topic.name));
        write(&self.shared.subscriptions).insert(key, Arc::clone(&sub));
        tracing::info!(subscriber, topic = %topic.name, "created subscription");
        Ok(sub)
    }

    pub(super) fn put_subscription_record(
        &self,
        record: &SubscriptionRecord,
        group: &mut CommitGroup,
    ) -> Result<()> {
        let json = serde_json::to_vec(record).map_err(std::io::Error::from)?;
        let key = keys::subscription_record_key(record.id);
        group.batch.insert(&self.shared.ks.meta, key, json);
        Ok(())
    }

    pub(super) fn unsubscribe(
        &mut self,
        sub: &Arc<SubscriptionState>,
        group: &mut CommitGroup,
    ) -> Result<()> {
        if sub.removed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let ks = &self.shared.ks;
        group
            .batch
            .remove(&ks.meta, keys::subscription_record_key(sub.id));
        group.batch.remove(&ks.offsets, keys::counters_key(sub.id));
        for partition in 0..sub.topic.partition_count() {
            group
                .batch
                .remove(&ks.offsets, keys::cursor_key(sub.id, partition));
        }
        let prefix = keys::subscription_prefix(sub.id);
        for keyspace in [&ks.acked, &ks.pending, &ks.dead] {
            for guard in keyspace.prefix(prefix) {
                let key = guard.key().fjall()?;
                group.batch.remove(keyspace, key);
            }
        }
        let key = (Arc::clone(&sub.subscriber), Arc::clone(&sub.topic.name));
        write(&self.shared.subscriptions).remove(&key);
        group.woken.push(Arc::clone(sub));
        tracing::info!(subscriber = %sub.subscriber, topic = %sub.topic.name, "removed subscription");
        Ok(())
    }

    pub(super) fn seek(
        &mut self,
        sub: &Arc<SubscriptionState>,
        targets: &[Option<u64>],
        group: &mut CommitGroup,
    ) -> Result<()> {
        for (partition, target) in targets.iter().enumerate() {
            let (Some(part), Some(target)) = (sub.parts.get(partition), target) else {
                continue;
            };
            let ops = lock(part).seek(*target);
            self.write_ops(sub, partition as u32, ops, group)?;
        }
        group.woken.push(Arc::clone(sub));
        Ok(())
    }
}
