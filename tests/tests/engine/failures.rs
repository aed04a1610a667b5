//! Failing plugins and bad input: retries, dead letters with their
//! reasons, replay and purge, and a poison order among good ones.

use std::collections::BTreeSet;
use std::time::Duration;

use courier_tests::{Client, TestEngine, install_plugin, run_cli, wait_until};
use serde_json::{Value, json};

use crate::common::{self, ORDER_PLUGINS, OrderGen};

/// Publishes `count` messages `{"n": i}` to `topic`, keyed `k-<i>`.
async fn publish_numbers(client: &Client, topic: &str, count: usize) {
    let messages: Vec<Value> = (0..count)
        .map(|n| json!({"key": format!("k-{n}"), "payload": {"n": n}}))
        .collect();
    client.publish(topic, &Value::Array(messages)).await;
}

/// Waits until `plugin` has exactly `count` dead letters and nothing left
/// to deliver; returns them.
async fn wait_dead_letters(client: &Client, plugin: &str, topic: &str, count: usize) -> Vec<Value> {
    let settled = wait_until(Duration::from_secs(20), || async {
        let sub = client.subscription(plugin, topic).await;
        let drained =
            sub.is_some_and(|s| s["lag"] == 0 && s["in_flight"] == 0 && s["scheduled"] == 0);
        drained && client.dead_letters(plugin).await.len() == count
    })
    .await;
    let letters = client.dead_letters(plugin).await;
    assert!(
        settled,
        "{plugin} should have {count} dead letters: {letters:?} {:?}",
        client.subscription(plugin, topic).await
    );
    letters
}

