//! The harness of Courier's end-to-end tests (`tests/tests/*.rs`).
//!
//! Everything is real: plugins are the components compiled from the
//! `plugins/` workspace (built on first use), the engine runs in-process
//! through `courier_engine::start` on port 0 with a temporary directory,
//! or as the real `courier` binary ([`CourierProcess`], killed when
//! dropped), and requests go over HTTP.

pub mod nats;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use courier_engine::RunningEngine;
use courier_engine::config::Config;
use serde_json::Value;

/// Logs to the test's output if `RUST_LOG` asks for it (e.g.
/// `RUST_LOG=courier_store_jetstream=debug`), once per process.
pub fn log_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the plugins workspace puts its components.
pub fn plugin_build_dir() -> PathBuf {
    repo_root().join("plugins/target/wasm32-wasip2/release")
}

/// Builds the plugins workspace once per test process (a no-op when it is
/// up to date, e.g. after `make plugins`).
fn build_plugins() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(repo_root().join("plugins/Cargo.toml"))
            .status()
            .expect("running cargo to build the plugins");
        assert!(status.success(), "building the plugins failed (is the wasm32-wasip2 target installed? `make plugins` installs it)");
    });
}

/// The compiled component of crate `crate_name` (e.g. `membership`,
/// `fixture-ack`).
pub fn component(crate_name: &str) -> PathBuf {
    build_plugins();
    let path = plugin_build_dir().join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// The example manifest shipped with an order fan-out plugin.
pub fn example_manifest(crate_name: &str) -> String {
    let path = repo_root().join(format!("plugins/{crate_name}/{crate_name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Installs component `crate_name` as plugin `name` in `dir`, with
/// `manifest` (if any) as `name.toml`. The manifest is written first, then
/// the wasm through a temporary file and a rename, as a careful deployer
/// would.
pub fn install_plugin(dir: &Path, crate_name: &str, name: &str, manifest: Option<&str>) {
    match manifest {
        Some(text) => {
            std::fs::write(dir.join(format!("{name}.toml")), text).expect("writing a manifest")
        }
        None => {
            let _ = std::fs::remove_file(dir.join(format!("{name}.toml")));
        }
    }
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(component(crate_name), &tmp).expect("copying a component");
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).expect("renaming a component");
}

/// An engine running in this process on a temporary directory.
pub struct TestEngine {
    pub engine: Option<RunningEngine>,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

impl TestEngine {
    /// A config for `dir`: port 0, data in `dir/data`, plugins in
    /// `dir/plugins` (created).
    pub fn config(dir: &Path) -> Config {
        let config = Config::local(dir);
        std::fs::create_dir_all(&config.plugins_dir).expect("plugins dir");
        config
    }

    /// Starts an engine on a fresh temporary directory; `prepare` may
    /// install plugins and change the config first.
    pub async fn start(prepare: impl FnOnce(&Path, &mut Config)) -> TestEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = TestEngine::config(dir.path());
        prepare(&config.plugins_dir.clone(), &mut config);
        let engine = courier_engine::start(config).await.expect("engine starts");
        let client = Client::new(&format!("http://{}", engine.addr()));
        TestEngine {
            engine: Some(engine),
            dir,
            client,
        }
    }

    /// Stops the engine gracefully and starts it again on the same
    /// directory (with a new port).
    pub async fn restart(&mut self, change: impl FnOnce(&mut Config)) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await;
        }
        let mut config = TestEngine::config(self.dir.path());
        change(&mut config);
        let engine = courier_engine::start(config)
            .await
            .expect("engine restarts");
        self.client = Client::new(&format!("http://{}", engine.addr()));
        self.engine = Some(engine);
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub async fn shutdown(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await;
        }
    }
}

/// A thin HTTP client for tests: every call returns (status, JSON body).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            base: base.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn json(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await;
        Client::json(response.unwrap_or_else(|e| panic!("GET {path}: {e:?}"))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        Client::json(
            self.http
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {path}: {e:?}")),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        Client::json(
            self.http
                .delete(self.url(path))
                .send()
                .await
                .unwrap_or_else(|e| panic!("DELETE {path}: {e:?}")),
        )
        .await
    }

    /// Publishes messages (`[{"key":..,"payload":..}, ..]`) and asserts
    /// the engine accepted them all.
    pub async fn publish(&self, topic: &str, messages: &Value) -> Value {
        let (status, body) = self
            .post(&format!("/v1/topics/{topic}/messages"), messages)
            .await;
        assert_eq!(status, 200, "publish to {topic} failed: {body}");
        body
    }

    /// A plugin's committed state value, decoded as text (None if unset).
    pub async fn state_text(&self, plugin: &str, key: &str) -> Option<String> {
        let (status, body) = self.get(&format!("/v1/plugins/{plugin}/state/{key}")).await;
        match status {
            200 => body["value"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| Some(body["value"].to_string())),
            404 => None,
            other => panic!("state {plugin}/{key}: {other} {body}"),
        }
    }

    /// The subscription `plugin` has on `topic`, as `GET /v1/subscriptions`
    /// shows it.
    pub async fn subscription(&self, plugin: &str, topic: &str) -> Option<Value> {
        let (_, body) = self.get("/v1/subscriptions").await;
        body["subscriptions"]
            .as_array()?
            .iter()
            .find(|s| s["plugin"] == plugin && s["topic"] == topic)
            .cloned()
    }

    /// Messages of `topic` that `plugin` is done with: the sum of its
    /// partitions' committed offsets (0 if not subscribed).
    pub async fn committed(&self, plugin: &str, topic: &str) -> u64 {
        let Some(sub) = self.subscription(plugin, topic).await else {
            return 0;
        };
        sub["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p["committed"].as_u64().expect("committed"))
            .sum()
    }

    /// Sends any request; for error-path tests that need a method, headers
    /// or a body the helpers above do not send.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let (status, body) = Client::json(response).await;
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// Every stored message of `topic`, partition by partition, in offset
    /// order (as `GET /v1/topics/{topic}/messages` returns them).
    pub async fn read_topic(&self, topic: &str) -> Vec<Value> {
        let (status, info) = self.get(&format!("/v1/topics/{topic}")).await;
        assert_eq!(status, 200, "topic {topic}: {info}");
        let mut out = Vec::new();
        for partition in info["partitions"].as_array().expect("partitions") {
            let index = partition["partition"].as_u64().expect("partition index");
            let mut from = partition["start"].as_u64().expect("start");
            loop {
                let path =
                    format!("/v1/topics/{topic}/messages?partition={index}&from={from}&limit=1000");
                let (status, page) = self.get(&path).await;
                assert_eq!(status, 200, "{path}: {page}");
                let messages = page["messages"].as_array().expect("messages").clone();
                let Some(last) = messages.last() else { break };
                from = last["offset"].as_u64().expect("offset") + 1;
                out.extend(messages);
            }
        }
        out
    }

    /// A plugin's counter (0 if unset).
    pub async fn state_i64(&self, plugin: &str, key: &str) -> i64 {
        match self.state_text(plugin, key).await {
            Some(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("state {plugin}/{key} is not a number: {text}")),
            None => 0,
        }
    }

    /// Every committed state entry of `plugin` whose key starts with
    /// `prefix`, as (key, value). Panics if there are too many for one
    /// listing (1000), so a test never checks a truncated list.
    pub async fn state_entries(&self, plugin: &str, prefix: &str) -> Vec<(String, Value)> {
        let path = format!("/v1/plugins/{plugin}/state?prefix={prefix}&limit=1000");
        let (status, body) = self.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let entries = body["entries"].as_array().expect("entries");
        assert!(
            entries.len() < 1000,
            "{path}: too many entries to check in one listing"
        );
        entries
            .iter()
            .map(|entry| {
                (
                    entry["key"].as_str().expect("key").to_owned(),
                    entry["value"].clone(),
                )
            })
            .collect()
    }

    /// A plugin's dead letters (all topics), oldest first.
    pub async fn dead_letters(&self, plugin: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/v1/dead-letters/{plugin}?limit=1000"))
            .await;
        assert_eq!(status, 200, "dead letters of {plugin}: {body}");
        body["dead_letters"]
            .as_array()
            .expect("dead_letters")
            .clone()
    }

    /// `GET /metrics`, as Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body.as_str()
            .expect("metrics are text, not JSON")
            .to_owned()
    }

    /// Waits until `plugin` has no lag and nothing in flight on `topic`.
    pub async fn wait_drained(&self, plugin: &str, topic: &str, timeout: Duration) {
        let ok = wait_until(timeout, || async {
            match self.subscription(plugin, topic).await {
                Some(sub) => sub["lag"] == 0 && sub["in_flight"] == 0 && sub["scheduled"] == 0,
                None => false,
            }
        })
        .await;
        let last = self.subscription(plugin, topic).await;
        assert!(
            ok,
            "{plugin} did not drain {topic} within {timeout:?}: {last:?}"
        );
    }
}

