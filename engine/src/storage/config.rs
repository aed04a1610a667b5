//! Settings of the store, of topics and of subscriptions, with their
//! defaults and the limits that bound them.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Result};

/// Default number of partitions of a topic (auto-created or created without
/// an explicit count): enough to spread work over a few cores while keeping
/// per-partition overhead (one LSM tree each) small.
pub const DEFAULT_PARTITIONS: u32 = 8;
/// Most fjall background threads a store accepts.
pub const MAX_BACKGROUND_THREADS: usize = 8;
/// Upper bound on partitions per topic: each is its own LSM tree with its own
/// memtable, so thousands would waste memory and file handles.
pub const MAX_PARTITIONS: u32 = 256;
/// Default largest message (encoded key + headers + payload).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default retention by age: a week, like most brokers.
pub const DEFAULT_RETENTION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default attempts before a message is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Upper bound on `max_attempts`: beyond this, retrying is a bug, not a policy.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// Default first retry delay.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Default cap on the retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest delay a consumer may ask for explicitly.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Default bound on how far an unordered subscription may run ahead of its
/// committed cursor: bounds the durable acked-offset set and its memory.
pub const DEFAULT_MAX_UNACKED: u64 = 10_000;
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

/// How long a topic keeps messages that not every subscription has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages older than this are removed even if a subscription lags
    /// (and counted as expired for it). `None`: no age limit.
    pub max_age: Option<Duration>,
    /// Total size above which the oldest messages are removed, likewise.
    /// `None`: no size limit.
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(DEFAULT_RETENTION_AGE),
            max_bytes: None,
        }
    }
}

/// Settings of one topic, fixed at creation (retention may change later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    pub partitions: u32,
    pub retention: Retention,
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            partitions: DEFAULT_PARTITIONS,
            retention: Retention::default(),
        }
    }
}

impl TopicSettings {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(Error::InvalidArgument(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {}",
                self.partitions
            )));
        }
        if self.retention.max_age == Some(Duration::ZERO) || self.retention.max_bytes == Some(0) {
            return Err(Error::InvalidArgument(
                "retention limits must be positive (leave them unset for no limit)".into(),
            ));
        }
        Ok(())
    }
}

/// Delivery order of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// At most one batch in flight per partition; a failed message blocks its
    /// partition until it is acknowledged or dead-lettered, so messages of a
    /// key are handled strictly in order.
    Ordered,
    /// Many batches in flight; messages are acknowledged individually and a
    /// failed one does not hold back the others.
    Unordered,
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest retained message.
    Earliest,
    /// Only messages appended after the subscription was created.
    Latest,
}

/// Exponential backoff between attempts: `base * 2^(attempt-1)`, capped at
/// `max`, with jitter that keeps between half and all of the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: DEFAULT_BACKOFF_BASE,
            max: DEFAULT_BACKOFF_MAX,
        }
    }
}

impl Backoff {
    /// The delay before attempt `failed_attempts + 1`, jittered.
    pub fn delay(&self, failed_attempts: u32) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(32);
        let full = self
            .base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        // "Equal jitter": keep half, randomise the other half, so retries of
        // many messages spread out without ever retrying immediately.
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Settings of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionSettings {
    pub mode: DeliveryMode,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Only used when the subscription is created.
    pub start: StartPosition,
    /// Unordered only: how far delivery may run ahead of the committed cursor.
    pub max_unacked: u64,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            mode: DeliveryMode::Ordered,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            start: StartPosition::Earliest,
            max_unacked: DEFAULT_MAX_UNACKED,
        }
    }
}

impl SubscriptionSettings {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {}",
                self.max_attempts
            )));
        }
        if self.backoff.base.is_zero() || self.backoff.base > self.backoff.max {
            return Err(Error::InvalidArgument(
                "backoff base must be positive and at most backoff max".into(),
            ));
        }
        if self.backoff.max > MAX_RETRY_DELAY {
            return Err(Error::InvalidArgument(format!(
                "backoff max must be at most {}s",
                MAX_RETRY_DELAY.as_secs()
            )));
        }
        if self.max_unacked == 0 {
            return Err(Error::InvalidArgument(
                "max_unacked must be positive".into(),
            ));
        }
        Ok(())
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

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = backoff.delay(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff.delay(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let capped = backoff.delay(40);
            assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_secs(1));
        }
    }

    #[test]
    fn settings_validation_rejects_nonsense() {
        let bad_topic = TopicSettings {
            partitions: 0,
            ..TopicSettings::default()
        };
        assert!(bad_topic.validate().is_err());
        let bad_sub = SubscriptionSettings {
            max_attempts: 0,
            ..SubscriptionSettings::default()
        };
        assert!(bad_sub.validate().is_err());
        assert!(SubscriptionSettings::default().validate().is_ok());
        assert!(TopicSettings::default().validate().is_ok());
    }
}
