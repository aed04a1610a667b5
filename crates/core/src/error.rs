//! `Error`: everything a storage backend can refuse or fail with, in terms
//! that do not depend on the backend.
//!
//! Callers map these to their own surface (HTTP statuses, plugin errors);
//! the variants are chosen so that mapping needs no string matching.

use std::path::PathBuf;

/// The storage seam's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A topic or subscriber name breaks the naming rules.
    #[error("invalid {kind} name {name:?}: {rule}")]
    InvalidName {
        kind: &'static str,
        name: String,
        rule: &'static str,
    },

    /// A caller-supplied value is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },

    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    #[error("no subscription of {subscriber:?} to topic {topic:?}")]
    UnknownSubscription { subscriber: String, topic: String },

    #[error("partition {partition} does not exist (topic {topic:?} has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    /// A topic exists with settings that conflict with the requested ones.
    #[error("topic {name:?} already exists with {existing} partitions (requested {requested})")]
    TopicConflict {
        name: String,
        existing: u32,
        requested: u32,
    },

    /// Appends are refused until space is freed; acknowledgements still work.
    #[error("storage is full: {0}")]
    StorageFull(String),

    /// Another process holds the data directory.
    #[error("data directory {0} is locked by another process")]
    Locked(PathBuf),

    /// An earlier write failed; the store refuses writes until it is reopened
    /// (reopening recovers everything that was acknowledged).
    #[error("storage failed earlier and refuses writes until restart: {0}")]
    Failed(String),

    /// The store is shutting down.
    #[error("storage is closed")]
    Closed,

    /// Stored bytes do not decode: a bug or a corrupted disk.
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },

    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A failure of the backend's own engine (fjall, NATS), by its message.
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// Shorthand used throughout the seam.
pub type Result<T, E = Error> = std::result::Result<T, E>;
