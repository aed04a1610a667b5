//! Wiring: opens the store, loads the plugins, starts dispatch and the HTTP
//! API, and shuts them down in the safe order. `main` and the tests start
//! the engine only through [`start`] or [`run`].
//!
//! Shutdown order: stop accepting requests, stop dispatch (batches in
//! flight finish within the grace period or are abandoned, unacknowledged,
//! for redelivery after the next start), then close the store (final
//! fsync). Nothing that was acknowledged to anyone depends on this order:
//! it was durable before it was acknowledged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use courier_api::{self as api, AppState, Limits};
use courier_core::Storage;
use courier_dispatch::{DispatchContext, Dispatcher, StorageState};
use courier_metrics::Metrics;
use courier_plugin_host::{self as plugin, PluginRuntime, Registry, RuntimeConfig};
use courier_store_fjall::{self as storage, FjallStore};
use courier_store_jetstream::JetStreamStore;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create directory {path}: {source}")]
    Directory {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open storage: {0}")]
    Storage(#[from] storage::Error),
    #[error("cannot open the jetstream backend: {0}")]
    Cluster(courier_core::Error),
    #[error("cannot start the plugin runtime: {0}")]
    Plugins(#[from] plugin::Error),
    #[error("cannot start the dispatch threads: {0}")]
    Dispatch(std::io::Error),
    #[error(
        "refusing to listen on {addr} without a token: anyone who reaches it could publish, seek and purge. Set one (--token, COURIER_TOKEN, [server] token) or pass --insecure"
    )]
    Insecure { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running engine.
pub struct RunningEngine {
    addr: SocketAddr,
    store: Arc<dyn Storage>,
    registry: Arc<Registry>,
    cancel: CancellationToken,
    server: JoinHandle<()>,
    watcher: JoinHandle<()>,
    dispatcher: Dispatcher,
}

/// Starts everything; returns once the API accepts connections and the
/// plugins found at boot are subscribed.
pub async fn start(config: Config) -> Result<RunningEngine, StartError> {
    if !config.listen.ip().is_loopback() && config.token.is_none() && !config.insecure {
        return Err(StartError::Insecure {
            addr: config.listen,
        });
    }
    if !config.plugins_dir.exists() {
        tracing::warn!(
            plugins_dir = %config.plugins_dir.display(),
            "the plugins directory does not exist: created it empty, so no plugin runs until one is dropped in (is --plugins-dir right?)"
        );
    }
    for dir in [
        &config.store.dir,
        &config.plugins_dir,
        &config.plugin_cache_dir,
    ] {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Directory {
            path: dir.clone(),
            source,
        })?;
    }
    let store: Arc<dyn Storage> = match &config.jetstream {
        Some(cluster) => Arc::new(
            JetStreamStore::open(cluster.clone())
                .await
                .map_err(StartError::Cluster)?,
        ),
        None => {
            let store_config = config.store.clone();
            let store = tokio::task::spawn_blocking(move || FjallStore::open(store_config))
                .await
                .map_err(|_| storage::Error::Closed)??;
            Arc::new(store)
        }
    };
    let metrics = Metrics::new(Arc::clone(&store));
    let runtime = PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(config.plugin_cache_dir.clone()),
        ..RuntimeConfig::default()
    })?;
    let registry = Arc::new(Registry::new(config.plugins_dir.clone(), runtime));
    // Boot is a reload from the empty set, like every later change.
    registry.reload().await;

    let cancel = CancellationToken::new();
    let context = DispatchContext {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        threads: config.plugin_threads(),
        state: Arc::new(StorageState(Arc::clone(&store))),
    };
    let dispatcher = Dispatcher::start(context, registry.subscribe(), config.shutdown_grace)
        .await
        .map_err(StartError::Dispatch)?;
    let watch_cancel = cancel.clone();
    let watcher = Arc::clone(&registry).watch(async move { watch_cancel.cancelled().await });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let state = AppState {
        store: Arc::clone(&store),
        registry: Arc::clone(&registry),
        metrics,
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            max_batch_messages: config.max_batch_messages,
        },
        token: config.token.as_deref().map(Arc::from),
        public_metrics: config.public_metrics,
    };
    let server_cancel = cancel.clone();
    let server = tokio::spawn(async move {
        let shutdown = async move { server_cancel.cancelled().await };
        if let Err(error) = api::serve(listener, state, shutdown).await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    let backend = match &config.jetstream {
        Some(cluster) => format!(
            "jetstream ({}, engine {})",
            cluster.servers.join(", "),
            cluster.engine
        ),
        None => "fjall".to_owned(),
    };
    tracing::info!(%addr, backend, data_dir = %config.store.dir.display(), plugins_dir = %config.plugins_dir.display(), "courier is running");
    Ok(RunningEngine {
        addr,
        store,
        registry,
        cancel,
        server,
        watcher,
        dispatcher,
    })
}

impl RunningEngine {
    /// Where the API listens (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The storage backend, through the seam.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Graceful shutdown; returns once everything is durable and stopped.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.cancel.cancel();
        let _ = self.server.await;
        let _ = self.watcher.await;
        self.dispatcher.stop().await;
        self.store.close().await;
        tracing::info!("stopped");
    }
}

/// Runs until `shutdown` resolves, then stops gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let engine = start(config).await?;
    shutdown.await;
    engine.shutdown().await;
    Ok(())
}
