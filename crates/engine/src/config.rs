//! The engine's configuration: embedded defaults, overridden by a TOML file,
//! overridden by environment variables and command-line flags (clap merges
//! those two, flags first). Unknown keys in the file are an error.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:7171"
//! token = "secret"              # optional; COURIER_TOKEN (not for /healthz)
//! insecure = false              # allow a non-loopback listen without a token
//! public_metrics = false        # /metrics without the token
//! max_body_bytes = 16777216
//! max_batch_messages = 10000
//!
//! [storage]
//! data_dir = "courier-data"
//! fsync = "always"              # "always" | "interval:<ms>" | "never"
//! max_message_bytes = 1048576
//! max_disk_bytes = 0            # 0 = no limit
//! min_free_disk_bytes = 268435456
//! partitions = 8                # of topics created by a first publish
//! retention_max_age = "7days"   # "" = no age limit
//! retention_max_bytes = 0       # 0 = no size limit
//! background_threads = 1        # fjall flush/compaction threads; 0 = fjall's default
//! state_checkpoint_bytes = 16777216  # state held only in memory before a checkpoint
//!
//! backend = "fjall"            # or "jetstream": a cluster, see [jetstream]
//!
//! [jetstream]                   # only with backend = "jetstream"
//! servers = ["nats://127.0.0.1:4222"]
//! token = ""                    # if the servers require one
//! replicas = 3                  # of every stream
//! cluster = "courier"           # engines with the same name share the work
//! engine = ""                   # this engine's name; "" = host name and PID
//! failover = "5s"               # a dead engine's partitions move after this
//!
//! [plugins]
//! dir = "plugins"
//! threads = 2                   # plugin executions at once; 0 = one per core
//!
//! [log]
//! format = "text"               # or "json"
//! filter = "info"               # tracing EnvFilter syntax; RUST_LOG wins
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use courier_store_fjall::{self as storage, FsyncPolicy, Retention, StoreConfig, TopicSettings};
use courier_store_jetstream::JetStreamConfig;

/// Courier at info; fjall's routine flush and compaction lines only when
/// they matter.
pub const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";
/// Where the engine listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7171";
/// Largest request body: a batch of ~50k typical orders.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most messages in one publish request.
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 10_000;

/// Everything the engine needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// When set, every endpoint but `/healthz` requires
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Listen on a non-loopback address without a token anyway (anyone who
    /// reaches the port may then publish, seek and purge).
    pub insecure: bool,
    /// `/metrics` answers without the token.
    pub public_metrics: bool,
    pub max_body_bytes: usize,
    pub max_batch_messages: usize,
    pub store: StoreConfig,
    /// The cluster backend's settings, if `[storage] backend = "jetstream"`
    /// (the fjall store's `dir` still holds the plugin cache).
    pub jetstream: Option<JetStreamConfig>,
    pub plugins_dir: PathBuf,
    /// Compiled plugin artifacts (defaults to `<data_dir>/plugin-cache`).
    pub plugin_cache_dir: PathBuf,
    /// Plugin executions at once: the number of dispatch threads.
    pub plugin_threads: usize,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// How long in-flight deliveries may take to finish at shutdown before
    /// they are abandoned (and redelivered after the next start).
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "log format {other:?}: expected \"text\" or \"json\""
            )),
        }
    }
}

/// A configuration problem, with the file or setting it comes from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {setting}: {message}")]
    Invalid { setting: String, message: String },
}

/// The file's shape: every section and key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    jetstream: Option<JetStreamSection>,
    #[serde(default)]
    plugins: PluginsSection,
    #[serde(default)]
    log: LogSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JetStreamSection {
    servers: Option<Vec<String>>,
    token: Option<String>,
    replicas: Option<usize>,
    cluster: Option<String>,
    engine: Option<String>,
    failover: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    token: Option<String>,
    insecure: Option<bool>,
    public_metrics: Option<bool>,
    max_body_bytes: Option<usize>,
    max_batch_messages: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    backend: Option<String>,
    data_dir: Option<PathBuf>,
    fsync: Option<String>,
    max_message_bytes: Option<usize>,
    max_disk_bytes: Option<u64>,
    min_free_disk_bytes: Option<u64>,
    partitions: Option<u32>,
    retention_max_age: Option<String>,
    retention_max_bytes: Option<u64>,
    background_threads: Option<usize>,
    state_checkpoint_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginsSection {
    dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    format: Option<String>,
    filter: Option<String>,
}

/// Settings given on the command line or in the environment (the
/// `courier` binary's flags fill these; flags beat environment variables).
/// `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Config file (TOML).
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7171].
    pub listen: Option<String>,
    /// Bearer token required by every endpoint but `/healthz`.
    pub token: Option<String>,
    /// Serve a non-loopback address without a token.
    pub insecure: bool,
    /// `/metrics` without the token.
    pub public_metrics: bool,
    /// Data directory [default: ./courier-data].
    pub data_dir: Option<PathBuf>,
    /// Plugins directory, watched for changes [default: ./plugins].
    pub plugins_dir: Option<PathBuf>,
    /// When to fsync: always | interval:<ms> | never [default: always].
    pub fsync: Option<String>,
    /// Plugin executions at once [default: number of cores].
    pub plugin_threads: Option<usize>,
    /// Log format: text | json [default: text].
    pub log_format: Option<String>,
    /// Log filter, tracing EnvFilter syntax [default: info].
    pub log: Option<String>,
}

