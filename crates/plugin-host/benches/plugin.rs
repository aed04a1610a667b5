//! Plugin host benchmark (reported, never asserted). One thread, JSON
//! orders from `courier_workload`'s 300-byte shape (~290 bytes on
//! average), the real compiled components of the `plugins/` workspace
//! (built first if needed).
//!
//! ```sh
//! cargo bench -p courier-plugin-host --bench plugin                # everything
//! cargo bench -p courier-plugin-host --bench plugin -- boundary    # some of it
//! ```
//! Scenarios:
//! - `boundary`: (a) the bare call of `fixture-ack` through our own
//!   `bindgen!` of the WIT on a reused instance, with a host that does
//!   nothing, against (b) `PluginInstance::handle` on the same component:
//!   the difference is what the host adds per message (building the WIT
//!   message, staging, the epoch deadline, converting the outcome).
//! - `parse`: (c) `membership`, `notification` and `recommendation`, which
//!   parse the order, read state and stage state writes (and publishes)
//!   through the host, on state that holds what the earlier orders left:
//!   everything per message except the durable commit, which the store
//!   benchmark measures.
//! - `isolation`: (d) a fresh instance per batch of 100 and per message,
//!   against a reused one.
//! - `reload`: (e) from a new plugin version landing in a watched
//!   directory (warm compile cache) to that version handling a message, on
//!   a real engine; the median of several runs.
//!
//! The bench has its own `bindgen!` for (a): a direct call needs the
//! generated bindings, which the engine keeps private to `plugin` (the only
//! module that touches wasmtime). Its engine settings mirror
//! `plugin::runtime`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_core::{Effects, Message, NewMessage, Outcome, StateOp};
use courier_plugin_host::{LoadedPlugin, Manifest, PluginRuntime, RuntimeConfig, StateReader};
use courier_workload::{Generator, Shape};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Messages per timed chunk: built before the clock starts, so building
/// them is never measured.
const CHUNK: usize = 10_000;
/// Reload runs; the median is reported.
const RELOAD_RUNS: usize = 7;
/// Rounds of each in-process measurement; the best is reported (the
/// machine is shared: the fastest round is the least disturbed one).
/// Compared variants run interleaved, round by round.
const ROUNDS: usize = 5;

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    build_plugins();
    let bench = Bench::new();
    println!("orders: {} bytes of JSON on average", bench.orders_bytes);
    let mut rows = Vec::new();
    if run("boundary") {
        rows.extend(bench.boundary());
    }
    if run("parse") {
        rows.extend(bench.parse());
    }
    if run("isolation") {
        rows.extend(bench.isolation());
    }
    if run("reload") {
        rows.push(reload());
    }
    println!("\n| measurement | result | target |\n| --- | --- | --- |");
    for Row {
        what,
        result,
        target,
    } in rows
    {
        println!("| {what} | {result} | {target} |");
    }
}

/// One line of the report.
struct Row {
    what: String,
    result: String,
    target: String,
}

fn row(what: &str, result: String, target: &str) -> Row {
    Row {
        what: what.to_owned(),
        result,
        target: target.to_owned(),
    }
}

/// "0.52 µs/msg".
fn per_msg(duration: Duration, messages: usize) -> f64 {
    duration.as_secs_f64() * 1e6 / messages as f64
}

/// `target` with a verdict: "<= 0.5 µs (met)".
fn verdict(value: f64, limit: f64, unit: &str) -> String {
    let met = if value <= limit { "met" } else { "MISSED" };
    format!("<= {limit} {unit} ({met})")
}

/// The plugins workspace's build directory.
fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/wasm32-wasip2/release")
}

/// Builds the plugins workspace (a no-op when it is up to date). It has
/// its own target directory, so it never waits on this bench's cargo.
fn build_plugins() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/Cargo.toml");
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .status()
        .expect("running cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins failed (`make plugins` installs the wasm32-wasip2 target)"
    );
}

