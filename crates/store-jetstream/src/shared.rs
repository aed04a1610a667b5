//! What the feeds of one subscription share, and the priority group they
//! pull in.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::stream;
use courier_core::{SettleReport, SubscriptionSettings};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::codec::SubscriberNames;
use crate::log::{JetStreamLog, Topic};
use crate::presence::Presence;

/// The priority group every engine pulls in: the server pins one puller.
pub(crate) const GROUP: &str = "owner";

/// Totals of settled batches on this engine.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub acked: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl Stats {
    pub fn settled(&self, report: &SettleReport) {
        self.acked.fetch_add(report.acked, Ordering::Relaxed);
        self.retried.fetch_add(report.retried, Ordering::Relaxed);
        self.dead_lettered
            .fetch_add(report.dead_lettered, Ordering::Relaxed);
    }
}

/// What a subscription's feeds share.
pub(crate) struct SubShared {
    pub log: JetStreamLog,
    pub runtime: Handle,
    pub presence: Presence,
    pub names: SubscriberNames,
    pub topic: Arc<Topic>,
    pub consumer: String,
    /// The subscriber's state and effects streams.
    pub state: stream::Stream,
    pub effects: stream::Stream,
    pub settings: Mutex<SubscriptionSettings>,
    pub active: AtomicBool,
    pub stop: CancellationToken,
    /// Bumped by control changes (settings, removal, seek).
    pub control: watch::Sender<u64>,
    pub stats: Arc<Stats>,
}

impl SubShared {
    pub fn settings(&self) -> SubscriptionSettings {
        *self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn signal_control(&self) {
        self.control.send_modify(|version| *version += 1);
    }
}
