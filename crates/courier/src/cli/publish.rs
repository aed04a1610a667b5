//! `courier publish TOPIC [--key K] [FILE|-]`: sends NDJSON lines in
//! batches and prints a summary.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use courier_client::Client;

/// Lines per request; keeps requests well under the body limit.
pub const DEFAULT_BATCH: usize = 1000;
/// Bytes per request before a batch is sent early.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Topic to publish to (created on first publish).
    pub topic: String,
    /// NDJSON input: a file, or - (the default) for standard input.
    #[arg(default_value = "-")]
    pub input: PathBuf,
    /// Partitioning key for every message.
    #[arg(long)]
    pub key: Option<String>,
    /// Lines are whole messages ({"key", "headers", "payload"}) rather than
    /// payloads.
    #[arg(long)]
    pub envelope: bool,
    /// Messages per request.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
}

pub async fn run(client: &Client, args: PublishArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be positive");
    }
    let (reader, size): (Box<dyn Read>, Option<u64>) = if args.input.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let progress = progress_bar(size);
    let path = format!("/v1/topics/{}/messages", args.topic);
    let started = Instant::now();
    let (mut sent, mut body, mut in_body) = (0u64, Vec::new(), 0usize);
    for (index, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.context("reading input")?;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        append_line(&mut body, &line, index + 1, &args)?;
        in_body += 1;
        if in_body >= args.batch || body.len() >= MAX_REQUEST_BYTES {
            sent += flush(client, &path, &mut body, &mut in_body).await?;
        }
    }
    sent += flush(client, &path, &mut body, &mut in_body).await?;
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "published {sent} messages to {} in {secs:.2}s ({:.0} msgs/s)",
        args.topic,
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn progress_bar(size: Option<u64>) -> ProgressBar {
    match size {
        // Only worth a bar for large inputs.
        Some(bytes) if bytes > 1024 * 1024 => {
            let bar = ProgressBar::new(bytes);
            let style = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        }
        _ => ProgressBar::hidden(),
    }
}

/// Adds one input line to the NDJSON body, as a message.
fn append_line(
    body: &mut Vec<u8>,
    line: &str,
    number: usize,
    args: &PublishArgs,
) -> anyhow::Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(line)
        .with_context(|| format!("line {number} is not JSON"))?;
    if args.envelope {
        body.extend_from_slice(line.as_bytes());
    } else {
        let key = serde_json::to_string(&args.key)?;
        body.extend_from_slice(format!("{{\"key\":{key},\"payload\":{line}}}").as_bytes());
    }
    body.push(b'\n');
    Ok(())
}

async fn flush(
    client: &Client,
    path: &str,
    body: &mut Vec<u8>,
    count: &mut usize,
) -> anyhow::Result<u64> {
    if *count == 0 {
        return Ok(0);
    }
    let answer = client.post_ndjson(path, std::mem::take(body)).await?;
    let published = answer["messages"].as_array().map_or(0, Vec::len) as u64;
    *count = 0;
    Ok(published)
}