fn wasm(file: &str) -> Vec<u8> {
    let path = plugin_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Committed state as the store would hold it: the effects of every
/// acknowledged message so far, applied after each batch (as a settle
/// does), so handlers read the profiles, points and levels earlier orders
/// left, like in the engine.
#[derive(Default)]
struct Committed(Mutex<HashMap<String, HashMap<String, Vec<u8>>>>);

impl StateReader for Committed {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let state = self.0.lock().expect("state lock");
        Ok(state.get(namespace).and_then(|keys| keys.get(key)).cloned())
    }
}

impl Committed {
    fn apply(&self, namespace: &str, effects: Effects) {
        let mut state = self.0.lock().expect("state lock");
        let keys = state.entry(namespace.to_owned()).or_default();
        for op in effects.state {
            match op {
                StateOp::Set { key, value } => {
                    keys.insert(key, value);
                }
                StateOp::Delete { key } => {
                    keys.remove(&key);
                }
                StateOp::Increment { key, delta } => {
                    let value = keys.entry(key).or_default();
                    let current: i64 = std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse().ok())
                        .unwrap_or(0);
                    *value = (current + delta).to_string().into_bytes();
                }
            }
        }
    }
}

/// What the in-process scenarios share.
struct Bench {
    runtime: PluginRuntime,
    _cache: tempfile::TempDir,
    /// 300-byte orders as stored messages (topic `orders`, partition 0).
    orders: Vec<Message>,
    orders_bytes: usize,
}

impl Bench {
    fn new() -> Bench {
        let cache = tempfile::tempdir().expect("tempdir");
        let runtime = PluginRuntime::new(RuntimeConfig {
            cache_dir: Some(cache.path().to_owned()),
            ..RuntimeConfig::default()
        })
        .expect("plugin runtime");
        // The workload's 300-byte shape; orders grow by whole items
        // (~70 bytes), so they average ~290 bytes.
        let mut generator = Generator::new(Shape::default());
        let topic: Arc<str> = Arc::from("orders");
        let orders: Vec<Message> = (0..CHUNK as u64)
            .map(|offset| {
                let order = generator.next_order();
                Message {
                    topic: Arc::clone(&topic),
                    partition: 0,
                    offset,
                    timestamp_ms: order.created_ms,
                    key: Some(order.user_id.clone().into_bytes()),
                    headers: Vec::new(),
                    payload: serde_json::to_vec(&order).expect("order JSON"),
                }
            })
            .collect();
        let orders_bytes = orders.iter().map(|m| m.payload.len()).sum::<usize>() / orders.len();
        Bench {
            runtime,
            _cache: cache,
            orders,
            orders_bytes,
        }
    }

    fn load(&self, file: &str, name: &str, manifest: &str) -> LoadedPlugin {
        let manifest = Manifest::parse(name, Path::new("bench.toml"), manifest).expect("manifest");
        self.runtime
            .load(name, Path::new(file), &wasm(file), manifest, "bench".into())
            .expect("loading the component")
    }

    /// `total` messages through `handle`, `batch` per batch (a fresh
    /// instance per batch when `fresh`), on the plugin's committed `state`.
    /// Only the handling is timed, not committing the effects; every
    /// outcome must be an ack.
    fn run(
        &self,
        plugin: &LoadedPlugin,
        state: &Arc<Committed>,
        total: usize,
        batch: usize,
        fresh: bool,
    ) -> Duration {
        let reader: Arc<dyn StateReader> = Arc::clone(state) as Arc<dyn StateReader>;
        let mut instance = plugin.instantiate(Arc::clone(&reader)).expect("instance");
        let mut timed = Duration::ZERO;
        let mut done = 0;
        while done < total {
            let chunk: Vec<Message> = self.orders.iter().take(total - done).cloned().collect();
            done += chunk.len();
            let mut chunk = chunk.into_iter().peekable();
            while chunk.peek().is_some() {
                let started = Instant::now();
                if fresh {
                    instance = plugin.instantiate(Arc::clone(&reader)).expect("instance");
                }
                instance.begin_batch();
                for message in chunk.by_ref().take(batch) {
                    let handled = instance.handle(message, 1);
                    assert_eq!(handled.outcome, Outcome::Ack, "{}", plugin.name());
                }
                let effects = instance.take_effects();
                timed += started.elapsed();
                state.apply(plugin.name(), effects);
            }
        }
        timed
    }

