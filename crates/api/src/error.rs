//! `api::Error`: every failure an endpoint can return, mapped to an HTTP
//! status and a JSON body `{"error": {"code": "...", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use courier_core as storage;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or invalid input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong bearer token (401).
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// No such topic, plugin, subscription, key or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Conflicts with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// Body, batch or message over its limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A content type the endpoint does not read (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Storage refuses writes for now: over its disk limits (503, retry later).
    #[error("{0}")]
    StorageFull(String),
    /// The engine cannot serve this now: storage failed or shutting down (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a broken disk (500).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::StorageFull(_) | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable name of the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized => "unauthorized",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Conflict(_) => "conflict",
            Error::TooLarge(_) => "too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::StorageFull(_) => "storage_full",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<storage::Error> for Error {
    fn from(error: storage::Error) -> Self {
        use storage::Error as E;
        let message = error.to_string();
        match error {
            E::InvalidName { .. } | E::InvalidArgument(_) => Error::BadRequest(message),
            E::MessageTooLarge { .. } => Error::TooLarge(message),
            E::UnknownTopic(_) | E::UnknownSubscription { .. } | E::UnknownPartition { .. } => {
                Error::NotFound(message)
            }
            E::TopicConflict { .. } => Error::Conflict(message),
            E::StorageFull(_) => Error::StorageFull(message),
            E::Failed(_) | E::Closed => Error::Unavailable(message),
            E::Locked(_) | E::Corrupt { .. } | E::Io(_) | E::Backend(_) => Error::Internal(message),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Error::StorageFull(_) => {
                headers.insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("5"),
                );
            }
            // RFC 7235: a 401 names the scheme it wants.
            Error::Unauthorized => {
                headers.insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        response
    }
}
