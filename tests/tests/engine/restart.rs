//! Restarts in the middle of work: a graceful restart and a SIGKILL of the
//! real binary while plugins consume a backlog, and a graceful shutdown
//! while producers publish. Afterwards everything acknowledged to a
//! producer is there, and nothing a plugin acknowledged happens twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use courier_tests::{Client, CourierProcess, TestEngine, install_plugin, wait_until};
use serde_json::{Value, json};

use crate::common::{self, ORDER_PLUGINS, OrderGen, Producer};

/// Messages in the backlog: with one plugin thread it lasts seconds, far
/// longer than a graceful shutdown takes (dispatch keeps delivering until
/// the HTTP server and the plugin watcher have stopped).
const BACKLOG: usize = 48_000;
/// Plugin executions at once: one, so the backlog is not gone before the
/// restart, even on a fast machine.
const PLUGIN_THREADS: usize = 1;
/// Small batches: many settles, so a restart lands between some.
const TAGGER_BATCH: u32 = 32;

/// tagger (records which run handled each offset: config `tag`) and
/// effects (publishes every payload to `effects-out`), both on `backlog`.
fn install_backlog_plugins(dir: &Path, tag: &str) {
    install_plugin(dir, "fixture-tagger", "tagger", Some(&tagger_manifest(tag)));
    let effects = format!(
        "[[subscriptions]]\ntopic = \"backlog\"\n\n[delivery]\nbatch_size = {TAGGER_BATCH}\n\n[capabilities]\npublish = [\"effects-out\"]\n"
    );
    install_plugin(dir, "fixture-effects", "effects", Some(&effects));
}

fn tagger_manifest(tag: &str) -> String {
    format!(
        "[[subscriptions]]\ntopic = \"backlog\"\n\n[delivery]\nbatch_size = {TAGGER_BATCH}\n\n[config]\ntag = \"{tag}\"\n"
    )
}

/// Changes the tag for the next start (the engine is down meanwhile).
fn write_tagger_manifest(dir: &Path, tag: &str) {
    std::fs::write(dir.join("tagger.toml"), tagger_manifest(tag)).expect("tagger manifest");
}

async fn publish_backlog(client: &Client) {
    for chunk in (0..BACKLOG).collect::<Vec<_>>().chunks(1000) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"key": format!("k-{i}"), "payload": format!("m-{i}")}))
            .collect();
        client.publish("backlog", &Value::Array(messages)).await;
    }
}

/// Waits until the tagger has handled some of the backlog, but not all.
async fn wait_some_progress(client: &Client) {
    let started = wait_until(Duration::from_secs(30), || async {
        client.state_i64("tagger", "count").await >= 100
    })
    .await;
    assert!(started, "the tagger never got going");
}

/// The tag of every offset of `partition` the tagger handled. The state
/// listing returns at most 1000 keys, so a full listing is split into
/// longer prefixes (offsets are decimal, so ten of them).
async fn offset_tags(client: &Client, partition: u64) -> BTreeMap<u64, String> {
    let root = format!("handled/backlog/{partition}/");
    let mut tags = BTreeMap::new();
    let mut prefixes = vec![root.clone()];
    while let Some(prefix) = prefixes.pop() {
        let path = format!("/v1/plugins/tagger/state?prefix={prefix}&limit=1000");
        let (status, body) = client.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let entries = body["entries"].as_array().expect("entries");
        let full = entries.len() >= 1000;
        for entry in entries {
            let key = entry["key"].as_str().expect("key");
            // From a full listing only the key equal to the prefix is
            // certain to be complete; the longer prefixes cover the rest.
            if !full || key == prefix {
                let offset = key[root.len()..].parse().expect("offset");
                tags.insert(offset, entry["value"].as_str().expect("tag").to_owned());
            }
        }
        if full {
            prefixes.extend((0..10).map(|digit| format!("{prefix}{digit}")));
        }
    }
    tags
}

