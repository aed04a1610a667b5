//! What the host does with each outcome a plugin can produce, on a real
//! engine with the compiled fixtures: ack, retry, dead-letter, a trap, an
//! endless loop (the deadline), runaway allocation (the memory cap) and
//! staged effects.

use std::time::Duration;

use courier_tests::Client;
use serde_json::{Value, json};

use crate::support::{
    WAIT, eventually, payload_text, plugin_status, publish_raw, start, state_number, wait_count,
    wait_dead_letters,
};

/// A manifest subscribing to `topic`, with `rest` appended.
pub fn manifest(topic: &str, rest: &str) -> String {
    format!("[[subscriptions]]\ntopic = \"{topic}\"\n{rest}\n")
}

/// Quick retries: three attempts, 100 ms base backoff (a real backoff,
/// measurable below, yet short).
const QUICK_RETRIES: &str =
    "[delivery]\nmax_attempts = 3\n[delivery.backoff]\nbase_ms = 100\nmax_ms = 1000\n";

/// `plugin`'s subscription to `topic` (panics if there is none).
async fn subscription(client: &Client, plugin: &str, topic: &str) -> Value {
    client
        .subscription(plugin, topic)
        .await
        .unwrap_or_else(|| panic!("{plugin} has no subscription to {topic}"))
}

/// The value of a counter metric with these labels (0 when absent).
async fn metric(client: &Client, name: &str, labels: &str) -> u64 {
    let text = client.metrics_text().await;
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series.starts_with(name) && series.contains(labels))
                .then(|| value.parse::<f64>().ok())?
        })
        .map_or(0, |value| value as u64)
}

/// The gap between a dead letter's message being stored and its
/// dead-lettering: the time its attempts and backoffs took.
fn time_to_dead_letter(letter: &Value) -> Duration {
    let failed = letter["failed_at_ms"].as_u64().expect("failed_at_ms");
    let stored = letter["message"]["timestamp_ms"]
        .as_u64()
        .expect("timestamp_ms");
    Duration::from_millis(failed.saturating_sub(stored))
}

