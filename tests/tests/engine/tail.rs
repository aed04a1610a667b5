//! `courier tail`: a topic's messages as stored, from earliest, latest, an
//! offset or a time, one partition or all, and with `--follow` as they
//! arrive, read through the real binary against a real engine.

use std::collections::BTreeMap;
use std::time::Duration;

use courier_tests::{TestEngine, courier_binary, run_cli};
use serde_json::{Value, json};

/// `courier tail t ARGS` against `base`, its stdout's lines.
async fn tail(base: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["tail", "t", "--server", base];
    all.extend_from_slice(args);
    run_cli(&all).await.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_what_is_stored_from_where_it_is_asked_and_follows() {
    let engine = TestEngine::start(|_, _| {}).await;
    let client = &engine.client;
    let messages: Vec<Value> = (0..12)
        .map(|i| json!({"key": format!("k{}", i % 3), "payload": {"n": i}}))
        .chain([json!({"key": "k0", "payload_base64": "aGVsbG8gdGV4dA=="})])
        .collect();
    let answer = client.publish("t", &Value::Array(messages)).await;
    let positions: Vec<(u64, u64)> = answer["messages"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| {
            (
                p["partition"].as_u64().unwrap(),
                p["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    let base = client.base.clone();

    // Everything, each partition in offset order.
    let all = tail(&base, &[]).await;
    assert_eq!(all.len(), 13, "{all:#?}");
    let mut last_offset: BTreeMap<String, i64> = BTreeMap::new();
    for line in &all {
        let (place, _) = line.split_once(' ').expect("a place and a payload");
        let (partition, offset) = place
            .strip_prefix("t/")
            .and_then(|rest| rest.split_once('@'))
            .expect("t/P@O");
        let offset: i64 = offset.parse().expect("an offset");
        let previous = last_offset
            .insert(partition.to_owned(), offset)
            .unwrap_or(-1);
        assert_eq!(offset, previous + 1, "{line}");
    }
    assert!(
        all.iter().any(|line| line.ends_with(" hello text")),
        "{all:#?}"
    );
    assert!(
        all.iter().any(|line| line.contains(r#"{"n":11}"#)),
        "{all:#?}"
    );

    assert_eq!(tail(&base, &["--limit", "3"]).await.len(), 3);
    assert!(tail(&base, &["--from", "latest"]).await.is_empty());
    let (partition, _) = positions[0];
    let in_partition = positions.iter().filter(|(p, _)| *p == partition).count();
    let from_one = tail(
        &base,
        &["--partition", &partition.to_string(), "--from", "1"],
    )
    .await;
    assert_eq!(from_one.len(), in_partition - 1, "{from_one:#?}");
    assert!(
        from_one[0].starts_with(&format!("t/{partition}@1 ")),
        "{from_one:#?}"
    );
    assert_eq!(
        tail(&base, &["--from", "1970-01-01T00:00:00Z"]).await.len(),
        13
    );
    assert!(
        tail(&base, &["--from", "2999-01-01T00:00:00Z"])
            .await
            .is_empty()
    );
    let as_json = tail(&base, &["--json", "--limit", "1"]).await;
    let first: Value = serde_json::from_str(&as_json[0]).expect("a JSON message");
    assert_eq!(first["topic"], "t");

    // --follow prints what arrives after it started.
    let follower = tokio::process::Command::new(courier_binary())
        .args(["tail", "t", "--from", "latest", "--follow", "--limit", "2"])
        .args(["--server", &base])
        .kill_on_drop(true)
        .output();
    let follower = tokio::spawn(follower);
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .publish("t", &json!([{"payload": "late-1"}, {"payload": "late-2"}]))
        .await;
    let output = tokio::time::timeout(Duration::from_secs(20), follower)
        .await
        .expect("tail --follow stops at its --limit")
        .expect("joined")
        .expect("ran");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(printed.lines().count(), 2, "{printed}");
    assert!(
        printed.contains("\"late-1\"") && printed.contains("\"late-2\""),
        "{printed}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_listed_and_described_from_the_cli() {
    let engine = TestEngine::start(|_, _| {}).await;
    let base = engine.client.base.clone();
    let created = run_cli(&[
        "topics",
        "create",
        "events",
        "--partitions",
        "3",
        "--retention-max-age",
        "2h",
        "--server",
        &base,
    ])
    .await;
    assert!(
        created.starts_with("events") && created.contains("3 partitions"),
        "{created}"
    );
    engine
        .client
        .publish("events", &json!([{"payload": 1}, {"payload": 2}]))
        .await;
    let list = run_cli(&["topics", "list", "--server", &base]).await;
    assert!(
        list.lines()
            .any(|line| line.starts_with("events") && line.contains("2 messages")),
        "{list}"
    );
    let described = run_cli(&["topics", "describe", "events", "--server", &base]).await;
    assert!(described.contains("max age 7200 s"), "{described}");
    assert_eq!(
        described
            .lines()
            .filter(|l| l.starts_with("partition "))
            .count(),
        3,
        "{described}"
    );
    // Another partition count for an existing topic is refused, saying why.
    let conflict = tokio::process::Command::new(courier_binary())
        .args([
            "topics",
            "create",
            "events",
            "--partitions",
            "4",
            "--server",
            &base,
        ])
        .output()
        .await
        .expect("courier runs");
    assert!(!conflict.status.success());
    assert!(
        String::from_utf8_lossy(&conflict.stderr).contains("3 partitions"),
        "{}",
        String::from_utf8_lossy(&conflict.stderr)
    );
    engine.shutdown().await;
}
