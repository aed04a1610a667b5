//! Manifest errors: every one names the file and the key (or what is
//! missing), through `Manifest::parse` and through the registry's status in
//! `GET /v1/plugins`. A plugin whose manifest is invalid never runs with
//! defaults instead.

use std::path::Path;

use courier_plugin_host::Manifest;
use serde_json::Value;

use crate::fixtures::manifest;
use crate::support::{assert_failed, plugin_status, start};

/// Starts an engine with fixture-tagger installed as `name` with the
/// manifest `text`; returns its status.
async fn status_with_manifest(name: &str, text: &str) -> (Value, String) {
    let engine = start(&[("fixture-tagger", name, Some(text))]).await;
    let status = plugin_status(&engine.client, name).await.expect("status");
    let file = engine
        .plugins_dir()
        .join(format!("{name}.toml"))
        .display()
        .to_string();
    engine.shutdown().await;
    (status, file)
}

#[tokio::test]
async fn a_manifest_with_an_unknown_key_is_rejected_naming_the_file_and_the_key() {
    let text = manifest("jobs", "[delivery]\nmax_attempt = 3");
    let (status, file) = status_with_manifest("typo", &text).await;
    assert_failed(
        &status,
        &[
            &file,
            "unknown field `max_attempt`",
            "delivery.max_attempt",
            "line 4",
        ],
    );
}

#[tokio::test]
async fn a_manifest_value_out_of_range_names_the_key_and_the_range() {
    let text = manifest("jobs", "[limits]\nmemory_mib = 0");
    let (status, file) = status_with_manifest("tiny", &text).await;
    assert_failed(&status, &[&file, "limits.memory_mib = 0", "between 1 and"]);
}

#[tokio::test]
async fn a_manifest_without_its_wasm_is_reported() {
    let engine = start(&[]).await;
    let path = engine.plugins_dir().join("orphan.toml");
    std::fs::write(&path, manifest("jobs", "")).expect("writing a manifest");
    let client = &engine.client;
    crate::support::eventually("the orphan manifest is reported", || async {
        plugin_status(client, "orphan").await.is_some()
    })
    .await;
    let status = plugin_status(client, "orphan").await.expect("status");
    assert_failed(
        &status,
        &[&path.display().to_string(), "has no orphan.wasm beside it"],
    );
    engine.shutdown().await;
}

#[test]
fn every_kind_of_manifest_error_names_the_file_and_the_key() {
    let cases = [
        // Unknown keys and sections.
        ("[delivery]\nbatch_sise = 10\n", "delivery.batch_sise"),
        ("[limitz]\nmemory_mib = 1\n", "unknown field `limitz`"),
        ("colour = \"red\"\n", "unknown field `colour`"),
        (
            "[capabilities]\nfilesystem = true\n",
            "capabilities.filesystem",
        ),
        // Values of the wrong type.
        ("[limits]\nmemory_mib = \"big\"\n", "limits.memory_mib"),
        ("[delivery]\nmode = 3\n", "delivery.mode"),
        ("[delivery]\nbatch_size = -1\n", "delivery.batch_size"),
        ("[config]\nlevels = 3\n", "config.levels"),
        (
            "[capabilities]\nread_dirs = \"/etc\"\n",
            "capabilities.read_dirs",
        ),
        (
            "[delivery.backoff] # quick\nbase_ms = \"fast\"\n",
            "delivery.backoff.base_ms",
        ),
        // Values of the right type but unusable.
        ("[delivery]\nmode = \"sideways\"\n", "sideways"),
        ("[delivery]\nstart = \"middle\"\n", "middle"),
        ("[delivery]\ninstance = \"shared\"\n", "shared"),
        (
            "[delivery]\nmax_attempts = 0\n",
            "delivery.max_attempts = 0",
        ),
        (
            "[delivery]\nbatch_size = 1000000000\n",
            "delivery.batch_size = 1000000000",
        ),
        ("[delivery]\nconcurrency = 4\n", "delivery.concurrency"),
        (
            "[delivery.backoff]\nbase_ms = 500\nmax_ms = 100\n",
            "delivery.backoff.max_ms = 100",
        ),
        ("[limits]\ndeadline_ms = 0\n", "limits.deadline_ms = 0"),
        (
            "[limits]\nmemory_mib = 100000\n",
            "limits.memory_mib = 100000",
        ),
        (
            "[[subscriptions]]\ntopic = \"no spaces\"\n",
            "subscriptions",
        ),
        (
            "[[subscriptions]]\ntopic = \"a\"\n[[subscriptions]]\ntopic = \"a\"\n",
            "listed twice",
        ),
        (
            "[capabilities]\npublish = [\"../escape\"]\n",
            "capabilities.publish",
        ),
        ("[[subscriptions]]\n", "missing field `topic`"),
        ("not toml at all", "plugins/p.toml"),
    ];
    for (text, expected) in cases {
        let error = Manifest::parse("p", Path::new("plugins/p.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(
            error.starts_with("manifest plugins/p.toml: "),
            "{text:?}: {error}"
        );
        assert!(
            error.contains(expected),
            "{text:?}: {expected:?} missing from {error:?}"
        );
    }
}

#[test]
fn a_valid_manifest_reads_back_what_it_says() {
    let text = "[[subscriptions]]\ntopic = \"orders\"\n[delivery]\nmode = \"unordered\"\nconcurrency = 2\n\
                [limits]\ndeadline_ms = 100\n[capabilities]\npublish = [\"out\"]\n[config]\ntag = \"v1\"\n";
    let manifest = Manifest::parse("p", Path::new("p.toml"), text).expect("valid");
    assert_eq!(manifest.subscriptions.len(), 1);
    assert_eq!(manifest.subscriptions[0].topic, "orders");
    assert_eq!(manifest.delivery.concurrency, 2);
    assert_eq!(manifest.limits.deadline_ms, 100);
    assert_eq!(
        manifest.limits.memory_mib, 64,
        "unset keys keep their defaults"
    );
    assert!(manifest.capabilities.may_publish("out"));
    assert!(!manifest.capabilities.may_publish("orders"));
    assert_eq!(manifest.config["tag"], "v1");
    // No subscriptions: the topic named like the plugin.
    let empty = Manifest::parse("audit", Path::new("audit.toml"), "").expect("empty");
    assert_eq!(empty.subscriptions[0].topic, "audit");
}
