//! Retention: a partition's floor rises, and every subscription that
//! had not passed it counts what it lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{CommitGroup, Writer};
use crate::codec::{self};
use crate::context::Stats;
use crate::error::{Error, Result};
use crate::keys;
use crate::support::lock;
use crate::topic::Topic;

impl Writer {
    pub(super) fn truncate(
        &mut self,
        topic: &Arc<Topic>,
        partition: u32,
        floor: u64,
        group: &mut CommitGroup,
    ) -> Result<()> {
        let log = topic.partition(partition).ok_or(Error::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partition_count(),
        })?;
        let floor = floor.min(log.durable_end());
        if floor <= log.start() {
            return Ok(());
        }
        log.start.store(floor, Ordering::Release);
        let key = keys::start_offset_key(topic.id, partition);
        group
            .batch
            .insert(&self.shared.ks.offsets, key, codec::encode_u64(floor));
        for sub in self.shared.subscriptions_of(topic) {
            let mode = sub.settings().mode;
            let (ops, expired) = lock(&sub.parts[partition as usize]).truncate(mode, floor);
            if ops.is_empty() {
                continue;
            }
            self.write_ops(&sub, partition, ops, group)?;
            if expired > 0 {
                lock(&sub.counters).expired += expired;
                self.write_counters(&sub, group);
                Stats::add(&self.shared.stats.expired, expired);
                tracing::warn!(subscriber = %sub.subscriber, topic = %topic.name, partition, expired, "retention removed messages this subscription never handled");
            }
            group.woken.push(sub);
        }
        Ok(())
    }
}
