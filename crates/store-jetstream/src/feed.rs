//! One partition of a subscription on this engine: pulls from the
//! partition's durable consumer while this engine owns the partition,
//! buffers what arrives, hands it out in offset order and settles batches
//! through an effects record (see the crate docs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::Subject;
use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use courier_core::{
    BoxFuture, Delivery, Error, Lease, LeaseTicket, Message, Outcome, PartitionFeed, Poll, Result,
    SettleReport, Settlement, WaitForWork, Waiting, WorkWatch,
};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::backend;
use crate::codec::{epoch_ms, is_wrong_last_sequence, last_of, message_from};
use crate::effects::{self, Source, Targets};
use crate::log::bounds;
use crate::presence::Presence;
use crate::record::{Record, RecordDead};
use crate::shared::{GROUP, SubShared};

/// Most messages one batch holds (an effects record must fit in one NATS
/// message).
const MAX_BATCH_MESSAGES: usize = 512;
/// Most payload bytes one batch holds (beyond its first message).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Messages one pull asks for.
const PULL_BATCH: usize = 256;

/// A message waiting in the buffer (or leased).
struct Held {
    message: Message,
    /// Where its acknowledgement goes (the latest delivery's).
    reply: Subject,
    /// Deliveries so far, counted by the server (so across engines).
    delivered: u32,
    /// When the server last heard about it (delivery or progress).
    touched: Instant,
}

/// What this engine knows of the partition's decided prefix.
#[derive(Debug, Clone, Copy)]
struct Synced {
    /// Subject sequence of the last effects record (0: none yet).
    record: u64,
    epoch: u64,
    /// The next offset to hand out: everything before is decided.
    next: u64,
    generation: u64,
}

#[derive(Default)]
struct FeedState {
    buffer: BTreeMap<u64, Held>,
    sync: Option<Synced>,
    generations: u64,
    /// The batch out, by lease number.
    lease: Option<u64>,
    leases: u64,
    /// Since when the next offset is missing while later ones are here.
    gap_since: Option<Instant>,
    /// The engine pulls (it owns the partition).
    owning: bool,
}

/// What a ticket of this backend carries.
struct Ticket {
    lease: u64,
    generation: u64,
    first: u64,
}

pub(crate) struct Feed {
    sub: Arc<SubShared>,
    partition: u32,
    state: Mutex<FeedState>,
    signal: watch::Sender<u64>,
    started: AtomicBool,
}

impl Feed {
    pub fn new(sub: Arc<SubShared>, partition: u32) -> Arc<Feed> {
        Arc::new(Feed {
            sub,
            partition,
            state: Mutex::default(),
            signal: watch::channel(0).0,
            started: AtomicBool::new(false),
        })
    }

