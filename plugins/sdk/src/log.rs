//! Logging into the host's structured logs.
//!
//! The host tags every line with the plugin's name and the topic, partition
//! and offset of the message being handled. Overlong lines are truncated and
//! lines may be dropped (e.g. below the host's log level): never rely on
//! logs for data. Logging is not staged; lines are written even if the
//! message is retried.

use crate::bindings::courier::plugin::logging;
pub use crate::bindings::courier::plugin::logging::Level;

/// Logs `message` at `level`, with `context` naming the part of the plugin
/// that speaks (may be empty).
pub fn log(level: Level, context: &str, message: &str) {
    logging::log(level, context, message);
}

/// Logs `message` at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, "", message);
}

/// Logs `message` at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, "", message);
}

/// Logs `message` at info level.
pub fn info(message: &str) {
    log(Level::Info, "", message);
}

/// Logs `message` at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, "", message);
}

/// Logs `message` at error level: something an operator must look at.
pub fn error(message: &str) {
    log(Level::Error, "", message);
}
