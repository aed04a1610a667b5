//! Files in the plugins directory that are not plugins: a component of
//! the wrong world, a file that is not WebAssembly at all, a truncated
//! component. Each is rejected with an error that says what is wrong, shown
//! in `GET /v1/plugins`, and never stops the other plugins.

use serde_json::Value;

use crate::fixtures::manifest;
use crate::support::{
    assert_failed, component_bytes, plugin_status, publish_raw, start, wait_count,
};

/// Starts an engine with a working tagger and `broken` (bytes) installed as
/// `NAME.wasm`; checks the tagger still works and returns the broken
/// plugin's status.
async fn status_of_broken(name: &str, broken: &[u8]) -> Value {
    let tagger = manifest("jobs", "");
    let engine = start(&[("fixture-tagger", "tagger", Some(&tagger))]).await;
    std::fs::write(engine.plugins_dir().join(format!("{name}.wasm")), broken)
        .expect("writing the broken file");
    // Boot already happened: this is also a hot add of a broken file.
    let client = &engine.client;
    crate::support::eventually(&format!("{name} is reported"), || async {
        plugin_status(client, name).await.is_some()
    })
    .await;
    let status = plugin_status(client, name).await.expect("status");

    publish_raw(client, "jobs", &["still", "working"]).await;
    wait_count(client, "tagger", "count", 2).await;
    assert_eq!(
        plugin_status(client, "tagger").await.expect("tagger")["last_error"],
        Value::Null
    );
    engine.shutdown().await;
    status
}

/// Asserts `status` is a failed plugin whose error contains every part.
#[tokio::test]
async fn a_component_of_the_wrong_world_is_rejected_naming_the_missing_export() {
    let status = status_of_broken("greeter", &component_bytes("fixture-wrong-world")).await;
    assert_failed(
        &status,
        &[
            "greeter.wasm",
            "does not implement the courier:plugin/consumer world",
            "courier:plugin/handler",
        ],
    );
}

#[tokio::test]
async fn a_file_that_is_not_webassembly_is_rejected() {
    let status = status_of_broken("notes", b"these are my notes, not a plugin\n").await;
    assert_failed(
        &status,
        &[
            "notes.wasm",
            "is not a WebAssembly component",
            "magic bytes",
        ],
    );
}

#[tokio::test]
async fn a_truncated_component_is_rejected() {
    let whole = component_bytes("fixture-ack");
    let status = status_of_broken("half", &whole[..whole.len() / 2]).await;
    assert_failed(&status, &["half.wasm", "is not a WebAssembly component"]);
}

#[tokio::test]
async fn a_core_module_is_not_a_component() {
    // The smallest valid core module: magic bytes and version 1.
    let status = status_of_broken("core", b"\0asm\x01\0\0\0").await;
    assert_failed(&status, &["core.wasm", "is not a WebAssembly component"]);
}
