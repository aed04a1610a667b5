//! Settings of topics and subscriptions, with their defaults and the limits
//! that bound them. Every backend honours them the same way.

use std::time::Duration;

use crate::error::{Error, Result};

/// Default number of partitions of a topic (auto-created or created without
/// an explicit count): enough to spread work over a few cores while keeping
/// per-partition overhead (one LSM tree each) small.
pub const DEFAULT_PARTITIONS: u32 = 8;
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
    pub fn validate(&self) -> Result<()> {
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
    pub fn validate(&self) -> Result<()> {
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