    /// (a) and (b), interleaved round by round.
    fn boundary(&self) -> Vec<Row> {
        const MESSAGES: usize = 100_000;
        let mut bare = bare::Bare::new(&wasm("fixture_ack.wasm"), &self.orders);
        let ack = self.load("fixture_ack.wasm", "ack", "");
        let state = Arc::new(Committed::default());
        bare.per_message(CHUNK); // warm-up
        self.run(&ack, &state, CHUNK, 256, false);
        let (mut best_bare, mut best_handle) = (f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            best_bare = best_bare.min(bare.per_message(MESSAGES));
            let handle = per_msg(self.run(&ack, &state, MESSAGES, 256, false), MESSAGES);
            best_handle = best_handle.min(handle);
        }
        let host = best_handle - best_bare;
        vec![
            row(
                "(a) bare boundary: fixture-ack, direct call, reused instance",
                format!("{best_bare:.3} µs/msg"),
                "(reference)",
            ),
            row(
                "(b) PluginInstance::handle, fixture-ack, reused instance",
                format!("{best_handle:.3} µs/msg"),
                "(reference)",
            ),
            row(
                "(b) host-side cost: handle minus the bare call",
                format!("{host:.3} µs/msg"),
                &verdict(host, 0.5, "µs/msg"),
            ),
        ]
    }

    /// (c).
    fn parse(&self) -> Vec<Row> {
        const MESSAGES: usize = 100_000;
        let mut rows = Vec::new();
        // The 3 µs budget is for a parse and a few staged effects; the
        // recommendation's JSON profile round trip is measured for reference.
        for (file, name, manifest, what, budget) in [
            (
                "membership.wasm",
                "membership",
                "",
                "(c) membership: parse + 2-3 staged state ops + ack",
                Some(3.0),
            ),
            (
                "notification.wasm",
                "notification",
                "[capabilities]\npublish = [\"notifications\"]\n[config]\ntopic = \"notifications\"",
                "(c) notification: parse + staged publish + 1 state op + ack",
                Some(3.0),
            ),
            (
                "recommendation.wasm",
                "recommendation",
                "[capabilities]\npublish = [\"recommendations\"]\n[config]\npublish_updates = \"true\"",
                "(c) recommendation: parse + read, update, write a JSON profile + publish on change",
                None,
            ),
        ] {
            let plugin = self.load(file, name, manifest);
            let state = Arc::new(Committed::default());
            self.run(&plugin, &state, CHUNK, 256, false);
            let cost = (0..ROUNDS)
                .map(|_| per_msg(self.run(&plugin, &state, MESSAGES, 256, false), MESSAGES))
                .fold(f64::MAX, f64::min);
            rows.push(row(
                what,
                format!("{cost:.3} µs/msg"),
                &budget.map_or_else(|| "(reference)".into(), |b| verdict(cost, b, "µs/msg")),
            ));
        }
        rows
    }

