//! Inspection and operation endpoints: topics, subscriptions, plugin
//! state, dead letters, seeking, health and metrics.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::body;
use super::error::Error;
use courier_core::{
    self as storage, DeliveryMode, Message, Retention, SeekTarget, SubscriptionInfo, TopicInfo,
    TopicSettings,
};

/// Most items one listing returns.
const MAX_LIST: usize = 1000;
/// Largest JSON body of an admin request.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Runs a blocking storage read off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, storage::Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::Internal(format!("storage read panicked: {error}")))?
        .map_err(Error::from)
}

pub fn topic_json(info: &TopicInfo) -> Value {
    json!({
        "name": info.name,
        "partitions": info.partitions.iter().map(|p| json!({
            "partition": p.partition, "start": p.start, "end": p.end,
        })).collect::<Vec<_>>(),
        "messages": info.messages,
        "disk_bytes": info.disk_bytes,
        "retention": {
            "max_age_secs": info.settings.retention.max_age.map(|age| age.as_secs()),
            "max_bytes": info.settings.retention.max_bytes,
        },
    })
}

pub async fn topics(State(app): State<AppState>) -> Json<Value> {
    let topics: Vec<Value> = app.store.topics().iter().map(topic_json).collect();
    Json(json!({ "topics": topics }))
}

