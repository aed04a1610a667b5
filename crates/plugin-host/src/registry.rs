//! The plugin registry: what is in the plugins directory, loaded.
//!
//! A plugin is `NAME.wasm` plus an optional `NAME.toml`. [`Registry::reload`]
//! scans the directory and diffs it against the current [`PluginSet`]:
//! new or changed files are compiled and validated off the async workers;
//! a version that fails (not wasm, wrong world, bad manifest, start-up trap)
//! never replaces a working one: the old version keeps running and the
//! error is kept in the plugin's status. The same files are not tried again
//! unless the failure came from the environment (a granted directory that
//! does not exist yet): those are retried on every reload and rescan.
//! Files that disappeared remove their plugin (its cursors and state stay
//! in storage). The new set is published on a `watch` channel that
//! dispatch follows.
//!
//! Boot is a reload from the empty set; [`Registry::watch`] reloads after
//! `notify` events (debounced: files are often written in several steps)
//! and rescans periodically as a safety net for missed events.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Error;
use super::manifest::{MAX_MANIFEST_BYTES, Manifest};
use super::runtime::{LoadedPlugin, MAX_WASM_BYTES, PluginRuntime};

/// The running plugins, by name.
pub type PluginSet = BTreeMap<String, Arc<LoadedPlugin>>;

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest a burst of events may postpone a reload.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(2);
/// Rescan period, in case the file watcher missed something.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a plugin has a working version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    /// A version is running (a newer, broken one may have been rejected:
    /// see `last_error`).
    Running,
    /// No version could be loaded.
    Failed,
}

impl fmt::Display for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginState::Running => "running",
            PluginState::Failed => "failed",
        })
    }
}

/// What the API shows of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStatus {
    pub name: String,
    /// The running version (content hash), if any.
    pub version: Option<String>,
    pub state: PluginState,
    pub loaded_at: Option<SystemTime>,
    /// Why the last load of this plugin failed, if it did.
    pub last_error: Option<String>,
    pub subscriptions: Vec<String>,
}

/// The last failed attempt of one plugin.
struct Failure {
    /// The files' fingerprint: the same broken files are not retried...
    fingerprint: String,
    error: String,
    /// ... unless the failure came from the environment, which may change
    /// (see [`Error::depends_on_environment`]).
    retry: bool,
}

