//! What a consumer gets from a backend and gives back: batches under a
//! lease, and the outcomes (with effects) that settle them.

use std::any::Any;
use std::time::Duration;

use crate::types::{Effects, Message, Outcome};

/// Largest batch one poll hands out, whatever the backend.
pub const MAX_BATCH: usize = 4096;

/// A lease on a batch: what the backend needs back to settle or release
/// it. Opaque above the seam: only the backend that issued it looks inside
/// (its cursor internals stay private to it).
pub struct LeaseTicket {
    partition: u32,
    messages: usize,
    inner: Box<dyn Any + Send + Sync>,
}

impl LeaseTicket {
    /// A ticket for `messages` messages of `partition`, carrying the
    /// backend's own lease record.
    pub fn new<T: Any + Send + Sync>(partition: u32, messages: usize, inner: T) -> LeaseTicket {
        LeaseTicket {
            partition,
            messages,
            inner: Box::new(inner),
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Messages leased.
    pub fn len(&self) -> usize {
        self.messages
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// The backend's record, if this ticket carries a `T`; the ticket back
    /// otherwise (a ticket of another backend).
    pub fn into_inner<T: Any>(self) -> Result<T, LeaseTicket> {
        let LeaseTicket {
            partition,
            messages,
            inner,
        } = self;
        match inner.downcast::<T>() {
            Ok(inner) => Ok(*inner),
            Err(inner) => Err(LeaseTicket {
                partition,
                messages,
                inner,
            }),
        }
    }

    /// The backend's record, borrowed.
    pub fn inner<T: Any>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for LeaseTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseTicket")
            .field("partition", &self.partition)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

/// A message handed out for processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    /// 1 on first delivery, n after n-1 failed attempts.
    pub attempt: u32,
}

/// A batch handed out by [`PartitionFeed::poll`](crate::PartitionFeed::poll).
/// Settle or release it.
#[derive(Debug)]
pub struct Lease {
    pub ticket: LeaseTicket,
    pub deliveries: Vec<Delivery>,
}

/// What a poll found.
#[derive(Debug)]
pub enum Poll {
    Ready(Lease),
    /// Nothing deliverable now. A retry falls due after `retry_in`; new
    /// messages wake a [`WorkWatch`](crate::WorkWatch).
    Idle {
        retry_in: Option<Duration>,
    },
    /// Ordered mode: the partition's batch is still out.
    Busy,
}

/// The outcome of one delivered message, with the effects that commit
/// atomically with its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub offset: u64,
    pub outcome: Outcome,
    /// Applied only if the outcome is `Ack` (and the ack is accepted).
    pub effects: Effects,
}

impl Settlement {
    pub fn ack(offset: u64) -> Self {
        Settlement {
            offset,
            outcome: Outcome::Ack,
            effects: Effects::default(),
        }
    }
}

/// What settling a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SettleReport {
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// The lease predates a seek or a retention truncation: nothing applied.
    pub stale: bool,
}
