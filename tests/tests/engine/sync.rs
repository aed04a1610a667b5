//! Operator views agree with committed data: once `GET /v1/subscriptions`
//! shows a subscription drained (no lag, nothing in flight or scheduled),
//! what it acknowledged is committed, so its state and its publishes are
//! readable. Tests and scripts that wait for "drained" rely on it.

use std::time::Duration;

use courier_tests::{TestEngine, install_plugin};
use serde_json::json;

/// Rounds of publish, wait for drained, read: each is a chance to read in
/// the gap between the two.
const ROUNDS: i64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_subscription_shows_all_its_effects() {
    let engine = TestEngine::start(|dir, _| {
        let manifest =
            "[[subscriptions]]\ntopic = \"pings\"\n\n[capabilities]\npublish = [\"effects-out\"]\n";
        install_plugin(dir, "fixture-effects", "effects", Some(manifest));
    })
    .await;
    let client = &engine.client;
    let mut stale = Vec::new();
    for round in 1..=ROUNDS {
        client
            .publish(
                "pings",
                &json!({"key": format!("k-{round}"), "payload": format!("p-{round}")}),
            )
            .await;
        client
            .wait_drained("effects", "pings", Duration::from_secs(20))
            .await;
        let count = client.state_i64("effects", "count").await;
        if count != round {
            stale.push(format!("round {round}: drained, but state count = {count}"));
        }
    }
    assert!(
        stale.is_empty(),
        "the subscription showed drained before its acknowledgements and effects were committed:\n{}",
        stale.join("\n")
    );
    engine.shutdown().await;
}