impl Config {
    /// An engine whose data, plugins (`dir/plugins`) and compile cache all
    /// live in `dir`, listening on an ephemeral loopback port: what the
    /// tests, `courier bench` and the demo start.
    pub fn local(dir: &Path) -> Config {
        let mut config = Config::defaults();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.store.dir = dir.join("data");
        config.plugins_dir = dir.join("plugins");
        config.plugin_cache_dir = dir.join("plugin-cache");
        config.shutdown_grace = Duration::from_secs(5);
        config
    }

    /// Embedded defaults: data and plugins in the current directory.
    pub fn defaults() -> Config {
        let data_dir = PathBuf::from("courier-data");
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7171))),
            token: None,
            insecure: false,
            public_metrics: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_messages: DEFAULT_MAX_BATCH_MESSAGES,
            plugin_cache_dir: data_dir.join("plugin-cache"),
            store: StoreConfig::new(data_dir),
            jetstream: None,
            plugins_dir: PathBuf::from("plugins"),
            plugin_threads: 0,
            log_format: LogFormat::Text,
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// Defaults, then the config file (if any), then overrides.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = Config::defaults();
        let mut cache_dir_set = false;
        if let Some(path) = &overrides.config {
            let file = read_file(path)?;
            cache_dir_set = file.plugins.cache_dir.is_some();
            config.apply_file(file)?;
        }
        config.apply_overrides(overrides)?;
        if !cache_dir_set {
            config.plugin_cache_dir = config.store.dir.join("plugin-cache");
        }
        Ok(config)
    }

    fn apply_file(&mut self, file: FileConfig) -> Result<(), ConfigError> {
        let FileConfig {
            server,
            storage,
            jetstream,
            plugins,
            log,
        } = file;
        if let Some(listen) = server.listen {
            self.listen = parse_listen("server.listen", &listen)?;
        }
        if let Some(insecure) = server.insecure {
            self.insecure = insecure;
        }
        if let Some(public) = server.public_metrics {
            self.public_metrics = public;
        }
        self.token = server.token.or(self.token.take()).filter(|t| !t.is_empty());
        if let Some(bytes) = server.max_body_bytes {
            self.max_body_bytes = positive("server.max_body_bytes", bytes)?;
        }
        if let Some(count) = server.max_batch_messages {
            let count = positive("server.max_batch_messages", count)?;
            self.max_batch_messages = count.min(storage::MAX_APPEND_BATCH);
        }
        let backend = storage.backend.clone();
        self.apply_storage(storage)?;
        self.apply_backend(backend.as_deref(), jetstream)?;
        if let Some(dir) = plugins.dir {
            self.plugins_dir = dir;
        }
        if let Some(dir) = plugins.cache_dir {
            self.plugin_cache_dir = dir;
        }
        if let Some(threads) = plugins.threads {
            self.plugin_threads = threads;
        }
        if let Some(format) = log.format {
            self.log_format = format
                .parse()
                .map_err(|message| invalid("log.format", message))?;
        }
        if let Some(filter) = log.filter {
            self.log_filter = filter;
        }
        Ok(())
    }

    fn apply_storage(&mut self, storage: StorageSection) -> Result<(), ConfigError> {
        let store = &mut self.store;
        if let Some(dir) = storage.data_dir {
            store.dir = dir;
        }
        if let Some(fsync) = storage.fsync {
            store.fsync = parse_fsync("storage.fsync", &fsync)?;
        }
        if let Some(bytes) = storage.max_message_bytes {
            store.max_message_bytes = positive("storage.max_message_bytes", bytes)?;
        }
        if let Some(bytes) = storage.max_disk_bytes {
            store.max_disk_bytes = (bytes > 0).then_some(bytes);
        }
        if let Some(bytes) = storage.min_free_disk_bytes {
            store.min_free_disk_bytes = bytes;
        }
        if let Some(threads) = storage.background_threads {
            if threads > storage::MAX_BACKGROUND_THREADS {
                return Err(invalid(
                    "storage.background_threads",
                    format!("at most {}", storage::MAX_BACKGROUND_THREADS),
                ));
            }
            store.background_threads = (threads > 0).then_some(threads);
        }
        if let Some(bytes) = storage.state_checkpoint_bytes {
            if !(storage::MIN_STATE_CHECKPOINT_BYTES..=storage::MAX_STATE_CHECKPOINT_BYTES)
                .contains(&bytes)
            {
                return Err(invalid(
                    "storage.state_checkpoint_bytes",
                    format!(
                        "from {} to {}",
                        storage::MIN_STATE_CHECKPOINT_BYTES,
                        storage::MAX_STATE_CHECKPOINT_BYTES
                    ),
                ));
            }
            store.state_checkpoint_bytes = bytes;
        }
        let mut topic = store.default_topic;
        if let Some(partitions) = storage.partitions {
            topic.partitions = partitions;
        }
        if let Some(age) = storage.retention_max_age {
            topic.retention.max_age = parse_age("storage.retention_max_age", &age)?;
        }
        if let Some(bytes) = storage.retention_max_bytes {
            topic.retention.max_bytes = (bytes > 0).then_some(bytes);
        }
        validate_topic(&topic)?;
        store.default_topic = topic;
        Ok(())
    }

    fn apply_backend(
        &mut self,
        backend: Option<&str>,
        section: Option<JetStreamSection>,
    ) -> Result<(), ConfigError> {
        match backend.unwrap_or("fjall") {
            "fjall" => {
                if section.is_some() {
                    return Err(invalid(
                        "jetstream",
                        "a [jetstream] section needs [storage] backend = \"jetstream\"",
                    ));
                }
                self.jetstream = None;
                Ok(())
            }
            "jetstream" => {
                let section = section.ok_or_else(|| {
                    invalid(
                        "storage.backend",
                        "\"jetstream\" needs a [jetstream] section with servers",
                    )
                })?;
                let servers = section.servers.unwrap_or_default();
                let mut config = JetStreamConfig::new(servers);
                config.token = section.token.filter(|token| !token.is_empty());
                if let Some(replicas) = section.replicas {
                    config.replicas = replicas;
                }
                if let Some(cluster) = section.cluster {
                    config.cluster = cluster;
                }
                config.engine = match section.engine.filter(|name| !name.is_empty()) {
                    Some(name) => name,
                    None => default_engine_name(),
                };
                if let Some(failover) = section.failover {
                    config.failover = humantime::parse_duration(&failover).map_err(|error| {
                        invalid("jetstream.failover", format!("{failover:?}: {error}"))
                    })?;
                }
                config.default_topic = self.store.default_topic;
                config
                    .validate()
                    .map_err(|error| invalid("jetstream", error.to_string()))?;
                self.jetstream = Some(config);
                Ok(())
            }
            other => Err(invalid(
                "storage.backend",
                format!("{other:?}: expected \"fjall\" or \"jetstream\""),
            )),
        }
    }

    fn apply_overrides(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        if let Some(listen) = &overrides.listen {
            self.listen = parse_listen("--listen", listen)?;
        }
        if let Some(token) = &overrides.token {
            self.token = Some(token.clone()).filter(|t| !t.is_empty());
        }
        self.insecure |= overrides.insecure;
        self.public_metrics |= overrides.public_metrics;
        if let Some(dir) = &overrides.data_dir {
            self.store.dir = dir.clone();
        }
        if let Some(dir) = &overrides.plugins_dir {
            self.plugins_dir = dir.clone();
        }
        if let Some(fsync) = &overrides.fsync {
            self.store.fsync = parse_fsync("--fsync", fsync)?;
        }
        if let Some(threads) = overrides.plugin_threads {
            self.plugin_threads = threads;
        }
        if let Some(format) = &overrides.log_format {
            self.log_format = format
                .parse()
                .map_err(|message| invalid("--log-format", message))?;
        }
        if let Some(filter) = &overrides.log {
            self.log_filter = filter.clone();
        }
        Ok(())
    }

    /// Plugin executions at once, resolving 0 to the number of cores.
    pub fn plugin_threads(&self) -> usize {
        if self.plugin_threads > 0 {
            return self.plugin_threads;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// `<host>-<pid>`: unique among the engines of one machine and readable.
fn default_engine_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "engine".to_owned());
    format!("{host}-{}", std::process::id())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_owned(),
        message: message.into(),
    }
}

