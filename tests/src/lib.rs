//! The harness of Courier's end-to-end tests (`tests/tests/*.rs`).
//!
//! Everything is real: plugins are the components compiled from the
//! `plugins/` workspace (built on first use), the engine runs in-process
//! through `courier::engine::start` on port 0 with a temporary directory,
//! or as the real `courier` binary, and requests go over HTTP.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use courier::config::Config;
use courier::engine::Engine;
use serde_json::Value;

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
    pub engine: Option<Engine>,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

impl TestEngine {
    /// A config for `dir`: port 0, data in `dir/data`, plugins in
    /// `dir/plugins` (created).
    pub fn config(dir: &Path) -> Config {
        let mut config = Config::defaults();
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.store.dir = dir.join("data");
        config.plugins_dir = dir.join("plugins");
        config.plugin_cache_dir = dir.join("plugin-cache");
        config.shutdown_grace = Duration::from_secs(5);
        std::fs::create_dir_all(&config.plugins_dir).expect("plugins dir");
        config
    }

    /// Starts an engine on a fresh temporary directory; `prepare` may
    /// install plugins and change the config first.
    pub async fn start(prepare: impl FnOnce(&Path, &mut Config)) -> TestEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = TestEngine::config(dir.path());
        prepare(&config.plugins_dir.clone(), &mut config);
        let engine = courier::engine::start(config).await.expect("engine starts");
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
        let engine = courier::engine::start(config)
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
        Client::json(self.http.get(self.url(path)).send().await.expect("GET")).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        Client::json(
            self.http
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        Client::json(
            self.http
                .delete(self.url(path))
                .send()
                .await
                .expect("DELETE"),
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
/// (the engine crate has integration tests); a nested cargo call would
/// wait on the lock the running `cargo test` holds.
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
    binary
}
