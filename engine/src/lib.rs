//! Courier: a durable message queue whose consumers are sandboxed
//! WebAssembly component plugins.
//!
//! # Layout
//!
//! - [`storage`]: the durable log on fjall (topics, partitions,
//!   subscriptions, acks, retries, dead letters, subscriber state). The only
//!   module that touches fjall; knows nothing of Wasm or HTTP.
//!
//! See `ARCHITECTURE.md` at the repository root for the whole picture.

#![deny(clippy::unwrap_used)]

pub mod storage;
