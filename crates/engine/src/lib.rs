//! Courier's engine: configuration and the wiring of the layers. This is
//! what `courier serve`, an embedding application and the tests start.
//!
//! # Layout
//!
//! - [`engine`]: [`start`] and [`run`]: opens the storage backend, loads
//!   the plugins, starts dispatch and the HTTP API, and shuts them down in
//!   the safe order.
//! - [`config`]: defaults < file < environment and flags.
//! - [`telemetry`]: logging setup.
//!
//! The layers themselves are crates of their own, re-exported here for
//! embedders: [`core`] (domain types and the storage seam),
//! [`store`] (the embedded fjall backend), [`plugin`] (the Wasm host),
//! [`dispatch`], [`api`] (HTTP) and [`metrics`]. See `ARCHITECTURE.md` at
//! the repository root for the whole picture.

#![deny(clippy::unwrap_used)]

pub mod config;
pub mod engine;
pub mod telemetry;

pub use courier_api as api;
pub use courier_core as core;
pub use courier_dispatch as dispatch;
pub use courier_metrics as metrics;
pub use courier_plugin_host as plugin;
pub use courier_store_fjall as store;
pub use engine::{RunningEngine, StartError, run, start};
