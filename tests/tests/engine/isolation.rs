//! Isolation between plugins: a slow plugin holds back neither producers
//! nor the other plugins of its topic.

use std::time::{Duration, Instant};

use courier_tests::{TestEngine, install_plugin, wait_until};
use serde_json::{Value, json};

/// Messages on the shared topic.
const MESSAGES: usize = 2000;
/// The slow plugin's time per message: it needs MESSAGES * 20 ms = 40 s of
/// plugin time for the backlog, far longer than the others need.
const SLOW_DELAY_MS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_slows_neither_publishing_nor_other_plugins() {
    let engine = TestEngine::start(|dir, _| {
        let slow = format!(
            "[[subscriptions]]\ntopic = \"work\"\n\n[config]\ndelay_ms = \"{SLOW_DELAY_MS}\"\n"
        );
        install_plugin(dir, "fixture-slow", "slow", Some(&slow));
        install_plugin(
            dir,
            "fixture-ack",
            "fast",
            Some("[[subscriptions]]\ntopic = \"work\"\n"),
        );
    })
    .await;
    let client = &engine.client;

    let mut slowest = Duration::ZERO;
    for batch in 0..MESSAGES / 100 {
        let messages: Vec<Value> = (0..100)
            .map(|i| json!({"key": format!("k-{}", (batch * 100 + i) % 97), "payload": {"n": batch * 100 + i}}))
            .collect();
        let started = Instant::now();
        client.publish("work", &Value::Array(messages)).await;
        slowest = slowest.max(started.elapsed());
    }
    let slow_after_publishing = client.state_i64("slow", "acked").await;
    // Publishing does not wait for any plugin: all of it took less time
    // than the slow plugin needs for a tenth of the backlog.
    assert!(
        slow_after_publishing < MESSAGES as i64 / 10,
        "publishing finished only after the slow plugin handled {slow_after_publishing} messages"
    );
    // A generous bound (fsync per request included): a request that waited
    // for the slow plugin would take seconds.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest publish took {slowest:?}"
    );

    client
        .wait_drained("fast", "work", Duration::from_secs(20))
        .await;
    let slow_done = client.state_i64("slow", "acked").await;
    assert!(
        slow_done < MESSAGES as i64 / 2,
        "the fast plugin drained only once the slow one had handled {slow_done} of {MESSAGES}"
    );
    let slow_sub = client
        .subscription("slow", "work")
        .await
        .expect("slow subscribed");
    assert!(
        slow_sub["lag"].as_u64().unwrap_or(0) > 0,
        "the slow plugin is still behind: {slow_sub}"
    );

    // The slow plugin makes progress and is not starved either.
    let progressed = wait_until(Duration::from_secs(10), || async {
        client.state_i64("slow", "acked").await > slow_done
    })
    .await;
    assert!(progressed, "the slow plugin stopped making progress");
    engine.shutdown().await;
}
