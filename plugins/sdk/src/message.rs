//! Helpers on the generated `message` and `outcome` types.
//!
//! The types are the ones the bindings generate, so a plugin receives the
//! message exactly as the host lowered it, without a copy.

use serde::Deserialize;

use crate::Error;
pub use crate::bindings::courier::plugin::types::{Message, Outcome, RetryRequest};

impl Message {
    /// Parses the payload as JSON into `T`.
    ///
    /// `T` may borrow from the payload (`&str` or `#[serde(borrow)] Cow<str>`
    /// fields), which avoids copying strings. The error says what is wrong
    /// and where, e.g. ``missing field `user_id` at line 1 column 40``.
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        crate::from_json(&self.payload)
    }

    /// The payload as text, or `None` if it is not valid UTF-8.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// The partitioning key as text, or `None` if the message has no key or
    /// the key is not valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|key| std::str::from_utf8(key).ok())
    }

    /// The value of the first header named exactly `name` (names are
    /// case-sensitive), or `None` if there is none.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Outcome {
    /// Processed: commit the staged effects and never deliver it again.
    pub fn ack() -> Self {
        Outcome::Ack
    }

    /// Not processed now: discard the staged effects and deliver the message
    /// again after the subscription's exponential backoff. After
    /// `max_attempts` the message goes to the dead-letter store with `reason`.
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry(RetryRequest {
            reason: reason.into(),
            delay_ms: None,
        })
    }

    /// Like [`retry`](Outcome::retry), but waits at least `delay_ms`
    /// milliseconds before the next attempt instead of the backoff.
    pub fn retry_after(reason: impl Into<String>, delay_ms: u32) -> Self {
        Outcome::Retry(RetryRequest {
            reason: reason.into(),
            delay_ms: Some(delay_ms),
        })
    }

    /// Will never succeed (e.g. malformed): discard the staged effects and
    /// move the message to the dead-letter store with `reason`, at once.
    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Outcome::DeadLetter(reason.into())
    }
}

/// What a handler's error means: [`Error::Permanent`] dead-letters, every
/// other error retries, its text the reason either way.
impl From<Error> for Outcome {
    fn from(e: Error) -> Self {
        match e {
            Error::Permanent(reason) => Outcome::dead_letter(reason),
            Error::Transient(reason) => Outcome::retry(reason),
            other => Outcome::retry(other.to_string()),
        }
    }
}