/// See the module doc.
pub struct Registry {
    dir: PathBuf,
    runtime: PluginRuntime,
    current: watch::Sender<Arc<PluginSet>>,
    failures: Mutex<BTreeMap<String, Failure>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// One plugin's files as found by a scan.
struct Candidate {
    name: String,
    wasm_path: PathBuf,
    wasm: Vec<u8>,
    manifest_path: PathBuf,
    manifest: Option<String>,
    fingerprint: String,
}

impl Registry {
    pub fn new(dir: PathBuf, runtime: PluginRuntime) -> Registry {
        let (current, _) = watch::channel(Arc::new(PluginSet::new()));
        Registry {
            dir,
            runtime,
            current,
            failures: Mutex::new(BTreeMap::new()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Follows the current plugin set.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PluginSet>> {
        self.current.subscribe()
    }

    /// The current plugin set.
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.current.borrow().clone()
    }

    /// Brings the plugin set in line with the directory (see the module
    /// doc). Never fails: problems end up in the plugins' statuses.
    pub async fn reload(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        let dir = self.dir.clone();
        let scanned = match tokio::task::spawn_blocking(move || scan(&dir)).await {
            Ok(Ok(scanned)) => scanned,
            Ok(Err(error)) => {
                tracing::error!(dir = %self.dir.display(), %error, "cannot scan the plugins directory; keeping the current plugins");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "plugin directory scan panicked");
                return;
            }
        };
        let current = self.plugins();
        let mut next = PluginSet::new();
        let mut failures = BTreeMap::new();
        for found in scanned {
            match found {
                Ok(candidate) => {
                    self.apply(candidate, &current, &mut next, &mut failures)
                        .await
                }
                Err(Unusable {
                    name,
                    failure,
                    wasm_gone,
                }) => {
                    // Unreadable files keep the running version; a deleted
                    // `.wasm` removes the plugin, even with its manifest
                    // left behind.
                    if let Some(running) = current.get(&name).filter(|_| !wasm_gone) {
                        next.insert(name.clone(), Arc::clone(running));
                    }
                    failures.insert(name, failure);
                }
            }
        }
        for name in current.keys().filter(|name| !next.contains_key(*name)) {
            tracing::info!(plugin = %name, "plugin removed; its cursors and state are kept");
        }
        *lock(&self.failures) = failures;
        let changed = next.len() != current.len()
            || next
                .iter()
                .zip(current.iter())
                .any(|((a, pa), (b, pb))| a != b || !Arc::ptr_eq(pa, pb));
        if changed {
            self.current.send_replace(Arc::new(next));
        }
    }

    /// Decides what one found plugin becomes in the next set.
    async fn apply(
        &self,
        candidate: Candidate,
        current: &PluginSet,
        next: &mut PluginSet,
        failures: &mut BTreeMap<String, Failure>,
    ) {
        let name = candidate.name.clone();
        let running = current.get(&name);
        if let Some(running) = running.filter(|running| running.version() == candidate.fingerprint)
        {
            next.insert(name, Arc::clone(running));
            return;
        }
        let known_failure = lock(&self.failures)
            .get(&name)
            .filter(|failure| failure.fingerprint == candidate.fingerprint && !failure.retry)
            .map(|failure| (failure.error.clone(), false));
        let fingerprint = candidate.fingerprint.clone();
        let loaded = match known_failure {
            Some(error) => Err(error),
            None => self.load(candidate).await,
        };
        match loaded {
            Ok(plugin) => {
                tracing::info!(plugin = %name, version = plugin.version(), replaced = running.map(|r| r.version()), "plugin version loaded");
                next.insert(name, Arc::new(plugin));
            }
            Err((error, retry)) => {
                if let Some(running) = running {
                    next.insert(name.clone(), Arc::clone(running));
                }
                failures.insert(
                    name,
                    Failure {
                        fingerprint,
                        error,
                        retry,
                    },
                );
            }
        }
    }

    /// Loads one version; a failure says whether to retry the same files.
    async fn load(&self, candidate: Candidate) -> Result<LoadedPlugin, (String, bool)> {
        let runtime = self.runtime.clone();
        let (name, fingerprint) = (candidate.name.clone(), candidate.fingerprint.clone());
        let joined = tokio::task::spawn_blocking(move || load_blocking(&runtime, candidate)).await;
        let result = match joined {
            Ok(result) => {
                result.map_err(|error| (error.to_string(), error.depends_on_environment()))
            }
            Err(error) => Err((format!("loading panicked: {error}"), false)),
        };
        if let Err((error, retry)) = &result {
            tracing::error!(plugin = %name, version = %fingerprint, %error, retried_on_rescan = retry, "plugin version rejected; the previous version (if any) keeps running");
        }
        result
    }

    /// Every plugin the directory holds or held, with its state.
    pub fn status(&self) -> Vec<PluginStatus> {
        let plugins = self.plugins();
        let failures = lock(&self.failures);
        let mut names: Vec<&String> = plugins.keys().chain(failures.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let running = plugins.get(name);
                PluginStatus {
                    name: name.clone(),
                    version: running.map(|plugin| plugin.version().to_owned()),
                    state: if running.is_some() {
                        PluginState::Running
                    } else {
                        PluginState::Failed
                    },
                    loaded_at: running.map(|plugin| plugin.loaded_at()),
                    last_error: failures.get(name).map(|failure| failure.error.clone()),
                    subscriptions: running
                        .map(|plugin| {
                            plugin
                                .manifest()
                                .subscriptions
                                .iter()
                                .map(|s| s.topic.clone())
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Reloads after changes in the directory until `shutdown` resolves.
    pub fn watch(
        self: Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let (events, mut changes) = tokio::sync::mpsc::channel::<()>(1);
        // One reload right away: a file that landed between the boot scan
        // and the start of the watch is not left for the next rescan.
        let _ = events.try_send(());
        // Watch before returning, so a change made once the engine is up
        // always produces an event.
        let watcher = watch_dir(&self.dir, events);
        tokio::spawn(async move {
            let _watcher = watcher;
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    // Without a watcher the channel closes: rescans only.
                    Some(()) = changes.recv() => {
                        debounce(&mut changes).await;
                        self.reload().await;
                    }
                    _ = tokio::time::sleep(RESCAN_INTERVAL) => self.reload().await,
                }
            }
        })
    }
}

/// A `notify` watcher of `dir` that signals `events` (None if the
/// platform cannot watch it; the periodic rescan still runs).
fn watch_dir(
    dir: &Path,
    events: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| changes_files(&event.kind)) {
            // A full channel already holds a pending reload.
            let _ = events.try_send(());
        }
    })
    .and_then(|mut watcher| {
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map(|()| watcher)
    });
    match watcher {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot watch the plugins directory; rescanning every {}s", RESCAN_INTERVAL.as_secs());
            None
        }
    }
}

/// Whether an event may have changed what a scan reads. Opening and
/// reading files does not: without this filter every reload (which opens
/// the plugin files) would trigger the next one.
fn changes_files(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Waits until no event came for [`DEBOUNCE`] (at most [`MAX_DEBOUNCE`]).
async fn debounce(changes: &mut tokio::sync::mpsc::Receiver<()>) {
    let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DEBOUNCE) => return,
            _ = tokio::time::sleep_until(give_up) => return,
            more = changes.recv() => if more.is_none() { return },
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn load_blocking(runtime: &PluginRuntime, candidate: Candidate) -> Result<LoadedPlugin, Error> {
    courier_core::validate_name("plugin", &candidate.name)
        .map_err(|_| Error::InvalidName(candidate.name.clone()))?;
    let manifest = match &candidate.manifest {
        Some(text) => Manifest::parse(&candidate.name, &candidate.manifest_path, text)?,
        None => Manifest::default_for(&candidate.name),
    };
    runtime.load(
        &candidate.name,
        &candidate.wasm_path,
        &candidate.wasm,
        manifest,
        candidate.fingerprint,
    )
}

type Scanned = Result<Candidate, Unusable>;

/// A plugin whose files a scan could not use.
struct Unusable {
    name: String,
    failure: Failure,
    /// There is no `NAME.wasm` (only a manifest): the plugin is removed.
    wasm_gone: bool,
}

/// Reads every plugin's files. A plugin whose files cannot be read (or a
/// manifest without its `.wasm`) becomes a failure.
fn scan(dir: &Path) -> std::io::Result<Vec<Scanned>> {
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|e| e.to_str()),
        ) else {
            continue;
        };
        if stem.starts_with('.') || !path.is_file() {
            continue;
        }
        if ext == "wasm" || ext == "toml" {
            names.insert(stem.to_owned());
        }
    }
    Ok(names
        .into_iter()
        .map(|name| read_candidate(dir, name))
        .collect())
}

