//! Dispatch: routes every subscribed message to its plugins.
//!
//! The supervisor watches the plugin set published by the registry and
//! reconciles the running workers with it: one worker per (plugin,
//! subscription, partition), times the manifest's concurrency for unordered
//! subscriptions. Boot and hot reload are the same diff: start what is new,
//! retire what is gone or replaced. A retired worker finishes the batch it
//! holds (on its old version) and stops; the new version's worker picks up
//! from the committed cursor, so a swap neither loses nor repeats an
//! acknowledged message. Removing a plugin keeps its cursors and state.
//!
//! Dispatch owns no data: cursors, retries and effects live in `storage`,
//! Wasm lives in `plugin`. Its only bounds are its own: the number of
//! workers (from manifests) and the number of plugin executions at once
//! (the dispatch threads, one per core by default: `threads.rs`).

mod threads;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use courier_core::{Backoff, DeliveryMode, StartPosition, Storage, SubscriptionSettings};
use courier_metrics::Metrics;
use courier_plugin_host::{
    DeliveryModeSpec, LoadedPlugin, Manifest, PluginSet, StartSpec, StateReader,
};

/// What every worker shares.
#[derive(Clone)]
pub struct DispatchContext {
    pub store: Arc<dyn Storage>,
    pub metrics: Arc<Metrics>,
    /// Plugin executions at once: the number of dispatch threads.
    pub threads: usize,
    pub state: Arc<dyn StateReader>,
}

/// Reads committed plugin state through the storage seam (for the
/// plugins' `store` capability).
pub struct StorageState(pub Arc<dyn Storage>);

impl StateReader for StorageState {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0
            .state_get(namespace, key)
            .map_err(|error| error.to_string())
    }

    fn read(
        &self,
        namespace: &str,
        key: &str,
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), String> {
        self.0
            .state_read(namespace, key, f)
            .map_err(|error| error.to_string())
    }
}

/// The running dispatcher.
pub struct Dispatcher {
    supervisor: JoinHandle<()>,
    cancel: CancellationToken,
}

struct Running {
    version: String,
    workers: Vec<(CancellationToken, JoinHandle<()>)>,
}

impl Dispatcher {
    /// Starts delivering to the plugins of every set `plugins` publishes,
    /// on dispatch threads of its own. Returns once the current set's
    /// plugins are subscribed and their workers started, so an engine that
    /// answers requests has its boot plugins' subscriptions.
    pub async fn start(
        context: DispatchContext,
        plugins: watch::Receiver<Arc<PluginSet>>,
        grace: Duration,
    ) -> std::io::Result<Dispatcher> {
        let threads = threads::DispatchThreads::start(context.threads)?;
        let cancel = CancellationToken::new();
        let (ready, started) = tokio::sync::oneshot::channel();
        let supervisor = tokio::spawn(supervise(
            context,
            threads,
            plugins,
            ready,
            cancel.clone(),
            grace,
        ));
        // Only a supervisor that ended early drops `ready` unsent.
        let _ = started.await;
        Ok(Dispatcher { supervisor, cancel })
    }

    /// Stops every worker: batches in flight get the grace period to finish
    /// and settle; after it they are abandoned (their messages were never
    /// acknowledged, so they are delivered again after the next start).
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.supervisor.await;
    }
}

async fn supervise(
    context: DispatchContext,
    threads: threads::DispatchThreads,
    mut plugins: watch::Receiver<Arc<PluginSet>>,
    ready: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut retiring: Vec<JoinHandle<()>> = Vec::new();
    let mut ready = Some(ready);
    loop {
        let set = plugins.borrow_and_update().clone();
        reconcile(&context, &threads, &set, &mut running, &mut retiring).await;
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        retiring.retain(|handle| !handle.is_finished());
        tokio::select! {
            changed = plugins.changed() => if changed.is_err() { break },
            _ = cancel.cancelled() => break,
        }
    }
    for (_, plugin) in std::mem::take(&mut running) {
        retire(plugin, &mut retiring);
    }
    let all = futures_util::future::join_all(retiring.iter_mut());
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "abandoning batches still in flight; they will be delivered again"
        );
        for handle in &retiring {
            handle.abort();
        }
    }
}