fn payload_numbers(letters: &[Value]) -> BTreeSet<u64> {
    letters
        .iter()
        .map(|letter| letter["message"]["payload"]["n"].as_u64().expect("n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_are_retried_dead_lettered_and_delivered_again_after_a_fix_and_replay() {
    let manifest = |extra: &str| {
        format!(
            "[[subscriptions]]\ntopic = \"jobs\"\n\n[delivery]\nmax_attempts = 3\n\n\
             [delivery.backoff]\nbase_ms = 10\nmax_ms = 50\n{extra}"
        )
    };
    let engine = TestEngine::start(|dir, _| {
        install_plugin(dir, "fixture-retry", "worker", Some(&manifest("")))
    })
    .await;
    let client = &engine.client;
    publish_numbers(client, "jobs", 20).await;

    let letters = wait_dead_letters(client, "worker", "jobs", 20).await;
    for letter in &letters {
        assert_eq!(
            letter["attempts"], 3,
            "dead-lettered after max_attempts: {letter}"
        );
        assert_eq!(
            letter["reason"], "fixture asked for a retry (gave up after 3 attempts)",
            "{letter}"
        );
        assert_eq!(letter["message"]["topic"], "jobs");
    }
    assert_eq!(
        payload_numbers(&letters),
        (0..20).collect(),
        "every message is dead-lettered once"
    );
    let metrics = common::metrics(client).await;
    let labels = [("plugin", "worker"), ("topic", "jobs")];
    assert_eq!(
        common::metric(&metrics, "courier_delivered_total", &labels),
        Some(60.0),
        "3 attempts each"
    );
    let sub = client
        .subscription("worker", "jobs")
        .await
        .expect("subscribed");
    assert_eq!(sub["dead_letters"], 20, "{sub}");

    // The operator ships a fixed version (fixture-tagger), waits until it
    // handles new messages, then replays the dead letters to it.
    install_plugin(
        &engine.plugins_dir(),
        "fixture-tagger",
        "worker",
        Some(&manifest("\n[config]\ntag = \"fixed\"\n")),
    );
    let fixed = wait_until(Duration::from_secs(20), || async {
        client
            .publish("jobs", &json!({"key": "probe", "payload": {"n": 1000}}))
            .await;
        client.state_i64("worker", "count").await > 0
    })
    .await;
    assert!(fixed, "the fixed version never handled a message");
    client
        .wait_drained("worker", "jobs", Duration::from_secs(20))
        .await;
    let probes = client.state_i64("worker", "count").await;
    // Probes the old version got before the swap are dead letters too.
    let dead = client.dead_letters("worker").await;
    let ids = |letters: &[Value]| {
        letters
            .iter()
            .map(|l| l["id"].as_u64().expect("id"))
            .collect::<BTreeSet<_>>()
    };
    assert!(
        ids(&dead).is_superset(&ids(&letters)),
        "the dead letters stay until replayed"
    );

    let (status, replayed) = client
        .post("/v1/dead-letters/worker/replay", &json!({}))
        .await;
    assert_eq!(
        (status, &replayed["replayed"]),
        (200, &json!(dead.len())),
        "{replayed}"
    );
    let expected = probes + dead.len() as i64;
    let all = wait_until(Duration::from_secs(20), || async {
        client.state_i64("worker", "count").await == expected
    })
    .await;
    assert!(
        all,
        "replayed messages handled: {} of {}",
        client.state_i64("worker", "count").await - probes,
        dead.len()
    );
    client
        .wait_drained("worker", "jobs", Duration::from_secs(20))
        .await;
    assert!(
        client.dead_letters("worker").await.is_empty(),
        "replayed dead letters are gone"
    );
    for letter in &letters {
        let message = &letter["message"];
        let key = format!(
            "handled/jobs/{}/{}",
            message["partition"], message["offset"]
        );
        assert_eq!(
            client.state_text("worker", &key).await.as_deref(),
            Some("fixed"),
            "{key}"
        );
    }
    assert_eq!(
        client.state_i64("worker", "count").await,
        expected,
        "each replayed message handled once"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_to_a_still_failing_plugin_and_purge_removes_them() {
    let engine = TestEngine::start(|dir, _| {
        install_plugin(
            dir,
            "fixture-dead-letter",
            "reject",
            Some("[[subscriptions]]\ntopic = \"inbox\"\n"),
        );
    })
    .await;
    let client = &engine.client;
    publish_numbers(client, "inbox", 5).await;
    let first = wait_dead_letters(client, "reject", "inbox", 5).await;
    for letter in &first {
        assert_eq!(
            letter["attempts"], 1,
            "a dead-letter outcome needs no retries: {letter}"
        );
        assert_eq!(letter["reason"], "fixture rejects every message");
    }

    let listed = run_cli(&["dead-letters", "list", "reject", "--server", &client.base]).await;
    assert_eq!(
        listed
            .matches("after 1 attempt(s): fixture rejects every message")
            .count(),
        5,
        "{listed}"
    );

    let (status, replayed) = client
        .post("/v1/dead-letters/reject/replay", &json!({}))
        .await;
    assert_eq!(
        (status, &replayed["replayed"]),
        (200, &json!(5)),
        "{replayed}"
    );
    let delivered_twice = wait_until(Duration::from_secs(20), || async {
        let metrics = common::metrics(client).await;
        common::metric(&metrics, "courier_delivered_total", &[("plugin", "reject")]) == Some(10.0)
    })
    .await;
    assert!(
        delivered_twice,
        "replayed dead letters were not delivered again"
    );
    let second = wait_dead_letters(client, "reject", "inbox", 5).await;
    let ids = |letters: &[Value]| {
        letters
            .iter()
            .map(|l| l["id"].as_u64().expect("id"))
            .collect::<BTreeSet<_>>()
    };
    assert!(
        ids(&first).is_disjoint(&ids(&second)),
        "new dead letters after the replay"
    );
    assert_eq!(payload_numbers(&second), (0..5).collect());

    let (status, purged) = client.delete("/v1/dead-letters/reject").await;
    assert_eq!((status, &purged["purged"]), (200, &json!(5)), "{purged}");
    assert!(client.dead_letters("reject").await.is_empty(), "purged");
    let (status, replayed) = client
        .post("/v1/dead-letters/reject/replay", &json!({}))
        .await;
    assert_eq!(
        (status, &replayed["replayed"]),
        (200, &json!(0)),
        "nothing left to replay: {replayed}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_order_is_dead_lettered_with_its_reason_and_the_rest_flow_on() {
    let engine = TestEngine::start(|dir, _| common::install_order_plugins(dir)).await;
    let client = &engine.client;
    let orders = OrderGen::new(11).orders(900);
    let user = orders[0]["user_id"].clone();

    let mut mismatch = orders[0].clone();
    mismatch["order_id"] = json!("o-bad-total");
    mismatch["total_cents"] = json!(mismatch["total_cents"].as_u64().expect("total") + 1);
    let mut missing = orders[1].clone();
    missing.as_object_mut().expect("order").remove("user_id");
    let mut empty = orders[2].clone();
    empty["items"] = json!([]);
    let poison = [
        (mismatch, "but the items sum to"),
        (missing, "missing field `user_id`"),
        (empty, "`items` is empty"),
    ];
    // The poison sits among good orders of the same user (same key, same
    // partition), so the user's later orders wait behind it.
    common::publish_orders(client, &orders[..300], 300).await;
    let bad: Vec<Value> = poison
        .iter()
        .map(|(order, _)| json!({"key": user, "payload": order}))
        .collect();
    client.publish("orders", &Value::Array(bad)).await;
    common::publish_orders(client, &orders[300..], 300).await;
    common::wait_orders_drained(client, &ORDER_PLUGINS, Duration::from_secs(60)).await;

    common::check_order_plugins(client, &common::expected(&orders)).await;
    for plugin in ORDER_PLUGINS {
        let letters = client.dead_letters(plugin).await;
        assert_eq!(letters.len(), poison.len(), "{plugin}: {letters:?}");
        for ((order, reason), letter) in poison.iter().zip(&letters) {
            assert_eq!(
                &letter["message"]["payload"], order,
                "{plugin}: dead letters keep the message"
            );
            let text = letter["reason"].as_str().expect("reason");
            assert!(
                text.starts_with("invalid order: ") && text.contains(reason),
                "{plugin}: {text:?} should say {reason:?}"
            );
            assert_eq!(
                letter["attempts"], 1,
                "{plugin} dead-letters an invalid order at once: {letter}"
            );
        }
    }
    engine.shutdown().await;
}
