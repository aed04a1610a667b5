//! The HTTP API (axum): the producer endpoint and the operator endpoints.
//!
//! This is the only crate that knows HTTP and JSON (and the only one that
//! depends on axum, [`serve`] included). It holds no state of its own:
//! every request goes to the storage backend (through the seam,
//! `courier_core::Storage`), the plugin registry or the metrics. Every
//! error is a JSON body with a status (see [`error`]). A binary ingress
//! protocol would be a sibling of this crate, calling the same
//! `Storage::append`.

mod admin;
pub mod body;
pub mod error;
mod extract;
mod plugins;
mod publish;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

pub use error::Error;

use courier_core::Storage;
use courier_metrics::Metrics;
use courier_plugin_host::Registry;

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_messages: usize,
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Storage>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Required bearer token, if any.
    pub token: Option<Arc<str>>,
    /// `/metrics` answers without the token too (a scraper without
    /// credentials); the counts it shows are then public.
    pub public_metrics: bool,
}

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/topics", get(admin::topics))
        .route(
            "/v1/topics/{topic}",
            get(admin::topic).put(admin::create_topic),
        )
        .route(
            "/v1/topics/{topic}/messages",
            post(publish::publish).get(admin::read_messages),
        )
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{plugin}/state", get(admin::state_list))
        .route("/v1/plugins/{plugin}/state/{*key}", get(admin::state_get))
        .route("/v1/subscriptions", get(admin::subscriptions))
        .route("/v1/subscriptions/{plugin}/{topic}/seek", post(admin::seek))
        .route(
            "/v1/dead-letters/{plugin}",
            get(admin::dead_letters).delete(admin::purge_dead_letters),
        )
        .route(
            "/v1/dead-letters/{plugin}/replay",
            post(admin::replay_dead_letters),
        )
        .route(METRICS_PATH, get(admin::metrics))
        .route("/healthz", get(admin::health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// The one endpoint that answers without the token: load balancers and
/// orchestrators probe it without credentials.
const OPEN_PATH: &str = "/healthz";
/// Open too when [`AppState::public_metrics`] says so.
const METRICS_PATH: &str = "/metrics";

/// Checks the bearer token when one is configured (not for [`OPEN_PATH`]).
async fn authorize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    let path = request.uri().path();
    let open = path == OPEN_PATH || (state.public_metrics && path == METRICS_PATH);
    if let Some(token) = &state.token
        && !open
    {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(Error::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is
/// case-insensitive, RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the API on `listener` until `shutdown` resolves; requests in
/// flight then finish before it returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;

    let app = router(state);
    // Answers are small and latency matters: without TCP_NODELAY a
    // response written in pieces can wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
