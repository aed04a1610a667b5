//! The plugin host's tests, in one binary: the real engine (port 0, a
//! temporary directory) or the plugin API, always with the compiled
//! components of `plugins/fixtures/*`.
//!
//! - [`fixtures`]: what the host does with each outcome and failure a
//!   plugin can produce (ack, retry, dead-letter, trap, deadline, memory
//!   cap, staged effects).
//! - [`staging`]: staging and read-your-writes through
//!   `PluginInstance::handle` directly.
//! - [`sandbox`]: what a plugin may touch without and with capabilities.
//! - [`rejects`]: files that are not plugins of the `consumer` world.
//! - [`manifests`]: manifest errors name the file and the key.
//! - [`hot_reload`]: adding, replacing, breaking, removing and re-adding a
//!   plugin in the watched directory while the engine runs.

mod fixtures;
mod hot_reload;
mod manifests;
mod rejects;
mod sandbox;
mod staging;
mod support;
