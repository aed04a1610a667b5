//! Prometheus metrics: counters and histograms updated by the dispatcher and
//! the API, plus a collector that reads the store's totals, lags and writer
//! latencies (fsyncs, commits) at scrape time (so nothing is double-counted
//! or goes stale).
//!
//! Hot paths touch only pre-resolved handles ([`PluginMetrics`]): a few
//! atomic adds per batch and one histogram observation per message, no label
//! lookups. An observation takes that histogram's own lock (prometheus-client
//! keeps a histogram behind a `RwLock`); only one plugin's workers share it,
//! and the hold is a bucket search and two additions.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use courier_core::{LATENCY_BUCKETS, LatencyStats, Storage};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginTopicLabels {
    plugin: String,
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

fn handler_histogram() -> Histogram {
    // 1 µs .. ~16 s
    Histogram::new(exponential_buckets(1e-6, 4.0, 13))
}

/// The engine's metrics.
pub struct Metrics {
    registry: Registry,
    published: Family<TopicLabels, Counter>,
    delivered: Family<PluginTopicLabels, Counter>,
    acked: Family<PluginTopicLabels, Counter>,
    retried: Family<PluginTopicLabels, Counter>,
    dead_lettered: Family<PluginTopicLabels, Counter>,
    filtered: Family<PluginTopicLabels, Counter>,
    traps: Family<PluginLabels, Counter>,
    handler_seconds: Family<PluginLabels, Histogram, fn() -> Histogram>,
    handler_cpu_seconds: Family<PluginLabels, CpuSeconds>,
}

/// A counter of CPU seconds.
pub type CpuSeconds = Counter<f64, AtomicU64>;

/// Counters of one (plugin, topic), resolved once per dispatch worker.
#[derive(Clone)]
pub struct PluginMetrics {
    pub delivered: Counter,
    pub acked: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub filtered: Counter,
    pub traps: Counter,
    pub handler_seconds: Histogram,
    /// CPU time of the dispatch thread while it ran the plugin's batches
    /// (guest code, host calls and staging; not polls or settles).
    pub handler_cpu_seconds: CpuSeconds,
}

impl Metrics {
    pub fn new(store: Arc<dyn Storage>) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("courier");
        let published = Family::default();
        let delivered = Family::default();
        let acked = Family::default();
        let retried = Family::default();
        let dead_lettered = Family::default();
        let filtered = Family::default();
        let traps = Family::default();
        let handler_seconds = Family::new_with_constructor(handler_histogram as fn() -> Histogram);
        let handler_cpu_seconds = Family::default();
        registry.register(
            "published",
            "Messages accepted from producers",
            published.clone(),
        );
        registry.register("delivered", "Messages handed to plugins", delivered.clone());
        registry.register(
            "plugin_acked",
            "Messages plugins acknowledged",
            acked.clone(),
        );
        registry.register(
            "plugin_retried",
            "Failed attempts (retry outcomes and traps)",
            retried.clone(),
        );
        registry.register(
            "plugin_dead_lettered",
            "Messages moved to dead letters",
            dead_lettered.clone(),
        );
        registry.register(
            "filtered",
            "Messages skipped by a subscription's header filter",
            filtered.clone(),
        );
        registry.register("plugin_traps", "Plugin calls that trapped", traps.clone());
        registry.register(
            "handler_seconds",
            "Time a plugin took per message",
            handler_seconds.clone(),
        );
        registry.register(
            "handler_cpu_seconds",
            "CPU time spent running a plugin's batches (guest code, host calls, staging)",
            handler_cpu_seconds.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store }));
        registry.register_collector(Box::new(ProcessCollector));
        Arc::new(Metrics {
            registry,
            published,
            delivered,
            acked,
            retried,
            dead_lettered,
            filtered,
            traps,
            handler_seconds,
            handler_cpu_seconds,
        })
    }

    pub fn published(&self, topic: &str, count: u64) {
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        self.published.get_or_create(&labels).inc_by(count);
    }

    /// Handles for one dispatch worker.
    pub fn plugin(&self, plugin: &str, topic: &str) -> PluginMetrics {
        let pair = PluginTopicLabels {
            plugin: plugin.to_owned(),
            topic: topic.to_owned(),
        };
        let single = PluginLabels {
            plugin: plugin.to_owned(),
        };
        PluginMetrics {
            delivered: self.delivered.get_or_create_owned(&pair),
            acked: self.acked.get_or_create_owned(&pair),
            retried: self.retried.get_or_create_owned(&pair),
            dead_lettered: self.dead_lettered.get_or_create_owned(&pair),
            filtered: self.filtered.get_or_create_owned(&pair),
            traps: self.traps.get_or_create_owned(&single),
            handler_seconds: self.handler_seconds.get_or_create_owned(&single),
            handler_cpu_seconds: self.handler_cpu_seconds.get_or_create_owned(&single),
        }
    }

    /// CPU seconds `plugin`'s batches have taken since the engine started
    /// (0 before its first batch).
    pub fn handler_cpu_seconds(&self, plugin: &str) -> f64 {
        let labels = PluginLabels {
            plugin: plugin.to_owned(),
        };
        self.handler_cpu_seconds
            .get(&labels)
            .map_or(0.0, |counter| counter.get())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        out
    }
}