/// Makes the running workers match `set`.
async fn reconcile(
    context: &DispatchContext,
    threads: &threads::DispatchThreads,
    set: &PluginSet,
    running: &mut BTreeMap<String, Running>,
    retiring: &mut Vec<JoinHandle<()>>,
) {
    let stale: Vec<String> = running
        .iter()
        .filter(|(name, run)| {
            set.get(*name)
                .is_none_or(|plugin| plugin.version() != run.version)
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        if let Some(run) = running.remove(&name) {
            tracing::info!(plugin = %name, version = %run.version, "retiring plugin version");
            retire(run, retiring);
        }
    }
    for (name, plugin) in set {
        if !running.contains_key(name) {
            running.insert(name.clone(), start(context, threads, plugin).await);
        }
    }
}

fn retire(run: Running, retiring: &mut Vec<JoinHandle<()>>) {
    for (cancel, handle) in run.workers {
        cancel.cancel();
        retiring.push(handle);
    }
}

/// Subscribes a plugin version to its topics and starts its workers.
async fn start(
    context: &DispatchContext,
    threads: &threads::DispatchThreads,
    plugin: &Arc<LoadedPlugin>,
) -> Running {
    let manifest = plugin.manifest();
    let settings = subscription_settings(manifest);
    create_outbox_topics(context, plugin).await;
    let mut workers = Vec::new();
    for subscription in &manifest.subscriptions {
        let topic = &subscription.topic;
        let sub = match context
            .store
            .subscribe(plugin.name(), topic, settings)
            .await
        {
            Ok(sub) => sub,
            Err(error) => {
                tracing::error!(plugin = plugin.name(), %topic, %error, "cannot subscribe");
                continue;
            }
        };
        let metrics = context.metrics.plugin(plugin.name(), topic);
        let filter: Vec<(String, String)> = subscription
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let per_partition = match settings.mode {
            DeliveryMode::Ordered => 1,
            DeliveryMode::Unordered => manifest.delivery.concurrency.max(1),
        };
        for partition in 0..sub.partitions() {
            let feed = match sub.partition(partition) {
                Ok(feed) => feed,
                Err(error) => {
                    tracing::error!(plugin = plugin.name(), %topic, partition, %error, "cannot consume partition");
                    continue;
                }
            };
            for _ in 0..per_partition {
                let spec = worker::WorkerSpec {
                    plugin: Arc::clone(plugin),
                    subscription: Arc::clone(&sub),
                    feed: Arc::clone(&feed),
                    partition,
                    batch_size: manifest.delivery.batch_size as usize,
                    filter: filter.clone(),
                    state: Arc::clone(&context.state),
                    metrics: metrics.clone(),
                };
                let cancel = CancellationToken::new();
                let lane = threads.next_lane();
                let handle = lane.spawn(worker::run(spec, lane.clone(), cancel.clone()));
                workers.push((cancel, handle));
            }
        }
    }
    tracing::info!(
        plugin = plugin.name(),
        version = plugin.version(),
        subscriptions = manifest.subscriptions.len(),
        workers = workers.len(),
        "plugin running"
    );
    Running {
        version: plugin.version().to_owned(),
        workers,
    }
}

/// Creates the topics the plugin may publish to (its manifest's
/// `[capabilities] publish`, `"*"` aside) that do not exist yet, with the
/// backend's defaults, before its workers start: otherwise its first
/// settlements wait while their topics are created (a fresh engine's first
/// orders waited ~100 ms for the order plugins' two outboxes). A failure is
/// logged; the topic is then created by the first publish.
async fn create_outbox_topics(context: &DispatchContext, plugin: &LoadedPlugin) {
    let defaults = context.store.default_topic_settings();
    for topic in &plugin.manifest().capabilities.publish {
        if topic == "*" || context.store.topic_info(topic).is_ok() {
            continue;
        }
        if let Err(error) = context.store.create_topic(topic, defaults).await {
            tracing::warn!(plugin = plugin.name(), %topic, %error, "cannot create an outbox topic ahead of its first publish");
        }
    }
}

/// The storage settings a manifest asks for.
pub fn subscription_settings(manifest: &Manifest) -> SubscriptionSettings {
    let delivery = &manifest.delivery;
    SubscriptionSettings {
        mode: match delivery.mode {
            DeliveryModeSpec::Ordered => DeliveryMode::Ordered,
            DeliveryModeSpec::Unordered => DeliveryMode::Unordered,
        },
        max_attempts: delivery.max_attempts,
        backoff: Backoff {
            base: Duration::from_millis(delivery.backoff.base_ms),
            max: Duration::from_millis(delivery.backoff.max_ms),
        },
        start: match delivery.start {
            StartSpec::Earliest => StartPosition::Earliest,
            StartSpec::Latest => StartPosition::Latest,
        },
        ..SubscriptionSettings::default()
    }
}
