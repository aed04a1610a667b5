//! The fjall backend's error: the seam's variants plus fjall's own errors,
//! converted to `courier_core::Error` at the seam.
//!
//! Callers map these to their own surface (HTTP statuses, plugin errors);
//! the variants are chosen so that mapping needs no string matching.

use std::path::PathBuf;

/// The storage layer's error.
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

    #[error("fjall error: {0}")]
    Fjall(fjall::Error),
}

impl From<fjall::Error> for Error {
    fn from(error: fjall::Error) -> Self {
        match error {
            fjall::Error::Io(io) => Error::Io(io),
            other => Error::Fjall(other),
        }
    }
}

/// Shorthand used throughout `storage`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The seam's backend-neutral error: the same variants, fjall's own
/// errors by their message.
impl From<Error> for courier_core::Error {
    fn from(error: Error) -> Self {
        use courier_core::Error as Core;
        match error {
            Error::InvalidName { kind, name, rule } => Core::InvalidName { kind, name, rule },
            Error::InvalidArgument(text) => Core::InvalidArgument(text),
            Error::MessageTooLarge { size, limit } => Core::MessageTooLarge { size, limit },
            Error::UnknownTopic(topic) => Core::UnknownTopic(topic),
            Error::UnknownSubscription { subscriber, topic } => {
                Core::UnknownSubscription { subscriber, topic }
            }
            Error::UnknownPartition {
                topic,
                partition,
                partitions,
            } => Core::UnknownPartition {
                topic,
                partition,
                partitions,
            },
            Error::TopicConflict {
                name,
                existing,
                requested,
            } => Core::TopicConflict {
                name,
                existing,
                requested,
            },
            Error::StorageFull(reason) => Core::StorageFull(reason),
            Error::Locked(dir) => Core::Locked(dir),
            Error::Failed(reason) => Core::Failed(reason),
            Error::Closed => Core::Closed,
            Error::Corrupt { what, detail } => Core::Corrupt { what, detail },
            Error::Io(io) => Core::Io(io),
            Error::Fjall(fjall) => Core::Backend(fjall.to_string()),
        }
    }
}

/// What `courier-core` refuses (settings, names) in this crate's terms.
impl From<courier_core::Error> for Error {
    fn from(error: courier_core::Error) -> Self {
        use courier_core::Error as Core;
        match error {
            Core::InvalidName { kind, name, rule } => Error::InvalidName { kind, name, rule },
            Core::InvalidArgument(text) => Error::InvalidArgument(text),
            Core::MessageTooLarge { size, limit } => Error::MessageTooLarge { size, limit },
            Core::UnknownTopic(topic) => Error::UnknownTopic(topic),
            Core::UnknownSubscription { subscriber, topic } => {
                Error::UnknownSubscription { subscriber, topic }
            }
            Core::UnknownPartition {
                topic,
                partition,
                partitions,
            } => Error::UnknownPartition {
                topic,
                partition,
                partitions,
            },
            Core::TopicConflict {
                name,
                existing,
                requested,
            } => Error::TopicConflict {
                name,
                existing,
                requested,
            },
            Core::StorageFull(reason) => Error::StorageFull(reason),
            Core::Locked(dir) => Error::Locked(dir),
            Core::Failed(reason) => Error::Failed(reason),
            Core::Closed => Error::Closed,
            Core::Corrupt { what, detail } => Error::Corrupt { what, detail },
            Core::Io(io) => Error::Io(io),
            Core::Backend(reason) => Error::Failed(reason),
        }
    }
}
