//! `courier plugin new`: the plugin it writes builds with cargo for
//! wasm32-wasip2 as it is, loads into a running engine and does what its
//! template says (counts messages, per key too, in its state).

use std::time::Duration;

use courier_tests::{TestEngine, courier_binary, repo_root, wait_until};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_builds_as_written_and_runs_in_the_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let created = std::process::Command::new(courier_binary())
        .args(["plugin", "new", "greeter", "--dir"])
        .arg(dir.path())
        .output()
        .expect("courier runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let crate_dir = dir.path().join("greeter");
    for file in ["Cargo.toml", "src/lib.rs", "greeter.toml", "README.md"] {
        assert!(crate_dir.join(file).is_file(), "{file} missing");
    }
    // Nothing is overwritten.
    let again = std::process::Command::new(courier_binary())
        .args(["plugin", "new", "greeter", "--dir"])
        .arg(dir.path())
        .output()
        .expect("courier runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    // Built as its README says, sharing the plugins workspace's build
    // folder (and so its compiled dependencies).
    let target = repo_root().join("plugins/target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    assert!(
        built.status.success(),
        "the scaffold does not build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let component = target.join("wasm32-wasip2/release/greeter.wasm");

    let engine = TestEngine::start(|_, _| {}).await;
    let plugins = engine.plugins_dir();
    std::fs::copy(crate_dir.join("greeter.toml"), plugins.join("greeter.toml"))
        .expect("the manifest");
    std::fs::copy(&component, plugins.join(".greeter.wasm.tmp")).expect("the component");
    std::fs::rename(
        plugins.join(".greeter.wasm.tmp"),
        plugins.join("greeter.wasm"),
    )
    .expect("the component, atomically");
    let client = &engine.client;
    let loaded = wait_until(Duration::from_secs(30), || async {
        client.subscription("greeter", "greeter").await.is_some()
    })
    .await;
    assert!(loaded, "the new plugin never subscribed");
    client
        .publish(
            "greeter",
            &json!([
                {"key": "a", "payload": 1},
                {"key": "b", "payload": 2},
                {"key": "a", "payload": 3}
            ]),
        )
        .await;
    let counted = wait_until(Duration::from_secs(20), || async {
        client.state_i64("greeter", "seen").await == 3
    })
    .await;
    assert!(counted, "the new plugin did not count three messages");
    assert_eq!(client.state_i64("greeter", "seen/a").await, 2);
    assert_eq!(client.state_i64("greeter", "seen/b").await, 1);
    engine.shutdown().await;
}
