//! Logging into the host's structured logs: `log::info!("{order} paid")`
//! and its siblings format like `format!`; the functions take a ready
//! string.
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

/// Formats and logs at trace level: `log::trace!("{x} happened")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        $crate::log::trace(&::std::format!($($arg)*))
    };
}

/// Formats and logs at debug level: `log::debug!("{x} happened")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        $crate::log::debug(&::std::format!($($arg)*))
    };
}

/// Formats and logs at info level: `log::info!("{x} happened")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::info(&::std::format!($($arg)*))
    };
}

/// Formats and logs at warn level: `log::warn!("{x} happened")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::log::warn(&::std::format!($($arg)*))
    };
}

/// Formats and logs at error level: `log::error!("{x} happened")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => {
        $crate::log::error(&::std::format!($($arg)*))
    };
}

pub use crate::{debug, error, info, trace, warn};
