//! The API's error paths: every refusal has its documented status and a
//! JSON body `{"error": {"code": .., "message": ..}}`, and refused
//! requests change nothing.

use std::time::Duration;

use courier_tests::{Client, Reply, TestEngine, courier_binary, install_plugin, wait_until};
use reqwest::Method;
use serde_json::{Value, json};

/// Request headers, as `Client::send` takes them.
type Headers = &'static [(&'static str, &'static str)];

const JSON: Headers = &[("content-type", "application/json")];
const NDJSON: Headers = &[("content-type", "application/x-ndjson")];

/// Asserts `reply` is the documented error: status, JSON content type,
/// `code`, and a message that mentions `says`.
#[track_caller]
fn assert_error(reply: &Reply, status: u16, code: &str, says: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    let content_type = reply.content_type.as_deref().unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "JSON error body expected: {reply:?}"
    );
    assert_eq!(reply.body["error"]["code"], code, "{reply:?}");
    let message = reply.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        !message.is_empty() && message.contains(says),
        "message should mention {says:?}: {reply:?}"
    );
}

async fn post(
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Reply {
    client
        .send(Method::POST, path, headers, Some(body.into()))
        .await
}

async fn get(client: &Client, path: &str) -> Reply {
    client.send(Method::GET, path, &[], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_are_refused_with_their_status_and_store_nothing() {
    let engine = TestEngine::start(|_, config| {
        config.max_body_bytes = 2048;
        config.max_batch_messages = 5;
        config.store.max_message_bytes = 512;
    })
    .await;
    let client = &engine.client;
    let path = "/v1/topics/t/messages";
    let cases: Vec<(Headers, Vec<u8>, u16, &str, &str)> = vec![
        (
            JSON,
            br#"{"payload": "#.to_vec(),
            400,
            "bad_request",
            "message: EOF",
        ),
        (
            JSON,
            br#"[{"payload": 1}, {"payload": 2"#.to_vec(),
            400,
            "bad_request",
            "invalid JSON array",
        ),
        (
            JSON,
            br#"{"payload": 1, "partition": 3}"#.to_vec(),
            400,
            "bad_request",
            "unknown field `partition`",
        ),
        (
            JSON,
            br#"{"key": "k"}"#.to_vec(),
            400,
            "bad_request",
            "missing payload",
        ),
        (
            JSON,
            br#"{"payload_base64": "%%%"}"#.to_vec(),
            400,
            "bad_request",
            "base64",
        ),
        (JSON, b"[]".to_vec(), 400, "bad_request", "no messages"),
        (
            NDJSON,
            b"{\"payload\": 1}\n{\"payload\" 2}\n".to_vec(),
            400,
            "bad_request",
            "line 2",
        ),
        (
            &[("content-type", "text/plain")],
            br#"{"payload": 1}"#.to_vec(),
            415,
            "unsupported_media_type",
            "text/plain",
        ),
        (
            &[],
            br#"{"payload": 1}"#.to_vec(),
            415,
            "unsupported_media_type",
            "missing Content-Type",
        ),
        (
            JSON,
            vec![b' '; 3000],
            413,
            "too_large",
            "limit of 2048 bytes",
        ),
        (
            JSON,
            serde_json::to_vec(&vec![json!({"payload": 1}); 6]).expect("json"),
            413,
            "too_large",
            "more than 5 messages",
        ),
        (
            NDJSON,
            "{\"payload\": 1}\n".repeat(6).into_bytes(),
            413,
            "too_large",
            "more than 5 messages",
        ),
    ];
    for (headers, body, status, code, says) in cases {
        let reply = post(client, path, headers, body).await;
        assert_error(&reply, status, code, says);
    }
    for bad in ["bad%20name", "-dash", ".dot", "a%2Fb"] {
        let reply = post(
            client,
            &format!("/v1/topics/{bad}/messages"),
            JSON,
            r#"{"payload": 1}"#,
        )
        .await;
        assert_error(&reply, 400, "bad_request", "invalid topic name");
    }
    let (status, topics) = client.get("/v1/topics").await;
    assert_eq!(
        (status, &topics["topics"]),
        (200, &json!([])),
        "a refused publish stores nothing"
    );

    // A message over max_message_bytes is refused like the rest, and
    // leaves nothing behind either: not even its topic.
    let large = serde_json::to_vec(&json!({"payload": "x".repeat(1000)})).expect("json");
    assert_error(
        &post(client, path, JSON, large).await,
        413,
        "too_large",
        "exceeds the limit of 512 bytes",
    );
    let (_, topic) = client.get("/v1/topics/t").await;
    assert_eq!(
        topic["error"]["code"], "not_found",
        "a publish refused as too large created its topic: {topic}"
    );

    // The limits are exact: at the limit is fine.
    let five = serde_json::to_vec(&vec![json!({"payload": 1}); 5]).expect("json");
    assert_eq!(post(client, path, JSON, five).await.status, 200);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limits_take_large_batches_and_refuse_oversized_messages() {
    let engine = TestEngine::start(|_, _| {}).await;
    let client = &engine.client;
    // ~3 MB in one request: over axum's 2 MB default body limit, under
    // Courier's 16 MiB.
    let batch: Vec<Value> = (0..3000)
        .map(|i| json!({"key": format!("k-{i}"), "payload": "x".repeat(1000)}))
        .collect();
    let reply = post(
        client,
        "/v1/topics/big/messages",
        JSON,
        serde_json::to_vec(&batch).expect("json"),
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        reply.body.to_string().chars().take(300).collect::<String>()
    );
    assert_eq!(reply.body["messages"].as_array().map(Vec::len), Some(3000));
    let huge = json!({"payload": "x".repeat(2 * 1024 * 1024)});
    let reply = post(
        client,
        "/v1/topics/big/messages",
        JSON,
        serde_json::to_vec(&huge).expect("json"),
    )
    .await;
    assert_error(&reply, 413, "too_large", "exceeds the limit of");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_and_routes_are_404_and_wrong_methods_405() {
    let engine = TestEngine::start(|dir, _| {
        install_plugin(dir, "fixture-effects", "effects", Some("[[subscriptions]]\ntopic = \"known\"\n\n[capabilities]\npublish = [\"effects-out\"]\n"));
    })
    .await;
    let client = &engine.client;
    client
        .publish("known", &json!({"key": "k", "payload": "hello"}))
        .await;
    // Waits for the effect itself: "drained" may show a moment before it
    // is committed (see `sync`).
    let handled = wait_until(Duration::from_secs(20), || async {
        client.state_i64("effects", "count").await == 1
    })
    .await;
    assert!(handled, "effects never handled the message");

    let not_found = [
        ("/v1/topics/nope", "unknown topic \"nope\""),
        ("/v1/topics/nope/messages?partition=0", "unknown topic"),
        (
            "/v1/topics/known/messages?partition=99",
            "partition 99 does not exist",
        ),
        ("/v1/dead-letters/nobody", "nobody"),
        ("/v1/dead-letters/effects?topic=other", "other"),
        ("/v1/plugins/nobody/state", "no plugin \"nobody\""),
        ("/v1/plugins/nobody/state/count", "no plugin \"nobody\""),
        ("/v1/plugins/effects/state/no-such-key", "no-such-key"),
        ("/v2/topics", "no such endpoint"),
        ("/v1/topics/known/messages/extra", "no such endpoint"),
    ];
    for (path, says) in not_found {
        assert_error(&get(client, path).await, 404, "not_found", says);
    }
    assert_error(
        &post(client, "/v1/dead-letters/nobody/replay", JSON, "{}").await,
        404,
        "not_found",
        "nobody",
    );
    let purge = client
        .send(Method::DELETE, "/v1/dead-letters/nobody", &[], None)
        .await;
    assert_error(&purge, 404, "not_found", "nobody");
    let seek = post(
        client,
        "/v1/subscriptions/nobody/known/seek",
        JSON,
        r#"{"position": "earliest"}"#,
    )
    .await;
    assert_error(&seek, 404, "not_found", "nobody");

    // The known ones answer, so the 404s above are about the names.
    assert_eq!(get(client, "/v1/plugins/effects/state").await.status, 200);
    assert_eq!(
        get(client, "/v1/plugins/effects/state/count").await.body["value"],
        1
    );
    assert_eq!(get(client, "/v1/dead-letters/effects").await.status, 200);

    let bad_queries = [
        ("/v1/topics/known/messages", "partition"),
        ("/v1/topics/known/messages?partition=abc", "partition"),
        ("/v1/topics/known/messages?partition=0&color=red", "color"),
        ("/v1/plugins/bad%20name/state", "invalid plugin name"),
    ];
    for (path, says) in bad_queries {
        assert_error(&get(client, path).await, 400, "bad_request", says);
    }

    let wrong_methods = [
        (Method::DELETE, "/v1/topics"),
        (Method::PUT, "/v1/topics/known/messages"),
        (Method::POST, "/v1/subscriptions"),
        (Method::GET, "/v1/dead-letters/effects/replay"),
        (Method::POST, "/v1/plugins"),
        (Method::PATCH, "/v1/topics/known"),
    ];
    for (method, path) in wrong_methods {
        let reply = client
            .send(method.clone(), path, JSON, Some(b"{}".to_vec()))
            .await;
        assert_error(&reply, 405, "method_not_allowed", "method not allowed");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_seeks_and_topic_settings_are_refused() {
    let engine = TestEngine::start(|dir, _| {
        install_plugin(
            dir,
            "fixture-ack",
            "acker",
            Some("[[subscriptions]]\ntopic = \"known\"\n"),
        )
    })
    .await;
    let client = &engine.client;
    client
        .publish("known", &json!([{"payload": 1}, {"payload": 2}]))
        .await;
    client
        .wait_drained("acker", "known", Duration::from_secs(20))
        .await;

    let seek = "/v1/subscriptions/acker/known/seek";
    let bad_seeks = [
        ("{}", "exactly one of"),
        (r#"{"offset": 1, "position": "earliest"}"#, "exactly one of"),
        (r#"{"position": "middle"}"#, "\"middle\""),
        (
            r#"{"timestamp_ms": 5, "partition": 1}"#,
            "partition goes with offset",
        ),
        (r#"{"time": "yesterday"}"#, "yesterday"),
        (r#"{"offst": 1}"#, "unknown field `offst`"),
        (r#"{"offset": -1}"#, "invalid JSON body"),
        ("seek to the start", "invalid JSON body"),
    ];
    for (body, says) in bad_seeks {
        assert_error(
            &post(client, seek, JSON, body).await,
            400,
            "bad_request",
            says,
        );
    }
    let text = post(
        client,
        seek,
        &[("content-type", "text/plain")],
        r#"{"position": "earliest"}"#,
    )
    .await;
    assert_error(&text, 415, "unsupported_media_type", "text/plain");
    let unknown_partition = post(client, seek, JSON, r#"{"offset": 0, "partition": 99}"#).await;
    assert_eq!(unknown_partition.status / 100, 4, "{unknown_partition:?}");
    assert!(
        unknown_partition.body["error"]["message"].is_string(),
        "{unknown_partition:?}"
    );
    let sub = client
        .subscription("acker", "known")
        .await
        .expect("subscribed");
    assert_eq!(sub["lag"], 0, "refused seeks moved nothing: {sub}");
    let good = post(client, seek, JSON, r#"{"position": "earliest"}"#).await;
    assert_eq!(good.status, 200, "{good:?}");

    let put = |path: &'static str, body: &'static str| {
        client.send(Method::PUT, path, JSON, Some(body.as_bytes().to_vec()))
    };
    assert_error(
        &put("/v1/topics/known", r#"{"partitions": 3}"#).await,
        409,
        "conflict",
        "already exists with 8 partitions",
    );
    assert_error(
        &put("/v1/topics/bad%20name", "{}").await,
        400,
        "bad_request",
        "invalid topic name",
    );
    assert_error(
        &put("/v1/topics/fresh", r#"{"retention_max_age": "soon"}"#).await,
        400,
        "bad_request",
        "soon",
    );
    assert_error(
        &put("/v1/topics/fresh", r#"{"partitions": 0}"#).await,
        400,
        "bad_request",
        "partitions",
    );
    assert_error(
        &put("/v1/topics/fresh", r#"{"shards": 2}"#).await,
        400,
        "bad_request",
        "unknown field `shards`",
    );
    assert_error(
        &get(client, "/v1/topics/fresh").await,
        404,
        "not_found",
        "fresh",
    );
    assert_eq!(
        put("/v1/topics/fresh", r#"{"partitions": 2}"#).await.status,
        200
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required_by_every_endpoint_but_the_health_probe() {
    let engine = TestEngine::start(|_, config| config.token = Some("s3cret".into())).await;
    let client = &engine.client;
    let paths = [
        "/v1/topics",
        "/v1/subscriptions",
        "/v1/plugins",
        "/metrics",
        "/v2/unknown",
    ];
    let wrong: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", "Bearer wrong")],
        &[("authorization", "Bearer s3cre")],
        &[("authorization", "Basic czNjcmV0")],
    ];
    for path in paths {
        for headers in wrong {
            let reply = client.send(Method::GET, path, headers, None).await;
            assert_error(&reply, 401, "unauthorized", "bearer token");
        }
    }
    let publish = post(client, "/v1/topics/t/messages", JSON, r#"{"payload": 1}"#).await;
    assert_error(&publish, 401, "unauthorized", "bearer token");
    // Load balancers and orchestrators probe health without credentials.
    for headers in wrong {
        let health = client.send(Method::GET, "/healthz", headers, None).await;
        assert_eq!(health.status, 200, "{health:?}");
        assert_eq!(health.body["status"], "ok", "{health:?}");
    }
    engine.shutdown().await;

    // With public metrics, /metrics opens too, and nothing else does.
    let engine = TestEngine::start(|_, config| {
        config.token = Some("s3cret".into());
        config.public_metrics = true;
    })
    .await;
    let client = &engine.client;
    let metrics = client
        .http()
        .get(client.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(metrics.status(), 200);
    let topics = client.send(Method::GET, "/v1/topics", &[], None).await;
    assert_error(&topics, 401, "unauthorized", "bearer token");
    let response = client
        .http()
        .get(client.url("/v1/topics"))
        .send()
        .await
        .expect("GET");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok());
    assert_eq!(challenge, Some("Bearer"), "a 401 names its scheme");

    for scheme in ["Bearer", "bearer"] {
        let auth = format!("{scheme} s3cret");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        let reply = post(
            client,
            "/v1/topics/t/messages",
            &headers,
            r#"{"payload": 1}"#,
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let headers = [("authorization", "Bearer s3cret")];
    let topics = client
        .send(Method::GET, "/v1/topics/t", &headers, None)
        .await;
    assert_eq!(
        topics.body["messages"], 2,
        "only the authorized publishes were stored: {topics:?}"
    );

    // The CLI passes --token (or COURIER_TOKEN) along.
    let status = |token: Option<&str>| {
        let mut command = tokio::process::Command::new(courier_binary());
        command
            .kill_on_drop(true)
            .args([
                "status",
                "--json",
                "--interval",
                "0",
                "--server",
                &client.base,
            ])
            .env_remove("COURIER_TOKEN");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        command.output()
    };
    let refused = status(None).await.expect("courier status");
    assert!(
        !refused.status.success(),
        "status without the token must fail"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let allowed = status(Some("s3cret")).await.expect("courier status");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let json: Value = serde_json::from_slice(&allowed.stdout).expect("status --json");
    assert!(
        json["topics"].as_array().is_some_and(|t| t.len() == 1),
        "{json}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_with_the_reason_while_a_plugin_has_no_running_version() {
    let engine = TestEngine::start(|dir, _| {
        install_plugin(dir, "fixture-ack", "acker", None);
        std::fs::write(dir.join("broken.wasm"), b"\0asm garbage, not a component")
            .expect("writing a broken plugin");
    })
    .await;
    let client = &engine.client;
    let health = get(client, "/healthz").await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.body["status"], "degraded", "{health:?}");
    let reason = health.body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("\"broken\"") && reason.contains("no running version"),
        "{reason}"
    );
    // Once the broken file goes, nothing is missing any more.
    std::fs::remove_file(engine.plugins_dir().join("broken.wasm")).expect("removing it");
    let healed = wait_until(Duration::from_secs(20), || async {
        get(client, "/healthz").await.body["status"] == "ok"
    })
    .await;
    assert!(
        healed,
        "health stayed degraded after the broken plugin went"
    );
    engine.shutdown().await;
}
