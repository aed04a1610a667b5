//! `courier bench`, the order fan-out benchmark, and `courier
//! generate-orders`, which prints the same orders as NDJSON envelopes.
//!
//! The bench drives an engine over HTTP only, like any producer: a running
//! one (`--server`), or a `courier serve` process it starts on a temporary
//! directory with the notification, recommendation and membership plugins
//! (a process of its own, so the engine's memory is measured alone).
//! It measures, in order:
//!
//! 1. publish throughput: `--producers` concurrent HTTP publishers send
//!    `--orders` orders in batches of `--batch`, as fast as they are
//!    answered (every answer means durable);
//! 2. drain: the time from the first publish until every plugin subscribed
//!    to the topic has no lag, nothing in flight and nothing scheduled
//!    (polled every 10 ms); orders / that time is the end-to-end rate;
//! 3. latency at a fixed rate (`--rate` for `--latency-secs`): a batch is
//!    due every millisecond, sent open-loop (a slow answer never delays the
//!    schedule) in one request, or in requests of `--per-request` orders
//!    (1: every order on its own); an order's latency runs from its
//!    batch's scheduled send time until every plugin's committed cursor of
//!    its partition is past
//!    its offset, as seen by polling `GET /v1/subscriptions` every
//!    millisecond (so figures are upper bounds, by up to one poll). The
//!    report has the longest latency any order saw (the worst stall, and
//!    when in the phase its order was sent) and the p99 of every second.
//!    `--latency-first` runs this phase on the fresh engine, before 1;
//! 4. the engine's peak resident memory (VmHWM) and the CPU time it used
//!    (utime + stime): per order over phases 1 and 2, and as a share of one
//!    core over phase 3. Both come from the engine process's `/proc` files:
//!    the `courier serve` the bench started, or `--pid` for a running one;
//! 5. the store's own waits over phase 3 (fsyncs, commits into fjall,
//!    writer waits for flushes), from the engine's `/metrics` before and
//!    after it (`scrape.rs`): a latency tail either shows there or is not
//!    the store's;
//! 6. the CPU time the plugins' batches took over phases 1 and 2 (the
//!    engine's `courier_handler_cpu_seconds`, read from `/metrics` the same
//!    way), per order and plugin: what running the plugins costs, next to
//!    the engine's CPU per order.
//!
//! Nothing is simulated: the figures come from real requests, real fsyncs
//! and the real plugins.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::scrape::{self, Histogram as Scraped};
use courier_engine::config::Config;
use courier_workload::{Generator, Shape, envelope_ndjson};

/// The plugins the bench installs in an engine of its own.
const BENCH_PLUGINS: [&str; 3] = ["notification", "recommendation", "membership"];
/// Where notification publishes one notice per order it handled: in an
/// engine of the bench's own, a count of what the drain really did.
const NOTICES_TOPIC: &str = "notifications";
/// The most orders encoded before the throughput phase starts (about
/// `--size` bytes of the bench's memory each).
const MAX_PREPARED_ORDERS: u64 = 1_000_000;
/// The targets the figures are reported against.
const TARGET_DRAIN_ORDERS_PER_SEC: f64 = 100_000.0;
const TARGET_P99_MS: f64 = 10.0;
const TARGET_PEAK_RSS_MB: f64 = 200.0;
/// How often the drain phase polls the subscriptions.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// How often the latency phase sends a batch and polls the cursors.
const LATENCY_TICK: Duration = Duration::from_millis(1);
/// Publish requests of the latency phase in flight at once, at most.
const MAX_LATENCY_REQUESTS: usize = 256;
/// Give up waiting for plugins to appear, drain, or finish the latency
/// phase's orders after this long.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// How many orders to print.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// The same seed prints the same orders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Distinct users (orders are keyed by user).
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Distinct merchants.
    #[arg(long, default_value_t = 100)]
    pub merchants: u32,
    /// Approximate size of one order's JSON, in bytes.
    #[arg(long, default_value_t = 300)]
    pub size: usize,
}

