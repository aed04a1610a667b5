//! Hot reload through the watched directory (real `notify` events, real
//! debounce): a plugin added while the engine runs, a new version swapped
//! in between batches, a broken file that never replaces the running
//! version, a removal that keeps cursors and state, and a re-add that
//! resumes where the plugin stopped.
//!
//! `fixture-tagger` records which version handled which message: state
//! `handled/<topic>/<partition>/<offset>` = its config `tag`, and `count`
//! counts every acknowledged call, so `count == messages` means nothing was
//! lost or handled twice.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use courier_tests::Client;
use serde_json::{Value, json};

use crate::fixtures::manifest;
use crate::support::{
    WAIT, assert_failed, component_bytes, eventually, plugin_status, publish_raw, start,
    state_number, wait_count, wait_last_error, write_atomically,
};

/// Deploys fixture-tagger as `name` with `tag`, as a careful operator
/// would: the manifest, then the component, each through a rename.
fn deploy_tagger(dir: &Path, name: &str, tag: &str, rest: &str) {
    let text = manifest("jobs", &format!("{rest}\n[config]\ntag = \"{tag}\""));
    write_atomically(dir, &format!("{name}.toml"), text.as_bytes());
    write_atomically(
        dir,
        &format!("{name}.wasm"),
        &component_bytes("fixture-tagger"),
    );
}

