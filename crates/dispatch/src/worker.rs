//! One dispatch worker: delivers one partition of one subscription to one
//! plugin version, batch after batch.
//!
//! A batch is polled and run through the plugin as a job on the worker's
//! dispatch thread (both are blocking: fjall reads, Wasm execution); its
//! outcomes are then settled durably on the async side. In
//! ordered mode the batch stops at the first message asking for a retry:
//! the rest are delivered again after it, so per-key order holds.
//!
//! A worker never acknowledges a message its plugin did not acknowledge,
//! and never holds more than one batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::threads::Lane;
use courier_core::{
    Delivery, DeliveryMode, Effects, Lease, LeaseTicket, Outcome, PartitionFeed, Poll, Settlement,
    Subscription, Waiting,
};
use courier_metrics::PluginMetrics;
use courier_plugin_host::{LoadedPlugin, PluginInstance, StateReader};

/// Longest idle wait without a signal: a safety net, not a polling period
/// (new messages, retries falling due and control changes all wake a
/// worker directly).
const MAX_IDLE_WAIT: Duration = Duration::from_secs(30);
/// Longest a batch should hold its dispatch thread: a batch that took
/// longer makes the next one smaller, so one slow plugin cannot starve the
/// others.
const MAX_BATCH_TIME: Duration = Duration::from_millis(50);
/// Batches of at least this many messages have their CPU time measured
/// (two clock reads, each a system call of about 1 µs on the machines
/// measured); smaller ones one in [`SMALL_BATCH_SAMPLING`], counted that
/// many times: the counter stays right on average while a light load,
/// where batches hold a message or two, pays ~0.2 µs a batch, not 2.
const MEASURED_BATCH: usize = 32;
const SMALL_BATCH_SAMPLING: u32 = 8;
/// Pause after an unexpected error (storage or instantiation), so a
/// persistent fault costs one log line a second, not a busy loop.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What a worker needs; shared (`Arc`) with its blocking steps, so a
/// batch clones nothing.
pub struct WorkerSpec {
    pub plugin: Arc<LoadedPlugin>,
    pub subscription: Arc<dyn Subscription>,
    /// The partition this worker delivers, behind the storage seam.
    pub feed: Arc<dyn PartitionFeed>,
    pub partition: u32,
    /// The manifest's batch size: the most one step polls.
    pub batch_size: usize,
    /// Deliver only messages carrying all these headers (others are
    /// acknowledged without calling the plugin).
    pub filter: Vec<(String, String)>,
    pub state: Arc<dyn StateReader>,
    pub metrics: PluginMetrics,
}

/// What one blocking step produced.
enum Step {
    Handled {
        ticket: LeaseTicket,
        results: Vec<Settlement>,
    },
    Idle(Option<Duration>),
    Busy,
    Failed(String),
}

