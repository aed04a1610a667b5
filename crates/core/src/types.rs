//! The plain data types that cross the storage boundary: what producers hand
//! in, what consumers get out, and what an acknowledgement may carry.
//!
//! These types know nothing of HTTP, JSON or Wasm; the layers above convert
//! their own representations into them.

use std::sync::Arc;
use std::time::Duration;

/// A message as a producer hands it in, before it has a partition and offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    /// Partitioning key: messages with the same key go to the same partition
    /// and are therefore delivered in order.
    pub key: Option<Vec<u8>>,
    /// Header (name, value) pairs, kept in order.
    pub headers: Vec<(String, String)>,
    /// The body, opaque to the broker.
    pub payload: Vec<u8>,
}

/// Where an appended message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// A stored message, as read back for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    /// Broker time at append (ms since the Unix epoch); never decreases
    /// within a partition.
    pub timestamp_ms: u64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// One write to a subscriber's private state namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOp {
    Set {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Adds `delta` to the decimal integer stored at `key` (missing = 0),
    /// applied by the writer on top of the latest committed value so that
    /// concurrent increments never lose an update.
    Increment {
        key: String,
        delta: i64,
    },
}

/// Effects that commit in the same atomic write as an acknowledgement, or not
/// at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Messages to append to other topics (the outbox).
    pub publishes: Vec<(String, NewMessage)>,
    /// Writes to the acknowledging subscriber's state namespace, in order.
    pub state: Vec<StateOp>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.publishes.is_empty() && self.state.is_empty()
    }

    /// Appends `other` after `self`, keeping order.
    pub fn extend(&mut self, other: Effects) {
        self.publishes.extend(other.publishes);
        self.state.extend(other.state);
    }
}

/// What became of one delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed; never deliver again.
    Ack,
    /// Failed this time: deliver again after `delay` (or the subscription's
    /// backoff when `None`), unless attempts are exhausted, in which case the
    /// message is dead-lettered with `reason`.
    Retry {
        delay: Option<Duration>,
        reason: String,
    },
    /// Will never succeed: move to the dead-letter store now.
    DeadLetter { reason: String },
}
