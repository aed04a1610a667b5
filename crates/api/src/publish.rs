//! `POST /v1/topics/{topic}/messages`: the producer endpoint.
//!
//! A message is `{"key": "...", "headers": {"name": "value"}, "payload": <any
//! JSON>}` or with `"payload_base64": "..."` for binary bodies. The body is
//! one message, a JSON array of messages, or NDJSON (one per line). The
//! answer comes once every message is durable, with each one's position.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;

use super::extract::Path;
use axum::http::HeaderMap;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::AppState;
use super::body::{self, Format};
use super::error::Error;
use courier_core::NewMessage;

/// A message as producers send it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming<'a> {
    key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    payload_base64: Option<String>,
}

#[derive(Serialize)]
pub struct Published {
    pub topic: String,
    pub messages: Vec<PublishedPosition>,
}

#[derive(Serialize)]
pub struct PublishedPosition {
    pub partition: u32,
    pub offset: u64,
}

pub async fn publish(
    State(app): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Published>, Error> {
    let format = body::format(&headers)?;
    let bytes = body::read(body, app.limits.max_body_bytes).await?;
    let messages = parse(&bytes, format, app.limits.max_batch_messages)?;
    let positions = app.store.append(&topic, &messages).await?;
    app.metrics.published(&topic, positions.len() as u64);
    let messages = positions
        .into_iter()
        .map(|p| PublishedPosition {
            partition: p.partition,
            offset: p.offset,
        })
        .collect();
    Ok(Json(Published { topic, messages }))
}

/// Parses a body into messages, refusing more than `max` of them.
pub fn parse(bytes: &[u8], format: Format, max: usize) -> Result<Vec<NewMessage>, Error> {
    let messages = match format {
        Format::Json => parse_json(bytes, max)?,
        Format::Ndjson => parse_ndjson(bytes, max)?,
    };
    if messages.is_empty() {
        return Err(Error::BadRequest("the body holds no messages".into()));
    }
    Ok(messages)
}

fn parse_json(bytes: &[u8], max: usize) -> Result<Vec<NewMessage>, Error> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(bytes)
            .map_err(|error| Error::BadRequest(format!("invalid JSON array: {error}")))?;
        check_count(items.len(), max)?;
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                convert(item.get().as_bytes()).map_err(|why| bad(format!("message {index}"), why))
            })
            .collect()
    } else {
        Ok(vec![
            convert(bytes).map_err(|why| bad("message".into(), why))?,
        ])
    }
}

fn parse_ndjson(bytes: &[u8], max: usize) -> Result<Vec<NewMessage>, Error> {
    let mut messages = Vec::new();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        check_count(messages.len() + 1, max)?;
        // The line's name is made only for an error: this runs per message.
        let message = convert(line).map_err(|why| bad(format!("line {}", index + 1), why))?;
        messages.push(message);
    }
    Ok(messages)
}

fn check_count(count: usize, max: usize) -> Result<(), Error> {
    if count > max {
        return Err(Error::TooLarge(format!(
            "more than {max} messages in one request: split the batch"
        )));
    }
    Ok(())
}

/// A bad message's error: `what` names it (`line 3`), `why` says what is
/// wrong.
fn bad(what: String, why: String) -> Error {
    Error::BadRequest(format!("{what}: {why}"))
}

/// One message of a body; `Err` says why it is not one.
fn convert(json: &[u8]) -> Result<NewMessage, String> {
    let incoming: Incoming = serde_json::from_slice(json).map_err(|error| error.to_string())?;
    let payload = match (incoming.payload, incoming.payload_base64) {
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|error| format!("payload_base64 is not valid base64: {error}"))?,
        (Some(_), Some(_)) => {
            return Err("give either payload or payload_base64, not both".into());
        }
        (None, None) => {
            return Err("missing payload (any JSON value) or payload_base64".into());
        }
    };
    Ok(NewMessage {
        key: incoming.key.map(String::into_bytes),
        headers: incoming.headers.into_iter().collect(),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_array_and_ndjson_bodies_parse_alike() {
        let one = br#"{"key":"u1","headers":{"type":"order"},"payload":{"total":5}}"#;
        let parsed = parse(one, Format::Json, 10).expect("one");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].key.as_deref(), Some(&b"u1"[..]));
        assert_eq!(
            parsed[0].headers,
            vec![("type".to_string(), "order".to_string())]
        );
        assert_eq!(parsed[0].payload, br#"{"total":5}"#);

        let array = br#"[{"payload":1},{"payload":"two"}]"#;
        assert_eq!(parse(array, Format::Json, 10).expect("array").len(), 2);

        let lines = b"{\"payload\":1}\n\n{\"payload_base64\":\"aGk=\"}\n";
        let parsed = parse(lines, Format::Ndjson, 10).expect("ndjson");
        assert_eq!(parsed[1].payload, b"hi");
    }

    #[test]
    fn bad_messages_say_what_and_where() {
        let cases: [(&[u8], Format, &str); 6] = [
            (b"{\"payload\":1", Format::Json, "message"),
            (
                b"{\"payload\":1}\n{\"payloud\":2}",
                Format::Ndjson,
                "line 2",
            ),
            (b"{\"key\":1,\"payload\":1}", Format::Json, "invalid type"),
            (b"{\"headers\":{}}", Format::Json, "missing payload"),
            (
                b"{\"payload\":1,\"payload_base64\":\"AA==\"}",
                Format::Json,
                "not both",
            ),
            (b"{\"payload_base64\":\"%%%\"}", Format::Json, "base64"),
        ];
        for (body, format, expected) in cases {
            let error = parse(body, format, 10).expect_err("must fail");
            assert!(
                error.to_string().contains(expected),
                "{error} should mention {expected}"
            );
            assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
        }
        let error = parse(b"[]", Format::Json, 10).expect_err("empty");
        assert!(error.to_string().contains("no messages"));
        let error =
            parse(b"[{\"payload\":1},{\"payload\":2}]", Format::Json, 1).expect_err("too many");
        assert_eq!(error.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
