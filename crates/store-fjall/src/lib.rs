//! The durable log: topics, partitions, subscriptions, acknowledgements,
//! retries, dead letters and subscriber state, on fjall.
//!
//! This module owns every byte on disk and is the only one that touches
//! fjall. It knows nothing of HTTP, JSON or Wasm.
//!
//! # Data path
//!
//! `append` encodes messages on the caller's task and queues them for the
//! writer thread ([`writer`]). The writer folds everything queued into one
//! atomic fjall batch, commits it, fsyncs once (group commit) and answers
//! all callers: many producers share one fsync. Consumers `poll` a batch of
//! a subscription partition from any thread (reads never involve the
//! writer), process it and `settle` the outcomes, which the writer commits
//! the same way, together with the effects of the acknowledged messages.
//! Within one group, state writes are folded per key (a counter every
//! message increments costs one write per group) and go to disk as one
//! changelog record; the committed values live in memory
//! (`state_table.rs`) until a checkpoint copies them into `state`
//! (`checkpoint.rs`). Plugin reads and increments consult that table
//! before fjall.
//!
//! # On disk (one fjall database)
//!
//! ```text
//! keyspace           key (big-endian)                 value
//! log.<topic>.<p>    first offset u64                 run of messages (see codec.rs)
//! meta               "topic/" name                    TopicRecord (JSON)
//!                    "sub/" sub_id u32                SubscriptionRecord (JSON)
//! offsets            'T' topic_id u32, partition u32  first retained offset u64
//!                    'C' sub_id u32, partition u32    committed cursor u64
//!                    'N' sub_id u32                   counters (dead letters, expired)
//!                    'S'                              state checkpoint: last changelog seq in `state`
//! acked              sub_id, partition, offset        (empty) unordered acks above the cursor
//! pending            sub_id, partition, offset        attempts, due time, reason[, message copy]
//! dead               sub_id u32, seq u64              DeadRecord (origin, reason, message)
//! state              len u8, namespace, key           value (as of the checkpoint)
//! statelog           seq u64                          changelog record (see codec.rs)
//! ```
//!
//! # Why it stays fast after 100M messages
//!
//! Each partition has its own keyspace whose keys are its offsets, so
//! appends always land at the end: flushed tables never overlap, leveled
//! compaction only *moves* them (no rewriting), and a read at a cursor is a
//! single seek. A group commit's appends to one partition are one entry (a
//! run of up to 512 messages or 16 KiB, keyed by the first offset), so the per-entry
//! costs of fjall (journal entry, memtable insert, flush, iteration) are
//! paid per run, not per message. Nothing is deleted per message: retention raises a
//! partition's *floor* and drops whole tables below it (`drop_range`, file
//! deletions, no tombstones), so there is no tombstone pile for scans to
//! wade through. Per-message bookkeeping is only a cursor per batch; the
//! out-of-order `acked` set of unordered subscriptions is bounded by
//! `max_unacked` and uses weak tombstones that vanish in compaction.
//! Recovery reads only the small keyspaces and the last key of each
//! partition, so reopening costs the same with 10 or 10M messages queued.
//!
//! # Invariants
//!
//! - Offsets of a partition are dense and strictly increasing; only the
//!   writer assigns them. Timestamps never decrease within a partition.
//! - A message is delivered only once it is durable per the fsync policy
//!   (consumers read below the partition's durable end, published by the
//!   writer after the fsync). `append` answers only after that point.
//! - A message leaves the log only when every subscription of its topic has
//!   passed it, or a retention limit forces it, in which case the lagging
//!   subscriptions count it as expired. Topics without subscriptions keep
//!   messages until a retention limit removes them.
//! - Outcomes are durable before `settle` returns, atomically with the
//!   effects (publishes, state writes) of the acknowledged messages. An
//!   acknowledged message of an ordered subscription is never delivered
//!   again; unordered acknowledgements above the cursor are durable too.
//! - Attempt counts are durable; after `max_attempts` a message is moved to
//!   the dead-letter store with its reason, never dropped.
//! - After a failed write the store refuses writes until reopened: it never
//!   answers "ok" for something that might not be on disk.
//! - Committed state is `state` plus the changelog records after the
//!   checkpoint; recovery replays those records into `state` before
//!   anything reads it.

mod checkpoint;
mod codec;
mod command;
mod config;
mod context;
mod cursor;
mod error;
mod keys;
mod maintenance;
mod recovery;
mod seam;
mod state_table;
mod store;
mod subscription;
mod subscription_state;
mod support;
mod topic;
mod write_buffer;
mod writer;

pub use config::{
    Backoff, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PARTITIONS, DEFAULT_STATE_CHECKPOINT_BYTES, DeliveryMode,
    FsyncPolicy, MAX_ATTEMPTS_LIMIT, MAX_BACKGROUND_THREADS, MAX_PARTITIONS,
    MAX_STATE_CHECKPOINT_BYTES, MIN_STATE_CHECKPOINT_BYTES, Retention, StartPosition, StoreConfig,
    SubscriptionSettings, TopicSettings,
};
pub use courier_core::{
    DeadLetter, Delivery, Effects, Health, LATENCY_BUCKETS, LatencyStats, Lease, LeaseTicket,
    MAX_NAME_LEN, MAX_STATE_KEY_BYTES, Message, NewMessage, Outcome, PartitionInfo, Poll, Position,
    SeekTarget, SettleReport, Settlement, StateOp, StoreStats, SubscriptionInfo,
    SubscriptionPartitionInfo, TopicInfo, validate_name,
};
pub use error::{Error, Result};
pub use seam::FjallPartition;
pub use store::{FjallStore, MAX_APPEND_BATCH};
pub use subscription::{FjallSubscription, MAX_BATCH};

use courier_core::types;