    fn state(&self) -> MutexGuard<'_, FeedState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake(&self) {
        self.signal.send_modify(|version| *version += 1);
    }

    /// The subscription's name in the cluster, for the ownership ranking.
    pub fn subscription_key(&self) -> String {
        format!(
            "{}/{}",
            self.sub.names.consumer(&self.sub.log.config().cluster),
            self.sub.topic.name
        )
    }

    /// Starts the puller once.
    fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            let feed = Arc::clone(self);
            self.sub.runtime.spawn(feed.run());
        }
    }

    /// Whether this engine owns the partition now (it pulls from it).
    pub fn owning(&self) -> bool {
        self.state().owning
    }

    /// Pulls while this engine owns the partition; gives it up cleanly when
    /// the live set says another engine should have it.
    async fn run(self: Arc<Self>) {
        let stop = self.sub.stop.clone();
        let mut live = self.sub.presence.watch();
        let key = self.subscription_key();
        let (partitions, partition) = (self.sub.topic.settings.partitions, self.partition);
        let me = self.sub.presence.me().to_owned();
        let mine = |engines: &[String]| {
            Presence::owner(engines, &key, partitions, partition) == Some(me.as_str())
        };
        'owner: while !stop.is_cancelled() {
            if !mine(&live.borrow_and_update()) {
                self.give_up().await;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = live.changed() => if changed.is_err() { break },
                }
                continue;
            }
            self.state().owning = true;
            let pull = self.pull();
            tokio::pin!(pull);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break 'owner,
                    _ = &mut pull => continue 'owner,
                    changed = live.changed() => {
                        // Keep the pull stream (and with it the pin) while
                        // the partition stays here.
                        if changed.is_err() || !mine(&live.borrow_and_update()) {
                            continue 'owner;
                        }
                    }
                }
            }
        }
        self.give_up().await;
    }

    /// Stops owning: once no batch is out, gives the buffered messages back
    /// to the server for the next owner and releases the pin.
    async fn give_up(&self) {
        let was_owning = std::mem::replace(&mut self.state().owning, false);
        if !was_owning {
            return;
        }
        let waited = Instant::now();
        while self.state().lease.is_some() && waited.elapsed() < self.sub.log.config().failover {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let held: Vec<Subject> = {
            let mut state = self.state();
            state.sync = None;
            std::mem::take(&mut state.buffer)
                .into_values()
                .map(|held| held.reply)
                .collect()
        };
        for reply in held {
            self.reply(reply, "-NAK").await;
        }
        let stream = match self.sub.topic.stream(self.partition) {
            Ok(stream) => stream,
            Err(_) => return,
        };
        if let Err(error) = stream.unpin_consumer(&self.sub.consumer, GROUP).await {
            tracing::debug!(%error, "unpinning a consumer");
        }
        tracing::info!(
            subscriber = self.sub.names.subscriber,
            topic = &*self.sub.topic.name,
            partition = self.partition,
            "partition handed over"
        );
        self.wake();
    }

    /// One pull stream until it ends (an error, a deleted consumer).
    async fn pull(&self) {
        let failover = self.sub.log.config().failover;
        let stream = match self.sub.topic.stream(self.partition) {
            Ok(stream) => stream,
            Err(_) => return,
        };
        let consumer: PullConsumer = match stream.get_consumer(&self.sub.consumer).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, subscriber = self.sub.names.subscriber, "opening a consumer");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        };
        let expires = (failover / 3).max(Duration::from_millis(300));
        let messages = consumer
            .stream()
            .group(GROUP)
            .max_messages_per_batch(PULL_BATCH)
            .expires(expires)
            .heartbeat(expires / 3)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "pulling from a consumer");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        };
        let mut ticks = tokio::time::interval(failover / 3);
        loop {
            tokio::select! {
                next = messages.next() => match next {
                    Some(Ok(message)) => self.receive(message).await,
                    Some(Err(error)) => {
                        use async_nats::jetstream::consumer::pull::MessagesErrorKind as Kind;
                        let kind = error.kind();
                        tracing::debug!(%error, "pull stream");
                        if matches!(kind, Kind::ConsumerDeleted | Kind::PushBasedConsumer | Kind::RequestLimitExceeded) {
                            self.forget();
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return;
                        }
                    }
                    None => {
                        self.forget();
                        return;
                    }
                },
                _ = ticks.tick() => self.keep_alive().await,
            }
        }
    }

    /// Drops everything local: the next message starts from a fresh sync.
    fn forget(&self) {
        let mut state = self.state();
        state.sync = None;
        state.buffer.clear();
    }

    async fn reply(&self, reply: Subject, body: &'static str) {
        let client = self.sub.log.client();
        if let Err(error) = client
            .publish(reply, Bytes::from_static(body.as_bytes()))
            .await
        {
            tracing::debug!(%error, "acknowledging a message");
        }
    }

    /// A delivery from the server.
    async fn receive(&self, message: async_nats::jetstream::Message) {
        let (sequence, delivered, published) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                u32::try_from(info.delivered).unwrap_or(u32::MAX),
                epoch_ms(info.published.unix_timestamp_nanos()),
            ),
            Err(_) => return,
        };
        let Some(reply) = message.reply.clone() else {
            return;
        };
        if self.state().sync.is_none()
            && let Err(error) = self.sync().await
        {
            tracing::warn!(%error, subscriber = self.sub.names.subscriber, topic = &*self.sub.topic.name, partition = self.partition, "syncing a partition");
            return;
        }
        let converted = match message_from(
            &self.sub.topic.name,
            self.partition,
            sequence,
            published,
            message.headers.as_ref(),
            &message.payload,
        ) {
            Ok(converted) => converted,
            Err(error) => {
                tracing::error!(%error, "an undecodable message: held back, not delivered");
                return;
            }
        };
        let offset = converted.offset;
        let decided = {
            let mut state = self.state();
            match state.sync {
                Some(sync) if offset < sync.next => true,
                Some(_) => {
                    state.buffer.insert(
                        offset,
                        Held {
                            message: converted,
                            reply: reply.clone(),
                            delivered,
                            touched: Instant::now(),
                        },
                    );
                    false
                }
                None => return,
            }
        };
        if decided {
            // Decided by an earlier batch whose acknowledgement got lost.
            self.reply(reply, "+ACK").await;
        } else {
            self.wake();
        }
    }

    /// Reads the partition's decided prefix: the consumer's ack floor and
    /// the last effects record, which it re-applies if its messages were
    /// not all acknowledged (its writer may have died half-way).
    async fn sync(&self) -> Result<()> {
        let stream = self.sub.topic.stream(self.partition)?;
        let info = stream
            .consumer_info(&self.sub.consumer)
            .await
            .map_err(|error| backend("reading a consumer", error))?;
        let (first, _) = bounds(stream).await?;
        let mut next = info.ack_floor.stream_sequence.max(first.saturating_sub(1));
        let subject = self
            .sub
            .names
            .effects_subject(&self.sub.topic.name, self.partition);
        let (record_sequence, record) = match last_of(&self.sub.effects, &subject).await? {
            Some(raw) => (raw.sequence, Some(Record::decode(&raw.payload)?)),
            None => (0, None),
        };
        let epoch = record.as_ref().map_or(0, |record| record.epoch);
        if let Some(record) = &record
            && let Some(through) = record.through
            && through >= next
        {
            self.apply(record).await?;
            next = through + 1;
        }
        let stale: Vec<Subject> = {
            let mut state = self.state();
            state.generations += 1;
            state.sync = Some(Synced {
                record: record_sequence,
                epoch,
                next,
                generation: state.generations,
            });
            let keep = state.buffer.split_off(&next);
            std::mem::replace(&mut state.buffer, keep)
                .into_values()
                .map(|held| held.reply)
                .collect()
        };
        for reply in stale {
            self.reply(reply, "+ACK").await;
        }
        self.wake();
        Ok(())
    }

    async fn apply(&self, record: &Record) -> Result<()> {
        let targets = Targets {
            log: &self.sub.log,
            names: &self.sub.names,
            state: &self.sub.state,
        };
        let source = Source {
            topic: &self.sub.topic,
            partition: self.partition,
        };
        effects::apply(&targets, &source, record).await
    }

    /// Tells the server the buffered messages are still being worked on
    /// (so they are not redelivered meanwhile), and notices a gap that does
    /// not fill (the decided prefix moved elsewhere): then syncs again.
    async fn keep_alive(&self) {
        let failover = self.sub.log.config().failover;
        let (progress, resync) = {
            let mut state = self.state();
            let now = Instant::now();
            let progress: Vec<Subject> = state
                .buffer
                .values_mut()
                .filter(|held| now.duration_since(held.touched) >= failover / 3)
                .map(|held| {
                    held.touched = now;
                    held.reply.clone()
                })
                .collect();
            let mut stuck = false;
            let gap = match state.sync {
                Some(sync) => {
                    state.lease.is_none()
                        && !state.buffer.is_empty()
                        && !state.buffer.contains_key(&sync.next)
                }
                // A failed settle (or sync) forgot the decided prefix while
                // messages wait here: they are kept alive below, so no
                // redelivery would ever trigger the sync. Sync now.
                None => {
                    if state.lease.is_none() && !state.buffer.is_empty() {
                        stuck = true;
                    }
                    false
                }
            };
            let resync = match (gap, state.gap_since) {
                (false, _) => {
                    state.gap_since = None;
                    false
                }
                (true, None) => {
                    state.gap_since = Some(now);
                    false
                }
                (true, Some(since)) => now.duration_since(since) > 2 * failover,
            };
            if resync {
                state.gap_since = None;
                state.sync = None;
            }
            (progress, resync || stuck)
        };
        for reply in progress {
            self.reply(reply, "+WPI").await;
        }
        if resync && let Err(error) = self.sync().await {
            tracing::warn!(%error, "syncing a partition");
        }
    }

    async fn settle_batch(
        self: Arc<Self>,
        ticket: Ticket,
        results: Vec<Settlement>,
    ) -> Result<SettleReport> {
        let settings = self.sub.settings();
        let stale = SettleReport {
            stale: true,
            ..SettleReport::default()
        };
        let now_ms = epoch_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as i128,
        );
        let mut report = SettleReport::default();
        let (sync, record, decided, retry) = {
            let mut state = self.state();
            if state.lease != Some(ticket.lease) {
                return Ok(stale);
            }
            let Some(sync) = state
                .sync
                .filter(|sync| sync.generation == ticket.generation)
            else {
                state.lease = None;
                drop(state);
                self.wake();
                return Ok(stale);
            };
            let mut record = Record {
                epoch: sync.epoch,
                through: None,
                state: Vec::new(),
                outbox: Vec::new(),
                dead: Vec::new(),
            };
            let mut decided = Vec::new();
            let mut retry = None;
            for (expected, settlement) in (ticket.first..).zip(results) {
                let Some(held) = state.buffer.get(&settlement.offset) else {
                    break;
                };
                if settlement.offset != expected {
                    break;
                }
                let dead = |reason: String| RecordDead {
                    offset: settlement.offset,
                    attempts: held.delivered,
                    reason,
                    failed_at_ms: now_ms,
                };
                match settlement.outcome {
                    Outcome::Ack => {
                        record.add_effects(settlement.effects);
                        report.acked += 1;
                    }
                    Outcome::DeadLetter { reason } => {
                        record.dead.push(dead(reason));
                        report.dead_lettered += 1;
                    }
                    Outcome::Retry { delay, reason } => {
                        if held.delivered >= settings.max_attempts {
                            record.dead.push(dead(reason));
                            report.dead_lettered += 1;
                        } else {
                            let delay =
                                delay.unwrap_or_else(|| settings.backoff.delay(held.delivered));
                            retry = Some((settlement.offset, held.reply.clone(), delay));
                            report.retried += 1;
                            break;
                        }
                    }
                }
                record.through = Some(settlement.offset);
                decided.push(held.reply.clone());
            }
            (sync, record, decided, retry)
        };
        let mut record_sequence = sync.record;
        if record.has_effects() {
            match self.write_record(&record, sync.record).await {
                Ok(sequence) => record_sequence = sequence,
                Err(Error::Backend(text)) if text.starts_with(OVERTAKEN) => {
                    tracing::info!(
                        subscriber = self.sub.names.subscriber,
                        topic = &*self.sub.topic.name,
                        partition = self.partition,
                        "another engine settled this partition meanwhile: batch dropped, syncing"
                    );
                    self.end_lease();
                    if let Err(error) = self.sync().await {
                        tracing::warn!(%error, "syncing a partition");
                    }
                    return Ok(stale);
                }
                Err(error) => {
                    self.end_lease();
                    return Err(error);
                }
            }
            if let Err(error) = self.apply(&record).await {
                // Decided but not all applied: the next sync applies it.
                self.end_lease();
                return Err(error);
            }
        }
        if record.has_effects() {
            fault_point_after_effects();
        }
        for reply in decided {
            self.reply(reply, "+ACK").await;
        }
        if let Some((_, reply, delay)) = &retry {
            let nak = format!("-NAK {{\"delay\": {}}}", delay.as_nanos());
            if let Err(error) = self
                .sub
                .log
                .client()
                .publish(reply.clone(), nak.into())
                .await
            {
                tracing::debug!(%error, "asking for a redelivery");
            }
        }
        {
            let mut state = self.state();
            if let Some(current) = state
                .sync
                .as_mut()
                .filter(|s| s.generation == sync.generation)
            {
                current.record = record_sequence;
                if let Some(through) = record.through {
                    current.next = through + 1;
                    let keep = state.buffer.split_off(&(through + 1));
                    state.buffer = keep;
                }
                if let Some((offset, _, _)) = retry {
                    state.buffer.remove(&offset);
                }
            }
            state.lease = None;
        }
        self.wake();
        self.sub.stats.settled(&report);
        Ok(report)
    }

    /// Ends the batch out and forgets the decided prefix (the next
    /// message syncs it again).
    fn end_lease(&self) {
        {
            let mut state = self.state();
            state.lease = None;
            state.sync = None;
        }
        self.wake();
    }

    /// Writes a batch's record if the partition's last record is still the
    /// one this engine knows (`expected`: its subject sequence).
    async fn write_record(&self, record: &Record, expected: u64) -> Result<u64> {
        let subject = self
            .sub
            .names
            .effects_subject(&self.sub.topic.name, self.partition);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        let ack = self
            .sub
            .log
            .context()
            .publish_with_headers(subject, headers, record.encode().into())
            .await
            .map_err(|error| backend("writing an effects record", error))?;
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(error) if is_wrong_last_sequence(&error) => {
                Err(Error::Backend(format!("{OVERTAKEN}: {error}")))
            }
            Err(error) => Err(backend("writing an effects record", error)),
        }
    }
}

