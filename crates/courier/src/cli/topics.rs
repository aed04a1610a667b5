//! `courier topics list|describe|create`.

use serde_json::{Value, json};

use courier_client::Client;

#[derive(Debug, clap::Subcommand)]
pub enum TopicsCommand {
    /// Every topic: partitions, retained messages, bytes on disk.
    List,
    /// One topic: its settings and every partition's retained range.
    Describe {
        /// The topic.
        topic: String,
    },
    /// Create a topic (an existing one with as many partitions is kept).
    Create {
        /// The topic.
        topic: String,
        /// Partitions (fixed once created; a key always maps to one).
        #[arg(long)]
        partitions: Option<u32>,
        /// Remove messages older than this even if a subscription lags,
        /// e.g. `7days`, `12h`.
        #[arg(long)]
        retention_max_age: Option<String>,
        /// Remove the oldest messages beyond this many bytes, likewise.
        #[arg(long)]
        retention_max_bytes: Option<u64>,
    },
}

pub async fn run(client: &Client, command: TopicsCommand) -> anyhow::Result<()> {
    match command {
        TopicsCommand::List => {
            let answer = client.get("/v1/topics").await?;
            let topics = answer["topics"].as_array().cloned().unwrap_or_default();
            if topics.is_empty() {
                println!("no topics");
            }
            for topic in &topics {
                println!("{}", summary(topic));
            }
        }
        TopicsCommand::Describe { topic } => {
            let answer = client.get(&format!("/v1/topics/{topic}")).await?;
            for line in details(&answer) {
                println!("{line}");
            }
        }
        TopicsCommand::Create {
            topic,
            partitions,
            retention_max_age,
            retention_max_bytes,
        } => {
            let mut body = json!({});
            if let Some(partitions) = partitions {
                body["partitions"] = json!(partitions);
            }
            if let Some(age) = retention_max_age {
                body["retention_max_age"] = json!(age);
            }
            if let Some(bytes) = retention_max_bytes {
                body["retention_max_bytes"] = json!(bytes);
            }
            let answer = client
                .put_json(&format!("/v1/topics/{topic}"), &body)
                .await?;
            println!("{}", summary(&answer));
        }
    }
    Ok(())
}

/// `orders  8 partitions  200000 messages  12.6 MB`.
fn summary(topic: &Value) -> String {
    let partitions = topic["partitions"].as_array().map_or(0, Vec::len);
    format!(
        "{:<24} {partitions} partitions  {} messages  {:.1} MB",
        topic["name"].as_str().unwrap_or("?"),
        topic["messages"],
        topic["disk_bytes"].as_f64().unwrap_or(0.0) / 1e6
    )
}

fn details(topic: &Value) -> Vec<String> {
    let mut lines = vec![summary(topic)];
    let retention = &topic["retention"];
    lines.push(format!(
        "retention: max age {}, max bytes {}",
        retention["max_age_secs"]
            .as_u64()
            .map_or("none".to_owned(), |secs| format!("{secs} s")),
        retention["max_bytes"]
            .as_u64()
            .map_or("none".to_owned(), |bytes| bytes.to_string())
    ));
    for partition in topic["partitions"].as_array().into_iter().flatten() {
        lines.push(format!(
            "partition {}: offsets {}..{}",
            partition["partition"], partition["start"], partition["end"]
        ));
    }
    lines
}
