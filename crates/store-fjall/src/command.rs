//! The commands the writer thread executes: every mutation of the store is
//! one of these on the writer's bounded queue, prepared (validated and
//! encoded) by the caller so the writer only places it.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::config::{SubscriptionSettings, TopicSettings};
use super::cursor::CursorLease;
use super::error::Result;
use super::subscription_state::SubscriptionState;
use super::topic::Topic;
use super::types::{Outcome, Position, StateOp};
use courier_core::SettleReport;

/// A message to publish as an effect, prepared (validated and encoded) by
/// the caller so the writer only assigns an offset.
#[derive(Debug)]
pub(crate) struct EncodedPublish {
    pub topic: String,
    /// xxh3 of the key, or `None` for round-robin.
    pub key_hash: Option<u64>,
    pub encoded: Vec<u8>,
}

/// One settled message as the writer receives it.
#[derive(Debug)]
pub(crate) struct EncodedSettlement {
    pub offset: u64,
    pub outcome: Outcome,
    pub publishes: Vec<EncodedPublish>,
    pub state: Vec<StateOp>,
}

/// Where a command's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// Everything the writer can be asked to do.
pub(crate) enum Command {
    /// Registers a topic whose partitions the caller opened (see
    /// `context::StoreContext::create_topic`).
    CreateTopic {
        name: String,
        settings: TopicSettings,
        id: u32,
        partitions: Vec<fjall::Keyspace>,
        reply: Reply<Arc<Topic>>,
    },
    Append {
        topic: Arc<Topic>,
        /// The encoded messages, back to back: one buffer per append, not
        /// one allocation per message (which this thread would free, a
        /// cross-thread free each, after copying it into its run).
        encoded: Vec<u8>,
        /// (partition, where in `encoded`) of each message, in order.
        records: Vec<(u32, std::ops::Range<usize>)>,
        reply: Reply<Vec<Position>>,
    },
    Subscribe {
        subscriber: String,
        topic: Arc<Topic>,
        settings: SubscriptionSettings,
        reply: Reply<Arc<SubscriptionState>>,
    },
    Unsubscribe {
        sub: Arc<SubscriptionState>,
        reply: Reply<()>,
    },
    Settle {
        sub: Arc<SubscriptionState>,
        lease: CursorLease,
        results: Vec<EncodedSettlement>,
        reply: Reply<SettleReport>,
    },
    Seek {
        sub: Arc<SubscriptionState>,
        /// Target per partition (None: unchanged), clamped to what exists.
        targets: Vec<Option<u64>>,
        reply: Reply<()>,
    },
    ReplayDead {
        sub: Arc<SubscriptionState>,
        reply: Reply<u64>,
    },
    PurgeDead {
        sub: Arc<SubscriptionState>,
        reply: Reply<u64>,
    },
    Truncate {
        topic: Arc<Topic>,
        partition: u32,
        floor: u64,
        reply: Reply<()>,
    },
    Sync {
        reply: Reply<()>,
    },
    Shutdown,
}
