//! Settings of the fjall store as a whole (directory, fsync policy, disk
//! limits, caches); topic and subscription settings are `courier-core`'s.

use std::path::PathBuf;
use std::time::Duration;

pub use courier_core::settings::*;

use super::error::{Error, Result};

/// Most fjall background threads a store accepts.
pub const MAX_BACKGROUND_THREADS: usize = 8;
/// Default memory budget of the block cache.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Default free disk space below which appends are refused (acks still work).
pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 256 * 1024 * 1024;

/// When appends and acknowledgements reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync (`fdatasync`) every group commit before answering: nothing that
    /// was confirmed can be lost, even on power failure. The default.
    Always,
    /// Answer after the write reached the OS; fsync at most this often.
    /// A power failure loses at most the last interval; a process crash
    /// loses nothing.
    Interval(Duration),
    /// Never fsync explicitly (the OS writes back when it likes).
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = Error;

    /// Parses `always`, `never` or `interval:<ms>`.
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let ms = text
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "fsync policy {text:?}: expected \"always\", \"never\" or \"interval:<ms>\""
                        ))
                    })?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Settings of the whole store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the fjall database; created if missing.
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Largest accepted message (encoded); bigger ones are refused.
    pub max_message_bytes: usize,
    /// Settings of topics created implicitly by a first publish.
    pub default_topic: TopicSettings,
    /// Refuse appends while the database is larger than this.
    pub max_disk_bytes: Option<u64>,
    /// Refuse appends while the file system has less free space than this.
    pub min_free_disk_bytes: u64,
    /// Block cache size.
    pub cache_bytes: u64,
    /// How often retention and disk checks run.
    pub maintenance_interval: Duration,
    /// fjall's background threads (flushes and compactions); `None`:
    /// fjall's default, one per core up to 4. The default is one: with
    /// more, fjall 3.1's first worker spins while another compacts (see
    /// ARCHITECTURE.md, "Memory"); one queues flushes behind compactions
    /// instead, which the write-buffer bound keeps in check.
    pub background_threads: Option<usize>,
    /// A state checkpoint starts once this many changelog bytes and as
    /// many bytes of state held only in memory piled up, or
    /// `checkpoint::REPLAY_FACTOR` times this many changelog bytes (see
    /// `checkpoint.rs`). Bounds the state held only in memory and, 8x
    /// looser, the changelog a reopen replays.
    pub state_checkpoint_bytes: u64,
}

/// Default of [`StoreConfig::state_checkpoint_bytes`]: the values written
/// since the last checkpoint stay in memory (at most about this much), and
/// a reopen replays at most about nine times this (a reopen after 250,000
/// fan-out orders without a checkpoint took 0.84 s to healthy).
pub const DEFAULT_STATE_CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// Bounds an operator may set [`StoreConfig::state_checkpoint_bytes`] to:
/// below 64 KiB checkpoints would run nearly all the time; above 1 GiB
/// the state held in memory and a reopen's replay grow too large.
pub const MIN_STATE_CHECKPOINT_BYTES: u64 = 64 * 1024;
pub const MAX_STATE_CHECKPOINT_BYTES: u64 = 1024 * 1024 * 1024;

impl StoreConfig {
    /// Durable defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            default_topic: TopicSettings::default(),
            max_disk_bytes: None,
            min_free_disk_bytes: DEFAULT_MIN_FREE_DISK_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
            maintenance_interval: Duration::from_secs(5),
            background_threads: Some(1),
            state_checkpoint_bytes: DEFAULT_STATE_CHECKPOINT_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_the_documented_forms() {
        assert_eq!(
            "always".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        assert_eq!("never".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Never);
        assert_eq!(
            "interval:250".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(250))
        );
        for bad in ["", "sometimes", "interval:", "interval:0", "interval:-3"] {
            assert!(
                bad.parse::<FsyncPolicy>().is_err(),
                "{bad:?} must be rejected"
            );
        }
    }
}