pub async fn topic(
    State(app): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<Value>, Error> {
    Ok(Json(topic_json(&app.store.topic_info(&topic)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    partitions: Option<u32>,
    /// e.g. "7days"; "" for no age limit.
    retention_max_age: Option<String>,
    /// 0 for no size limit.
    retention_max_bytes: Option<u64>,
}

/// `PUT /v1/topics/{topic}`: creates a topic with explicit settings.
pub async fn create_topic(
    State(app): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let request: CreateTopic = body::json(&headers, body, MAX_ADMIN_BODY).await?;
    let defaults = app.store.default_topic_settings();
    let max_age =
        match request.retention_max_age.as_deref() {
            None => defaults.retention.max_age,
            Some("") => None,
            Some(text) => Some(humantime::parse_duration(text).map_err(|error| {
                Error::BadRequest(format!("retention_max_age {text:?}: {error}"))
            })?),
        };
    let settings = TopicSettings {
        partitions: request.partitions.unwrap_or(defaults.partitions),
        retention: Retention {
            max_age,
            max_bytes: match request.retention_max_bytes {
                None => defaults.retention.max_bytes,
                Some(bytes) => (bytes > 0).then_some(bytes),
            },
        },
    };
    let info = app.store.create_topic(&topic, settings).await?;
    Ok((StatusCode::OK, Json(topic_json(&info))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    partition: u32,
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
}

/// A message for JSON output: the payload as JSON when it is JSON, else
/// base64.
pub fn message_json(message: &Message) -> Value {
    let payload: Option<Value> = serde_json::from_slice(&message.payload).ok();
    let mut out = json!({
        "topic": &*message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp_ms": message.timestamp_ms,
        "key": message.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": message.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    });
    match payload {
        Some(payload) => out["payload"] = payload,
        None => {
            out["payload_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&message.payload))
        }
    }
    out
}

/// `GET /v1/topics/{topic}/messages?partition=P&from=O&limit=N`.
pub async fn read_messages(
    State(app): State<AppState>,
    Path(topic): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<Value>, Error> {
    let limit = query.limit.unwrap_or(100).min(MAX_LIST);
    let store = app.store.clone();
    let messages = blocking(move || store.read(&topic, query.partition, query.from, limit)).await?;
    let messages: Vec<Value> = messages.iter().map(message_json).collect();
    Ok(Json(json!({ "messages": messages })))
}

/// A subscription as the API shows it. Typed rather than built as a
/// `serde_json::Value`: dashboards and `courier bench` poll this often.
#[derive(Serialize)]
pub struct SubscriptionJson {
    plugin: String,
    topic: String,
    mode: &'static str,
    lag: u64,
    in_flight: u64,
    scheduled: u64,
    dead_letters: u64,
    expired: u64,
    partitions: Vec<PartitionJson>,
}

#[derive(Serialize)]
struct PartitionJson {
    partition: u32,
    /// The engine delivering it, on a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    committed: u64,
    end: u64,
    lag: u64,
    in_flight: u64,
    scheduled: u64,
}

impl From<SubscriptionInfo> for SubscriptionJson {
    fn from(info: SubscriptionInfo) -> Self {
        SubscriptionJson {
            plugin: info.subscriber,
            topic: info.topic,
            mode: match info.settings.mode {
                DeliveryMode::Ordered => "ordered",
                DeliveryMode::Unordered => "unordered",
            },
            lag: info.lag,
            in_flight: info.in_flight,
            scheduled: info.scheduled,
            dead_letters: info.dead_letters,
            expired: info.expired,
            partitions: info
                .partitions
                .iter()
                .map(|p| PartitionJson {
                    partition: p.partition,
                    owner: p.owner.clone(),
                    committed: p.committed,
                    end: p.end,
                    lag: p.lag,
                    in_flight: p.in_flight,
                    scheduled: p.scheduled,
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct SubscriptionsJson {
    subscriptions: Vec<SubscriptionJson>,
}

pub async fn subscriptions(State(app): State<AppState>) -> Json<SubscriptionsJson> {
    let subscriptions = app
        .store
        .subscriptions()
        .into_iter()
        .map(SubscriptionJson::from)
        .collect();
    Json(SubscriptionsJson { subscriptions })
}

#[derive(Serialize)]
struct StateValue {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

fn state_value(key: String, bytes: &[u8]) -> StateValue {
    // Values that are JSON (numbers, objects, quoted text) show as JSON;
    // other UTF-8 as a string; anything else as base64.
    let value = serde_json::from_slice(bytes).ok().or_else(|| {
        std::str::from_utf8(bytes)
            .ok()
            .map(|text| Value::String(text.to_owned()))
    });
    let value_base64 = value
        .is_none()
        .then(|| base64::engine::general_purpose::STANDARD.encode(bytes));
    StateValue {
        key,
        value,
        value_base64,
    }
}

/// 404 unless the engine knows `plugin`: loaded (or failed to load) now,
/// or subscribed once (its state and cursors outlive its files).
fn known_plugin(app: &AppState, plugin: &str) -> Result<(), Error> {
    storage::validate_name("plugin", plugin)?;
    let loaded = app
        .registry
        .status()
        .iter()
        .any(|status| status.name == plugin);
    if loaded
        || app
            .store
            .subscriptions()
            .iter()
            .any(|sub| sub.subscriber == plugin)
    {
        return Ok(());
    }
    Err(Error::NotFound(format!("no plugin {plugin:?}")))
}

/// `GET /v1/plugins/{plugin}/state/{*key}`.
pub async fn state_get(
    State(app): State<AppState>,
    Path((plugin, key)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    known_plugin(&app, &plugin)?;
    let store = app.store.clone();
    let (namespace, name) = (plugin.clone(), key.clone());
    match blocking(move || store.state_get(&namespace, &name)).await? {
        Some(bytes) => Ok(Json(json!(state_value(key, &bytes)))),
        None => Err(Error::NotFound(format!(
            "plugin {plugin:?} has no state key {key:?}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    #[serde(default)]
    prefix: String,
    /// The last key of the previous page (`next` of its answer).
    start_after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/plugins/{plugin}/state?prefix=&start_after=&limit=`: a page of
/// entries, and `next` (pass it as `start_after`) while more may follow.
pub async fn state_list(
    State(app): State<AppState>,
    Path(plugin): Path<String>,
    Query(query): Query<StateQuery>,
) -> Result<Json<Value>, Error> {
    known_plugin(&app, &plugin)?;
    let limit = query.limit.unwrap_or(100).min(MAX_LIST);
    let store = app.store.clone();
    let entries = blocking(move || {
        store.state_scan(&plugin, &query.prefix, query.start_after.as_deref(), limit)
    })
    .await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|(key, _)| key.clone()))
        .flatten();
    let entries: Vec<StateValue> = entries
        .into_iter()
        .map(|(key, bytes)| state_value(key, &bytes))
        .collect();
    Ok(Json(json!({ "entries": entries, "next": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    topic: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/dead-letters/{plugin}?topic=&limit=`.
pub async fn dead_letters(
    State(app): State<AppState>,
    Path(plugin): Path<String>,
    Query(query): Query<DeadLetterQuery>,
) -> Result<Json<Value>, Error> {
    let limit = query.limit.unwrap_or(100).min(MAX_LIST);
    let store = app.store.clone();
    let letters =
        blocking(move || store.dead_letters(&plugin, query.topic.as_deref(), limit)).await?;
    let letters: Vec<Value> = letters
        .iter()
        .map(|letter| {
            json!({
                "id": letter.id,
                "plugin": letter.subscriber,
                "attempts": letter.attempts,
                "reason": letter.reason,
                "failed_at_ms": letter.failed_at_ms,
                "message": message_json(&letter.message),
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": letters })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicFilter {
    topic: Option<String>,
}

/// `POST /v1/dead-letters/{plugin}/replay?topic=`.
pub async fn replay_dead_letters(
    State(app): State<AppState>,
    Path(plugin): Path<String>,
    Query(filter): Query<TopicFilter>,
) -> Result<Json<Value>, Error> {
    let replayed = app
        .store
        .replay_dead_letters(&plugin, filter.topic.as_deref())
        .await?;
    Ok(Json(json!({ "replayed": replayed })))
}

/// `DELETE /v1/dead-letters/{plugin}?topic=`.
pub async fn purge_dead_letters(
    State(app): State<AppState>,
    Path(plugin): Path<String>,
    Query(filter): Query<TopicFilter>,
) -> Result<Json<Value>, Error> {
    let purged = app
        .store
        .purge_dead_letters(&plugin, filter.topic.as_deref())
        .await?;
    Ok(Json(json!({ "purged": purged })))
}

/// Where to seek: exactly one of the fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    offset: Option<u64>,
    /// With `offset`: only this partition.
    partition: Option<u32>,
    timestamp_ms: Option<u64>,
    /// RFC 3339, e.g. "2026-11-24T10:00:00Z".
    time: Option<String>,
    /// "earliest" or "latest".
    position: Option<String>,
}

impl SeekRequest {
    fn target(self) -> Result<SeekTarget, Error> {
        let given = [
            self.offset.is_some(),
            self.timestamp_ms.is_some(),
            self.time.is_some(),
            self.position.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(Error::BadRequest(
                "give exactly one of offset, timestamp_ms, time or position".into(),
            ));
        }
        if self.partition.is_some() && self.offset.is_none() {
            return Err(Error::BadRequest("partition goes with offset".into()));
        }
        if let Some(offset) = self.offset {
            return Ok(SeekTarget::Offset {
                partition: self.partition,
                offset,
            });
        }
        if let Some(ms) = self.timestamp_ms {
            return Ok(SeekTarget::Timestamp(ms));
        }
        if let Some(time) = self.time {
            let at = humantime::parse_rfc3339_weak(&time)
                .map_err(|error| Error::BadRequest(format!("time {time:?}: {error}")))?;
            let ms = at
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64;
            return Ok(SeekTarget::Timestamp(ms));
        }
        match self.position.as_deref() {
            Some("earliest") => Ok(SeekTarget::Earliest),
            Some("latest") => Ok(SeekTarget::Latest),
            other => Err(Error::BadRequest(format!(
                "position {other:?}: expected \"earliest\" or \"latest\""
            ))),
        }
    }
}

/// `POST /v1/subscriptions/{plugin}/{topic}/seek`.
pub async fn seek(
    State(app): State<AppState>,
    Path((plugin, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SubscriptionJson>, Error> {
    let request: SeekRequest = body::json(&headers, body, MAX_ADMIN_BODY).await?;
    app.store.seek(&plugin, &topic, request.target()?).await?;
    let info = app.store.subscription_info(&plugin, &topic)?;
    Ok(Json(info.into()))
}

/// `GET /healthz`: 200 while the engine can take work (503 after a storage
/// failure). A full disk still answers 200 with `"status": "degraded"`.
pub async fn health(State(app): State<AppState>) -> Response {
    let health = app.store.health();
    // A plugin without a running version leaves its subscriptions' lag
    // growing: the engine works, but not all of it.
    let stopped_plugin = app
        .registry
        .status()
        .into_iter()
        .find(|status| status.state == courier_plugin_host::PluginState::Failed)
        .map(|status| {
            format!(
                "plugin {:?} has no running version: {}",
                status.name,
                status.last_error.as_deref().unwrap_or("it failed to load")
            )
        });
    match (health.failure, health.full.or(stopped_plugin)) {
        (Some(failure), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failing", "reason": failure})),
        )
            .into_response(),
        (None, Some(reason)) => {
            Json(json!({"status": "degraded", "reason": reason})).into_response()
        }
        (None, None) => Json(json!({"status": "ok"})).into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let text = tokio::task::spawn_blocking(move || app.metrics.render())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