pub async fn run(spec: WorkerSpec, lane: Lane, cancel: CancellationToken) {
    let spec = Arc::new(spec);
    let sub = Arc::clone(&spec.subscription);
    let partition = spec.partition;
    let mut batch_size = 1usize;
    let mut small_batches = 0u32;
    while !cancel.is_cancelled() && sub.is_active() {
        // Register interest before looking, so no signal slips between.
        let watch = spec.feed.watch();

        let step_spec = Arc::clone(&spec);
        let sample_small = small_batches.is_multiple_of(SMALL_BATCH_SAMPLING);
        let ran = lane
            .run(move || {
                let started = Instant::now();
                let step = step(&step_spec, batch_size, sample_small);
                (step, started.elapsed())
            })
            .await;
        let (step, took) = ran.unwrap_or_else(|| {
            let error = "the step panicked or its dispatch thread stopped";
            (Step::Failed(error.into()), Duration::ZERO)
        });
        // Adaptive batches: a batch that held the thread too long (its own
        // run time, not the wait for the thread) makes the next one smaller,
        // so a slow plugin cannot starve the others.
        batch_size = if took > MAX_BATCH_TIME {
            (batch_size / 4).max(1)
        } else {
            (batch_size * 2).min(spec.batch_size)
        };
        match step {
            Step::Handled { ticket, results } => {
                if results.len() < MEASURED_BATCH {
                    small_batches = small_batches.wrapping_add(1);
                }
                settle(&spec, ticket, results).await;
            }
            Step::Idle(retry_in) => {
                let wait = retry_in.unwrap_or(MAX_IDLE_WAIT).min(MAX_IDLE_WAIT);
                tokio::select! {
                    _ = watch.wait(Waiting::Idle) => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            Step::Busy => {
                tokio::select! {
                    _ = watch.wait(Waiting::Busy) => {}
                    _ = tokio::time::sleep(MAX_IDLE_WAIT) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            Step::Failed(error) => {
                tracing::warn!(plugin = spec.plugin.name(), topic = sub.topic(), partition, %error, "delivery step failed");
                tokio::select! {
                    _ = tokio::time::sleep(ERROR_PAUSE) => {}
                    _ = cancel.cancelled() => {}
                }
            }
        }
    }
}

async fn settle(spec: &WorkerSpec, ticket: LeaseTicket, results: Vec<Settlement>) {
    let sub = &spec.subscription;
    match spec.feed.settle(ticket, results).await {
        Ok(report) if report.stale => {
            tracing::debug!(
                plugin = spec.plugin.name(),
                topic = sub.topic(),
                "batch settled after a seek: outcomes dropped"
            );
        }
        Ok(_) => {}
        Err(error) => {
            // The store refuses writes (failed or closing): the batch stays
            // unacknowledged and is delivered again after a restart.
            tracing::warn!(plugin = spec.plugin.name(), topic = sub.topic(), partition = spec.partition, %error, "settling a batch failed");
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

/// Polls one batch and runs it through an instance checked out of the
/// plugin version's pool. Blocking. `sample_small`: measure the batch's
/// CPU time even if it is small (see [`MEASURED_BATCH`]).
fn step(spec: &WorkerSpec, batch_size: usize, sample_small: bool) -> Step {
    let lease = match spec.feed.poll(batch_size) {
        Ok(Poll::Ready(lease)) => lease,
        Ok(Poll::Idle { retry_in }) => return Step::Idle(retry_in),
        Ok(Poll::Busy) => return Step::Busy,
        Err(error) => return Step::Failed(error.to_string()),
    };
    let instance = match spec.plugin.checkout(Arc::clone(&spec.state)) {
        Ok(instance) => instance,
        Err(error) => {
            spec.feed.release(lease.ticket);
            return Step::Failed(format!("cannot instantiate: {error}"));
        }
    };
    let Lease { ticket, deliveries } = lease;
    let cpu = CpuSample::start(deliveries.len(), sample_small);
    let (results, instance) = run_batch(spec, deliveries, instance);
    cpu.finish(&spec.metrics);
    if let Some(instance) = instance {
        spec.plugin.checkin(instance);
    }
    Step::Handled { ticket, results }
}

/// Hands each message to the plugin; returns the outcomes (a prefix of the
/// batch in ordered mode) and the instance, if still usable. Counters are
/// added once per batch; only the latency histogram sees every message.
///
/// The batch's effects (coalesced by the host: one write per key) ride on
/// its last acknowledged message. That commits exactly what per-message
/// effects would: a settle accepts a lease's acknowledgements all together
/// or, if the lease went stale, none of them, in one atomic write.
fn run_batch(
    spec: &WorkerSpec,
    deliveries: Vec<Delivery>,
    mut instance: PluginInstance,
) -> (Vec<Settlement>, Option<PluginInstance>) {
    let ordered = spec.subscription.settings().mode == DeliveryMode::Ordered;
    let mut tally = Tally::default();
    let mut results = Vec::with_capacity(deliveries.len());
    let mut usable = true;
    let mut last_ack = None;
    instance.begin_batch();
    // One clock read per message: a call's end starts the next one (what
    // lies between two calls, a few counters, is noise at this scale).
    let mut started = Instant::now();
    for Delivery { message, attempt } in deliveries {
        let offset = message.offset;
        if !matches_filter(&spec.filter, &message.headers) {
            tally.filtered += 1;
            results.push(Settlement::ack(offset));
            continue;
        }
        let handled = instance.handle(message, attempt);
        let ended = Instant::now();
        spec.metrics
            .handler_seconds
            .observe(ended.duration_since(started).as_secs_f64());
        started = ended;
        tally.count(spec, &handled.outcome, offset);
        let stop = ordered && matches!(handled.outcome, Outcome::Retry { .. });
        if handled.outcome == Outcome::Ack {
            last_ack = Some(results.len());
        }
        results.push(Settlement {
            offset,
            outcome: handled.outcome,
            effects: Effects::default(),
        });
        if handled.trapped {
            // The instance is gone, and with it the batch's view of its own
            // staged writes: end the batch here. The rest is delivered again
            // (no attempt counted) on a fresh instance.
            tally.traps += 1;
            usable = false;
            break;
        }
        if stop {
            break;
        }
    }
    let effects = instance.take_effects();
    if let Some(settlement) = last_ack.and_then(|index| results.get_mut(index)) {
        settlement.effects = effects;
    }
    tally.add_to(&spec.metrics);
    (results, usable.then_some(instance))
}

/// The dispatch thread's CPU time over one batch (guest code, host calls,
/// staging), for `courier_handler_cpu_seconds`; a small batch is measured
/// only when sampled, and then weighs [`SMALL_BATCH_SAMPLING`] batches.
struct CpuSample {
    started: Option<Duration>,
    weight: f64,
}

impl CpuSample {
    fn start(messages: usize, sample_small: bool) -> CpuSample {
        let (measure, weight) = if messages >= MEASURED_BATCH {
            (true, 1.0)
        } else {
            (sample_small, f64::from(SMALL_BATCH_SAMPLING))
        };
        CpuSample {
            started: measure.then(thread_cpu_time),
            weight,
        }
    }

    fn finish(self, metrics: &PluginMetrics) {
        if let Some(started) = self.started {
            let spent = thread_cpu_time().saturating_sub(started);
            metrics
                .handler_cpu_seconds
                .inc_by(spent.as_secs_f64() * self.weight);
        }
    }
}

/// The CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// What one batch did, added to the shared counters at its end.
#[derive(Default)]
struct Tally {
    delivered: u64,
    acked: u64,
    retried: u64,
    dead_lettered: u64,
    filtered: u64,
    traps: u64,
}

impl Tally {
    fn count(&mut self, spec: &WorkerSpec, outcome: &Outcome, offset: u64) {
        self.delivered += 1;
        let (plugin, topic, partition) = (
            spec.plugin.name(),
            spec.subscription.topic(),
            spec.partition,
        );
        match outcome {
            Outcome::Ack => self.acked += 1,
            Outcome::Retry { reason, .. } => {
                self.retried += 1;
                tracing::debug!(plugin, topic = %topic, partition, offset, %reason, "retry");
            }
            Outcome::DeadLetter { reason } => {
                self.dead_lettered += 1;
                tracing::debug!(plugin, topic = %topic, partition, offset, %reason, "dead letter");
            }
        }
    }

    fn add_to(&self, metrics: &PluginMetrics) {
        metrics.delivered.inc_by(self.delivered);
        metrics.acked.inc_by(self.acked);
        metrics.retried.inc_by(self.retried);
        metrics.dead_lettered.inc_by(self.dead_lettered);
        metrics.filtered.inc_by(self.filtered);
        metrics.traps.inc_by(self.traps);
    }
}

fn matches_filter(filter: &[(String, String)], headers: &[(String, String)]) -> bool {
    filter
        .iter()
        .all(|wanted| headers.iter().any(|header| header == wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_filters_need_every_pair() {
        let headers = vec![
            ("type".to_string(), "order".to_string()),
            ("region".to_string(), "eu".to_string()),
        ];
        assert!(matches_filter(&[], &headers));
        assert!(matches_filter(&[("type".into(), "order".into())], &headers));
        assert!(!matches_filter(
            &[("type".into(), "refund".into())],
            &headers
        ));
        assert!(!matches_filter(
            &[
                ("type".into(), "order".into()),
                ("region".into(), "us".into())
            ],
            &headers
        ));
    }
}