/// The test hook for "died between a batch's effects and its acks":
/// with `COURIER_FAULT_EXIT_AFTER_EFFECTS=<n>` in its environment, the
/// process aborts right after applying its `n`th effects record, before
/// acknowledging that batch's messages.
fn fault_point_after_effects() {
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static APPLIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var("COURIER_FAULT_EXIT_AFTER_EFFECTS")
            .ok()
            .and_then(|count| count.parse().ok())
    });
    if let Some(limit) = limit
        && APPLIED.fetch_add(1, Ordering::Relaxed) + 1 >= *limit
    {
        eprintln!("fault point: aborting after applying effects, before acknowledging them");
        std::process::abort();
    }
}

/// How `write_record` says another engine wrote first.
const OVERTAKEN: &str = "effects record overtaken";

/// A feed as dispatch holds it.
pub(crate) struct FeedHandle(pub Arc<Feed>);

impl PartitionFeed for FeedHandle {
    fn watch(&self) -> WorkWatch {
        self.0.start();
        WorkWatch::new(FeedWatch {
            signal: self.0.signal.subscribe(),
            control: self.0.sub.control.subscribe(),
        })
    }

    fn poll(&self, max: usize) -> Result<Poll> {
        self.0.start();
        if !self.0.sub.is_active() {
            return Err(Error::UnknownSubscription {
                subscriber: self.0.sub.names.subscriber.clone(),
                topic: self.0.sub.topic.name.to_string(),
            });
        }
        let mut state = self.0.state();
        if state.lease.is_some() {
            return Ok(Poll::Busy);
        }
        let Some(sync) = state.sync else {
            return Ok(Poll::Idle { retry_in: None });
        };
        let max = max.clamp(1, MAX_BATCH_MESSAGES);
        let mut deliveries = Vec::new();
        let mut bytes = 0;
        for (expected, (&offset, held)) in (sync.next..).zip(state.buffer.range(sync.next..)) {
            if offset != expected
                || deliveries.len() >= max
                || (bytes >= MAX_BATCH_BYTES && !deliveries.is_empty())
            {
                break;
            }
            bytes += held.message.payload.len();
            deliveries.push(Delivery {
                message: held.message.clone(),
                attempt: held.delivered.max(1),
            });
        }
        if deliveries.is_empty() {
            return Ok(Poll::Idle { retry_in: None });
        }
        state.leases += 1;
        let lease = state.leases;
        state.lease = Some(lease);
        let ticket = LeaseTicket::new(
            self.0.partition,
            deliveries.len(),
            Ticket {
                lease,
                generation: sync.generation,
                first: sync.next,
            },
        );
        Ok(Poll::Ready(Lease { ticket, deliveries }))
    }