/// An HTTP answer: status, `Content-Type` and body (JSON, or the text as a
/// JSON string if it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Value,
}

/// Polls `check` every 20 ms until it is true or `timeout` passes; says
/// which.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `courier` binary of this build. `cargo test --workspace` builds it
/// (the `courier` crate has integration tests of its own); a nested cargo
/// call would wait on the lock the running `cargo test` holds.
pub fn courier_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> -> target/<profile>/courier
    let profile_dir = exe.parent().and_then(Path::parent).expect("target layout");
    let binary = profile_dir.join("courier");
    assert!(
        binary.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or `make test`)",
        binary.display()
    );
    warn_if_stale(&binary);
    binary
}

/// Runs `courier ARGS`, asserts it succeeded (naming the command and its
/// stderr otherwise) and returns its standard output.
pub async fn run_cli(args: &[&str]) -> String {
    let output = tokio::process::Command::new(courier_binary())
        .kill_on_drop(true)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|error| panic!("running courier {args:?}: {error}"));
    assert!(
        output.status.success(),
        "courier {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Says so (once) when the binary is older than the crates' sources: a
/// test that runs only `-p courier-tests` would otherwise test old code.
fn warn_if_stale(binary: &Path) {
    static WARNED: OnceLock<()> = OnceLock::new();
    WARNED.get_or_init(|| {
        let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok();
        let newest = newest_modification(&repo_root().join("crates"));
        if let (Some(built), Some(newest)) = (built, newest)
            && newest > built
        {
            eprintln!(
                "warning: {} is older than the sources in crates/: run `cargo build -p courier` (or `cargo test --workspace`)",
                binary.display()
            );
        }
    });
}

fn newest_modification(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            newest_modification(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(modified);
    }
    newest
}

/// A port nobody listens on right now (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("local address").port()
}

