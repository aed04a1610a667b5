//! Applying an effects record: state writes guarded per source, outbox
//! messages and dead letters with deterministic message ids. Every step is
//! idempotent, so a record may be applied again (by its writer's retry or by
//! the next owner of its partition) without doubling anything.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use courier_core::{Error, Result};
use futures_util::future::try_join_all;

use crate::backend;
use crate::codec::{SubscriberNames, hash, headers_of, is_wrong_last_sequence, last_of};
use crate::log::{JetStreamLog, Topic, read_one};
use crate::record::{Record, RecordOp};

/// Marks a state value as deleted (kept, with its guards, as a tombstone).
pub(crate) const DELETED_HEADER: &str = "Courier-Deleted";
/// Prefix of a state value's guards: `Courier-Applied-<topic hash>-<p>`
/// holds `<epoch>:<offset>` of the last record from that source partition
/// applied to the value.
const GUARD_PREFIX: &str = "Courier-Applied-";
/// Dead-letter headers.
pub(crate) const DEAD_TOPIC: &str = "Courier-Topic";
pub(crate) const DEAD_PARTITION: &str = "Courier-Partition";
pub(crate) const DEAD_OFFSET: &str = "Courier-Offset";
pub(crate) const DEAD_TIMESTAMP: &str = "Courier-Timestamp";
pub(crate) const DEAD_ATTEMPTS: &str = "Courier-Attempts";
pub(crate) const DEAD_REASON: &str = "Courier-Reason";
pub(crate) const DEAD_FAILED_AT: &str = "Courier-Failed-At";
/// Compare-and-set rounds before a state write gives up (other writers of
/// the same key: another partition's owner).
const CAS_ROUNDS: usize = 64;

/// Where a record comes from: one partition of one topic, at a position.
pub(crate) struct Source<'a> {
    pub topic: &'a Topic,
    pub partition: u32,
}

impl Source<'_> {
    fn guard(&self) -> String {
        format!(
            "{GUARD_PREFIX}{}-{}",
            hash(&self.topic.name),
            self.partition
        )
    }

    /// The outbox message id of a record's `index`th message.
    fn outbox_id(&self, names: &SubscriberNames, offset: u64, index: usize) -> String {
        format!(
            "{}/{}/{}/{offset}/{index}",
            names.subscriber, self.topic.name, self.partition
        )
    }
}

/// The streams a subscriber's effects go to.
pub(crate) struct Targets<'a> {
    pub log: &'a JetStreamLog,
    pub names: &'a SubscriberNames,
    pub state: &'a stream::Stream,
}

/// Applies every effect of `record`; safe to repeat.
pub(crate) async fn apply(
    targets: &Targets<'_>,
    source: &Source<'_>,
    record: &Record,
) -> Result<()> {
    let Some(through) = record.through else {
        return Ok(());
    };
    let guard = source.guard();
    let position = (record.epoch, through);
    let writes = record
        .state
        .iter()
        .map(|op| write_state(targets, &guard, position, op));
    let outbox = publish_outbox(targets, source, record, through);
    let dead = publish_dead(targets, source, record);
    tokio::try_join!(try_join_all(writes), outbox, dead)?;
    Ok(())
}

/// One state op on top of the key's current value, unless the value already
/// carries this source's position (or a later one).
async fn write_state(
    targets: &Targets<'_>,
    guard: &str,
    position: (u64, u64),
    op: &RecordOp,
) -> Result<()> {
    let subject = targets.names.state_subject(op.key());
    for _ in 0..CAS_ROUNDS {
        let (sequence, value, old_headers) = match last_of(targets.state, &subject).await? {
            Some(current) => {
                let deleted = current.headers.get(DELETED_HEADER).is_some();
                let value = (!deleted).then_some(current.payload);
                (current.sequence, value, Some(current.headers))
            }
            None => (0, None, None),
        };
        if old_headers
            .as_ref()
            .and_then(|headers| headers.get(guard))
            .and_then(|applied| parse_position(applied.as_str()))
            .is_some_and(|applied| applied >= position)
        {
            return Ok(());
        }
        let new_value = match op {
            RecordOp::Set { value, .. } => Some(Bytes::copy_from_slice(value)),
            RecordOp::Delete { .. } => None,
            RecordOp::Increment { delta, .. } => {
                let base = value
                    .as_deref()
                    .and_then(|bytes| std::str::from_utf8(bytes).ok())
                    .and_then(|text| text.trim().parse::<i64>().ok())
                    .unwrap_or(0);
                Some(Bytes::from(base.saturating_add(*delta).to_string()))
            }
        };
        let mut headers = HeaderMap::new();
        for (name, values) in old_headers.iter().flat_map(HeaderMap::iter) {
            let name = name.to_string();
            if name.starts_with(GUARD_PREFIX) && name != guard {
                for value in values {
                    headers.append(name.as_str(), value.as_str());
                }
            }
        }
        headers.insert(guard, format!("{}:{}", position.0, position.1).as_str());
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            sequence.to_string().as_str(),
        );
        if new_value.is_none() {
            headers.insert(DELETED_HEADER, "1");
        }
        let published = targets
            .log
            .context()
            .publish_with_headers(subject.clone(), headers, new_value.unwrap_or_default())
            .await
            .map_err(|error| backend("writing a state value", error))?;
        match published.await {
            Ok(_) => return Ok(()),
            Err(error) if is_wrong_last_sequence(&error) => {
                // Another writer of this key (another partition's owner)
                // came first: read again, after a short random pause.
                tokio::time::sleep(std::time::Duration::from_micros(fastrand::u64(100..2000)))
                    .await;
                continue;
            }
            Err(error) => return Err(backend("writing a state value", error)),
        }
    }
    Err(Error::Backend(format!(
        "state key {:?} of {:?}: still contended after {CAS_ROUNDS} compare-and-set rounds",
        op.key(),
        targets.names.subscriber
    )))
}

