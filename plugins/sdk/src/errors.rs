//! The one error type of the SDK: why a host call or an SDK helper failed.

use std::fmt;

use crate::bindings::courier::plugin::types;

/// Why a call into the host, or an SDK helper around one, failed.
///
/// An `Error` returned from [`Plugin::handle`](crate::Plugin::handle)
/// (usually through `?`) becomes an [`Outcome`](crate::Outcome): a retry
/// with the error text as the reason, which discards whatever the handler
/// staged so far and is the safe default (retries run out into the
/// dead-letter store anyway), except for [`Error::Permanent`], which
/// dead-letters the message at once. Mark an error permanent with
/// [`Error::permanent`] or [`ResultExt::permanent`] when retrying cannot
/// help, e.g. a payload that does not parse.
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
    /// Retrying cannot help (a malformed message, say): dead-letter it
    /// with this reason.
    Permanent(String),
    /// Retrying may help (an operator fixing a config, a downstream system
    /// coming back): retry with this reason.
    Transient(String),
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
            Error::Permanent(reason) | Error::Transient(reason) => f.write_str(reason),
            Error::InvalidConfig { key, value, reason } => {
                write!(f, "invalid config `{key}` = {value:?}: {reason}")
            }
        }
    }
}

impl Error {
    /// An error that dead-letters the message, with `reason` (any error or
    /// text) as the dead letter's reason.
    pub fn permanent(reason: impl fmt::Display) -> Error {
        Error::Permanent(reason.to_string())
    }

    /// An error that retries the message, with `reason` as the retry's
    /// reason, word for word.
    pub fn transient(reason: impl fmt::Display) -> Error {
        Error::Transient(reason.to_string())
    }

    /// Whether retrying cannot help: the message is dead-lettered.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Permanent(_))
    }
}

/// `?`-friendly marking of errors.
pub trait ResultExt<T> {
    /// Makes any error permanent (dead-letter the message, the error's text
    /// as the reason): `message.json::<Order>().permanent()?`.
    fn permanent(self) -> Result<T, Error>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, Error> {
        self.map_err(Error::permanent)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Outcome, RetryRequest};

    fn reason(outcome: Outcome) -> (&'static str, String) {
        match outcome {
            Outcome::Ack => ("ack", String::new()),
            Outcome::Retry(RetryRequest { reason, .. }) => ("retry", reason),
            Outcome::DeadLetter(reason) => ("dead-letter", reason),
        }
    }

    #[test]
    fn permanent_errors_dead_letter_and_the_rest_retry_with_their_text() {
        let parse: Result<u32, _> = "x".parse::<u32>();
        let permanent = parse.permanent().unwrap_err();
        assert!(permanent.is_permanent());
        assert_eq!(
            reason(Outcome::from(permanent)),
            ("dead-letter", "invalid digit found in string".into())
        );
        assert_eq!(
            reason(Outcome::from(Error::transient("config is broken"))),
            ("retry", "config is broken".into())
        );
        assert_eq!(
            reason(Outcome::from(Error::Host("disk on fire".into()))),
            ("retry", "host error: disk on fire".into())
        );
    }
}
