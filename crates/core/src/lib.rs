//! Courier's core: the domain types every layer shares and the storage
//! seam every backend implements.
//!
//! # Layout
//!
//! - [`types`]: messages as producers hand them in and consumers get them,
//!   outcomes, and the effects an acknowledgement carries.
//! - [`settings`]: topic and subscription settings with their limits.
//! - [`delivery`]: batches under an opaque lease, and what settles them.
//! - [`info`]: introspection, totals and health.
//! - [`seam`]: the traits [`Storage`], [`Subscription`], [`PartitionFeed`].
//! - [`Error`]: everything a backend can refuse or fail with.
//!
//! This crate depends on no storage engine, no Wasm runtime and no HTTP
//! stack: it is what they share, not what they do.

#![deny(clippy::unwrap_used)]

pub mod delivery;
pub mod error;
pub mod info;
mod names;
pub mod seam;
pub mod settings;
pub mod types;

pub use delivery::{Delivery, Lease, LeaseTicket, MAX_BATCH, Poll, SettleReport, Settlement};
pub use error::{Error, Result};
pub use info::{
    DeadLetter, Health, LATENCY_BUCKETS, LatencyStats, PartitionInfo, SeekTarget, StoreStats,
    SubscriptionInfo, SubscriptionPartitionInfo, TopicInfo,
};
pub use names::{MAX_NAME_LEN, MAX_STATE_KEY_BYTES, validate_name};
pub use seam::{
    BoxFuture, Durability, EffectsCommit, Guarantees, PartitionFeed, Storage, Subscription,
    WaitForWork, Waiting, WorkWatch,
};
pub use settings::{
    Backoff, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PARTITIONS, DeliveryMode, MAX_ATTEMPTS_LIMIT,
    MAX_PARTITIONS, Retention, StartPosition, SubscriptionSettings, TopicSettings,
};
pub use types::{Effects, Message, NewMessage, Outcome, Position, StateOp};
