//! The Wasm host: runs consumer plugins (WebAssembly components of the
//! `consumer` world in `wit/`) in wasmtime, sandboxed and limited.
//!
//! - [`manifest`]: `NAME.toml`, validated (unknown keys rejected).
//! - [`runtime`]: the one `wasmtime::Engine`, compilation with an on-disk
//!   artifact cache, and [`LoadedPlugin`] (one compiled version, linked
//!   once into an `InstancePre`).
//! - [`host`]: the host side of the contract (`producer`, `store`,
//!   `logging`, `config`), which *stages* effects instead of performing
//!   them, and bounds every guest-driven allocation.
//! - [`instance`]: [`PluginInstance`], one store + instance; turns a call's
//!   result (or trap) into an outcome with its staged effects.
//! - [`registry`]: scans the plugins directory, loads versions off the hot
//!   path, keeps the old version when a new one is broken, watches the
//!   directory, and publishes the current [`PluginSet`].
//!
//! **Invariant:** this is the only module that touches wasmtime. It never
//! writes to storage: effects leave it as data ([`courier_core::Effects`])
//! and dispatch commits them with the acknowledgement.

pub mod host;
pub mod instance;
pub mod manifest;
pub mod registry;
pub mod runtime;

pub use instance::{Handled, PluginInstance};
pub use manifest::{
    Capabilities, DeliveryModeSpec, DeliverySpec, InstanceStrategy, LimitsSpec, LogLevelSpec,
    LoggingSpec, Manifest, ManifestError, StartSpec, SubscriptionSpec,
};
pub use registry::{PluginSet, PluginState, PluginStatus, Registry};
pub use runtime::{LoadedPlugin, PluginRuntime, RuntimeConfig};

/// The generated bindings of the `consumer` world: the one `bindgen!`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "consumer",
    });
}

/// Committed plugin state, as the host's `store` capability reads it. The
/// plugin layer never writes state itself: writes are staged and committed
/// by storage with the acknowledgement.
pub trait StateReader: Send + Sync {
    /// The committed value of `key` in `namespace` (the plugin's name).
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String>;

    /// Calls `f` with the committed value of `key` (`None`: absent), in
    /// place if the reader can: an increment only parses the value.
    fn read(
        &self,
        namespace: &str,
        key: &str,
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), String> {
        let value = self.get(namespace, key)?;
        f(value.as_deref());
        Ok(())
    }
}

/// Why a plugin could not be loaded or instantiated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "invalid plugin name {0:?}: use 1 to 128 characters from A-Z a-z 0-9 . _ -, not starting with . or -"
    )]
    InvalidName(String),
    #[error("{path} is not a WebAssembly component: {reason}")]
    NotAComponent {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{path} does not implement the courier:plugin/consumer world: {reason}")]
    WrongWorld {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot set up the sandbox: {0}")]
    Sandbox(String),
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    #[error("wasmtime: {0}")]
    Wasmtime(String),
}

impl Error {
    /// Whether the same files may load later: the failure comes from the
    /// machine (a granted directory that does not exist yet, an I/O error),
    /// not from the plugin's bytes or manifest. Such loads are retried on
    /// every rescan; the others only when the files change.
    pub fn depends_on_environment(&self) -> bool {
        matches!(self, Error::Sandbox(_) | Error::Io { .. })
    }
}