/// The real `courier serve` binary, run as a child process on a fixed port
/// with the given data and plugins directories. Dropping it kills the
/// process (SIGKILL), so no test leaves an engine behind, even on panic.
/// Its stdout and stderr go to `<log>` (shown by [`CourierProcess::log`]).
pub struct CourierProcess {
    child: Option<Child>,
    args: Vec<OsString>,
    /// Environment variables set for the process, on top of this one's.
    envs: Vec<(OsString, OsString)>,
    log_path: PathBuf,
    /// Length of the log when the current process started.
    log_start: u64,
    pub port: u16,
    pub client: Client,
}

impl CourierProcess {
    /// Starts `courier serve --listen 127.0.0.1:<free port> --data-dir ..
    /// --plugins-dir .. <extra>`; returns at once (see [`Self::wait_ready`]).
    pub fn spawn(
        data_dir: &Path,
        plugins_dir: &Path,
        extra: &[&str],
        log_path: &Path,
    ) -> CourierProcess {
        Self::spawn_with_env(data_dir, plugins_dir, extra, &[], log_path)
    }

    /// [`Self::spawn`] with `envs` set in the process's environment.
    pub fn spawn_with_env(
        data_dir: &Path,
        plugins_dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
        log_path: &Path,
    ) -> CourierProcess {
        let port = free_port();
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
        ];
        args.extend(["--data-dir".into(), data_dir.as_os_str().to_owned()]);
        args.extend(["--plugins-dir".into(), plugins_dir.as_os_str().to_owned()]);
        args.extend(extra.iter().map(OsString::from));
        let mut process = CourierProcess {
            child: None,
            args,
            envs: envs
                .iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
            log_path: log_path.to_owned(),
            log_start: 0,
            port,
            client: Client::new(&format!("http://127.0.0.1:{port}")),
        };
        process.start();
        process
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "the engine is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening the engine log");
        self.log_start = log.metadata().map_or(0, |m| m.len());
        let child = Command::new(courier_binary())
            .args(&self.args)
            .env_remove("COURIER_CONFIG")
            .env_remove("COURIER_TOKEN")
            .envs(self.envs.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning courier serve");
        self.child = Some(child);
    }

    /// Waits until this process logged that it listens (so a server that
    /// another test started on the same port meanwhile is never mistaken
    /// for it) and `/healthz` answers 200; panics with the log if the
    /// process exits or does not get there within `timeout`. Needs the
    /// default (info) log level.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().expect("try_wait"))
            {
                panic!(
                    "courier exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if self.says_running() {
                let url = self.client.url("/healthz");
                let health = self.client.http().get(url).send().await;
                if health.is_ok_and(|response| response.status().is_success()) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "courier not ready within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process with SIGKILL (no chance to flush or clean up) and
    /// reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same arguments (same port and
    /// directories) and waits until it is ready.
    pub async fn restart(&mut self, timeout: Duration) {
        self.kill();
        self.start();
        self.wait_ready(timeout).await;
    }

    /// The process id of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().expect("try_wait").is_none())
    }

    /// Whether the current process logged that it listens.
    fn says_running(&self) -> bool {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(self.log_start).map_or(0, |start| start.min(text.len()));
        String::from_utf8_lossy(&text[start..]).contains("courier is running")
    }

    /// The last 8 KiB of the process's output, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let tail = &text[text.len().saturating_sub(8192)..];
        String::from_utf8_lossy(tail).into_owned()
    }
}

impl Drop for CourierProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