/// After the restart: every message handled exactly once by both plugins,
/// the first run's acknowledgements never repeated, in order per partition.
/// Returns how many messages the second run handled.
async fn check_backlog(client: &Client) -> usize {
    client
        .wait_drained("tagger", "backlog", Duration::from_secs(60))
        .await;
    client
        .wait_drained("effects", "backlog", Duration::from_secs(60))
        .await;
    // "Drained" may show a moment before the last effects are committed
    // (see `sync`); counters only grow, so a double count still fails.
    wait_until(Duration::from_secs(20), || async {
        client.state_i64("tagger", "count").await >= BACKLOG as i64
            && client.state_i64("effects", "count").await >= BACKLOG as i64
    })
    .await;
    assert_eq!(
        client.state_i64("tagger", "count").await,
        BACKLOG as i64,
        "tagger handled each message once"
    );
    assert_eq!(
        client.state_i64("effects", "count").await,
        BACKLOG as i64,
        "effects handled each message once"
    );

    let (_, topic) = client.get("/v1/topics/backlog").await;
    let partitions = topic["partitions"].as_array().expect("partitions");
    let (mut before, mut after) = (0, 0);
    for partition in partitions {
        let index = partition["partition"].as_u64().expect("partition");
        let end = partition["end"].as_u64().expect("end");
        let tags = offset_tags(client, index).await;
        assert_eq!(
            tags.keys().copied().collect::<Vec<_>>(),
            (0..end).collect::<Vec<_>>(),
            "partition {index}: every offset handled"
        );
        // Ordered: the first run handled a prefix, the second the rest. An
        // acknowledged message delivered again would show "after" inside
        // the prefix (and count twice).
        let first_after = tags
            .values()
            .position(|tag| tag == "after")
            .unwrap_or(tags.len());
        assert!(
            tags.values().skip(first_after).all(|tag| tag == "after"),
            "partition {index}: an offset handled before the restart after one handled after it"
        );
        assert!(
            tags.values().take(first_after).all(|tag| tag == "before"),
            "partition {index}: an offset handled after the restart before one handled before it"
        );
        before += first_after;
        after += tags.len() - first_after;
    }
    eprintln!("backlog: {before} handled before the restart, {after} after");
    assert!(before > 0, "nothing was handled before the restart");

    let mut outputs: BTreeMap<String, u32> = BTreeMap::new();
    for message in client.read_topic("effects-out").await {
        *outputs
            .entry(message["payload"].as_str().expect("payload").to_owned())
            .or_default() += 1;
    }
    assert_eq!(outputs.len(), BACKLOG, "effects published every message");
    assert!(
        outputs.values().all(|count| *count == 1),
        "effects published a message twice"
    );
    after
}

/// Attempts of a restart scenario.
const ATTEMPTS: usize = 3;

/// Runs a restart scenario (which returns how many messages were handled
/// after the restart) until its restart lands in the middle of the
/// backlog. A graceful shutdown lets dispatch run on for a moment, so on a
/// fast machine the backlog may be gone before it completes; that run
/// proves nothing, so it is repeated rather than passed.
async fn until_interrupted<F, Fut>(mut scenario: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    for attempt in 1..=ATTEMPTS {
        if scenario().await > 0 {
            return;
        }
        eprintln!("attempt {attempt}: the backlog was handled before the restart completed");
    }
    panic!("in {ATTEMPTS} attempts the restart never interrupted the backlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_in_the_middle_of_a_backlog_loses_and_repeats_nothing() {
    until_interrupted(graceful_restart_scenario).await;
}

async fn graceful_restart_scenario() -> usize {
    let mut engine = TestEngine::start(|_, config| config.plugin_threads = PLUGIN_THREADS).await;
    publish_backlog(&engine.client).await;
    // Added once the whole backlog is there, so they start at its beginning.
    install_backlog_plugins(&engine.plugins_dir(), "before");
    wait_some_progress(&engine.client).await;
    engine
        .restart(|config| {
            config.plugin_threads = PLUGIN_THREADS;
            write_tagger_manifest(&config.plugins_dir, "after");
        })
        .await;
    let after = check_backlog(&engine.client).await;
    engine.shutdown().await;
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_in_the_middle_of_a_backlog_loses_and_repeats_nothing() {
    until_interrupted(sigkill_scenario).await;
}

async fn sigkill_scenario() -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let mut engine = CourierProcess::spawn(
        &dir.path().join("data"),
        &plugins,
        &["--plugin-threads", &PLUGIN_THREADS.to_string()],
        &dir.path().join("courier.log"),
    );
    engine.wait_ready(Duration::from_secs(30)).await;
    publish_backlog(&engine.client).await;
    install_backlog_plugins(&plugins, "before");
    wait_some_progress(&engine.client).await;
    engine.kill();
    write_tagger_manifest(&plugins, "after");
    engine.restart(Duration::from_secs(30)).await;
    check_backlog(&engine.client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_under_load_loses_no_acknowledged_publish() {
    let mut engine = TestEngine::start(|dir, _| {
        common::install_order_plugins(dir);
        common::install_archive(dir, "orders");
    })
    .await;
    let producer = Producer::spawn(engine.client.clone(), OrderGen::new(23), 50);
    producer.wait_for(0, 1000, Duration::from_secs(30)).await;
    engine.engine.take().expect("running").shutdown().await;
    let log = producer.stop().await;
    assert!(!log.acknowledged.is_empty(), "nothing was published");

    engine.restart(|_| {}).await;
    let client = &engine.client;
    common::wait_orders_drained(client, &ORDER_PLUGINS, Duration::from_secs(60)).await;
    let stored = common::stored_orders(client).await;
    common::assert_acknowledged_stored(&log.acknowledged, &stored);
    common::check_order_plugins(client, &common::expected(&stored)).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn a_started_engine_has_subscribed_its_boot_plugins() {
    let engine = TestEngine::start(|dir, _| {
        install_plugin(
            dir,
            "fixture-ack",
            "acker",
            Some("[[subscriptions]]\ntopic = \"boot\"\n"),
        );
    })
    .await;
    // No waiting: `start` returns once the boot plugins are subscribed, so
    // their cursors and dead letters can be asked for right away.
    let subscription = engine.client.subscription("acker", "boot").await;
    assert!(
        subscription.is_some(),
        "no subscription of acker to boot right after the start"
    );
    assert!(engine.client.dead_letters("acker").await.is_empty());
    engine.shutdown().await;
}
