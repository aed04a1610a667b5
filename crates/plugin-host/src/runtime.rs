//! The wasmtime side: one `Engine` per process, compilation with an on-disk
//! artifact cache, linking, and [`LoadedPlugin`] (a compiled, linked and
//! validated plugin version).
//!
//! Compiling a component costs ~90 ms; deserializing its cached artifact
//! ~0.4 ms. Artifacts are cached under `<cache_dir>/<sha256 of the wasm>-
//! <engine compatibility hash>.cwasm`, written to a temporary file and
//! renamed, so a restart never recompiles and a crash never leaves a torn
//! artifact. A cached artifact that fails to load is recompiled.
//!
//! Deadlines use epochs: a ticker thread advances the engine's epoch every
//! [`EPOCH_TICK`]; each call sets its deadline in ticks. Memory is capped
//! per store (see [`super::host::HostState`]).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::bindings::{Consumer, ConsumerPre};
use super::host::{HostState, PluginContext};
pub use super::instance::EPOCH_TICK;
use super::instance::{PluginInstance, deadline_ticks};
use super::manifest::Manifest;
use super::{Error, StateReader};
use courier_core::DEFAULT_MAX_MESSAGE_BYTES;

/// Set (to anything) in the engine's environment to have wasmtime write a
/// perf map of the compiled plugins.
pub const PERFMAP_ENV: &str = "COURIER_PERFMAP";
/// Largest `.wasm` file accepted.
pub const MAX_WASM_BYTES: u64 = 64 * 1024 * 1024;

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached; `None` = compile every time.
    pub cache_dir: Option<PathBuf>,
    /// Largest payload a plugin may publish (the store's message limit).
    pub max_message_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// The one wasmtime engine and linker. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    /// Distinguishes artifacts of incompatible engine builds/settings.
    compatibility: u64,
    /// Stops the epoch ticker when the runtime is dropped.
    _ticker: EpochTicker,
}

