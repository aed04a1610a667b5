//! Opening a store: fjall replays its journal, then this module rebuilds
//! the in-memory registry from the small keyspaces.
//!
//! Recovery reads only metadata: per partition the last key (one seek),
//! per subscription its cursors, out-of-order acknowledgements and pending
//! redeliveries (both bounded by `max_unacked` and the retry set), and one
//! counters record. Its cost is independent of the backlog's size. Then it
//! replays the state changelog written since the last checkpoint into
//! `state` (at most about `REPLAY_FACTOR` + 1 times
//! `state_checkpoint_bytes`), so the store starts with all state
//! checkpointed and an empty table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;

use fjall::{AbstractTree, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::codec::{self, Counters, PendingRecord};
use super::config::{MAX_BACKGROUND_THREADS, StoreConfig};
use super::context::Keyspaces;
use super::cursor::PartitionCursor;
use super::error::{Error, FjallResult, Result};
use super::keys;
use super::subscription_state::{SubscriptionRecord, SubscriptionState};
use super::topic::{MEMTABLE_BYTES, open_log_keyspace};
use super::topic::{PartitionLog, Topic, TopicRecord, stored_end};
use super::write_buffer;

/// Journal size after which fjall flushes memtables: bounds what a reopen
/// must replay (and so the reopen time) to a few hundred milliseconds.
const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// What recovery hands to the store.
pub(crate) struct Recovered {
    pub db: Database,
    pub ks: Keyspaces,
    pub topics: BTreeMap<Arc<str>, Arc<Topic>>,
    pub subscriptions: Vec<Arc<SubscriptionState>>,
    pub next_topic_id: u32,
    pub next_sub_id: u32,
    /// Sequence number of the next state changelog record.
    pub next_state_seq: u64,
}

pub(crate) fn open(config: &StoreConfig) -> Result<Recovered> {
    std::fs::create_dir_all(&config.dir)?;
    // `max_write_buffer_size` is marked deprecated ("todo") in fjall 3.1 and
    // not enforced yet; `write_buffer` (`seal`, `throttle`) enforces it.
    #[allow(deprecated)]
    let mut builder = Database::builder(&config.dir)
        .cache_size(config.cache_bytes)
        .max_journaling_size(MAX_JOURNAL_BYTES)
        // fjall compresses journal entries over 4 KiB with LZ4 by default:
        // every log run is one, and compressing them was ~12% of the
        // writer thread's time, the one thread every commit waits for.
        // The journal is short-lived (flushed tables replace it), so the
        // disk bytes saved buy nothing.
        .journal_compression(fjall::CompressionType::None)
        .max_write_buffer_size(Some(write_buffer::BUDGET_BYTES));
    if let Some(threads) = config.background_threads {
        builder = builder.worker_threads(threads.clamp(1, MAX_BACKGROUND_THREADS));
    }
    let db = builder.open().map_err(|error| match error {
        fjall::Error::Locked => Error::Locked(config.dir.clone()),
        other => crate::error::from_fjall(other),
    })?;
    let open = |name: &str| -> Result<Keyspace> {
        db.keyspace(name, || {
            KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
        })
        .fjall()
    };
    let ks = Keyspaces {
        meta: open(keys::META)?,
        offsets: open(keys::OFFSETS)?,
        acked: open(keys::ACKED)?,
        pending: open(keys::PENDING)?,
        dead: open(keys::DEAD)?,
        state: open(keys::STATE)?,
        state_log: open(keys::STATE_LOG)?,
    };
    let next_state_seq = replay_state_log(&db, &ks)?;
    let topics = load_topics(&db, &ks)?;
    let next_topic_id = topics.values().map(|t| t.id + 1).max().unwrap_or(0);
    let (subscriptions, next_sub_id) = load_subscriptions(&ks, &topics)?;
    Ok(Recovered {
        db,
        ks,
        topics,
        subscriptions,
        next_topic_id,
        next_sub_id,
        next_state_seq,
    })
}

/// Applies the changelog records after the checkpoint to `state`, records
/// the new checkpoint (durably), and drops the replayed records. Returns
/// the next record's sequence number.
fn replay_state_log(db: &Database, ks: &Keyspaces) -> Result<u64> {
    let checkpoint = match ks.offsets.get(keys::STATE_CHECKPOINT_KEY).fjall()? {
        Some(value) => codec::decode_u64(&value, "state checkpoint")?,
        None => 0,
    };
    let newest = match ks.state_log.last_key_value() {
        Some(guard) => keys::decode_state_log_key(&guard.key().fjall()?)?,
        None => 0,
    };
    // Later records win: collect the final value of every key, then write
    // them in key order.
    let mut values: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut replayed = checkpoint;
    for guard in ks
        .state_log
        .range(keys::state_log_key(checkpoint.saturating_add(1))..)
    {
        let (key, record) = guard.into_inner().fjall()?;
        replayed = keys::decode_state_log_key(&key)?;
        values.extend(codec::decode_state_record(&record)?);
    }
    if replayed > checkpoint {
        let mut batch = db.batch();
        for (key, value) in &values {
            match value {
                Some(value) => batch.insert(&ks.state, key.as_slice(), value.as_slice()),
                None => batch.remove(&ks.state, key.as_slice()),
            }
        }
        batch.insert(
            &ks.offsets,
            keys::STATE_CHECKPOINT_KEY,
            codec::encode_u64(replayed),
        );
        batch.commit().fjall()?;
        db.persist(PersistMode::SyncAll).fjall()?;
        tracing::info!(
            records = replayed - checkpoint,
            keys = values.len(),
            "replayed the state changelog"
        );
    }
    let checkpoint = replayed;
    if checkpoint > 0 {
        ks.state_log
            .tree
            .drop_range(..=keys::state_log_key(checkpoint))
            .map_err(fjall::Error::from)
            .fjall()?;
    }
    Ok(newest.max(checkpoint) + 1)
}

fn load_topics(db: &Database, ks: &Keyspaces) -> Result<BTreeMap<Arc<str>, Arc<Topic>>> {
    let mut topics = BTreeMap::new();
    for guard in ks.meta.prefix(keys::TOPIC_RECORD_PREFIX) {
        let (key, value) = guard.into_inner().fjall()?;
        let name = std::str::from_utf8(&key[keys::TOPIC_RECORD_PREFIX.len()..])
            .map_err(|_| corrupt_meta("topic name is not UTF-8"))?;
        let record: TopicRecord = serde_json::from_slice(&value)
            .map_err(|error| corrupt_meta(&format!("topic {name}: {error}")))?;
        let partitions = (0..record.partitions)
            .map(|partition| load_partition(db, ks, record.id, partition))
            .collect::<Result<Vec<_>>>()?;
        let name: Arc<str> = Arc::from(name);
        let topic = Topic::new(record.id, Arc::clone(&name), record.settings(), partitions);
        topics.insert(name, Arc::new(topic));
    }
    Ok(topics)
}

fn load_partition(
    db: &Database,
    ks: &Keyspaces,
    topic_id: u32,
    partition: u32,
) -> Result<PartitionLog> {
    let keyspace = open_log_keyspace(db, topic_id, partition)?;
    let start = match ks
        .offsets
        .get(keys::start_offset_key(topic_id, partition))
        .fjall()?
    {
        Some(value) => codec::decode_u64(&value, "start offset")?,
        None => 0,
    };
    let (next, last_timestamp_ms) = stored_end(&keyspace)?.unwrap_or((start, 0));
    Ok(PartitionLog::new(
        keyspace,
        start,
        next.max(start),
        last_timestamp_ms,
    ))
}

type PerPartition<T> = HashMap<(u32, u32), Vec<T>>;

fn load_subscriptions(
    ks: &Keyspaces,
    topics: &BTreeMap<Arc<str>, Arc<Topic>>,
) -> Result<(Vec<Arc<SubscriptionState>>, u32)> {
    let mut acked: PerPartition<u64> = HashMap::new();
    for guard in ks.acked.iter() {
        let (sub, partition, offset) = keys::decode_delivery_key(&guard.key().fjall()?)?;
        acked.entry((sub, partition)).or_default().push(offset);
    }
    let mut pending: PerPartition<(u64, PendingRecord)> = HashMap::new();
    for guard in ks.pending.iter() {
        let (key, value) = guard.into_inner().fjall()?;
        let (sub, partition, offset) = keys::decode_delivery_key(&key)?;
        let record = codec::decode_pending(&value)?;
        pending
            .entry((sub, partition))
            .or_default()
            .push((offset, record));
    }
    let mut subscriptions = Vec::new();
    let mut next_sub_id = 0;
    for guard in ks.meta.prefix(keys::SUBSCRIPTION_RECORD_PREFIX) {
        let (_, value) = guard.into_inner().fjall()?;
        let record: SubscriptionRecord = serde_json::from_slice(&value)
            .map_err(|error| corrupt_meta(&format!("subscription: {error}")))?;
        next_sub_id = next_sub_id.max(record.id + 1);
        let Some(topic) = topics.get(record.topic.as_str()) else {
            tracing::warn!(subscriber = %record.subscriber, topic = %record.topic, "subscription of a missing topic ignored");
            continue;
        };
        let sub = load_subscription(ks, &record, topic, &mut acked, &mut pending)?;
        subscriptions.push(Arc::new(sub));
    }
    Ok((subscriptions, next_sub_id))
}

fn load_subscription(
    ks: &Keyspaces,
    record: &SubscriptionRecord,
    topic: &Arc<Topic>,
    acked: &mut PerPartition<u64>,
    pending: &mut PerPartition<(u64, PendingRecord)>,
) -> Result<SubscriptionState> {
    let mut parts = Vec::with_capacity(topic.partitions.len());
    for (partition, log) in topic.partitions.iter().enumerate() {
        let partition = partition as u32;
        let committed = match ks
            .offsets
            .get(keys::cursor_key(record.id, partition))
            .fjall()?
        {
            Some(value) => codec::decode_u64(&value, "cursor")?,
            None => log.start(),
        };
        // Retention may have moved the start past a cursor whose update was
        // lost with the crash; the truncation itself was durable.
        let committed = committed.max(log.start());
        let key = (record.id, partition);
        let state = PartitionCursor::recover(
            committed,
            acked.remove(&key).unwrap_or_default(),
            pending.remove(&key).unwrap_or_default(),
        );
        parts.push(Mutex::new(state));
    }
    let counters = match ks.offsets.get(keys::counters_key(record.id)).fjall()? {
        Some(value) => codec::decode_counters(&value)?,
        None => Counters::default(),
    };
    let next_dead_seq = match ks
        .dead
        .prefix(keys::subscription_prefix(record.id))
        .next_back()
    {
        Some(guard) => keys::decode_dead_key(&guard.key().fjall()?)?.1 + 1,
        None => 0,
    };
    Ok(SubscriptionState::new(
        record,
        topic,
        parts,
        counters,
        next_dead_seq,
    ))
}

fn corrupt_meta(detail: &str) -> Error {
    Error::Corrupt {
        what: "registry",
        detail: detail.to_owned(),
    }
}