#[tokio::test]
async fn an_acking_plugin_acknowledges_every_message_and_moves_its_cursor() {
    let manifest = manifest("orders", "");
    let engine = start(&[("fixture-ack", "acker", Some(&manifest))]).await;
    let client = &engine.client;
    let messages: Vec<Value> = (0..5)
        .map(|i| json!({ "key": format!("k{i}"), "payload": { "n": i } }))
        .collect();
    client.publish("orders", &Value::Array(messages)).await;

    client.wait_drained("acker", "orders", WAIT).await;
    let sub = subscription(client, "acker", "orders").await;
    assert_eq!(sub["partitions"][0]["committed"], 5, "{sub}");
    assert_eq!(sub["dead_letters"], 0, "{sub}");
    assert!(client.dead_letters("acker").await.is_empty());
    assert_eq!(
        metric(client, "courier_plugin_acked", "plugin=\"acker\"").await,
        5
    );
    assert_eq!(
        metric(client, "courier_plugin_retried", "plugin=\"acker\"").await,
        0
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_retrying_plugin_is_retried_with_backoff_then_dead_lettered_with_its_reason_and_attempts()
{
    let manifest = manifest("jobs", QUICK_RETRIES);
    let engine = start(&[("fixture-retry", "retrier", Some(&manifest))]).await;
    let client = &engine.client;
    publish_raw(client, "jobs", &["first", "second"]).await;

    let letters = wait_dead_letters(client, "retrier", 2).await;
    for (letter, payload) in letters.iter().zip(["first", "second"]) {
        assert_eq!(payload_text(&letter["message"]), payload, "{letter}");
        assert_eq!(
            letter["reason"], "fixture asked for a retry (gave up after 3 attempts)",
            "{letter}"
        );
        assert_eq!(letter["attempts"], 3, "{letter}");
    }
    // Backoff 100 ms base, "equal jitter": at least 50 ms after the first
    // attempt and 100 ms after the second. Ordered: the second message
    // waited for the first.
    let first = time_to_dead_letter(&letters[0]);
    assert!(
        first >= Duration::from_millis(150),
        "dead-lettered after {first:?}: no backoff?"
    );
    assert!(letters[1]["failed_at_ms"].as_u64() >= letters[0]["failed_at_ms"].as_u64());
    client.wait_drained("retrier", "jobs", WAIT).await;
    assert_eq!(
        metric(client, "courier_plugin_retried", "plugin=\"retrier\"").await,
        6
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_retry_that_asks_for_a_delay_waits_at_least_that_long() {
    let manifest = manifest(
        "jobs",
        "[delivery]\nmax_attempts = 2\n[config]\ndelay_ms = \"400\"",
    );
    let engine = start(&[("fixture-retry", "delayer", Some(&manifest))]).await;
    let client = &engine.client;
    publish_raw(client, "jobs", &["later"]).await;

    let letters = wait_dead_letters(client, "delayer", 1).await;
    assert_eq!(letters[0]["attempts"], 2, "{}", letters[0]);
    let took = time_to_dead_letter(&letters[0]);
    assert!(
        took >= Duration::from_millis(400),
        "the retry came after {took:?}, before the 400 ms it asked for"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_dead_letter_outcome_moves_the_message_to_dead_letters_at_once() {
    let manifest = manifest("jobs", "[delivery]\nmax_attempts = 5");
    let engine = start(&[("fixture-dead-letter", "rejecter", Some(&manifest))]).await;
    let client = &engine.client;
    publish_raw(client, "jobs", &["one", "two"]).await;

    let letters = wait_dead_letters(client, "rejecter", 2).await;
    for (letter, payload) in letters.iter().zip(["one", "two"]) {
        assert_eq!(payload_text(&letter["message"]), payload, "{letter}");
        assert_eq!(
            letter["reason"], "fixture rejects every message",
            "{letter}"
        );
        assert_eq!(
            letter["attempts"], 1,
            "a dead-letter outcome is never retried: {letter}"
        );
    }
    client.wait_drained("rejecter", "jobs", WAIT).await;
    let sub = subscription(client, "rejecter", "jobs").await;
    assert_eq!(sub["partitions"][0]["committed"], 2, "{sub}");
    assert_eq!(
        metric(client, "courier_plugin_retried", "plugin=\"rejecter\"").await,
        0
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_trapping_plugin_never_acks_and_ends_in_dead_letters() {
    let trapper = manifest("jobs", QUICK_RETRIES);
    let bystander = manifest("jobs", "");
    let engine = start(&[
        ("fixture-trap", "trapper", Some(&trapper)),
        ("fixture-tagger", "bystander", Some(&bystander)),
    ])
    .await;
    let client = &engine.client;
    publish_raw(client, "jobs", &["before", "trap", "after"]).await;

    let letters = wait_dead_letters(client, "trapper", 1).await;
    let letter = &letters[0];
    assert_eq!(payload_text(&letter["message"]), "trap", "{letter}");
    assert_eq!(
        letter["attempts"], 3,
        "every trap counts as a failed attempt: {letter}"
    );
    let reason = letter["reason"].as_str().expect("reason");
    assert!(reason.starts_with("trap:"), "{reason}");
    // The messages around the trap were handled on fresh instances; the
    // trapped message's attempts never counted as acks.
    wait_count(client, "trapper", "acked", 2).await;
    client.wait_drained("trapper", "jobs", WAIT).await;
    assert_eq!(
        metric(client, "courier_plugin_traps", "plugin=\"trapper\"").await,
        3
    );
    assert_eq!(
        metric(client, "courier_plugin_acked", "plugin=\"trapper\"").await,
        2
    );
    // Another plugin on the same messages was not disturbed.
    wait_count(client, "bystander", "count", 3).await;
    assert!(client.dead_letters("bystander").await.is_empty());
    assert_eq!(
        plugin_status(client, "trapper").await.expect("status")["status"],
        "running"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_plugin_that_loops_forever_is_stopped_by_its_deadline_and_the_host_stays_responsive() {
    let looper = manifest(
        "work",
        "[delivery]\nmax_attempts = 2\n[delivery.backoff]\nbase_ms = 20\nmax_ms = 20\n[limits]\ndeadline_ms = 1000",
    );
    let bystander = manifest("other", "");
    let engine = start(&[
        ("fixture-loop", "looper", Some(&looper)),
        ("fixture-tagger", "bystander", Some(&bystander)),
    ])
    .await;
    let client = &engine.client;
    publish_raw(client, "work", &["loop", "fine"]).await;
    eventually("the looper is stuck in its call", || async {
        let sub = client.subscription("looper", "work").await;
        sub.is_some_and(|sub| sub["in_flight"].as_u64() > Some(0) && sub["dead_letters"] == 0)
    })
    .await;

    // While the looper spins (two calls of 1 s), the API answers and
    // other plugins keep working.
    let (status, body) = client.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    publish_raw(client, "other", &["x", "y", "z"]).await;
    wait_count(client, "bystander", "count", 3).await;
    assert!(
        client.dead_letters("looper").await.is_empty(),
        "the looper finished before the bystander handled three messages: was it stopped at all?"
    );

    let letters = wait_dead_letters(client, "looper", 1).await;
    let letter = &letters[0];
    assert_eq!(payload_text(&letter["message"]), "loop", "{letter}");
    assert_eq!(letter["attempts"], 2, "{letter}");
    assert!(
        letter["reason"]
            .as_str()
            .expect("reason")
            .contains("deadline"),
        "{letter}"
    );
    let took = time_to_dead_letter(letter);
    assert!(
        took >= Duration::from_millis(2000),
        "two 1 s deadlines took only {took:?}"
    );
    wait_count(client, "looper", "acked", 1).await;
    client.wait_drained("looper", "work", WAIT).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn a_plugin_over_its_memory_cap_traps_and_its_other_messages_still_ack() {
    let manifest = manifest(
        "work",
        "[delivery]\nmax_attempts = 2\n[delivery.backoff]\nbase_ms = 20\nmax_ms = 20\n[limits]\nmemory_mib = 16",
    );
    let engine = start(&[("fixture-alloc", "hoarder", Some(&manifest))]).await;
    let client = &engine.client;
    publish_raw(client, "work", &["a", "alloc", "b", "c"]).await;

    let letters = wait_dead_letters(client, "hoarder", 1).await;
    let letter = &letters[0];
    assert_eq!(payload_text(&letter["message"]), "alloc", "{letter}");
    assert_eq!(letter["attempts"], 2, "{letter}");
    assert!(
        letter["reason"]
            .as_str()
            .expect("reason")
            .starts_with("trap:"),
        "{letter}"
    );
    wait_count(client, "hoarder", "acked", 3).await;
    client.wait_drained("hoarder", "work", WAIT).await;
    assert_eq!(
        metric(client, "courier_plugin_traps", "plugin=\"hoarder\"").await,
        2
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn staged_effects_are_committed_only_with_an_ack_and_never_twice() {
    let manifest = manifest(
        "effects-in",
        "[delivery]\nmax_attempts = 2\n[delivery.backoff]\nbase_ms = 20\nmax_ms = 20\n\
         [capabilities]\npublish = [\"effects-out\"]\n[config]\ntarget = \"effects-out\"",
    );
    let engine = start(&[("fixture-effects", "effector", Some(&manifest))]).await;
    let client = &engine.client;
    let payloads = ["a", "retry-me", "b", "dead-me", "c"];
    publish_raw(client, "effects-in", &payloads).await;

    let letters = wait_dead_letters(client, "effector", 2).await;
    client.wait_drained("effector", "effects-in", WAIT).await;
    let reasons: Vec<(&str, u64)> = letters
        .iter()
        .map(|l| {
            (
                l["reason"].as_str().expect("reason"),
                l["attempts"].as_u64().expect("attempts"),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("payload asked for a retry (gave up after 2 attempts)", 2),
            ("payload asked for a dead letter", 1)
        ],
        "no read-your-writes violation, and these two only"
    );

    // State: only the three acknowledged messages' writes, each once
    // (`retry-me` was attempted twice).
    assert_eq!(state_number(client, "effector", "count").await, Some(3));
    assert_eq!(
        client.state_text("effector", "last").await.as_deref(),
        Some("c")
    );
    for (offset, payload) in payloads.iter().enumerate() {
        let seen = client
            .state_text("effector", &format!("seen/0/{offset}"))
            .await;
        let acked = !payload.ends_with("-me");
        assert_eq!(
            seen.as_deref(),
            acked.then_some(*payload),
            "seen/0/{offset}"
        );
    }
    // The outbox: exactly the acknowledged messages, in order, with the
    // header the plugin set.
    let out = client.read_topic("effects-out").await;
    let published: Vec<(String, String)> = out
        .iter()
        .map(|m| {
            (
                payload_text(m),
                m["headers"]["source-offset"]
                    .as_str()
                    .expect("header")
                    .to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [("a", "0"), ("b", "2"), ("c", "4")]
        .iter()
        .map(|(p, o)| (p.to_string(), o.to_string()))
        .collect();
    assert_eq!(published, expected);
    engine.shutdown().await;
}

#[tokio::test]
async fn publishing_to_a_topic_the_manifest_does_not_grant_is_denied() {
    let manifest = manifest(
        "effects-in",
        "[delivery]\nmax_attempts = 2\n[delivery.backoff]\nbase_ms = 20\nmax_ms = 20\n\
         [capabilities]\npublish = [\"allowed\"]\n[config]\ntarget = \"forbidden\"",
    );
    let engine = start(&[("fixture-effects", "sneaky", Some(&manifest))]).await;
    let client = &engine.client;
    publish_raw(client, "effects-in", &["a"]).await;

    let letters = wait_dead_letters(client, "sneaky", 1).await;
    let reason = letters[0]["reason"]
        .as_str()
        .expect("reason")
        .to_lowercase();
    assert!(reason.contains("denied"), "{reason}");
    assert_eq!(state_number(client, "sneaky", "count").await, None);
    let (status, body) = client.get("/v1/topics/forbidden").await;
    assert_eq!(
        status, 404,
        "nothing may have been published to `forbidden`: {body}"
    );
    engine.shutdown().await;
}
