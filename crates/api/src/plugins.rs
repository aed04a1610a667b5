//! `GET /v1/plugins`: every plugin the registry knows, with its version,
//! status, last error, subscriptions and the CPU time its batches took.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

pub async fn list(State(app): State<AppState>) -> Json<Value> {
    let plugins: Vec<Value> = app
        .registry
        .status()
        .into_iter()
        .map(|status| {
            json!({
                "name": status.name,
                "version": status.version,
                "status": status.state.to_string(),
                "loaded_at_ms": status.loaded_at.and_then(|at| at.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64),
                "last_error": status.last_error,
                "subscriptions": status.subscriptions,
                "cpu_seconds": app.metrics.handler_cpu_seconds(&status.name),
            })
        })
        .collect();
    Json(json!({ "plugins": plugins }))
}