fn parse_listen(setting: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            setting,
            format!("{text:?} is not an address like 127.0.0.1:7171"),
        )
    })
}

fn parse_fsync(setting: &str, text: &str) -> Result<FsyncPolicy, ConfigError> {
    text.parse()
        .map_err(|error: storage::Error| invalid(setting, error.to_string()))
}

fn parse_age(setting: &str, text: &str) -> Result<Option<Duration>, ConfigError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let age = humantime::parse_duration(text).map_err(|error| {
        invalid(
            setting,
            format!("{text:?}: {error} (e.g. \"7days\", \"12h\")"),
        )
    })?;
    if age < Duration::from_secs(1) {
        return Err(invalid(
            setting,
            "must be at least 1s (or empty for no limit)",
        ));
    }
    Ok(Some(age))
}

fn positive(setting: &str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(invalid(setting, "must be positive"));
    }
    Ok(value)
}

fn validate_topic(topic: &TopicSettings) -> Result<(), ConfigError> {
    if topic.partitions == 0 || topic.partitions > storage::MAX_PARTITIONS {
        return Err(invalid(
            "storage.partitions",
            format!("must be between 1 and {}", storage::MAX_PARTITIONS),
        ));
    }
    let Retention { max_age, .. } = topic.retention;
    if max_age == Some(Duration::ZERO) {
        return Err(invalid("storage.retention_max_age", "must be positive"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, overrides: Overrides) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("courier.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&Overrides {
            config: Some(path),
            ..overrides
        })
    }

    #[test]
    fn defaults_work_out_of_the_box() {
        let config = Config::load(&Overrides::default()).expect("defaults");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.store.dir, PathBuf::from("courier-data"));
        assert_eq!(config.plugins_dir, PathBuf::from("plugins"));
        assert_eq!(
            config.plugin_cache_dir,
            PathBuf::from("courier-data/plugin-cache")
        );
        assert_eq!(config.store.fsync, FsyncPolicy::Always);
        assert!(config.token.is_none());
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let text = r#"
            [server]
            listen = "0.0.0.0:9000"
            token = "from-file"
            [storage]
            data_dir = "/var/lib/courier"
            fsync = "interval:50"
            partitions = 4
            retention_max_age = "2h"
            background_threads = 2
            state_checkpoint_bytes = 4194304
            [plugins]
            dir = "/etc/courier/plugins"
            [log]
            format = "json"
        "#;
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            fsync: Some("never".into()),
            ..Overrides::default()
        };
        let config = load_text(text, overrides).expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:0");
        assert_eq!(config.token.as_deref(), Some("from-file"));
        assert_eq!(config.store.dir, PathBuf::from("/var/lib/courier"));
        assert_eq!(
            config.plugin_cache_dir,
            PathBuf::from("/var/lib/courier/plugin-cache")
        );
        assert_eq!(config.store.fsync, FsyncPolicy::Never);
        assert_eq!(config.store.default_topic.partitions, 4);
        assert_eq!(config.store.background_threads, Some(2));
        assert_eq!(config.store.state_checkpoint_bytes, 4 * 1024 * 1024);
        assert_eq!(
            config.store.default_topic.retention.max_age,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(config.plugins_dir, PathBuf::from("/etc/courier/plugins"));
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_them() {
        let error = load_text("[storage]\nfsink = \"always\"\n", Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("fsink"), "{error}");
        let error =
            load_text("[server]\nlisten = \"nowhere\"\n", Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("server.listen"), "{error}");
        let error =
            load_text("[storage]\nfsync = \"sometimes\"\n", Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("storage.fsync"), "{error}");
        let error = load_text(
            "[storage]\nstate_checkpoint_bytes = 10\n",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("storage.state_checkpoint_bytes"),
            "{error}"
        );
        let error = load_text("[storage]\npartitions = 0\n", Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("storage.partitions"), "{error}");
        let error =
            load_text("[storage]\nbackground_threads = 64\n", Overrides::default()).unwrap_err();
        assert!(
            error.to_string().contains("storage.background_threads"),
            "{error}"
        );
        let error = load_text(
            "[storage]\nretention_max_age = \"soon\"\n",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("retention_max_age"), "{error}");
        let missing = Config::load(&Overrides {
            config: Some(PathBuf::from("/no/such/courier.toml")),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(
            missing.to_string().contains("/no/such/courier.toml"),
            "{missing}"
        );
    }
}