    /// (d).
    fn isolation(&self) -> Vec<Row> {
        const MESSAGES: usize = 100_000;
        const PER_MESSAGE: usize = 5_000;
        let mut rows = Vec::new();
        for (file, name) in [
            ("fixture_ack.wasm", "fixture-ack"),
            ("membership.wasm", "membership"),
        ] {
            let plugin = self.load(file, name, "");
            let state = Arc::new(Committed::default());
            self.run(&plugin, &state, CHUNK, 100, true);
            let (mut reused, mut per_batch, mut per_message) = (f64::MAX, f64::MAX, f64::MAX);
            for _ in 0..ROUNDS {
                reused = reused.min(per_msg(
                    self.run(&plugin, &state, MESSAGES, 100, false),
                    MESSAGES,
                ));
                per_batch = per_batch.min(per_msg(
                    self.run(&plugin, &state, MESSAGES, 100, true),
                    MESSAGES,
                ));
                per_message = per_message.min(per_msg(
                    self.run(&plugin, &state, PER_MESSAGE, 1, true),
                    PER_MESSAGE,
                ));
            }
            let added = per_batch - reused;
            rows.push(row(
                &format!("(d) {name}: reused instance"),
                format!("{reused:.3} µs/msg"),
                "(reference)",
            ));
            rows.push(row(
                &format!("(d) {name}: fresh instance per batch of 100"),
                format!("{per_batch:.3} µs/msg (+{added:.3})"),
                &verdict(added, 1.0, "µs/msg added"),
            ));
            rows.push(row(
                &format!("(d) {name}: fresh instance per message"),
                format!("{per_message:.2} µs/msg (+{:.2})", per_message - reused),
                "(not offered)",
            ));
        }
        rows
    }
}

/// (a): the call without Courier's host, through a `bindgen!` of our own.
mod bare {
    use std::time::Instant;

    use ::courier_core::Message;
    use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "consumer",
    });

    // `courier` here is the generated package module, not the crate.
    use self::courier::plugin::types::Error as WitError;
    use self::courier::plugin::types::{Message as WitMessage, Outcome as WitOutcome};

    /// A host that grants nothing and does nothing.
    struct Host {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for Host {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    impl courier::plugin::types::Host for Host {}

    impl courier::plugin::producer::Host for Host {
        fn publish(
            &mut self,
            _: String,
            _: Option<Vec<u8>>,
            _: Vec<(String, String)>,
            _: Vec<u8>,
        ) -> Result<(), WitError> {
            Ok(())
        }
    }

    impl courier::plugin::store::Host for Host {
        fn get(&mut self, _: String) -> Result<Option<Vec<u8>>, WitError> {
            Ok(None)
        }
        fn set(&mut self, _: String, _: Vec<u8>) -> Result<(), WitError> {
            Ok(())
        }
        fn delete(&mut self, _: String) -> Result<(), WitError> {
            Ok(())
        }
        fn exists(&mut self, _: String) -> Result<bool, WitError> {
            Ok(false)
        }
        fn increment(&mut self, _: String, delta: i64) -> Result<i64, WitError> {
            Ok(delta)
        }
    }

    impl courier::plugin::logging::Host for Host {
        fn log(&mut self, _: courier::plugin::logging::Level, _: String, _: String) {}
    }

    impl courier::plugin::config::Host for Host {
        fn get(&mut self, _: String) -> Result<Option<String>, WitError> {
            Ok(None)
        }
        fn get_all(&mut self) -> Result<Vec<(String, String)>, WitError> {
            Ok(Vec::new())
        }
    }

    /// One reused instance of a component, called directly.
    pub struct Bare {
        store: Store<Host>,
        consumer: Consumer,
        /// WIT messages, built once: building them is not measured.
        messages: Vec<WitMessage>,
    }

    impl Bare {
        pub fn new(wasm: &[u8], orders: &[Message]) -> Bare {
            // The settings of `plugin::runtime`: epochs change the
            // generated code, so they must match.
            let mut config = Config::new();
            config
                .wasm_component_model(true)
                .epoch_interruption(true)
                .cranelift_opt_level(wasmtime::OptLevel::Speed);
            let engine = Engine::new(&config).expect("engine");
            let mut linker = Linker::<Host>::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
            Consumer::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |host| host)
                .expect("linker");
            let component = Component::new(&engine, wasm).expect("compile");
            let pre =
                ConsumerPre::new(linker.instantiate_pre(&component).expect("link")).expect("world");
            let host = Host {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            };
            let mut store = Store::new(&engine, host);
            // No ticker here: the epoch stays 0, so one deadline serves all.
            store.set_epoch_deadline(1);
            let consumer = pre.instantiate(&mut store).expect("instance");
            let messages = orders
                .iter()
                .map(|m| WitMessage {
                    topic: m.topic.to_string(),
                    partition: m.partition,
                    offset: m.offset,
                    key: m.key.clone(),
                    headers: m.headers.clone(),
                    payload: m.payload.clone(),
                    timestamp_ms: m.timestamp_ms,
                    attempt: 1,
                })
                .collect();
            Bare {
                store,
                consumer,
                messages,
            }
        }

        /// µs per `handle` call, over `total` calls.
        pub fn per_message(&mut self, total: usize) -> f64 {
            let handler = self.consumer.courier_plugin_handler();
            let started = Instant::now();
            for message in self.messages.iter().cycle().take(total) {
                let outcome = handler.call_handle(&mut self.store, message).expect("call");
                assert!(matches!(outcome, WitOutcome::Ack));
            }
            started.elapsed().as_secs_f64() * 1e6 / total as f64
        }
    }
}

