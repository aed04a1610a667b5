//! Dead letters: replayed to their subscriber or purged, a bounded number
//! per command.

use std::sync::Arc;

use super::{CommitGroup, MAX_DEAD_PER_COMMAND, Writer};
use crate::codec::{self};
use crate::cursor::CursorWrite;
use crate::error::{FjallResult, Result};
use crate::keys;
use crate::subscription_state::SubscriptionState;
use crate::support::{lock, now_ms};
use crate::topic::Topic;

impl Writer {
    pub(super) fn replay_dead(
        &mut self,
        sub: &Arc<SubscriptionState>,
        group: &mut CommitGroup,
    ) -> Result<u64> {
        let ks = &self.shared.ks;
        let now = now_ms();
        let mut count = 0;
        for guard in ks.dead.prefix(keys::subscription_prefix(sub.id)) {
            if count as usize >= MAX_DEAD_PER_COMMAND {
                break;
            }
            let (key, value) = guard.into_inner().fjall()?;
            let record = codec::decode_dead(&value)?;
            let Some(part) = sub.parts.get(record.partition as usize) else {
                continue;
            };
            let op = lock(part).replay(record.offset, record.message, now);
            if let CursorWrite::PendingPut(offset, pending) = op {
                let pending_key = keys::delivery_key(sub.id, record.partition, offset);
                group
                    .batch
                    .insert(&ks.pending, pending_key, codec::encode_pending(&pending));
            }
            group.batch.remove(&ks.dead, key);
            count += 1;
        }
        if count > 0 {
            let mut counters = lock(&sub.counters);
            counters.dead_letters = counters.dead_letters.saturating_sub(count);
            drop(counters);
            self.write_counters(sub, group);
            group.woken.push(Arc::clone(sub));
        }
        Ok(count)
    }

    pub(super) fn purge_dead(
        &mut self,
        sub: &Arc<SubscriptionState>,
        group: &mut CommitGroup,
    ) -> Result<u64> {
        let ks = &self.shared.ks;
        let mut count = 0;
        for guard in ks.dead.prefix(keys::subscription_prefix(sub.id)) {
            if count as usize >= MAX_DEAD_PER_COMMAND {
                break;
            }
            group.batch.remove(&ks.dead, guard.key().fjall()?);
            count += 1;
        }
        if count > 0 {
            let mut counters = lock(&sub.counters);
            counters.dead_letters = counters.dead_letters.saturating_sub(count);
            drop(counters);
            self.write_counters(sub, group);
        }
        Ok(count)
    }
}

/// Reads one encoded message from the log; an empty vector if retention
/// removed it meanwhile (the dead letter then says so through its size).
pub(super) fn read_message(topic: &Topic, partition: u32, offset: u64) -> Result<Vec<u8>> {
    let Some(log) = topic.partition(partition) else {
        return Ok(Vec::new());
    };
    Ok(log.get(offset)?.unwrap_or_default())
}