    fn settle(
        &self,
        ticket: LeaseTicket,
        results: Vec<Settlement>,
    ) -> BoxFuture<'_, Result<SettleReport>> {
        let feed = Arc::clone(&self.0);
        Box::pin(async move {
            let ticket = ticket
                .into_inner::<Ticket>()
                .map_err(|_| Error::InvalidArgument("a lease ticket of another backend".into()))?;
            // Settling does network I/O: on the store's runtime, whatever
            // runtime awaits it.
            let runtime = feed.sub.runtime.clone();
            runtime
                .spawn(feed.settle_batch(ticket, results))
                .await
                .map_err(|_| Error::Closed)?
        })
    }

    fn release(&self, ticket: LeaseTicket) {
        if let Ok(ticket) = ticket.into_inner::<Ticket>() {
            let mut state = self.0.state();
            if state.lease == Some(ticket.lease) {
                state.lease = None;
            }
            drop(state);
            self.0.wake();
        }
    }
}

struct FeedWatch {
    signal: watch::Receiver<u64>,
    control: watch::Receiver<u64>,
}

impl WaitForWork for FeedWatch {
    fn wait(mut self: Box<Self>, _waiting: Waiting) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            tokio::select! {
                _ = self.signal.changed() => {}
                _ = self.control.changed() => {}
            }
        })
    }
}
