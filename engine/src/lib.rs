//! Courier: a durable message queue whose consumers are sandboxed
//! WebAssembly component plugins.
//!
//! # Layout
//!
//! - [`storage`]: the durable log on fjall (topics, partitions,
//!   subscriptions, acks, retries, dead letters, subscriber state). The only
//!   module that touches fjall; knows nothing of Wasm or HTTP.
//! - [`plugin`]: the Wasm host (wasmtime): the WIT contract's host side,
//!   sandboxing and limits, manifests, the plugin registry with hot reload.
//!   The only module that touches wasmtime.
//! - [`dispatch`]: workers that poll subscriptions, run plugins and settle
//!   outcomes; reconciles workers with the plugin set (boot = reload).
//! - [`api`]: the HTTP API (axum). The only module that knows HTTP/JSON.
//! - [`engine`]: wiring and graceful shutdown; what `main` and tests start.
//! - [`config`], [`metrics`], [`telemetry`], [`cli`]: the rest of the
//!   product around them.
//! - [`workload`]: the deterministic order generator behind
//!   `courier generate-orders`, `courier bench` and the demo.
//!
//! See `ARCHITECTURE.md` at the repository root for the whole picture.

#![deny(clippy::unwrap_used)]

pub mod api;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod engine;
pub mod metrics;
pub mod plugin;
pub mod storage;
pub mod telemetry;
pub mod workload;