fn read_candidate(dir: &Path, name: String) -> Scanned {
    let wasm_path = dir.join(format!("{name}.wasm"));
    let manifest_path = dir.join(format!("{name}.toml"));
    let unusable = |name: String, error: String, wasm_gone: bool| {
        Err(Unusable {
            name,
            failure: Failure {
                fingerprint: String::new(),
                error,
                // Files are read again on every scan anyway.
                retry: true,
            },
            wasm_gone,
        })
    };
    let fail = |name: String, error: String| unusable(name, error, false);
    if !wasm_path.is_file() {
        let error = format!("{} has no {name}.wasm beside it", manifest_path.display());
        return unusable(name, error, true);
    }
    let wasm = match read_bounded(&wasm_path, MAX_WASM_BYTES) {
        Ok(wasm) => wasm,
        Err(error) => return fail(name, error),
    };
    let manifest = if manifest_path.is_file() {
        match read_bounded(&manifest_path, MAX_MANIFEST_BYTES).and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| format!("{} is not UTF-8 text", manifest_path.display()))
        }) {
            Ok(text) => Some(text),
            Err(error) => return fail(name, error),
        }
    } else {
        None
    };
    let fingerprint = fingerprint(&wasm, manifest.as_deref());
    Ok(Candidate {
        name,
        wasm_path,
        wasm,
        manifest_path,
        manifest,
        fingerprint,
    })
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if len > max {
        return Err(format!(
            "{} has {len} bytes; the limit is {max}",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The version of a plugin: a hash of its `.wasm` and manifest.
fn fingerprint(wasm: &[u8], manifest: Option<&str>) -> String {
    let mut hash = Sha256::new();
    hash.update(wasm);
    hash.update(b"\0manifest\0");
    hash.update(manifest.unwrap_or("").as_bytes());
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};

    use super::*;

    #[test]
    fn reading_plugin_files_never_triggers_a_reload() {
        assert!(!changes_files(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!changes_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_files(&EventKind::Create(CreateKind::File)));
        assert!(changes_files(&EventKind::Modify(ModifyKind::Any)));
        assert!(changes_files(&EventKind::Remove(RemoveKind::File)));
    }

    #[test]
    fn a_version_changes_with_the_wasm_or_the_manifest() {
        let base = fingerprint(b"\0asm1", Some("a = 1"));
        assert_eq!(base, fingerprint(b"\0asm1", Some("a = 1")));
        assert_ne!(base, fingerprint(b"\0asm2", Some("a = 1")));
        assert_ne!(base, fingerprint(b"\0asm1", Some("a = 2")));
        assert_ne!(base, fingerprint(b"\0asm1", None));
    }
}
