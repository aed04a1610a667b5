//! Reading request bodies: content types, size limits and JSON parsing with
//! errors that say what is wrong and where.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::error::Error;

/// The body formats the publish endpoint reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object, or a JSON array of them.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// The format declared by `Content-Type`, ignoring parameters.
pub fn format(headers: &HeaderMap) -> Result<Format, Error> {
    let declared = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(Format::Ndjson),
        "" => Err(Error::UnsupportedMediaType(
            "missing Content-Type: send application/json or application/x-ndjson".into(),
        )),
        other => Err(Error::UnsupportedMediaType(format!(
            "Content-Type {other:?} is not supported: send application/json or application/x-ndjson"
        ))),
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read(body: Body, limit: usize) -> Result<Bytes, Error> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            Error::TooLarge(format!("request body exceeds the limit of {limit} bytes"))
        } else {
            Error::BadRequest(format!("cannot read request body: {error}"))
        }
    })
}

/// Parses a JSON body (Content-Type application/json) into `T`.
pub async fn json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, Error> {
    if format(headers)? != Format::Json {
        return Err(Error::UnsupportedMediaType(
            "this endpoint reads application/json".into(),
        ));
    }
    let bytes = read(body, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|error| Error::BadRequest(format!("invalid JSON body: {error}")))
}
