//! Appends: topics created, messages placed into runs of their
//! partitions, offsets assigned.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{CommitGroup, MAX_RUN_BYTES, MAX_RUN_MESSAGES, Run, Writer};
use crate::codec::{self};
use crate::config::TopicSettings;
use crate::context::Stats;
use crate::error::{Error, Result};
use crate::keys;
use crate::support::{now_ms, write};
use crate::topic::{PartitionLog, Topic, TopicRecord};
use crate::types::Position;

impl Writer {
    pub(super) fn create_topic(
        &mut self,
        name: &str,
        settings: TopicSettings,
        id: u32,
        partitions: Vec<fjall::Keyspace>,
        group: &mut CommitGroup,
    ) -> Result<Arc<Topic>> {
        // `StoreContext::create_topic` checked the name, the settings and
        // that the topic is new, under the lock every creation takes.
        debug_assert!(self.shared.topic(name).is_none(), "topic {name} exists");
        debug_assert_eq!(partitions.len(), settings.partitions as usize);
        let partitions = partitions
            .into_iter()
            .map(|keyspace| PartitionLog::new(keyspace, 0, 0, 0))
            .collect();
        let record = TopicRecord::new(id, &settings, now_ms());
        let json =
            serde_json::to_vec(&record).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        group
            .batch
            .insert(&self.shared.ks.meta, keys::topic_record_key(name), json);
        let topic = Arc::new(Topic::new(id, Arc::from(name), settings, partitions));
        write(&self.shared.topics).insert(Arc::clone(&topic.name), Arc::clone(&topic));
        tracing::info!(
            topic = name,
            partitions = settings.partitions,
            "created topic"
        );
        Ok(topic)
    }

    pub(super) fn append(
        &mut self,
        topic: &Arc<Topic>,
        encoded: &[u8],
        records: Vec<(u32, std::ops::Range<usize>)>,
        group: &mut CommitGroup,
    ) -> Vec<Position> {
        let now = now_ms();
        let mut positions = Vec::with_capacity(records.len());
        for (partition, at) in records {
            positions.push(self.append_one(topic, partition, &encoded[at], now, group));
        }
        Stats::add(&self.shared.stats.appended, positions.len() as u64);
        positions
    }

    pub(super) fn append_one(
        &mut self,
        topic: &Arc<Topic>,
        partition: u32,
        encoded: &[u8],
        now: u64,
        group: &mut CommitGroup,
    ) -> Position {
        // Callers validated the partition against this very topic.
        let log = &topic.partitions[partition as usize];
        let offset = log.next.fetch_add(1, Ordering::AcqRel);
        let timestamp = now.max(log.last_timestamp_ms.load(Ordering::Relaxed));
        log.last_timestamp_ms.store(timestamp, Ordering::Relaxed);
        let CommitGroup {
            runs,
            run_of,
            batch,
            ..
        } = group;
        let index = *run_of.entry((topic.id, partition)).or_insert_with(|| {
            runs.push(Run {
                topic: Arc::clone(topic),
                partition,
                first: offset,
                messages: codec::RunBuilder::default(),
            });
            runs.len() - 1
        });
        let run = &mut runs[index];
        let full = run.messages.count() >= MAX_RUN_MESSAGES
            || run.messages.len() + encoded.len() > MAX_RUN_BYTES;
        if full {
            run.close(batch);
        }
        if run.messages.count() == 0 {
            run.first = offset;
        }
        run.messages.push(encoded, timestamp);
        Position { partition, offset }
    }
}
