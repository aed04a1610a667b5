//! Helpers of the plugin host's tests, on top of the `courier-tests`
//! harness: an engine whose topics have one partition (so offsets are easy
//! to reason about) and a compile cache shared by every test of this binary,
//! raw binary payloads (the fixtures compare payload bytes such as `trap`),
//! and small readers of the operator API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use courier_tests::{Client, TestEngine, wait_until};
use serde_json::{Value, json};

/// Generous bound for anything a test waits for: failing tests fail at
/// this bound, passing tests never get near it.
pub const WAIT: Duration = Duration::from_secs(15);

/// A plugin to install before the engine starts: (fixture crate, plugin
/// name, manifest).
pub type Install<'a> = (&'a str, &'a str, Option<&'a str>);

/// Compiled components shared by every test of this binary: every engine
/// compiles a component once, the others deserialize the artifact. The
/// runtime writes artifacts through a temporary file and a rename, so
/// concurrent tests never see a torn one.
pub fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-tests-cache")
}

/// Starts an engine with `plugins` installed, one partition per topic and
/// the shared compile cache.
pub async fn start(plugins: &[Install<'_>]) -> TestEngine {
    TestEngine::start(|dir, config| {
        config.store.default_topic.partitions = 1;
        config.plugin_cache_dir = shared_cache_dir();
        for (crate_name, name, manifest) in plugins {
            courier_tests::install_plugin(dir, crate_name, name, *manifest);
        }
    })
    .await
}

/// Standard base64 (the producer API takes binary payloads this way).
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Publishes `payloads` (raw bytes, in order, no key) to `topic`; returns
/// their offsets.
pub async fn publish_raw(client: &Client, topic: &str, payloads: &[&str]) -> Vec<u64> {
    let messages: Vec<Value> = payloads
        .iter()
        .map(|payload| json!({ "payload_base64": base64(payload.as_bytes()) }))
        .collect();
    let body = client.publish(topic, &Value::Array(messages)).await;
    body["messages"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|position| position["offset"].as_u64().expect("offset"))
        .collect()
}

/// Waits until `check` holds; fails the test with `what` if it never does.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        wait_until(WAIT, check).await,
        "timed out waiting until {what}"
    );
}

/// A state value parsed as an integer (None if unset).
pub async fn state_number(client: &Client, plugin: &str, key: &str) -> Option<i64> {
    client.state_text(plugin, key).await.map(|text| {
        text.parse()
            .unwrap_or_else(|_| panic!("state {plugin}/{key} is not a number: {text}"))
    })
}

/// Waits until the counter `plugin`/`key` reaches `count` exactly.
pub async fn wait_count(client: &Client, plugin: &str, key: &str, count: i64) {
    let ok = wait_until(WAIT, || async {
        state_number(client, plugin, key).await == Some(count)
    })
    .await;
    let last = state_number(client, plugin, key).await;
    assert!(ok, "{plugin}/{key} never reached {count}; it is {last:?}");
}

/// `plugin`'s entry in `GET /v1/plugins`, if any.
pub async fn plugin_status(client: &Client, plugin: &str) -> Option<Value> {
    let (status, body) = client.get("/v1/plugins").await;
    assert_eq!(status, 200, "GET /v1/plugins: {body}");
    body["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == plugin)
        .cloned()
}

/// Waits until `plugin` shows a `last_error` (and returns its entry).
pub async fn wait_last_error(client: &Client, plugin: &str) -> Value {
    eventually(&format!("{plugin} shows a last_error"), || async {
        plugin_status(client, plugin)
            .await
            .is_some_and(|p| p["last_error"].is_string())
    })
    .await;
    plugin_status(client, plugin).await.expect("status")
}

/// Waits until `plugin` has exactly `count` dead letters and returns them.
pub async fn wait_dead_letters(client: &Client, plugin: &str, count: usize) -> Vec<Value> {
    let ok = wait_until(WAIT, || async {
        client.dead_letters(plugin).await.len() == count
    })
    .await;
    let letters = client.dead_letters(plugin).await;
    assert!(ok, "{plugin} never had {count} dead letters: {letters:#?}");
    letters
}

/// The raw payload of a message as the operator API shows it.
pub fn payload_text(message: &Value) -> String {
    match message["payload_base64"].as_str() {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64 payload");
            String::from_utf8(bytes).expect("UTF-8 payload")
        }
        None => message["payload"].to_string(),
    }
}

/// Writes `bytes` to `dir/file` through a temporary file and a rename, so
/// the watcher never sees half a file.
pub fn write_atomically(dir: &Path, file: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, bytes).expect("writing a temporary file");
    std::fs::rename(&tmp, dir.join(file)).expect("renaming into place");
}

/// The bytes of a compiled fixture.
pub fn component_bytes(crate_name: &str) -> Vec<u8> {
    std::fs::read(courier_tests::component(crate_name)).expect("reading a component")
}

/// Asserts `status` is a plugin that never ran (no version) and whose
/// last error names every one of `parts`.
pub fn assert_failed(status: &Value, parts: &[&str]) {
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(
        status["version"],
        Value::Null,
        "a rejected plugin must not run (not even with defaults): {status}"
    );
    let error = status["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_error: {status}"));
    for part in parts {
        assert!(error.contains(part), "{part:?} missing from {error:?}");
    }
}
