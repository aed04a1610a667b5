//! The plugin manifest: `NAME.toml` beside `NAME.wasm`.
//!
//! Every key is optional (the defaults are documented in
//! `plugins/README.md`); unknown keys are an error that names the file and
//! the key, so a typo never silently becomes a default. Values are checked
//! against the limits below when the manifest is read, so a bad manifest is
//! rejected before its plugin version could replace a working one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use courier_core::{
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, MAX_BATCH,
};

/// Default memory cap of one instance.
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// Largest memory cap a manifest may ask for.
pub const MAX_MEMORY_MIB: u32 = 4096;
/// Default wall-clock deadline of one `handle` call.
pub const DEFAULT_DEADLINE_MS: u64 = 5_000;
/// Longest deadline a manifest may ask for.
pub const MAX_DEADLINE_MS: u64 = 600_000;
/// Default messages per batch.
pub const DEFAULT_BATCH_SIZE: u32 = 256;
/// Most workers per partition of an unordered subscription.
pub const MAX_CONCURRENCY: u32 = 64;
/// Most subscriptions one plugin may declare.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Most `[config]` entries, and the longest key or value.
pub const MAX_CONFIG_ENTRIES: usize = 256;
pub const MAX_CONFIG_VALUE_BYTES: usize = 64 * 1024;
/// Largest manifest file.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

/// A plugin's manifest, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What it consumes. Empty in the file = the topic named like the plugin.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionSpec>,
    #[serde(default)]
    pub delivery: DeliverySpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Free-form strings for the plugin (`config` capability).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// What becomes of the plugin's log lines.
    #[serde(default)]
    pub logging: LoggingSpec,
}

/// Severity of a guest log line, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevelSpec {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// `[logging]`: which of the plugin's lines the host keeps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSpec {
    /// Lines below this level are dropped before they reach the engine's
    /// log (whose own filter applies after): `"warn"` mutes a plugin's
    /// routine INFO lines.
    pub level: LogLevelSpec,
    /// Most lines one instance logs per second; the rest are dropped and
    /// counted in a warning once the second is over. 0: no limit.
    pub max_lines_per_second: u32,
}

/// Default of [`LoggingSpec::max_lines_per_second`]: room for a line per
/// message at a brisk pace, not for a log storm.
pub const DEFAULT_MAX_LOG_LINES_PER_SECOND: u32 = 100;

impl Default for LoggingSpec {
    fn default() -> Self {
        LoggingSpec {
            level: LogLevelSpec::Trace,
            max_lines_per_second: DEFAULT_MAX_LOG_LINES_PER_SECOND,
        }
    }
}

/// One topic the plugin consumes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    pub topic: String,
    /// Deliver only messages carrying all these headers; the others are
    /// acknowledged for this plugin without calling it.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryModeSpec {
    Ordered,
    Unordered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartSpec {
    Earliest,
    Latest,
}

/// How long an instance lives (see `plugin::instance` for the figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceStrategy {
    /// One instance serves batch after batch until it traps.
    Reused,
    /// A fresh instance for every batch: no state survives between batches.
    PerBatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySpec {
    pub mode: DeliveryModeSpec,
    pub batch_size: u32,
    pub max_attempts: u32,
    pub start: StartSpec,
    /// Workers per partition (unordered only).
    pub concurrency: u32,
    pub instance: InstanceStrategy,
    pub backoff: BackoffSpec,
}

impl Default for DeliverySpec {
    fn default() -> Self {
        DeliverySpec {
            mode: DeliveryModeSpec::Ordered,
            batch_size: DEFAULT_BATCH_SIZE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            start: StartSpec::Earliest,
            concurrency: 1,
            instance: InstanceStrategy::Reused,
            backoff: BackoffSpec::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSpec {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        BackoffSpec {
            base_ms: DEFAULT_BACKOFF_BASE.as_millis() as u64,
            max_ms: DEFAULT_BACKOFF_MAX.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    pub memory_mib: u32,
    pub deadline_ms: u64,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            memory_mib: DEFAULT_MEMORY_MIB,
            deadline_ms: DEFAULT_DEADLINE_MS,
        }
    }
}

/// What the sandbox lets the plugin do beyond the Courier contract.
/// Everything is denied by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// Topics it may publish to; `"*"` = any.
    pub publish: Vec<String>,
    /// Host environment variables it may read.
    pub env: Vec<String>,
    /// Host directories it may read, mounted at the same path.
    pub read_dirs: Vec<PathBuf>,
    /// Outgoing network (TCP/UDP, name lookup).
    pub network: bool,
    /// stdout/stderr go to the host's.
    pub stdio: bool,
}

impl Capabilities {
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish
            .iter()
            .any(|allowed| allowed == "*" || allowed == topic)
    }
}