/// The engine process itself, read from `/proc/self` at scrape time: its
/// CPU time, resident memory, open file descriptors and threads
/// (`courier_process_*`), and the build (`courier_build_info`).
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (fixed at 100 on
/// Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let build = ConstGauge::new(1i64);
        let labels = [("version", env!("CARGO_PKG_VERSION"))];
        let mut metric = encoder.encode_descriptor(
            "build_info",
            "The running build (always 1)",
            None,
            build.metric_type(),
        )?;
        build.encode(metric.encode_family(&labels)?)?;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name, which sits in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let field = |index: usize| {
            fields
                .get(index)
                .and_then(|value| value.parse::<f64>().ok())
        };
        // utime and stime are fields 14 and 15 of the file, 11 and 12 here.
        if let (Some(user), Some(system)) = (field(11), field(12)) {
            let cpu = ConstCounter::new((user + system) / CLOCK_TICKS_PER_SECOND);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time the engine process used (user and system)",
                None,
                cpu.metric_type(),
            )?)?;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let status_value = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<i64>().ok())
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|entries| entries.count() as i64)
            .ok();
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory of the engine process",
                status_value("VmRSS:").map(|kb| kb * 1024),
            ),
            (
                "process_open_fds",
                "File descriptors the engine process holds open",
                open_fds,
            ),
            (
                "process_threads",
                "Threads of the engine process",
                status_value("Threads:"),
            ),
        ] {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

/// Reads the store at scrape time.
#[derive(Debug)]
struct StoreCollector {
    store: Arc<dyn Storage>,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.store.stats();
        let totals = [
            (
                "storage_appended",
                "Messages appended to the log (including plugin publishes)",
                stats.appended,
            ),
            ("storage_acked", "Acknowledgements committed", stats.acked),
            ("storage_retried", "Redeliveries scheduled", stats.retried),
            (
                "storage_dead_lettered",
                "Messages moved to dead letters",
                stats.dead_lettered,
            ),
            (
                "storage_expired",
                "Messages removed by retention before a subscription handled them",
                stats.expired,
            ),
            (
                "storage_group_commits",
                "Atomic batches committed by the writer",
                stats.group_commits,
            ),
            (
                "storage_state_checkpoints",
                "Checkpoints that copied the state changelog into the state keyspace",
                stats.state_checkpoints,
            ),
        ];
        for (name, help, value) in totals {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            (
                "storage_bytes",
                "Bytes the database uses on disk",
                stats.disk_bytes as i64,
            ),
            (
                "storage_write_buffer_bytes",
                "Bytes in memtables not yet flushed",
                stats.write_buffer_bytes as i64,
            ),
            (
                "storage_journal_files",
                "Journal files not yet released by flushes",
                stats.journal_files as i64,
            ),
            (
                "storage_flushes_queued",
                "Memtables waiting to be flushed",
                stats.flushes_queued as i64,
            ),
            (
                "storage_state_dirty_bytes",
                "State written since the last checkpoint, held in memory until the next",
                stats.state_dirty_bytes as i64,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        for (name, help, latency) in [
            (
                "storage_fsync_seconds",
                "Latency of the writer's fsyncs",
                &stats.fsync,
            ),
            (
                "storage_commit_seconds",
                "Latency of the writer's batch commits into fjall, including waits for fjall's locks",
                &stats.commit,
            ),
            (
                "storage_write_stall_seconds",
                "Waits of the writer for memtable flushes, when the unflushed memtables were over their bound",
                &stats.write_stalls,
            ),
        ] {
            encode_latency(&mut encoder, name, help, latency)?;
        }
        encode_subscriptions(&mut encoder, self.store.as_ref())
    }
}

fn encode_latency(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    latency: &LatencyStats,
) -> Result<(), std::fmt::Error> {
    let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
        .iter()
        .copied()
        .zip(latency.buckets.iter().copied())
        .collect();
    buckets.push((f64::MAX, latency.buckets.last().copied().unwrap_or(0)));
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Histogram,
    )?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        latency.seconds,
        latency.count,
        &buckets,
        None,
    )
}

fn encode_subscriptions(
    encoder: &mut DescriptorEncoder,
    store: &dyn Storage,
) -> Result<(), std::fmt::Error> {
    let subscriptions = store.subscriptions();
    type Gauge = (
        &'static str,
        &'static str,
        fn(&courier_core::SubscriptionInfo) -> u64,
    );
    let gauges: [Gauge; 4] = [
        (
            "subscription_lag",
            "Messages a subscription has not handled yet",
            |s| s.lag,
        ),
        (
            "subscription_in_flight",
            "Messages handed out and not settled",
            |s| s.in_flight,
        ),
        (
            "subscription_scheduled",
            "Retries and replays waiting for their time",
            |s| s.scheduled,
        ),
        (
            "subscription_dead_letters",
            "Dead letters stored for a subscription",
            |s| s.dead_letters,
        ),
    ];
    for (name, help, value) in gauges {
        let mut metric = encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for sub in &subscriptions {
            let labels = PluginTopicLabels {
                plugin: sub.subscriber.clone(),
                topic: sub.topic.clone(),
            };
            let gauge = ConstGauge::new(value(sub) as i64);
            gauge.encode(metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}