/// The tag of every handled message of partition 0 of `jobs`, by offset.
async fn tags(client: &Client, plugin: &str) -> Vec<(u64, String)> {
    let (status, body) = client
        .get(&format!(
            "/v1/plugins/{plugin}/state?prefix=handled/jobs/0/&limit=1000"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut tags: Vec<(u64, String)> = body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| {
            let key = entry["key"].as_str().expect("key");
            let offset = key
                .rsplit('/')
                .next()
                .and_then(|o| o.parse().ok())
                .expect("offset");
            (offset, entry["value"].as_str().expect("tag").to_owned())
        })
        .collect();
    tags.sort();
    tags
}

/// The running version of `plugin`.
async fn version(client: &Client, plugin: &str) -> Option<String> {
    plugin_status(client, plugin).await?["version"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_plugin_dropped_into_the_directory_starts_consuming_from_its_start_position() {
    let engine = start(&[]).await;
    let client = &engine.client;
    publish_raw(client, "jobs", &["0", "1", "2", "3", "4"]).await;

    let dir = engine.plugins_dir();
    deploy_tagger(&dir, "early", "early", "[delivery]\nstart = \"earliest\"");
    deploy_tagger(&dir, "late", "late", "[delivery]\nstart = \"latest\"");
    eventually("both new plugins subscribed", || async {
        client.subscription("early", "jobs").await.is_some()
            && client.subscription("late", "jobs").await.is_some()
    })
    .await;
    publish_raw(client, "jobs", &["5", "6", "7"]).await;

    wait_count(client, "early", "count", 8).await;
    wait_count(client, "late", "count", 3).await;
    let early: Vec<u64> = tags(client, "early")
        .await
        .into_iter()
        .map(|(offset, _)| offset)
        .collect();
    assert_eq!(
        early,
        (0..8).collect::<Vec<_>>(),
        "earliest: the backlog too"
    );
    let late: Vec<u64> = tags(client, "late")
        .await
        .into_iter()
        .map(|(offset, _)| offset)
        .collect();
    assert_eq!(late, [5, 6, 7], "latest: only what came after it");
    for name in ["early", "late"] {
        let status = plugin_status(client, name).await.expect("status");
        assert_eq!(status["status"], "running", "{status}");
        assert_eq!(status["subscriptions"], json!(["jobs"]), "{status}");
    }
    engine.shutdown().await;
}

/// Publishes one message at a time to `jobs` until `stop`; returns how
/// many it published.
fn keep_publishing(client: Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut published = 0;
        while !stop.load(Ordering::Relaxed) {
            publish_raw(&client, "jobs", &[&published.to_string()]).await;
            published += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        published
    })
}

#[tokio::test]
async fn a_new_version_takes_over_between_batches_without_losing_or_repeating_a_message() {
    let engine = start(&[]).await;
    let client = &engine.client;
    let dir = engine.plugins_dir();
    // Small batches: the swap lands between two of many.
    deploy_tagger(&dir, "tagger", "v1", "[delivery]\nbatch_size = 4");
    eventually("v1 runs", || async {
        version(client, "tagger").await.is_some()
    })
    .await;
    let v1 = version(client, "tagger").await;

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = keep_publishing(client.clone(), Arc::clone(&stop));
    eventually("v1 handled some messages", || async {
        state_number(client, "tagger", "count").await >= Some(10)
    })
    .await;
    deploy_tagger(&dir, "tagger", "v2", "[delivery]\nbatch_size = 4");
    eventually("v2 replaced v1", || async {
        version(client, "tagger").await != v1
    })
    .await;
    eventually("v2 handled a message", || async {
        tags(client, "tagger")
            .await
            .iter()
            .any(|(_, tag)| tag == "v2")
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.expect("publisher");
    client.wait_drained("tagger", "jobs", WAIT).await;

    let count = state_number(client, "tagger", "count").await;
    assert_eq!(
        count,
        Some(published as i64),
        "every message acknowledged exactly once"
    );
    let tags = tags(client, "tagger").await;
    let offsets: Vec<u64> = tags.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(
        offsets,
        (0..published).collect::<Vec<_>>(),
        "no message lost"
    );
    // One partition, ordered: v1 handled a prefix, v2 the rest.
    let first_v2 = tags
        .iter()
        .position(|(_, tag)| tag == "v2")
        .expect("v2 handled something");
    assert!(first_v2 > 0, "v1 handled nothing");
    let sequence: Vec<&str> = tags.iter().map(|(_, tag)| tag.as_str()).collect();
    assert!(
        sequence[..first_v2].iter().all(|tag| *tag == "v1"),
        "{sequence:?}"
    );
    assert!(
        sequence[first_v2..].iter().all(|tag| *tag == "v2"),
        "v1 handled a message after v2 took over: {sequence:?}"
    );
    let status = plugin_status(client, "tagger").await.expect("status");
    assert_eq!(status["last_error"], Value::Null, "{status}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_broken_new_version_never_replaces_the_running_one() {
    let engine = start(&[]).await;
    let client = &engine.client;
    let dir = engine.plugins_dir();
    deploy_tagger(&dir, "tagger", "v1", "");
    eventually("v1 runs", || async {
        version(client, "tagger").await.is_some()
    })
    .await;
    let v1 = version(client, "tagger").await;
    publish_raw(client, "jobs", &["0", "1", "2"]).await;
    wait_count(client, "tagger", "count", 3).await;

    // Garbage in place of the component.
    write_atomically(&dir, "tagger.wasm", b"\0asm garbage, not a component");
    let status = wait_last_error(client, "tagger").await;
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(status["version"].as_str(), v1.as_deref(), "{status}");
    let error = status["last_error"].as_str().expect("error");
    assert!(
        error.contains("tagger.wasm is not a WebAssembly component"),
        "{error}"
    );
    publish_raw(client, "jobs", &["3", "4", "5"]).await;
    wait_count(client, "tagger", "count", 6).await;

    // The good component back: the error goes, v1 never stopped.
    write_atomically(&dir, "tagger.wasm", &component_bytes("fixture-tagger"));
    eventually("the error is cleared", || async {
        plugin_status(client, "tagger")
            .await
            .is_some_and(|s| s["last_error"].is_null())
    })
    .await;

    // A manifest with an unknown key (and a new tag it must not apply).
    let broken = manifest(
        "jobs",
        "[config]\ntag = \"v2\"\n[delivery]\ncolour = \"red\"",
    );
    write_atomically(&dir, "tagger.toml", broken.as_bytes());
    let status = wait_last_error(client, "tagger").await;
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(status["version"].as_str(), v1.as_deref(), "{status}");
    let error = status["last_error"].as_str().expect("error");
    assert!(
        error.contains(&dir.join("tagger.toml").display().to_string()),
        "{error}"
    );
    assert!(error.contains("unknown field `colour`"), "{error}");
    publish_raw(client, "jobs", &["6", "7", "8"]).await;
    wait_count(client, "tagger", "count", 9).await;

    let tags = tags(client, "tagger").await;
    assert_eq!(tags.len(), 9, "{tags:?}");
    assert!(
        tags.iter().all(|(_, tag)| tag == "v1"),
        "only v1 ever ran: {tags:?}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_removed_plugin_stops_receiving_and_resumes_where_it_stopped_when_re_added() {
    let engine = start(&[]).await;
    let client = &engine.client;
    let dir = engine.plugins_dir();
    deploy_tagger(&dir, "tagger", "v1", "");
    // A second plugin on the same topic: the clock that says "the removed
    // one would have had its messages by now".
    deploy_tagger(&dir, "witness", "w", "");
    eventually("both run", || async {
        version(client, "tagger").await.is_some() && version(client, "witness").await.is_some()
    })
    .await;
    publish_raw(client, "jobs", &["0", "1", "2", "3", "4"]).await;
    wait_count(client, "tagger", "count", 5).await;

    std::fs::remove_file(dir.join("tagger.wasm")).expect("removing the component");
    eventually("the tagger is no longer running", || async {
        plugin_status(client, "tagger")
            .await
            .is_none_or(|s| s["version"].is_null())
    })
    .await;
    publish_raw(client, "jobs", &["5", "6", "7", "8", "9"]).await;
    wait_count(client, "witness", "count", 10).await;
    client.wait_drained("witness", "jobs", WAIT).await;
    assert_eq!(
        state_number(client, "tagger", "count").await,
        Some(5),
        "a removed plugin got messages"
    );
    let sub = client
        .subscription("tagger", "jobs")
        .await
        .expect("the subscription is kept");
    assert_eq!(sub["partitions"][0]["committed"], 5, "{sub}");
    assert_eq!(sub["lag"], 5, "{sub}");
    assert_eq!(tags(client, "tagger").await.len(), 5, "its state is kept");

    deploy_tagger(&dir, "tagger", "v2", "");
    wait_count(client, "tagger", "count", 10).await;
    client.wait_drained("tagger", "jobs", WAIT).await;
    let tags = tags(client, "tagger").await;
    let expected: Vec<(u64, String)> = (0..10)
        .map(|o| (o, if o < 5 { "v1" } else { "v2" }.to_owned()))
        .collect();
    assert_eq!(
        tags, expected,
        "resumed at offset 5, nothing delivered again"
    );
    assert_eq!(state_number(client, "tagger", "count").await, Some(10));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_load_that_failed_on_the_environment_is_retried_with_the_same_files() {
    let engine = start(&[]).await;
    let client = &engine.client;
    let dir = engine.plugins_dir();
    // A granted directory that does not exist yet: the sandbox cannot be
    // built, through no fault of the plugin's files.
    let granted = engine.dir.path().join("reference-data");
    let grant = format!("[capabilities]\nread_dirs = [\"{}\"]", granted.display());
    deploy_tagger(&dir, "tagger", "v1", &grant);
    let status = wait_last_error(client, "tagger").await;
    assert_failed(&status, &["read_dirs", "reference-data"]);

    // The directory appears; the plugin's files stay exactly as they were.
    // Any change in the plugins directory triggers a reload (the periodic
    // rescan would too, later).
    std::fs::create_dir(&granted).expect("creating the granted directory");
    write_atomically(&dir, "NOTES.txt", b"not a plugin");
    eventually("tagger runs", || async {
        version(client, "tagger").await.is_some()
    })
    .await;
    publish_raw(client, "jobs", &["0", "1"]).await;
    wait_count(client, "tagger", "count", 2).await;
    engine.shutdown().await;
}