impl PluginRuntime {
    pub fn new(config: RuntimeConfig) -> Result<PluginRuntime, Error> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            // One compile at a time on the loading thread: parallel
            // compilation left ~70 MB of compiler memory behind in per-thread
            // allocator heaps, for a one-off saving of ~100 ms per plugin
            // (artifacts are cached, so restarts do not compile at all).
            .parallel_compilation(false);
        // A profiling aid: `/tmp/perf-<pid>.map` names the compiled guest
        // functions for `perf` (plugins/README.md, "Profiling a plugin").
        if std::env::var_os(PERFMAP_ENV).is_some() {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm).map_err(|e| Error::Wasmtime(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Wasmtime(format!("{e:#}")))?;
        Consumer::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| Error::Wasmtime(format!("{e:#}")))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let ticker = EpochTicker::start(engine.clone());
        Ok(PluginRuntime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config,
                compatibility: hasher.finish(),
                _ticker: ticker,
            }),
        })
    }

    /// Compiles (or loads from the cache), links and validates one plugin
    /// version. Blocking and CPU-heavy: call it off the async workers.
    pub fn load(
        &self,
        name: &str,
        wasm_path: &Path,
        wasm: &[u8],
        manifest: Manifest,
        version: String,
    ) -> Result<LoadedPlugin, Error> {
        let component = self.compile(wasm_path, wasm)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::WrongWorld {
                path: wasm_path.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let pre = ConsumerPre::new(pre).map_err(|e| Error::WrongWorld {
            path: wasm_path.to_owned(),
            reason: format!("{e:#}"),
        })?;
        let context = Arc::new(PluginContext {
            name: Arc::from(name),
            manifest,
            max_message_bytes: self.inner.config.max_message_bytes,
        });
        let plugin = LoadedPlugin {
            context,
            version,
            pre,
            runtime: self.clone(),
            loaded_at: SystemTime::now(),
            idle: std::sync::Mutex::new(Vec::new()),
        };
        // Instantiate once now: a component whose start traps or whose
        // sandbox cannot be built is rejected before it replaces anything.
        plugin.instantiate(Arc::new(NoState))?;
        Ok(plugin)
    }

    fn compile(&self, path: &Path, wasm: &[u8]) -> Result<Component, Error> {
        if !wasm.starts_with(b"\0asm") {
            return Err(Error::NotAComponent {
                path: path.to_owned(),
                reason: "the file does not start with the WebAssembly magic bytes".into(),
            });
        }
        let cached = self.cache_path(wasm);
        if let Some(cached) = &cached
            && cached.exists()
        {
            // SAFETY: artifacts in the cache directory are written only by
            // this runtime (serialize + atomic rename below), and
            // `deserialize_file` checks they match this engine's build and
            // settings; the cache directory is the operator's, like the data
            // directory.
            match unsafe { Component::deserialize_file(&self.inner.engine, cached) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(path = %cached.display(), %error, "ignoring unusable cached artifact")
                }
            }
        }
        let component =
            Component::new(&self.inner.engine, wasm).map_err(|e| Error::NotAComponent {
                path: path.to_owned(),
                reason: format!("{e:#}"),
            })?;
        if let Some(cached) = &cached
            && let Err(error) = store_artifact(&component, cached)
        {
            tracing::warn!(path = %cached.display(), %error, "cannot cache the compiled plugin");
        }
        Ok(component)
    }

    fn cache_path(&self, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.inner.config.cache_dir.as_ref()?;
        let digest = Sha256::digest(wasm);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{hex}-{:016x}.cwasm", self.inner.compatibility)))
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

fn store_artifact(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Unique per writer, so concurrent loads of one component never share a
    // temporary file; the rename makes the artifact appear whole.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The store reader used to validate a fresh load: no state.
struct NoState;

impl StateReader for NoState {
    fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

/// Most idle instances a plugin version keeps for reuse. Only as many
/// batches run at once as there are plugin threads, so a few instances
/// serve all of a plugin's workers (instead of one per partition worker,
/// each holding its own guest memory).
pub const MAX_IDLE_INSTANCES: usize = 4;

/// One compiled and linked plugin version. Shared by all its workers.
pub struct LoadedPlugin {
    pub(super) context: Arc<PluginContext>,
    version: String,
    pre: ConsumerPre<HostState>,
    runtime: PluginRuntime,
    loaded_at: SystemTime,
    /// Instances between two batches (`instance = "reused"` only).
    idle: std::sync::Mutex<Vec<PluginInstance>>,
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.context.name
    }

    /// Content hash of the `.wasm` and manifest: changes with either.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn manifest(&self) -> &Manifest {
        &self.context.manifest
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// An instance for one batch: an idle one when the manifest reuses
    /// instances, otherwise a fresh one. Give it back with [`Self::checkin`].
    pub fn checkout(&self, state: Arc<dyn StateReader>) -> Result<PluginInstance, Error> {
        if self.reuses_instances()
            && let Some(instance) = self.idle_instances().pop()
        {
            return Ok(instance);
        }
        self.instantiate(state)
    }

    /// Returns an instance after its batch; kept for the next batch if the
    /// manifest reuses instances, it did not trap, and the pool has room.
    pub fn checkin(&self, instance: PluginInstance) {
        if self.reuses_instances() && instance.is_usable() {
            let mut idle = self.idle_instances();
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(instance);
            }
        }
    }

    fn reuses_instances(&self) -> bool {
        self.context.manifest.delivery.instance == super::manifest::InstanceStrategy::Reused
    }

    fn idle_instances(&self) -> std::sync::MutexGuard<'_, Vec<PluginInstance>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh, sandboxed instance (microseconds: linking was done once).
    pub fn instantiate(&self, state: Arc<dyn StateReader>) -> Result<PluginInstance, Error> {
        let wasi = sandbox(&self.context.manifest)?;
        let host = HostState::new(Arc::clone(&self.context), wasi, state);
        let mut store = Store::new(self.runtime.engine(), host);
        store.limiter(|host| &mut host.limits);
        // Instantiation runs guest start code: bound it like a call.
        // Instantiation runs guest code (start functions): it needs a
        // deadline too.
        store.set_epoch_deadline(deadline_ticks(self.context.manifest.limits.deadline_ms));
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| Error::Instantiate(format!("{e:#}")))?;
        Ok(PluginInstance::new(store, bindings))
    }
}

/// The WASI context the manifest's capabilities allow; nothing by default
/// (no preopened directories, no environment, no network, no stdio).
fn sandbox(manifest: &Manifest) -> Result<WasiCtx, Error> {
    let capabilities = &manifest.capabilities;
    let mut builder = WasiCtxBuilder::new();
    if capabilities.stdio {
        builder.inherit_stdout().inherit_stderr();
    }
    for name in &capabilities.env {
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    for dir in &capabilities.read_dirs {
        let guest = dir.to_string_lossy();
        builder
            .preopened_dir(dir, guest.as_ref(), FsPerms::ReadOnly)
            .map_err(|e| Error::Sandbox(format!("read_dirs {}: {e:#}", dir.display())))?;
    }
    if capabilities.network {
        // wasmtime-wasi denies TCP and UDP unless allowed explicitly:
        // `inherit_network` alone only opens the address check.
        builder
            .inherit_network()
            .allow_ip_name_lookup(true)
            .allow_tcp(true)
            .allow_udp(true);
    }
    Ok(builder.build())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("courier-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the epoch ticker: plugin deadlines are not enforced");
        }
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
