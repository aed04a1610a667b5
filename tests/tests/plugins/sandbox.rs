//! The sandbox, probed by `fixture-sandbox` on a real engine: it tries a
//! file, a directory listing, a TCP connection and an environment variable,
//! and records each result in its state as `denied: ...` or `allowed: ...`.

use courier_tests::Client;

use crate::fixtures::manifest;
use crate::support::{eventually, publish_raw, start};

/// What the probe recorded under `fs`, `dir`, `net` and `env`.
async fn probe(client: &Client, plugin: &str) -> [String; 4] {
    eventually(&format!("{plugin} recorded its probes"), || async {
        client.state_text(plugin, "env").await.is_some()
    })
    .await;
    let mut results = Vec::new();
    for key in ["fs", "dir", "net", "env"] {
        results.push(client.state_text(plugin, key).await.unwrap_or_default());
    }
    results.try_into().expect("four probes")
}

/// What the probe records for a host result it was allowed to see.
fn allowed(content: &str) -> String {
    let short: String = content.trim().chars().take(40).collect();
    format!("allowed: {short}")
}

#[tokio::test]
async fn without_capabilities_files_directories_network_and_environment_are_denied() {
    // A listener the plugin could reach if the network were open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("address").port();
    let manifest = manifest("probe", &format!("[config]\nport = \"{port}\""));
    let engine = start(&[("fixture-sandbox", "prober", Some(&manifest))]).await;
    publish_raw(&engine.client, "probe", &["go"]).await;

    let results = probe(&engine.client, "prober").await;
    for (what, result) in ["fs", "dir", "net", "env"].iter().zip(&results) {
        assert!(result.starts_with("denied: "), "{what}: {result}");
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn granted_capabilities_open_exactly_what_they_name() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("address").port();
    let manifest = manifest(
        "probe",
        &format!(
            "[capabilities]\nenv = [\"HOME\"]\nread_dirs = [\"/etc\"]\nnetwork = true\n[config]\nport = \"{port}\""
        ),
    );
    let engine = start(&[("fixture-sandbox", "prober", Some(&manifest))]).await;
    publish_raw(&engine.client, "probe", &["go"]).await;

    let [fs, dir, net, env] = probe(&engine.client, "prober").await;
    // /etc is mounted read-only at /etc: the plugin reads what the host has.
    match std::fs::read_to_string("/etc/hostname") {
        Ok(hostname) => assert_eq!(fs, allowed(&hostname)),
        Err(_) => assert!(fs.starts_with("denied: "), "{fs}"),
    }
    // Only /etc was granted, not /.
    assert!(dir.starts_with("denied: "), "{dir}");
    assert!(
        net.starts_with("allowed: connected"),
        "network = true must allow TCP: {net}"
    );
    match std::env::var("HOME") {
        Ok(home) => assert_eq!(env, allowed(&home)),
        Err(_) => assert!(env.starts_with("denied: "), "{env}"),
    }
    engine.shutdown().await;
}