/// A manifest that cannot be used, with the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest {path}: {message}")]
pub struct ManifestError {
    pub path: PathBuf,
    pub message: String,
}

impl Manifest {
    /// The manifest of a plugin that has no `NAME.toml`.
    pub fn default_for(name: &str) -> Manifest {
        Manifest {
            subscriptions: vec![SubscriptionSpec {
                topic: name.to_owned(),
                headers: BTreeMap::new(),
            }],
            delivery: DeliverySpec::default(),
            limits: LimitsSpec::default(),
            capabilities: Capabilities::default(),
            config: BTreeMap::new(),
            logging: LoggingSpec::default(),
        }
    }

    /// Parses and validates `text`, read from `path`, for plugin `name`.
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let error = |message: String| ManifestError {
            path: path.to_owned(),
            message,
        };
        let mut manifest: Manifest = toml::from_str(text)
            .map_err(|e| error(e.message().to_owned() + &span_hint(text, e.span())))?;
        if manifest.subscriptions.is_empty() {
            manifest.subscriptions = Manifest::default_for(name).subscriptions;
        }
        manifest.validate().map_err(error)?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if self.subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(format!("at most {MAX_SUBSCRIPTIONS} subscriptions"));
        }
        let mut topics = std::collections::BTreeSet::new();
        for subscription in &self.subscriptions {
            courier_core::validate_name("topic", &subscription.topic)
                .map_err(|e| format!("subscriptions: {e}"))?;
            if !topics.insert(&subscription.topic) {
                return Err(format!(
                    "subscriptions: topic {:?} is listed twice",
                    subscription.topic
                ));
            }
        }
        for topic in &self.capabilities.publish {
            if topic != "*" {
                courier_core::validate_name("topic", topic)
                    .map_err(|e| format!("capabilities.publish: {e}"))?;
            }
        }
        self.delivery.validate()?;
        self.limits.validate()?;
        if self.config.len() > MAX_CONFIG_ENTRIES {
            return Err(format!("config: at most {MAX_CONFIG_ENTRIES} entries"));
        }
        if let Some((key, _)) = self.config.iter().find(|(key, value)| {
            key.len() > MAX_CONFIG_VALUE_BYTES || value.len() > MAX_CONFIG_VALUE_BYTES
        }) {
            return Err(format!(
                "config.{key}: longer than {MAX_CONFIG_VALUE_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

impl DeliverySpec {
    fn validate(&self) -> Result<(), String> {
        in_range(
            "delivery.batch_size",
            self.batch_size.into(),
            1,
            MAX_BATCH as u64,
        )?;
        in_range(
            "delivery.max_attempts",
            self.max_attempts.into(),
            1,
            MAX_ATTEMPTS_LIMIT.into(),
        )?;
        in_range(
            "delivery.concurrency",
            self.concurrency.into(),
            1,
            MAX_CONCURRENCY.into(),
        )?;
        if self.concurrency > 1 && self.mode == DeliveryModeSpec::Ordered {
            return Err("delivery.concurrency: only unordered subscriptions may have more than one worker per partition".into());
        }
        in_range(
            "delivery.backoff.base_ms",
            self.backoff.base_ms,
            1,
            3_600_000,
        )?;
        in_range(
            "delivery.backoff.max_ms",
            self.backoff.max_ms,
            self.backoff.base_ms,
            86_400_000,
        )
    }
}

impl LimitsSpec {
    fn validate(&self) -> Result<(), String> {
        in_range(
            "limits.memory_mib",
            self.memory_mib.into(),
            1,
            MAX_MEMORY_MIB.into(),
        )?;
        in_range("limits.deadline_ms", self.deadline_ms, 1, MAX_DEADLINE_MS)
    }
}

fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{key} = {value}: must be between {min} and {max}"))
    }
}

/// " (key `limits.memory_mib`, line L)" for a TOML error span, so the
/// message names the key even when the parser's does not (type errors name
/// only the expected type).
fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(before) = span.and_then(|span| text.get(..span.start)) else {
        return String::new();
    };
    let line = before.matches('\n').count() + 1;
    match key_at(text, before) {
        Some(key) => format!(" (key `{key}`, line {line})"),
        None => format!(" (line {line})"),
    }
}