fn parse_position(text: &str) -> Option<(u64, u64)> {
    let (epoch, offset) = text.split_once(':')?;
    Some((epoch.parse().ok()?, offset.parse().ok()?))
}

/// The record's outbox messages, each with an id made of its source
/// position: a second copy is dropped by the target stream.
async fn publish_outbox(
    targets: &Targets<'_>,
    source: &Source<'_>,
    record: &Record,
    through: u64,
) -> Result<()> {
    // Grouped by target topic, in order, one pipelined append per topic.
    let mut start = 0;
    while start < record.outbox.len() {
        let topic = &record.outbox[start].topic;
        let end = record.outbox[start..]
            .iter()
            .position(|message| &message.topic != topic)
            .map_or(record.outbox.len(), |length| start + length);
        let messages: Vec<_> = record.outbox[start..end]
            .iter()
            .map(|message| message.to_new())
            .collect();
        let ids: Vec<_> = (start..end)
            .map(|index| source.outbox_id(targets.names, through, index))
            .collect();
        targets
            .log
            .append_with_ids(topic, &messages, Some(&ids))
            .await?;
        start = end;
    }
    Ok(())
}

/// The record's dead letters, copied from the source partition into the
/// subscriber's dead-letter stream with their reason and attempts.
async fn publish_dead(targets: &Targets<'_>, source: &Source<'_>, record: &Record) -> Result<()> {
    let context: &jetstream::Context = targets.log.context();
    let mut acks = Vec::with_capacity(record.dead.len());
    for dead in &record.dead {
        let message = read_one(source.topic, source.partition, dead.offset + 1).await?;
        let (mut headers, payload, timestamp) = match &message {
            Some(message) => {
                let new = courier_core::NewMessage {
                    key: message.key.clone(),
                    headers: message.headers.clone(),
                    payload: Vec::new(),
                };
                (
                    headers_of(&new)?,
                    Bytes::copy_from_slice(&message.payload),
                    message.timestamp_ms,
                )
            }
            // Removed by retention while it was retried: its facts only.
            None => (HeaderMap::new(), Bytes::new(), 0),
        };
        headers.insert(DEAD_TOPIC, &*source.topic.name);
        headers.insert(DEAD_PARTITION, source.partition.to_string().as_str());
        headers.insert(DEAD_OFFSET, dead.offset.to_string().as_str());
        headers.insert(DEAD_TIMESTAMP, timestamp.to_string().as_str());
        headers.insert(DEAD_ATTEMPTS, dead.attempts.to_string().as_str());
        headers.insert(DEAD_REASON, one_line(&dead.reason).as_str());
        headers.insert(DEAD_FAILED_AT, dead.failed_at_ms.to_string().as_str());
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!(
                "{}/{}/{}/{}",
                targets.names.subscriber, source.topic.name, source.partition, dead.offset
            )
            .as_str(),
        );
        let ack = context
            .publish_with_headers(
                targets.names.dead_subject(&source.topic.name),
                headers,
                payload,
            )
            .await
            .map_err(|error| backend("storing a dead letter", error))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await
            .map_err(|error| backend("storing a dead letter", error))?;
    }
    Ok(())
}

/// A reason as one header line.
fn one_line(reason: &str) -> String {
    let mut line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.truncate(line.floor_char_boundary(2048));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_order_by_epoch_first() {
        assert_eq!(parse_position("2:41"), Some((2, 41)));
        assert_eq!(parse_position("x"), None);
        assert!((3, 0) > (2, 999));
    }

    #[test]
    fn reasons_become_one_header_line() {
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
        assert!(one_line(&"é".repeat(5000)).len() <= 2048);
    }
}
