//! [`FjallStore`]: the store's handle, its lifecycle (open, sync, close)
//! and its threads. Its operations live in `store/` by concern: the log
//! (topics, appends, reads), subscriptions (subscribe, seek), dead letters,
//! plugin state, and introspection.

mod dead_letters;
mod introspection;
mod log;
mod state;
mod subscriptions;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use log::MAX_APPEND_BATCH;

use super::command::Command;
use super::config::StoreConfig;
use super::context::StoreContext;
use super::error::{Error, Result};
use super::support::{self, lock};
use super::{maintenance, recovery, writer};

/// Capacity of the writer's queue: producers wait (back-pressure) beyond it.
const COMMAND_QUEUE: usize = 4096;

/// The durable log. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct FjallStore {
    shared: Arc<StoreContext>,
    lifecycle: Arc<Lifecycle>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("dir", &self.shared.config.dir)
            .finish()
    }
}

/// The store's threads; shut down when the last `FjallStore` clone goes.
struct Lifecycle {
    shared: Arc<StoreContext>,
    writer: Mutex<Option<JoinHandle<()>>>,
    maintenance: Mutex<Option<(flume::Sender<()>, JoinHandle<()>)>>,
}

impl Lifecycle {
    /// Stops both threads; the writer makes everything durable first.
    fn shutdown(&self) {
        self.shared.mark_closed();
        if let Some((stop, handle)) = lock(&self.maintenance).take() {
            drop(stop);
            let _ = handle.join();
        }
        if let Some(handle) = lock(&self.writer).take() {
            let _ = self.shared.commands.send(Command::Shutdown);
            let _ = handle.join();
        }
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl FjallStore {
    /// Opens (or creates) the store in `config.dir`, recovering everything
    /// that was durable. Blocking; fails with [`Error::Locked`] if another
    /// process has the directory open.
    pub fn open(config: StoreConfig) -> Result<FjallStore> {
        let recovered = recovery::open(&config)?;
        let (commands, queue) = flume::bounded(COMMAND_QUEUE);
        let shared = Arc::new(StoreContext::new(
            recovered.db,
            recovered.ks,
            config,
            commands,
            recovered.next_topic_id,
        ));
        *support::write(&shared.topics) = recovered.topics;
        {
            let mut subscriptions = support::write(&shared.subscriptions);
            for sub in recovered.subscriptions {
                let key = (Arc::clone(&sub.subscriber), Arc::clone(&sub.topic.name));
                subscriptions.insert(key, sub);
            }
        }
        let writer = writer::Writer::new(
            Arc::clone(&shared),
            queue,
            recovered.next_sub_id,
            recovered.next_state_seq,
        );
        let writer = std::thread::Builder::new()
            .name("courier-writer".into())
            .spawn(move || writer.run())?;
        let (stop, stopped) = flume::bounded(1);
        let maintenance_shared = Arc::clone(&shared);
        let maintenance = std::thread::Builder::new()
            .name("courier-maintenance".into())
            .spawn(move || maintenance::run(maintenance_shared, stopped))?;
        let lifecycle = Lifecycle {
            shared: Arc::clone(&shared),
            writer: Mutex::new(Some(writer)),
            maintenance: Mutex::new(Some((stop, maintenance))),
        };
        Ok(FjallStore {
            shared,
            lifecycle: Arc::new(lifecycle),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Makes everything written so far durable, whatever the fsync policy.
    pub async fn sync(&self) -> Result<()> {
        self.shared.check_writable()?;
        self.shared.ask(|reply| Command::Sync { reply }).await
    }

    /// Runs one retention and disk-check pass now (normally periodic).
    pub async fn run_maintenance(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            maintenance::check_disk(&shared);
            maintenance::apply_retention(&shared, &mut Default::default())
        })
        .await
        .map_err(|_| Error::Closed)?
    }

    /// Stops accepting work, makes everything durable and stops the threads.
    /// Other clones of this store fail with [`Error::Closed`] afterwards.
    /// The data directory is released once every `FjallStore` and `FjallSubscription`
    /// handle is dropped.
    pub async fn close(&self) {
        let lifecycle = Arc::clone(&self.lifecycle);
        let _ = tokio::task::spawn_blocking(move || lifecycle.shutdown()).await;
    }
}
