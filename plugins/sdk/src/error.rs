//! The one error type of the SDK: why a host call or an SDK helper failed.

use std::fmt;

use crate::bindings::courier::plugin::types;

/// Why a call into the host, or an SDK helper around one, failed.
///
/// Converting an `Error` into an [`Outcome`](crate::Outcome) (via `From`)
/// asks for a retry with the error text as the reason: that discards
/// whatever the handler staged so far, and is the safe default, since
/// retries run out into the dead-letter store anyway.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The plugin's manifest does not grant this capability (for example a
    /// publish to a topic missing from `[capabilities] publish`).
    AccessDenied,
    /// A host limit was exceeded (sizes, counts); the text says which.
    LimitExceeded(String),
    /// An argument was malformed (for example an invalid topic name).
    InvalidArgument(String),
    /// Any other host failure, such as a storage error; retrying may help.
    Host(String),
    /// A value could not be converted to or from JSON.
    Json(serde_json::Error),
    /// A `[config]` value could not be parsed into the requested type.
    InvalidConfig {
        /// The config key.
        key: String,
        /// The value as the manifest sets it.
        value: String,
        /// Why parsing failed.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AccessDenied => {
                f.write_str("access denied: the manifest does not grant this capability")
            }
            Error::LimitExceeded(what) => write!(f, "host limit exceeded: {what}"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Host(what) => write!(f, "host error: {what}"),
            Error::Json(e) => write!(f, "JSON: {e}"),
            Error::InvalidConfig { key, value, reason } => {
                write!(f, "invalid config `{key}` = {value:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Json(e) => Some(e),
            _ => None,
        }
    }
}

impl From<types::Error> for Error {
    fn from(e: types::Error) -> Self {
        match e {
            types::Error::AccessDenied => Error::AccessDenied,
            types::Error::LimitExceeded(what) => Error::LimitExceeded(what),
            types::Error::InvalidArgument(what) => Error::InvalidArgument(what),
            types::Error::Other(what) => Error::Host(what),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e)
    }
}