/// The dotted key of the line `before` ends in: the last table header
/// above it and the key left of `=` on that line. None where the line holds
/// no `key =` (a table header, the middle of a multi-line array).
fn key_at(text: &str, before: &str) -> Option<String> {
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with(['[', '#']) {
        return None;
    }
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .and_then(|header| header.trim_start_matches('[').split(']').next())
        .map(str::trim);
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse("membership", Path::new("plugins/membership.toml"), text)
    }

    #[test]
    fn logging_takes_a_level_and_a_line_budget() {
        let default = parse("").expect("no [logging]");
        assert_eq!(default.logging, LoggingSpec::default());
        assert_eq!(default.logging.level, LogLevelSpec::Trace);
        let quiet =
            parse("[logging]\nlevel = \"warn\"\nmax_lines_per_second = 0\n").expect("a level");
        assert_eq!(quiet.logging.level, LogLevelSpec::Warn);
        assert_eq!(quiet.logging.max_lines_per_second, 0);
        assert!(LogLevelSpec::Info < LogLevelSpec::Warn);
        for bad in ["[logging]\nlevel = \"loud\"\n", "[logging]\nlines = 3\n"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_manifest_means_the_documented_defaults() {
        let manifest = parse("").expect("empty manifest");
        assert_eq!(manifest, Manifest::default_for("membership"));
        assert_eq!(manifest.subscriptions[0].topic, "membership");
        assert_eq!(manifest.delivery.mode, DeliveryModeSpec::Ordered);
        assert_eq!(manifest.limits.memory_mib, 64);
        assert_eq!(manifest.limits.deadline_ms, 5000);
        assert!(!manifest.capabilities.may_publish("orders"));
    }

    #[test]
    fn a_full_manifest_reads_every_section() {
        let manifest = parse(
            r#"
            [[subscriptions]]
            topic = "orders"
            headers = { type = "order" }
            [delivery]
            mode = "unordered"
            concurrency = 4
            batch_size = 64
            max_attempts = 3
            start = "latest"
            instance = "per-batch"
            [delivery.backoff]
            base_ms = 10
            max_ms = 1000
            [limits]
            memory_mib = 16
            deadline_ms = 200
            [capabilities]
            publish = ["notifications"]
            [config]
            levels = "silver:1000"
            "#,
        )
        .expect("valid manifest");
        assert_eq!(manifest.subscriptions[0].headers["type"], "order");
        assert_eq!(manifest.delivery.mode, DeliveryModeSpec::Unordered);
        assert_eq!(manifest.delivery.instance, InstanceStrategy::PerBatch);
        assert_eq!(manifest.delivery.backoff.max_ms, 1000);
        assert!(manifest.capabilities.may_publish("notifications"));
        assert!(!manifest.capabilities.may_publish("orders"));
        assert_eq!(manifest.config["levels"], "silver:1000");
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let error = parse("[delivery]\nbatch_sise = 10\n").expect_err("typo");
        let text = error.to_string();
        assert!(text.contains("plugins/membership.toml"), "{text}");
        assert!(text.contains("batch_sise"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn out_of_range_values_are_rejected_with_the_range() {
        for (text, key) in [
            ("[delivery]\nbatch_size = 0", "delivery.batch_size"),
            ("[delivery]\nmax_attempts = 0", "delivery.max_attempts"),
            ("[limits]\nmemory_mib = 100000", "limits.memory_mib"),
            (
                "[delivery.backoff]\nbase_ms = 500\nmax_ms = 100",
                "delivery.backoff.max_ms",
            ),
            ("[delivery]\nconcurrency = 2", "delivery.concurrency"),
            ("[[subscriptions]]\ntopic = \"a b\"", "subscriptions"),
            (
                "[capabilities]\npublish = [\"../x\"]",
                "capabilities.publish",
            ),
            ("[delivery]\nmode = \"sideways\"", "sideways"),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }
}
