//! One dispatch worker: delivers one partition of one subscription to one
//! plugin version, batch after batch.
//!
//! A batch is polled and run through the plugin on a blocking thread (both
//! are blocking: fjall reads, Wasm execution), bounded by the dispatcher's
//! semaphore; its outcomes are then settled durably on the async side. In
//! ordered mode the batch stops at the first message asking for a retry:
//! the rest are delivered again after it, so per-key order holds.
//!
//! A worker never acknowledges a message its plugin did not acknowledge,
//! and never holds more than one batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::PluginMetrics;
use crate::plugin::{InstanceStrategy, LoadedPlugin, PluginInstance, StateReader};
use crate::storage::{DeliveryMode, Lease, LeaseTicket, Outcome, Poll, Settlement, Subscription};

/// Longest idle wait without a signal: a safety net, not a polling period
/// (new messages, retries falling due and control changes all wake a
/// worker directly).
const MAX_IDLE_WAIT: Duration = Duration::from_secs(30);
/// Pause after an unexpected error (storage or instantiation), so a
/// persistent fault costs one log line a second, not a busy loop.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What a worker needs; cloned per worker.
#[derive(Clone)]
pub struct WorkerSpec {
    pub plugin: Arc<LoadedPlugin>,
    pub subscription: Subscription,
    pub partition: u32,
    pub batch_size: usize,
    /// Deliver only messages carrying all these headers (others are
    /// acknowledged without calling the plugin).
    pub filter: Vec<(String, String)>,
    pub state: Arc<dyn StateReader>,
    pub permits: Arc<Semaphore>,
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

pub async fn run(spec: WorkerSpec, cancel: CancellationToken) {
    let sub = spec.subscription.clone();
    let partition = spec.partition;
    let Ok(mut durable) = sub.watch_partition(partition) else {
        return;
    };
    let mut instance: Option<PluginInstance> = None;
    while !cancel.is_cancelled() && sub.is_active() {
        // Register interest before looking, so no signal slips between.
        let changed = sub.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        durable.borrow_and_update();

        let Ok(permit) = Arc::clone(&spec.permits).acquire_owned().await else {
            return;
        };
        let step_spec = spec.clone();
        let carried = instance.take();
        let joined = tokio::task::spawn_blocking(move || step(&step_spec, carried)).await;
        drop(permit);
        let (step, kept) = match joined {
            Ok(result) => result,
            Err(error) => (Step::Failed(format!("worker step panicked: {error}")), None),
        };
        instance = kept;
        match step {
            Step::Handled { ticket, results } => settle(&spec, ticket, results).await,
            Step::Idle(retry_in) => {
                let wait = retry_in.unwrap_or(MAX_IDLE_WAIT).min(MAX_IDLE_WAIT);
                tokio::select! {
                    _ = durable.changed() => {}
                    _ = &mut changed => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            Step::Busy => {
                tokio::select! {
                    _ = &mut changed => {}
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
    match sub.settle(ticket, results).await {
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

/// Polls one batch and runs it through the plugin. Blocking.
fn step(spec: &WorkerSpec, instance: Option<PluginInstance>) -> (Step, Option<PluginInstance>) {
    let lease = match spec.subscription.poll(spec.partition, spec.batch_size) {
        Ok(Poll::Ready(lease)) => lease,
        Ok(Poll::Idle { retry_in }) => return (Step::Idle(retry_in), instance),
        Ok(Poll::Busy) => return (Step::Busy, instance),
        Err(error) => return (Step::Failed(error.to_string()), instance),
    };
    let reuse = spec.plugin.manifest().delivery.instance == InstanceStrategy::Reused;
    let instance = match instance.filter(|i| reuse && i.is_usable()) {
        Some(instance) => instance,
        None => match spec.plugin.instantiate(Arc::clone(&spec.state)) {
            Ok(instance) => instance,
            Err(error) => {
                spec.subscription.release(lease.ticket);
                return (Step::Failed(format!("cannot instantiate: {error}")), None);
            }
        },
    };
    let (results, instance) = run_batch(spec, &lease, instance);
    let step = Step::Handled {
        ticket: lease.ticket,
        results,
    };
    (step, instance.filter(|_| reuse))
}

/// Hands each message to the plugin; returns the outcomes (a prefix of the
/// batch in ordered mode) and the instance, if still usable.
fn run_batch(
    spec: &WorkerSpec,
    lease: &Lease,
    mut instance: PluginInstance,
) -> (Vec<Settlement>, Option<PluginInstance>) {
    let ordered = spec.subscription.settings().mode == DeliveryMode::Ordered;
    let metrics = &spec.metrics;
    let mut results = Vec::with_capacity(lease.deliveries.len());
    instance.begin_batch();
    for delivery in &lease.deliveries {
        let message = &delivery.message;
        if !matches_filter(&spec.filter, &message.headers) {
            metrics.filtered.inc();
            results.push(Settlement::ack(message.offset));
            continue;
        }
        let started = Instant::now();
        let handled = instance.handle(message, delivery.attempt);
        metrics
            .handler_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.delivered.inc();
        let stop = ordered && matches!(handled.outcome, Outcome::Retry { .. });
        match &handled.outcome {
            Outcome::Ack => {
                metrics.acked.inc();
            }
            Outcome::Retry { reason, .. } => {
                metrics.retried.inc();
                tracing::debug!(plugin = spec.plugin.name(), topic = %message.topic, partition = message.partition, offset = message.offset, %reason, "retry");
            }
            Outcome::DeadLetter { reason } => {
                metrics.dead_lettered.inc();
                tracing::debug!(plugin = spec.plugin.name(), topic = %message.topic, partition = message.partition, offset = message.offset, %reason, "dead letter");
            }
        };
        results.push(Settlement {
            offset: message.offset,
            outcome: handled.outcome,
            effects: handled.effects,
        });
        if handled.trapped {
            // The instance is gone, and with it the batch's view of its own
            // staged writes: end the batch here. The rest is delivered again
            // (no attempt counted) on a fresh instance.
            metrics.traps.inc();
            return (results, None);
        }
        if stop {
            break;
        }
    }
    (results, Some(instance))
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