/// (e): a new version landing in the watched directory of a running
/// engine, until it handles a message.
fn reload() -> Row {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let times = runtime.block_on(reload_runs());
    let mut millis: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    millis.sort_by(f64::total_cmp);
    let median = millis[millis.len() / 2];
    let runs: Vec<String> = millis.iter().map(|ms| format!("{ms:.0}")).collect();
    row(
        &format!(
            "(e) reload: file lands -> new version handles a message (warm cache, {RELOAD_RUNS} runs)"
        ),
        format!("median {median:.0} ms (runs: {} ms)", runs.join(", ")),
        &verdict(median, 1000.0, "ms"),
    )
}

async fn reload_runs() -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = courier_engine::config::Config::local(dir.path());
    config.store.default_topic.partitions = 1;
    std::fs::create_dir_all(&config.plugins_dir).expect("plugins dir");
    let plugins = config.plugins_dir.clone();
    let engine = courier_engine::start(config).await.expect("engine");
    let tagger = wasm("fixture_tagger.wasm");

    // Warm-up: the first version compiles (and fills the cache).
    deploy(&plugins, &tagger, "warm");
    handled_by(&engine, "warm").await;
    let mut times = Vec::new();
    for run in 0..RELOAD_RUNS {
        let tag = format!("run-{run}");
        let started = Instant::now();
        deploy(&plugins, &tagger, &tag);
        handled_by(&engine, &tag).await;
        times.push(started.elapsed());
    }
    engine.shutdown().await;
    times
}

/// Writes the tagger's manifest (with `tag`), then its component, each
/// through a rename, as a deployment would. The component's bytes never
/// change, so its compiled artifact is in the cache.
fn deploy(dir: &Path, wasm: &[u8], tag: &str) {
    let manifest = format!("[[subscriptions]]\ntopic = \"jobs\"\n[config]\ntag = \"{tag}\"\n");
    for (file, bytes) in [("tagger.toml", manifest.as_bytes()), ("tagger.wasm", wasm)] {
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, dir.join(file)).expect("rename");
    }
}

/// Publishes one message at a time until one is handled by `tag`.
async fn handled_by(engine: &courier_engine::RunningEngine, tag: &str) {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let message = NewMessage {
            key: None,
            headers: Vec::new(),
            payload: b"{}".to_vec(),
        };
        let positions = engine
            .store()
            .append("jobs", &[message])
            .await
            .expect("append");
        let key = format!("handled/jobs/0/{}", positions[0].offset);
        let handled = loop {
            assert!(Instant::now() < give_up, "{tag} never handled a message");
            if let Some(value) = engine.store().state_get("tagger", &key).expect("state") {
                break value;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if handled == tag.as_bytes() {
            return;
        }
    }
}
