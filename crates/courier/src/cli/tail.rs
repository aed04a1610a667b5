//! `courier tail TOPIC`: print a topic's messages as they are stored, from
//! a starting point, and with `--follow` as they arrive (like `nats sub`
//! or `rpk topic consume`). It reads through the API's message browser,
//! so it moves no subscription's cursor.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;

use courier_client::Client;

/// Messages one read asks for.
const PAGE: usize = 200;
/// How often `--follow` looks for new messages.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The topic to print.
    pub topic: String,
    /// Only this partition (default: every partition, each in order).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Where to start: `earliest`, `latest`, an offset, or a time (RFC
    /// 3339, e.g. 2026-12-04T10:00:00Z: the first message stored at or
    /// after it).
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Keep printing new messages as they arrive (until interrupted).
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub limit: Option<u64>,
    /// One JSON object per message instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// Where reading starts in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Earliest,
    Latest,
    Offset(u64),
    /// ms since the epoch.
    Time(u64),
}

fn parse_from(text: &str) -> anyhow::Result<From> {
    Ok(match text {
        "earliest" => From::Earliest,
        "latest" => From::Latest,
        _ => match text.parse::<u64>() {
            Ok(offset) => From::Offset(offset),
            Err(_) => {
                let at = humantime::parse_rfc3339_weak(text).with_context(|| {
                    format!(
                        "--from {text:?}: expected earliest, latest, an offset or an RFC 3339 time"
                    )
                })?;
                let ms = at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64);
                From::Time(ms)
            }
        },
    })
}

pub async fn run(client: &Client, args: TailArgs) -> anyhow::Result<()> {
    let from = parse_from(&args.from)?;
    let topic = client.get(&format!("/v1/topics/{}", args.topic)).await?;
    let partitions: Vec<(u32, u64, u64)> = topic["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                u32::try_from(p["partition"].as_u64()?).ok()?,
                p["start"].as_u64()?,
                p["end"].as_u64()?,
            ))
        })
        .filter(|(partition, _, _)| args.partition.is_none_or(|only| only == *partition))
        .collect();
    if partitions.is_empty() {
        bail!(
            "topic {:?} has no partition {}",
            args.topic,
            args.partition.map_or("at all".into(), |p| p.to_string())
        );
    }
    // Per partition: the next offset to read, and (without --follow) the
    // end to stop at.
    let mut next: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for (partition, start, end) in partitions {
        let offset = match from {
            From::Earliest => start,
            From::Latest => end,
            From::Offset(offset) => offset.clamp(start, end),
            From::Time(ms) => {
                first_at_or_after(client, &args.topic, partition, start, end, ms).await?
            }
        };
        next.insert(partition, (offset, end));
    }
    let mut printed = 0u64;
    loop {
        let mut read_any = false;
        for (partition, (offset, end)) in next.iter_mut() {
            loop {
                if !args.follow && *offset >= *end {
                    break;
                }
                let messages = read(client, &args.topic, *partition, *offset, PAGE).await?;
                if messages.is_empty() {
                    break;
                }
                read_any = true;
                for message in &messages {
                    if !args.follow && message["offset"].as_u64().is_some_and(|o| o >= *end) {
                        break;
                    }
                    print_message(message, args.json);
                    *offset = message["offset"].as_u64().map_or(*offset, |o| o + 1);
                    printed += 1;
                    if args.limit.is_some_and(|limit| printed >= limit) {
                        return Ok(());
                    }
                }
            }
        }
        if !args.follow {
            return Ok(());
        }
        if !read_any {
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
}

async fn read(
    client: &Client,
    topic: &str,
    partition: u32,
    from: u64,
    limit: usize,
) -> anyhow::Result<Vec<Value>> {
    let answer = client
        .get(&format!(
            "/v1/topics/{topic}/messages?partition={partition}&from={from}&limit={limit}"
        ))
        .await?;
    Ok(answer["messages"].as_array().cloned().unwrap_or_default())
}

/// The first offset in `[start, end)` whose message was stored at or after
/// `ms` (`end` if none): a binary search, since a partition's timestamps
/// never decrease.
async fn first_at_or_after(
    client: &Client,
    topic: &str,
    partition: u32,
    start: u64,
    end: u64,
    ms: u64,
) -> anyhow::Result<u64> {
    let (mut low, mut high) = (start, end);
    while low < high {
        let middle = low + (high - low) / 2;
        let message = read(client, topic, partition, middle, 1).await?;
        let Some(message) = message.first() else {
            // Retention removed it meanwhile: look later.
            low = middle + 1;
            continue;
        };
        let at = message["timestamp_ms"].as_u64().unwrap_or(0);
        let offset = message["offset"].as_u64().unwrap_or(middle);
        if at < ms {
            low = offset + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// `orders/3@1042 key=u-00042 {"order_id":...}`, or the message's JSON.
fn print_message(message: &Value, json: bool) {
    if json {
        println!("{message}");
        return;
    }
    let topic = message["topic"].as_str().unwrap_or("");
    let key = message["key"]
        .as_str()
        .map_or(String::new(), |key| format!(" key={key}"));
    let payload = match (&message["payload"], message["payload_base64"].as_str()) {
        (Value::Null, Some(encoded)) => text_or_base64(encoded),
        (payload, _) => payload.to_string(),
    };
    println!(
        "{topic}/{}@{}{key} {payload}",
        message["partition"], message["offset"]
    );
}

/// A payload the API sent as base64 (it is not JSON): as text if it is
/// UTF-8, else as the base64.
fn text_or_base64(encoded: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| format!("(base64) {encoded}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_takes_positions_offsets_and_times() {
        assert_eq!(parse_from("earliest").ok(), Some(From::Earliest));
        assert_eq!(parse_from("latest").ok(), Some(From::Latest));
        assert_eq!(parse_from("42").ok(), Some(From::Offset(42)));
        assert_eq!(
            parse_from("1970-01-01T00:00:01Z").ok(),
            Some(From::Time(1000))
        );
        let error = parse_from("yesterday").expect_err("not a time");
        assert!(error.to_string().contains("RFC 3339"), "{error}");
    }

    #[test]
    fn payloads_that_are_not_json_print_as_text_when_they_can() {
        assert_eq!(text_or_base64("aGVsbG8="), "hello");
        assert_eq!(text_or_base64("/w=="), "(base64) /w==");
    }
}