/// Prints `count` orders as `{"key": user_id, "payload": order}` lines.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let mut generator = Generator::new(Shape {
        seed: args.seed,
        users: args.users,
        merchants: args.merchants,
        size_bytes: args.size,
        ..Shape::default()
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = (0..args.count)
        .try_for_each(|_| generator.next_order().write_envelope(&mut out))
        .map_err(std::io::Error::from)
        .and_then(|()| out.flush());
    match written {
        // `| head` closing the pipe is not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing orders to standard output"),
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A running engine to measure. Without it, the bench starts `courier
    /// serve` in a process of its own on a temporary directory.
    #[arg(long)]
    pub server: Option<String>,
    /// Bearer token of the --server engine, if it requires one.
    #[arg(long, env = "COURIER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Process id of the --server engine, to report its peak memory.
    #[arg(long, requires = "server")]
    pub pid: Option<u32>,
    /// Compiled plugins for the bench's own engine (notification.wasm,
    /// recommendation.wasm, membership.wasm).
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    pub plugins_from: PathBuf,
    /// Where their manifests are (NAME/NAME.toml).
    #[arg(long, default_value = "plugins")]
    pub manifests_from: PathBuf,
    /// Topic to publish the orders to.
    #[arg(long, default_value = "orders")]
    pub topic: String,
    /// Orders of the throughput and drain phases.
    #[arg(long, default_value_t = 200_000)]
    pub orders: u64,
    /// Approximate size of one order's JSON, in bytes.
    #[arg(long, default_value_t = 300)]
    pub size: usize,
    /// Concurrent HTTP publishers of the throughput phase.
    #[arg(long, default_value_t = 8)]
    pub producers: usize,
    /// Orders per publish request of the throughput phase.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Orders per second of the latency phase (0: skip it).
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Duration of the latency phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub latency_secs: f64,
    /// Orders per publish request of the latency phase. Without it, each
    /// millisecond's orders go out in one request (5 at 5,000/s);
    /// `--per-request 1` publishes every order on its own, as an order
    /// service placing orders one by one does.
    #[arg(long)]
    pub per_request: Option<usize>,
    /// Run the latency phase first, on a fresh engine (its first orders
    /// create the plugins' outbox topics), then the throughput phase.
    #[arg(long)]
    pub latency_first: bool,
    /// Distinct users (orders are keyed by user).
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// The same seed publishes the same orders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The engine under test.
enum Target {
    /// `courier serve` started by the bench on a temporary directory, in a
    /// process of its own so that its memory is measured alone and the load
    /// generator is a client like any other; killed at the end.
    Own {
        engine: std::process::Child,
        _dir: tempfile::TempDir,
    },
    Remote {
        pid: Option<u32>,
    },
}

/// Talks to the engine under test (clones share the HTTP connection pool).
#[derive(Clone)]
struct Bench {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    topic: String,
    /// The plugins subscribed to the topic: what "drained" waits for.
    plugins: Vec<String>,
    quiet: bool,
}

/// `GET /v1/subscriptions`, the fields the bench reads.
#[derive(Deserialize)]
struct Subscriptions {
    subscriptions: Vec<SubscriptionView>,
}

#[derive(Deserialize)]
struct SubscriptionView {
    plugin: String,
    topic: String,
    lag: u64,
    in_flight: u64,
    scheduled: u64,
    dead_letters: u64,
    partitions: Vec<PartitionView>,
}

#[derive(Deserialize)]
struct PartitionView {
    partition: u32,
    committed: u64,
}

/// The publish answer, the fields the bench reads.
#[derive(Deserialize)]
struct Published {
    messages: Vec<Position>,
}

#[derive(Deserialize)]
struct Position {
    partition: u32,
    offset: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let (base, target) = match &args.server {
        Some(server) => (
            server.trim_end_matches('/').to_owned(),
            Target::Remote { pid: args.pid },
        ),
        None => start_engine(&args).await?,
    };
    let mut bench = Bench {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?,
        base,
        token: args.token.clone(),
        topic: args.topic.clone(),
        plugins: Vec::new(),
        quiet: args.json,
    };
    let result = measure(&mut bench, &args, &target).await;
    if let Target::Own { mut engine, .. } = target {
        // Nothing of the bench's outlives it: the directory goes too.
        let _ = engine.kill();
        let _ = engine.wait();
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    ensure!(args.orders > 0, "--orders must be positive");
    ensure!(args.producers > 0, "--producers must be positive");
    ensure!(args.batch > 0, "--batch must be positive");
    ensure!(
        args.per_request != Some(0),
        "--per-request must be positive"
    );
    ensure!(
        args.latency_secs.is_finite() && args.latency_secs >= 0.0,
        "--latency-secs must be a non-negative number"
    );
    Ok(())
}

/// The phases, in order, and the report they add up to.
async fn measure(bench: &mut Bench, args: &BenchArgs, target: &Target) -> anyhow::Result<Value> {
    let (expected, own): (&[&str], bool) = match target {
        Target::Own { .. } => (&BENCH_PLUGINS, true),
        Target::Remote { .. } => (&[], false),
    };
    bench.plugins = bench.wait_for_plugins(expected).await?;
    let status = proc_file(target, "status");
    let rss_after_start = status.as_deref().and_then(|path| memory_mb(path, "VmRSS:"));
    let stat = proc_file(target, "stat");
    let cpu = || stat.as_deref().and_then(cpu_secs);
    let source = Arc::new(Mutex::new(Source::new(args)));
    let latency_first = if args.latency_first {
        Some(latency_phase(bench, args, &source, &cpu).await?)
    } else {
        None
    };
    // Like the store's waits below, scraped outside the phase's time and CPU.
    let cpu_before = bench.plugin_cpu().await;
    let cpu_at_start = cpu();
    let throughput = throughput(bench, args, &source).await?;
    let cpu_drained = cpu();
    let plugin_cpu = match cpu_before {
        Some(before) => PluginCpu::between(before, bench.plugin_cpu().await),
        None => None,
    };
    let LatencyPhase {
        latency,
        store_waits,
        core_percent,
    } = match latency_first {
        Some(phase) => phase,
        None => latency_phase(bench, args, &source, &cpu).await?,
    };
    let spent = |from: Option<f64>, to: Option<f64>| Some(to? - from?);
    let engine_cpu = json!({
        "us_per_order_drained": spent(cpu_at_start, cpu_drained)
            .map(|secs| secs * 1e6 / throughput.orders.max(1) as f64),
        "latency_phase_core_percent": core_percent,
    });
    let subscriptions = bench.subscriptions().await?;
    let dead_letters: u64 = subscriptions.iter().map(|s| s.dead_letters).sum();
    // Only an engine of its own holds nothing but the bench's orders.
    let notices = if own {
        bench.published_to(NOTICES_TOPIC).await?
    } else {
        None
    };
    let engine = if own {
        "own `courier serve` process (fsync always)".to_owned()
    } else {
        bench.base.clone()
    };
    Ok(json!({
        "engine": engine,
        "topic": bench.topic,
        "plugins": bench.plugins,
        "order_bytes_avg": throughput.bytes as f64 / throughput.orders as f64,
        "throughput": throughput.json(args, bench.plugins.len()),
        "latency": latency.as_ref().map(Latency::json),
        "store_in_latency_phase": store_waits.as_ref().map(StoreWaits::json),
        "plugins_in_drain": plugin_cpu.as_ref().map(|cpu| cpu.json(throughput.orders)),
        "engine_cpu": engine_cpu,
        "peak_rss_mb": status.as_deref().and_then(|path| memory_mb(path, "VmHWM:")),
        "rss_after_start_mb": rss_after_start,
        "dead_letters": dead_letters,
        "orders_published": lock(&source).generator.generated(),
        "notices_published": notices,
        "targets": {
            "drain_orders_per_sec": TARGET_DRAIN_ORDERS_PER_SEC,
            "latency_p99_ms": TARGET_P99_MS,
            "peak_rss_mb": TARGET_PEAK_RSS_MB,
        },
    }))
}

/// What the latency phase gives the report.
struct LatencyPhase {
    latency: Option<Latency>,
    store_waits: Option<StoreWaits>,
    /// The engine's CPU over the phase, as a share of one core.
    core_percent: Option<f64>,
}

/// Phase 3 with the engine's CPU and the store's waits around it (the
/// scrapes stay outside the phase's time and CPU figures); nothing if
/// `--rate` or `--latency-secs` is 0.
async fn latency_phase(
    bench: &Bench,
    args: &BenchArgs,
    source: &Arc<Mutex<Source>>,
    cpu: &dyn Fn() -> Option<f64>,
) -> anyhow::Result<LatencyPhase> {
    if args.rate == 0 || args.latency_secs <= 0.0 {
        return Ok(LatencyPhase {
            latency: None,
            store_waits: None,
            core_percent: None,
        });
    }
    let waits_before = bench.store_waits().await;
    let cpu_before = cpu();
    let started = Instant::now();
    let latency = latency(bench, args, source).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu();
    let store_waits = match waits_before {
        Some(before) => StoreWaits::between(before, bench.store_waits().await),
        None => None,
    };
    let core_percent = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some((after - before) * 100.0 / secs),
        _ => None,
    };
    Ok(LatencyPhase {
        latency: Some(latency),
        store_waits,
        core_percent,
    })
}

/// A `/proc` file (`status`, `stat`) of the engine's process, if known.
fn proc_file(target: &Target, name: &str) -> Option<PathBuf> {
    let pid = match target {
        Target::Own { engine, .. } => engine.id(),
        Target::Remote { pid } => (*pid)?,
    };
    Some(PathBuf::from(format!("/proc/{pid}/{name}")))
}

/// The CPU time (user and system) a process has used so far, in seconds,
/// from its `/proc/PID/stat`.
fn cpu_secs(stat: &Path) -> Option<f64> {
    let ticks = cpu_ticks(&std::fs::read_to_string(stat).ok()?)?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// utime + stime, in clock ticks, from the text of a `/proc/PID/stat`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name comes in parentheses and may hold spaces and
    // parentheses itself; utime and stime are fields 14 and 15 of proc(5),
    // the 12th and 13th after the name's last `)`.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let mut ticks = || fields.next()?.parse::<u64>().ok();
    Some(ticks()? + ticks()?)
}

/// Starts `courier serve` (this executable) on a temporary directory with
/// the bench's plugins and waits until it answers.
async fn start_engine(args: &BenchArgs) -> anyhow::Result<(String, Target)> {
    let dir = tempfile::Builder::new()
        .prefix("courier-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let config = Config::local(dir.path());
    std::fs::create_dir_all(&config.plugins_dir).context("creating the plugins directory")?;
    for name in BENCH_PLUGINS {
        install_plugin(args, name, &config.plugins_dir)?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("finding a free port")?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    if !args.json {
        eprintln!(
            "starting `courier serve` on {base}, data in {}",
            dir.path().display()
        );
    }
    let log =
        std::fs::File::create(dir.path().join("engine.log")).context("creating the engine log")?;
    let mut engine =
        std::process::Command::new(std::env::current_exe().context("finding this executable")?)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&config.store.dir)
            .arg("--plugins-dir")
            .arg(&config.plugins_dir)
            .args(["--log", "warn"])
            // The bench's engine is its own: no config file or token from the
            // environment applies to it.
            .env_remove("COURIER_CONFIG")
            .env_remove("COURIER_TOKEN")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting `courier serve`")?;
    let ready = wait_ready(&base, &mut engine).await;
    if let Err(error) = ready {
        let _ = engine.kill();
        let log = std::fs::read_to_string(dir.path().join("engine.log")).unwrap_or_default();
        bail!("{error:#}\n{log}");
    }
    Ok((base, Target::Own { engine, _dir: dir }))
}

/// Polls `/healthz` until the engine answers (or exits, or 60 s pass).
async fn wait_ready(base: &str, engine: &mut std::process::Child) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = engine.try_wait().context("watching the engine")? {
            bail!("`courier serve` exited with {status} before it was ready");
        }
        let answered = http.get(format!("{base}/healthz")).send().await;
        if answered.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("`courier serve` did not answer within 60 s")
}

/// Copies `NAME.toml` and then `NAME.wasm` (through a rename) into `to`.
fn install_plugin(args: &BenchArgs, name: &str, to: &Path) -> anyhow::Result<()> {
    let wasm = args.plugins_from.join(format!("{name}.wasm"));
    let manifest = args.manifests_from.join(name).join(format!("{name}.toml"));
    if !wasm.is_file() {
        bail!(
            "{} is missing: run `make plugins` at the repository root, or pass --plugins-from",
            wasm.display()
        );
    }
    std::fs::copy(&manifest, to.join(format!("{name}.toml")))
        .with_context(|| format!("copying {} (pass --manifests-from?)", manifest.display()))?;
    let tmp = to.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(&wasm, &tmp).with_context(|| format!("copying {}", wasm.display()))?;
    std::fs::rename(&tmp, to.join(format!("{name}.wasm"))).context("installing a plugin")?;
    Ok(())
}

impl Bench {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the engine at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await.context("reading an answer")?;
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&bytes));
        }
        serde_json::from_slice(&bytes).context("decoding an answer")
    }

    /// The engine's `/metrics` text.
    async fn metrics(&self) -> anyhow::Result<String> {
        let response = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "{status}: {text}");
        Ok(text)
    }

    /// The store's wait histograms now, or `None` (with a note) if the
    /// engine's `/metrics` cannot be read: the bench goes on without them.
    async fn store_waits(&self) -> Option<StoreWaits> {
        let scraped = async {
            StoreWaits::parse(&self.metrics().await?).context("it has no store latency histograms")
        };
        self.or_say(scraped.await, "the store's waits")
    }

    /// The bench plugins' CPU counters now, or `None` (with a note).
    async fn plugin_cpu(&self) -> Option<PluginCpu> {
        let scraped = async {
            PluginCpu::parse(&self.metrics().await?, &self.plugins)
                .context("it has no handler CPU counter for every plugin")
        };
        self.or_say(scraped.await, "the plugins' CPU time")
    }

    /// `scraped`, or `None` with a note that `what` goes unreported.
    fn or_say<T>(&self, scraped: anyhow::Result<T>, what: &str) -> Option<T> {
        scraped
            .map_err(|error| self.say(&format!("not reporting {what}: /metrics: {error:#}")))
            .ok()
    }

    /// The subscriptions of the bench's plugins on its topic.
    async fn subscriptions(&self) -> anyhow::Result<Vec<SubscriptionView>> {
        let all: Subscriptions = self
            .call(self.request(reqwest::Method::GET, "/v1/subscriptions"))
            .await?;
        Ok(all
            .subscriptions
            .into_iter()
            .filter(|s| s.topic == self.topic && self.plugins.contains(&s.plugin))
            .collect())
    }

    /// Publishes an NDJSON body; answers each message's position.
    async fn publish(&self, body: Vec<u8>) -> anyhow::Result<Vec<Position>> {
        let path = format!("/v1/topics/{}/messages", self.topic);
        let request = self
            .request(reqwest::Method::POST, &path)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        let published: Published = self.call(request).await.context("publishing")?;
        Ok(published.messages)
    }

    /// How many messages were ever published to `topic` (the sum of its
    /// partitions' end offsets), if it exists.
    async fn published_to(&self, topic: &str) -> anyhow::Result<Option<u64>> {
        let path = format!("/v1/topics/{topic}");
        let response = self.request(reqwest::Method::GET, &path).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let info: Value = response.error_for_status()?.json().await?;
        let ends = info["partitions"].as_array().into_iter().flatten();
        Ok(Some(ends.filter_map(|p| p["end"].as_u64()).sum()))
    }

    /// Waits until every plugin of `expected` (or, if empty, at least one
    /// plugin) subscribes to the topic; answers the subscribed plugins.
    async fn wait_for_plugins(&self, expected: &[&str]) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        loop {
            let all: Subscriptions = self
                .call(self.request(reqwest::Method::GET, "/v1/subscriptions"))
                .await?;
            let mut plugins: Vec<String> = all
                .subscriptions
                .into_iter()
                .filter(|s| s.topic == self.topic)
                .map(|s| s.plugin)
                .collect();
            plugins.sort_unstable();
            let ready = match expected {
                [] => !plugins.is_empty(),
                names => names.iter().all(|name| plugins.iter().any(|p| p == name)),
            };
            if ready {
                return Ok(plugins);
            }
            if started.elapsed() > SETUP_TIMEOUT {
                bail!(
                    "no plugin subscribes to topic {:?} after {SETUP_TIMEOUT:?}: nothing would drain it",
                    self.topic
                );
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    fn say(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}

fn drained(subscriptions: &[SubscriptionView]) -> bool {
    subscriptions
        .iter()
        .all(|s| s.lag == 0 && s.in_flight == 0 && s.scheduled == 0)
}

/// Orders still to publish, handed out as request bodies. The throughput
/// phase's first [`MAX_PREPARED_ORDERS`] are encoded before its clock
/// starts: making orders is the load generator's work, not the engine's,
/// and on a machine the two share it would take ~3% of the cores from the
/// engine. Any beyond are made as they are sent.
struct Source {
    generator: Generator,
    /// Orders of the throughput phase not yet handed out (prepared ones
    /// included).
    left: u64,
    prepared: std::collections::VecDeque<Batch>,
}

/// One publish request's body.
struct Batch {
    body: Vec<u8>,
    orders: u64,
    /// The orders' JSON bytes.
    payload_bytes: u64,
}

impl Source {
    fn new(args: &BenchArgs) -> Source {
        Source {
            generator: Generator::new(Shape {
                seed: args.seed,
                users: args.users,
                size_bytes: args.size,
                ..Shape::default()
            }),
            left: args.orders,
            prepared: std::collections::VecDeque::new(),
        }
    }

    /// Encodes the first requests of `max` orders each, up to
    /// [`MAX_PREPARED_ORDERS`].
    fn prepare(&mut self, max: usize) -> anyhow::Result<()> {
        let mut orders = 0;
        while orders < self.left.min(MAX_PREPARED_ORDERS) {
            let count = (self.left - orders).min(max as u64);
            let batch = self.make(count as usize)?;
            orders += batch.orders;
            self.prepared.push_back(batch);
        }
        Ok(())
    }

    /// The next request of at most `max` orders of the throughput phase.
    fn take(&mut self, max: usize) -> anyhow::Result<Option<Batch>> {
        let count = self.left.min(max as u64);
        if count == 0 {
            return Ok(None);
        }
        let batch = match self.prepared.pop_front() {
            Some(batch) => batch,
            None => self.make(count as usize)?,
        };
        self.left -= batch.orders;
        Ok(Some(batch))
    }

    fn make(&mut self, count: usize) -> anyhow::Result<Batch> {
        let orders = self.generator.orders(count);
        Ok(Batch {
            body: envelope_ndjson(&orders)?,
            orders: count as u64,
            payload_bytes: orders.iter().map(|order| order.json_len() as u64).sum(),
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Phases 1 and 2.
struct Throughput {
    orders: u64,
    bytes: u64,
    publish_secs: f64,
    drain_secs: f64,
}

impl Throughput {
    fn json(&self, args: &BenchArgs, plugins: usize) -> Value {
        json!({
            "orders": self.orders,
            "producers": args.producers,
            "batch": args.batch,
            "publish_secs": self.publish_secs,
            "publish_orders_per_sec": self.orders as f64 / self.publish_secs,
            "publish_mb_per_sec": self.bytes as f64 / 1e6 / self.publish_secs,
            "drain_secs": self.drain_secs,
            "drain_orders_per_sec": self.orders as f64 / self.drain_secs,
            "drain_deliveries_per_sec": (self.orders * plugins as u64) as f64 / self.drain_secs,
        })
    }
}

async fn throughput(
    bench: &Bench,
    args: &BenchArgs,
    source: &Arc<Mutex<Source>>,
) -> anyhow::Result<Throughput> {
    bench.say(&format!(
        "publishing {} orders ({} producers, {} per request), then waiting for {} to drain",
        args.orders,
        args.producers,
        args.batch,
        bench.plugins.join(", ")
    ));
    lock(source).prepare(args.batch)?;
    let bench = Arc::new(bench.clone());
    let started = Instant::now();
    let mut producers = JoinSet::new();
    for _ in 0..args.producers {
        producers.spawn(produce(Arc::clone(&bench), Arc::clone(source), args.batch));
    }
    let (mut orders, mut bytes) = (0, 0);
    while let Some(joined) = producers.join_next().await {
        let (sent, sent_bytes) = joined.context("a producer panicked")??;
        orders += sent;
        bytes += sent_bytes;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    loop {
        if drained(&bench.subscriptions().await?) {
            break;
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            bail!("the plugins did not drain {orders} orders within {DRAIN_TIMEOUT:?}");
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    Ok(Throughput {
        orders,
        bytes,
        publish_secs,
        drain_secs: started.elapsed().as_secs_f64(),
    })
}

/// One producer: publishes batches until the source is empty; answers the
/// orders it sent and their payload bytes.
async fn produce(
    bench: Arc<Bench>,
    source: Arc<Mutex<Source>>,
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let (mut orders, mut bytes) = (0u64, 0u64);
    loop {
        let Some(batch) = lock(&source).take(batch)? else {
            return Ok((orders, bytes));
        };
        let positions = bench.publish(batch.body).await?;
        ensure!(
            positions.len() as u64 == batch.orders,
            "published {} orders but the engine answered {} positions",
            batch.orders,
            positions.len()
        );
        orders += batch.orders;
        bytes += batch.payload_bytes;
    }
}

/// Phase 3: what the latency phase measured.
struct Latency {
    rate: u64,
    secs: f64,
    sent: u64,
    /// Orders per publish request (`None`: a tick's orders in one).
    per_request: Option<usize>,
    recorder: Recorder,
}

fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Latency {
    fn json(&self) -> Value {
        let (handled, answered) = (&self.recorder.handled, &self.recorder.answered);
        let polls = self.recorder.polls.max(1) as f64;
        json!({
            "rate": self.rate,
            "achieved_rate": self.sent as f64 / self.secs,
            "orders": self.sent,
            "measured": handled.len(),
            "p50_ms": micros_to_ms(handled.value_at_quantile(0.5)),
            "p99_ms": micros_to_ms(handled.value_at_quantile(0.99)),
            "p999_ms": micros_to_ms(handled.value_at_quantile(0.999)),
            "max_ms": micros_to_ms(handled.max()),
            "mean_ms": handled.mean() / 1000.0,
            "publish_answered_p50_ms": micros_to_ms(answered.value_at_quantile(0.5)),
            "publish_answered_p99_ms": micros_to_ms(answered.value_at_quantile(0.99)),
            "poll_interval_ms": LATENCY_TICK.as_secs_f64() * 1000.0,
            "poll_mean_ms": self.recorder.poll_time.as_secs_f64() * 1000.0 / polls,
            "orders_per_request": self.per_request,
            "longest_ms": self.recorder.longest.map(|(micros, _)| micros_to_ms(micros)),
            "longest_at_s": self.recorder.longest.map(|(_, at)| at as f64 / 1e6),
            "seconds": self.recorder.windows.iter().enumerate()
                .filter(|(_, window)| !window.is_empty())
                .map(|(second, window)| json!({
                    "second": second,
                    "orders": window.len(),
                    "p50_ms": micros_to_ms(window.value_at_quantile(0.5)),
                    "p99_ms": micros_to_ms(window.value_at_quantile(0.99)),
                    "max_ms": micros_to_ms(window.max()),
                }))
                .collect::<Vec<_>>(),
        })
    }
}

/// The store's waits over the latency phase, from the engine's `/metrics`
/// before and after it: where a slow tail is (or is not) the store's.
struct StoreWaits {
    fsync: Scraped,
    commit: Scraped,
    write_stall: Scraped,
}

impl StoreWaits {
    /// The store's histograms in one `/metrics` text.
    fn parse(text: &str) -> Option<StoreWaits> {
        Some(StoreWaits {
            fsync: Scraped::parse(text, "courier_storage_fsync_seconds")?,
            commit: Scraped::parse(text, "courier_storage_commit_seconds")?,
            write_stall: Scraped::parse(text, "courier_storage_write_stall_seconds")?,
        })
    }

    /// What happened between two scrapes (`None` if the second failed).
    fn between(before: StoreWaits, after: Option<StoreWaits>) -> Option<StoreWaits> {
        let after = after?;
        Some(StoreWaits {
            fsync: after.fsync.since(&before.fsync),
            commit: after.commit.since(&before.commit),
            write_stall: after.write_stall.since(&before.write_stall),
        })
    }

    fn json(&self) -> Value {
        json!({
            "fsync": self.fsync.json(),
            "commit": self.commit.json(),
            "write_stall": self.write_stall.json(),
        })
    }
}

/// The CPU time each plugin's batches took over the throughput and drain
/// phases (guest code, host calls and staging, measured per batch by the
/// dispatch threads), from the engine's `courier_handler_cpu_seconds`.
struct PluginCpu {
    cpu_secs: Vec<(String, f64)>,
}

impl PluginCpu {
    const METRIC: &str = "courier_handler_cpu_seconds";

    /// The counters of `plugins` in one `/metrics` text (all or none).
    fn parse(text: &str, plugins: &[String]) -> Option<PluginCpu> {
        let cpu_secs = plugins
            .iter()
            .map(|plugin| {
                let secs = scrape::counter(text, Self::METRIC, &[("plugin", plugin)])?;
                Some((plugin.clone(), secs))
            })
            .collect::<Option<_>>()?;
        Some(PluginCpu { cpu_secs })
    }

    /// What happened between two scrapes (`None` if the second failed).
    fn between(before: PluginCpu, after: Option<PluginCpu>) -> Option<PluginCpu> {
        let cpu_secs = after?
            .cpu_secs
            .into_iter()
            .zip(before.cpu_secs)
            .map(|((plugin, after), (_, before))| (plugin, (after - before).max(0.0)))
            .collect();
        Some(PluginCpu { cpu_secs })
    }

    /// CPU µs per order: each plugin's and their sum.
    fn json(&self, orders: u64) -> Value {
        let per_order = |secs: f64| secs * 1e6 / orders.max(1) as f64;
        let plugins: serde_json::Map<String, Value> = self
            .cpu_secs
            .iter()
            .map(|(plugin, secs)| (plugin.clone(), json!(per_order(*secs))))
            .collect();
        json!({
            "cpu_us_per_order": per_order(self.cpu_secs.iter().map(|(_, secs)| secs).sum()),
            "plugins_cpu_us_per_order": plugins,
        })
    }
}

/// What the publish tasks and the cursor poller share: the orders not yet
/// handled by every plugin, by partition and offset, with their scheduled
/// send times, and the histograms (microseconds).
struct Recorder {
    /// When the phase started: windows and stalls are placed from it.
    started: Instant,
    pending: HashMap<u32, BTreeMap<u64, Instant>>,
    pending_count: usize,
    /// Scheduled send until every plugin handled the order.
    handled: Histogram<u64>,
    /// The same per second of the phase, by the order's scheduled send.
    windows: Vec<Histogram<u64>>,
    /// The longest latency (µs) and when its order was scheduled (µs into
    /// the phase): the worst stall an order saw.
    longest: Option<(u64, u64)>,
    /// Scheduled send until the publish was answered (durable).
    answered: Histogram<u64>,
    polls: u64,
    poll_time: Duration,
}

fn record_since(histogram: &mut Histogram<u64>, since: Instant, now: Instant) -> u64 {
    let micros = now.saturating_duration_since(since).as_micros();
    let micros = u64::try_from(micros).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(micros);
    micros
}

/// A histogram of latencies in µs, up to an hour.
fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a histogram")
}

impl Recorder {
    fn new(started: Instant, secs: f64) -> anyhow::Result<Recorder> {
        let windows = (0..secs.ceil().max(1.0) as usize + 1)
            .map(|_| latency_histogram())
            .collect::<anyhow::Result<_>>()?;
        Ok(Recorder {
            started,
            pending: HashMap::new(),
            pending_count: 0,
            handled: latency_histogram()?,
            windows,
            longest: None,
            answered: latency_histogram()?,
            polls: 0,
            poll_time: Duration::ZERO,
        })
    }

    /// A publish sent at `sent` was answered with `positions`.
    fn published(&mut self, positions: &[Position], sent: Instant) {
        record_since(&mut self.answered, sent, Instant::now());
        for position in positions {
            let partition = self.pending.entry(position.partition).or_default();
            if partition.insert(position.offset, sent).is_none() {
                self.pending_count += 1;
            }
        }
    }

    /// Records every order below the cursors of all plugins as handled now.
    fn handled(&mut self, cursors: &HashMap<u32, u64>) {
        let now = Instant::now();
        for (partition, orders) in &mut self.pending {
            let Some(&cursor) = cursors.get(partition) else {
                continue;
            };
            let still_pending = orders.split_off(&cursor);
            for sent in std::mem::replace(orders, still_pending).into_values() {
                let micros = record_since(&mut self.handled, sent, now);
                let at = sent.saturating_duration_since(self.started);
                let last = self.windows.len() - 1;
                let window = &mut self.windows[(at.as_secs() as usize).min(last)];
                window.saturating_record(micros);
                let at = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
                if self.longest.is_none_or(|(longest, _)| micros > longest) {
                    self.longest = Some((micros, at));
                }
                self.pending_count -= 1;
            }
        }
    }
}

/// The lowest committed cursor over every plugin, per partition.
fn min_cursors(subscriptions: &[SubscriptionView]) -> HashMap<u32, u64> {
    let mut cursors: HashMap<u32, u64> = HashMap::new();
    for partition in subscriptions.iter().flat_map(|s| &s.partitions) {
        cursors
            .entry(partition.partition)
            .and_modify(|c| *c = (*c).min(partition.committed))
            .or_insert(partition.committed);
    }
    cursors
}

async fn latency(
    bench: &Bench,
    args: &BenchArgs,
    source: &Arc<Mutex<Source>>,
) -> anyhow::Result<Latency> {
    bench.say(&format!(
        "measuring latency at {} orders/s for {}s",
        args.rate, args.latency_secs
    ));
    let bench = Arc::new(bench.clone());
    let recorder = Arc::new(Mutex::new(Recorder::new(
        Instant::now(),
        args.latency_secs,
    )?));
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = tokio::spawn(poll_cursors(
        Arc::clone(&bench),
        Arc::clone(&recorder),
        stop.clone(),
    ));
    let started = Instant::now();
    let sent = publish_at_rate(&bench, args, source, &recorder).await;
    let secs = started.elapsed().as_secs_f64();
    let settled = wait_settled(&recorder).await;
    stop.cancel();
    poller.await.context("the cursor poller panicked")??;
    let sent = sent?;
    settled?;
    let recorder = Arc::into_inner(recorder)
        .context("the latency recorder is still shared")?
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    Ok(Latency {
        rate: args.rate,
        secs,
        sent,
        per_request: args.per_request,
        recorder,
    })
}

/// Publishes `rate` orders per second for `latency_secs`, one batch per
/// tick, open-loop; answers how many orders were published.
async fn publish_at_rate(
    bench: &Arc<Bench>,
    args: &BenchArgs,
    source: &Arc<Mutex<Source>>,
    recorder: &Arc<Mutex<Recorder>>,
) -> anyhow::Result<u64> {
    let mut ticker = tokio::time::interval(LATENCY_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let permits = Arc::new(Semaphore::new(MAX_LATENCY_REQUESTS));
    let ticks = (args.latency_secs / LATENCY_TICK.as_secs_f64()).round() as u64;
    let (mut sent, mut requests) = (0u64, JoinSet::new());
    for tick in 1..=ticks {
        let scheduled = ticker.tick().await.into_std();
        let due = (args.rate as f64 * (tick as f64 * LATENCY_TICK.as_secs_f64())) as u64;
        if due <= sent {
            continue;
        }
        let orders = lock(source).generator.orders((due - sent) as usize);
        sent = due;
        let per_request = args.per_request.unwrap_or(orders.len()).max(1);
        for chunk in orders.chunks(per_request) {
            let body = envelope_ndjson(chunk)?;
            let permit = Arc::clone(&permits).acquire_owned().await?;
            let (bench, recorder) = (Arc::clone(bench), Arc::clone(recorder));
            requests.spawn(async move {
                let positions = bench.publish(body).await?;
                lock(&recorder).published(&positions, scheduled);
                drop(permit);
                anyhow::Ok(())
            });
        }
        while let Some(done) = requests.try_join_next() {
            done.context("a publish task panicked")??;
        }
    }
    while let Some(done) = requests.join_next().await {
        done.context("a publish task panicked")??;
    }
    Ok(sent)
}

/// Polls the plugins' cursors every tick and records the orders they
/// passed, until `stop`.
async fn poll_cursors(
    bench: Arc<Bench>,
    recorder: Arc<Mutex<Recorder>>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(LATENCY_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let polled = Instant::now();
        let cursors = min_cursors(&bench.subscriptions().await?);
        let mut recorder = lock(&recorder);
        recorder.polls += 1;
        recorder.poll_time += polled.elapsed();
        recorder.handled(&cursors);
    }
}

/// Waits until every published order of the latency phase was handled.
async fn wait_settled(recorder: &Mutex<Recorder>) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let left = lock(recorder).pending_count;
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            bail!("{left} orders of the latency phase were not handled within {SETTLE_TIMEOUT:?}");
        }
        tokio::time::sleep(LATENCY_TICK).await;
    }
}

/// A memory figure (`VmHWM:` peak, `VmRSS:` current) of a
/// `/proc/<pid>/status` file, in MB.
fn memory_mb(status: &Path, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(status).ok()?;
    let line = text.lines().find(|line| line.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

fn print_report(report: &Value) {
    let throughput = &report["throughput"];
    let number = |value: &Value| value.as_f64().unwrap_or(0.0);
    println!(
        "\ncourier bench: {} orders of ~{:.0} bytes on topic {}, {} plugins, engine {}",
        throughput["orders"],
        number(&report["order_bytes_avg"]),
        report["topic"].as_str().unwrap_or(""),
        report["plugins"].as_array().map_or(0, Vec::len),
        report["engine"].as_str().unwrap_or("")
    );
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["measure", "result", "target", "met"]);
    let rate = |key: &str| format!("{:.0} orders/s", number(&throughput[key]));
    table.add_row(info(
        "publish (durable answers)",
        rate("publish_orders_per_sec"),
    ));
    let drain = number(&throughput["drain_orders_per_sec"]);
    let met = drain >= TARGET_DRAIN_ORDERS_PER_SEC;
    let target = "≥ 100000 orders/s";
    table.add_row(row(
        "drained end to end",
        rate("drain_orders_per_sec"),
        target,
        met,
    ));
    add_latency_rows(&mut table, &report["latency"]);
    add_store_rows(&mut table, &report["store_in_latency_phase"]);
    let cpu = &report["engine_cpu"];
    if let Some(us) = cpu["us_per_order_drained"].as_f64() {
        table.add_row(info(
            "engine CPU per order (publish and drain)",
            format!("{us:.1} µs"),
        ));
    }
    add_plugin_cpu_row(&mut table, &report["plugins_in_drain"]);
    if let Some(percent) = cpu["latency_phase_core_percent"].as_f64() {
        table.add_row(info(
            "engine CPU in the latency phase",
            format!("{percent:.0}% of a core"),
        ));
    }
    let peak = match report["peak_rss_mb"].as_f64() {
        Some(mb) => row(
            "engine peak RSS",
            format!("{mb:.0} MB"),
            "≤ 200 MB",
            mb <= TARGET_PEAK_RSS_MB,
        ),
        None => info("engine peak RSS", "unknown (give --pid)".to_owned()),
    };
    table.add_row(peak);
    if let Some(mb) = report["rss_after_start_mb"].as_f64() {
        table.add_row(info("RSS once plugins were loaded", format!("{mb:.0} MB")));
    }
    println!("{table}");
    let counted = match &report["notices_published"] {
        Value::Null => String::new(),
        notices => format!(
            "; notification published {notices} notices for {} orders",
            report["orders_published"]
        ),
    };
    println!(
        "published in {:.2}s, drained {:.2}s after the first publish; dead letters: {}{counted}",
        number(&throughput["publish_secs"]),
        number(&throughput["drain_secs"]),
        report["dead_letters"],
    );
    let latency = &report["latency"];
    if !latency.is_null() {
        println!(
            "latency: scheduled send until every plugin's cursor passed the order, seen by \
             polling every {} ms (a poll took {:.2} ms on average)",
            latency["poll_interval_ms"],
            number(&latency["poll_mean_ms"])
        );
    }
}

fn add_latency_rows(table: &mut Table, latency: &Value) {
    if latency.is_null() {
        return;
    }
    let ms = |key: &str| format!("{:.2} ms", latency[key].as_f64().unwrap_or(0.0));
    let rate = latency["achieved_rate"].as_f64().unwrap_or(0.0);
    let per_request = match latency["orders_per_request"].as_u64() {
        Some(1) => ", one per request".to_owned(),
        Some(n) => format!(", {n} per request"),
        None => String::new(),
    };
    table.add_row(info(
        &format!("latency p50 at {rate:.0} orders/s{per_request}"),
        ms("p50_ms"),
    ));
    let p99 = latency["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
    table.add_row(row(
        "latency p99",
        ms("p99_ms"),
        "≤ 10 ms",
        p99 <= TARGET_P99_MS,
    ));
    table.add_row(info("latency p99.9", ms("p999_ms")));
    if let (Some(longest), Some(at)) = (
        latency["longest_ms"].as_f64(),
        latency["longest_at_s"].as_f64(),
    ) {
        table.add_row(info(
            "longest stall (an order's publish to its acks)",
            format!("{longest:.2} ms, for an order sent {at:.2} s into the phase"),
        ));
    }
    table.add_row(info("latency p99 by second", p99_by_second(latency)));
    table.add_row(info("publish answered p99", ms("publish_answered_p99_ms")));
}

/// `2.1 2.3 9.8 ... ms`: each second's p99, in order.
fn p99_by_second(latency: &Value) -> String {
    let seconds: Vec<String> = latency["seconds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|second| second["p99_ms"].as_f64())
        .map(|p99| format!("{p99:.1}"))
        .collect();
    format!("{} ms", seconds.join(" "))
}

/// The store's waits during the latency phase, one row per kind.
fn add_store_rows(table: &mut Table, store: &Value) {
    if store.is_null() {
        return;
    }
    for (key, what) in [
        ("fsync", "store fsyncs (latency phase)"),
        ("commit", "store commits into fjall (latency phase)"),
        ("write_stall", "writer waits for flushes (latency phase)"),
    ] {
        table.add_row(info(what, waits_summary(&store[key])));
    }
}

/// `31.2 µs (membership 9.1, notification 9.8, recommendation 12.3)`.
fn add_plugin_cpu_row(table: &mut Table, plugins_cpu: &Value) {
    let (Some(total), Some(plugins)) = (
        plugins_cpu["cpu_us_per_order"].as_f64(),
        plugins_cpu["plugins_cpu_us_per_order"].as_object(),
    ) else {
        return;
    };
    let each: Vec<String> = plugins
        .iter()
        .map(|(plugin, us)| format!("{plugin} {:.1}", us.as_f64().unwrap_or(0.0)))
        .collect();
    table.add_row(info(
        "in the plugins' batches (CPU per order)",
        format!("{total:.1} µs ({})", each.join(", ")),
    ));
}

/// `24567, mean 0.44 ms, 12 over 10 ms, slowest ≤ 50 ms`.
fn waits_summary(waits: &Value) -> String {
    let count = waits["count"].as_u64().unwrap_or(0);
    let Some(mean) = waits["mean_ms"].as_f64() else {
        return format!("{count}");
    };
    let slowest = match (
        waits["slowest_at_most_ms"].as_f64(),
        waits["slowest_over_ms"].as_f64(),
    ) {
        (Some(ms), _) => format!("≤ {ms} ms"),
        (None, Some(ms)) => format!("over {ms} ms"),
        (None, None) => "unknown".to_owned(),
    };
    format!(
        "{count}, mean {mean:.2} ms, {} over 10 ms, slowest {slowest}",
        waits["over_10ms"]
    )
}

fn info(measure: &str, result: String) -> Vec<String> {
    vec![measure.to_owned(), result, String::new(), String::new()]
}

fn row(measure: &str, result: String, target: &str, met: bool) -> Vec<String> {
    let met = if met { "yes" } else { "NO" };
    vec![
        measure.to_owned(),
        result,
        target.to_owned(),
        met.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_whatever_the_command_name() {
        let stat = "4242 (courier (x) y) S 1 4242 4242 0 -1 4194560 9 0 0 0                     1234 56 0 0 20 0 9 0 100 1000 200 0";
        assert_eq!(cpu_ticks(stat), Some(1234 + 56));
        assert_eq!(cpu_ticks("4242 (courier) S 1 2"), None, "too short");
        assert_eq!(cpu_ticks("no name"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        // Spin until the kernel has charged at least one clock tick; a
        // broken reader stays at zero and the deadline fails the test.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut spins = 0u64;
        loop {
            let secs = cpu_secs(Path::new("/proc/self/stat")).expect("readable on Linux");
            if secs > 0.0 {
                break;
            }
            assert!(Instant::now() < deadline, "no CPU time after {spins} spins");
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}
