//! The storage seam: what every backend implements and everything above
//! storage (dispatch, the API, metrics, the engine's wiring) uses.
//!
//! Three traits, from the outside in:
//! - [`Storage`]: one backend (topics, appends, reads, subscriptions, dead
//!   letters, state reads, introspection, health, lifecycle);
//! - [`Subscription`]: one subscriber's view of one topic;
//! - [`PartitionFeed`]: one partition of a subscription as a dispatch
//!   worker consumes it: arm a [`WorkWatch`], poll a batch under an opaque
//!   [`LeaseTicket`](crate::LeaseTicket), settle it (or release it), and
//!   wait for more behind the seam.
//!
//! Calls marked *blocking* may do I/O on the calling thread: call them where
//! blocking is allowed (a dispatch thread, `spawn_blocking`), never on an
//! async worker. The others return futures that do not block.
//!
//! Every backend states what its answers mean in [`Guarantees`]; the layers
//! above rely on nothing more.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::LeaseTicket;
use crate::delivery::{Poll, SettleReport, Settlement};
use crate::error::Result;
use crate::info::{DeadLetter, Health, SeekTarget, StoreStats, SubscriptionInfo, TopicInfo};
use crate::settings::{SubscriptionSettings, TopicSettings};
use crate::types::{Message, NewMessage, Position};

/// A future the seam hands out: boxed, so the traits stay object-safe
/// (one allocation per call; the calls are per batch or per request,
/// never per message).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a confirmed write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsynced on this machine before the answer (group-committed).
    Fsynced,
    /// Handed to the operating system before the answer, fsynced at most
    /// this many milliseconds later: a process crash loses nothing, a
    /// power failure at most that interval.
    FsyncedWithin { interval_ms: u64 },
    /// Handed to the operating system; fsynced when it likes.
    Written,
    /// Stored on a quorum of `replicas` servers before the answer (fsynced
    /// there if the servers fsync every write, as NATS does with
    /// `sync_interval: always`; in their memory otherwise): the loss of a
    /// minority of the servers loses nothing.
    Replicated { replicas: usize },
}

/// How a settle's effects (outbox publishes, state writes) become visible
/// relative to its acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectsCommit {
    /// In the same atomic write as the acknowledgements: all or nothing.
    Atomic,
    /// Possibly applied more than once under failure, but guarded so each
    /// is visible exactly once (deduplicated ids, applied-offset guards).
    Idempotent,
}

/// What a backend's answers mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarantees {
    /// When `append` and `settle` answer, what they survive.
    pub durability: Durability,
    /// How a settle's effects commit.
    pub effects: EffectsCommit,
    /// Whether consumers see a message only once it is durable per
    /// `durability` (true for every backend Courier ships).
    pub delivers_durable_only: bool,
}

