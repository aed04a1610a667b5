//! Where the cluster is, how to reach it and how topics are stored on it.

use std::time::Duration;

use courier_core::{Error, Result, TopicSettings};

/// The default cluster (group) name: engines with the same one share work.
pub const DEFAULT_CLUSTER: &str = "courier";
/// How long a dead engine keeps its partitions: the server moves a
/// consumer's pin after this long without a pull from its holder.
pub const DEFAULT_FAILOVER: Duration = Duration::from_secs(5);

/// Where the cluster is and how topics are stored on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// NATS server URLs (`nats://host:port`); any of the cluster's.
    pub servers: Vec<String>,
    /// A token the servers require, if any.
    pub token: Option<String>,
    /// Replicas of every stream (3: a quorum survives one server's loss).
    pub replicas: usize,
    /// Engines with the same cluster name share every subscription's
    /// partitions; another name is another, independent set of cursors.
    pub cluster: String,
    /// This engine's name in the cluster (the NATS connection's name).
    pub engine: String,
    /// How long a partition stays with an engine that stopped pulling
    /// (died, lost its connection) before another takes it over; also the
    /// redelivery timeout of unacknowledged messages.
    pub failover: Duration,
    /// Settings of topics created by a first publish.
    pub default_topic: TopicSettings,
}

impl JetStreamConfig {
    /// A cluster at `servers`: R3 streams, the default cluster, failover
    /// and topic settings.
    pub fn new(servers: Vec<String>) -> JetStreamConfig {
        JetStreamConfig {
            servers,
            token: None,
            replicas: 3,
            cluster: DEFAULT_CLUSTER.to_owned(),
            engine: format!("courier-{}", std::process::id()),
            failover: DEFAULT_FAILOVER,
            default_topic: TopicSettings::default(),
        }
    }

    /// Refuses what cannot work, with what to change.
    pub fn validate(&self) -> Result<()> {
        let invalid = |text: String| Err(Error::InvalidArgument(format!("jetstream: {text}")));
        if self.servers.is_empty() {
            return invalid("no servers configured (set [jetstream] servers)".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!(
                "replicas must be between 1 and 5, got {}",
                self.replicas
            ));
        }
        if self.cluster.is_empty()
            || self.cluster.len() > 32
            || !self
                .cluster
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        {
            return invalid(format!(
                "cluster name {:?} must be 1-32 letters, digits or '_'",
                self.cluster
            ));
        }
        if self.failover < Duration::from_secs(1) || self.failover > Duration::from_secs(300) {
            return invalid(format!(
                "failover must be between 1s and 300s, got {:?}",
                self.failover
            ));
        }
        self.default_topic.validate()
    }
}