/// A storage backend.
pub trait Storage: std::fmt::Debug + Send + Sync + 'static {
    /// What this backend's answers mean.
    fn guarantees(&self) -> Guarantees;

    /// Settings of topics created implicitly by a first publish.
    fn default_topic_settings(&self) -> TopicSettings;

    /// Creates a topic, or returns the existing one if it has the same
    /// number of partitions.
    fn create_topic<'a>(
        &'a self,
        name: &'a str,
        settings: TopicSettings,
    ) -> BoxFuture<'a, Result<TopicInfo>>;

    /// Appends messages to a topic (created with defaults if missing);
    /// answers with their positions once they are durable per
    /// [`Guarantees::durability`]. All or nothing.
    fn append<'a>(
        &'a self,
        topic: &'a str,
        messages: &'a [NewMessage],
    ) -> BoxFuture<'a, Result<Vec<Position>>>;

    /// Up to `max` durable messages of a partition from offset `from`
    /// (inspection; consumers use subscriptions). Blocking.
    fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<Message>>;

    /// Creates a subscription (starting per `settings.start`) or updates
    /// the settings of an existing one, whose cursors are kept.
    fn subscribe<'a>(
        &'a self,
        subscriber: &'a str,
        topic: &'a str,
        settings: SubscriptionSettings,
    ) -> BoxFuture<'a, Result<Arc<dyn Subscription>>>;

    /// Removes a subscription with its cursors, retries and dead letters;
    /// the subscriber's state is kept.
    fn unsubscribe<'a>(&'a self, subscriber: &'a str, topic: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Moves a subscription's cursors (clamped to what is retained).
    /// Scheduled retries are forgotten; batches in flight settle as no-ops.
    fn seek<'a>(
        &'a self,
        subscriber: &'a str,
        topic: &'a str,
        target: SeekTarget,
    ) -> BoxFuture<'a, Result<()>>;

    /// Up to `limit` dead letters of a subscriber (all its topics, or one),
    /// oldest first. Blocking.
    fn dead_letters(
        &self,
        subscriber: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Re-enqueues a subscriber's dead letters for immediate redelivery to
    /// that subscriber only, with fresh attempt counts. Answers how many.
    fn replay_dead_letters<'a>(
        &'a self,
        subscriber: &'a str,
        topic: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Deletes a subscriber's dead letters. Answers how many.
    fn purge_dead_letters<'a>(
        &'a self,
        subscriber: &'a str,
        topic: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64>>;

    /// A subscriber's committed state value. Blocking.
    fn state_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Calls `f` with a subscriber's committed state value (`None`:
    /// absent), in place where the backend can. Blocking; keep `f` short.
    fn state_read(
        &self,
        namespace: &str,
        key: &str,
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()>;

    /// Up to `limit` committed state entries of a namespace whose keys
    /// start with `prefix` (and, if given, come after `start_after`: the
    /// last key of the previous page), in key order. Blocking.
    fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>>;

    /// Every topic, by name.
    fn topics(&self) -> Vec<TopicInfo>;

    fn topic_info(&self, name: &str) -> Result<TopicInfo>;

    /// Every subscription, by subscriber then topic.
    fn subscriptions(&self) -> Vec<SubscriptionInfo>;

    fn subscription_info(&self, subscriber: &str, topic: &str) -> Result<SubscriptionInfo>;

    /// Totals since the backend was opened (fields a backend does not have
    /// are zero).
    fn stats(&self) -> StoreStats;

    /// Why the backend refuses work, if it does.
    fn health(&self) -> Health;

    /// Makes everything written so far durable, whatever the policy.
    fn sync(&self) -> BoxFuture<'_, Result<()>>;

    /// Stops accepting work and makes everything durable; other handles
    /// fail with [`Error::Closed`](crate::Error::Closed) afterwards.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// One subscriber's view of one topic.
pub trait Subscription: Send + Sync + 'static {
    fn subscriber(&self) -> &str;

    fn topic(&self) -> &str;

    fn partitions(&self) -> u32;

    fn settings(&self) -> SubscriptionSettings;

    /// False once the subscription was removed; its feeds then stop.
    fn is_active(&self) -> bool;

    /// One partition, as a worker consumes it.
    fn partition(&self, partition: u32) -> Result<Arc<dyn PartitionFeed>>;
}

/// One partition of a subscription, as a dispatch worker consumes it.
///
/// The loop is: [`watch`](Self::watch), [`poll`](Self::poll), then either
/// handle the batch and [`settle`](Self::settle) it, or wait on the watch.
/// Arming the watch before polling means no signal can slip in between.
pub trait PartitionFeed: Send + Sync + 'static {
    /// Registers interest in whatever could make work available on this
    /// partition from now on. Call before [`poll`](Self::poll).
    fn watch(&self) -> WorkWatch;

    /// Hands out the next batch of up to `max` messages under a lease.
    /// Ordered subscriptions have at most one batch out per partition.
    /// Blocking.
    fn poll(&self, max: usize) -> Result<Poll>;

    /// Records the outcomes of a leased batch, with the effects of the
    /// acknowledged messages, per [`Guarantees`]. Answers once durable.
    ///
    /// Ordered subscriptions: give outcomes in offset order from the start
    /// of the batch; after the first `Retry` the rest of the batch is
    /// delivered again later, whatever outcomes follow. Messages without
    /// an outcome are delivered again without counting an attempt.
    fn settle(
        &self,
        ticket: LeaseTicket,
        results: Vec<Settlement>,
    ) -> BoxFuture<'_, Result<SettleReport>>;

    /// Gives a batch back without outcomes: delivered again later, with no
    /// attempt counted (a worker stopping mid-batch, a failed checkout).
    fn release(&self, ticket: LeaseTicket);
}

/// What a poll that found nothing to hand out said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Nothing deliverable: new messages, a control change (seek, replay,
    /// new settings, removal) or an ended lease may change that.
    Idle,
    /// The partition's batch is out (ordered mode): only an ended lease or
    /// a control change matters.
    Busy,
}

/// Interest in new work on one partition, registered by
/// [`PartitionFeed::watch`] before a poll.
pub struct WorkWatch(Box<dyn WaitForWork>);

impl WorkWatch {
    pub fn new(wait: impl WaitForWork + 'static) -> WorkWatch {
        WorkWatch(Box::new(wait))
    }

    /// Resolves once something that matters after `waiting` happened since
    /// the watch was armed (at once if it already did). The caller adds
    /// its own timeout and cancellation.
    pub fn wait(self, waiting: Waiting) -> BoxFuture<'static, ()> {
        self.0.wait(waiting)
    }
}

/// A backend's side of a [`WorkWatch`].
pub trait WaitForWork: Send {
    fn wait(self: Box<Self>, waiting: Waiting) -> BoxFuture<'static, ()>;
}
