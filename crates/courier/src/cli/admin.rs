//! `courier dead-letters ...` and `courier seek ...`.

use anyhow::bail;
use serde_json::{Value, json};

use courier_client::Client;

#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// Show a plugin's dead letters, oldest first.
    List {
        /// The plugin whose dead letters to show.
        plugin: String,
        /// Only those of this topic (default: every topic it consumes).
        #[arg(long)]
        topic: Option<String>,
        /// Show at most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Deliver a plugin's dead letters to it again, with fresh attempts.
    Replay {
        /// The plugin whose dead letters to replay (to it alone).
        plugin: String,
        /// Only those of this topic (default: every topic it consumes).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Delete a plugin's dead letters.
    Purge {
        /// The plugin whose dead letters to delete.
        plugin: String,
        /// Only those of this topic (default: every topic it consumes).
        #[arg(long)]
        topic: Option<String>,
    },
}

fn topic_query(topic: &Option<String>) -> String {
    topic
        .as_ref()
        .map_or(String::new(), |t| format!("topic={t}&"))
}

pub async fn dead_letters(client: &Client, command: DeadLetterCommand) -> anyhow::Result<()> {
    match command {
        DeadLetterCommand::List {
            plugin,
            topic,
            limit,
        } => {
            let path = format!(
                "/v1/dead-letters/{plugin}?{}limit={limit}",
                topic_query(&topic)
            );
            let answer = client.get(&path).await?;
            let letters = answer["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if letters.is_empty() {
                println!("no dead letters for {plugin}");
            }
            for letter in letters {
                print_letter(&letter);
            }
        }
        DeadLetterCommand::Replay { plugin, topic } => {
            let path = format!("/v1/dead-letters/{plugin}/replay?{}", topic_query(&topic));
            let answer = client.post_json(&path, &json!({})).await?;
            println!("replayed {} dead letters of {plugin}", answer["replayed"]);
        }
        DeadLetterCommand::Purge { plugin, topic } => {
            let path = format!("/v1/dead-letters/{plugin}?{}", topic_query(&topic));
            let answer = client.delete(&path).await?;
            println!("purged {} dead letters of {plugin}", answer["purged"]);
        }
    }
    Ok(())
}

fn print_letter(letter: &Value) {
    let message = &letter["message"];
    println!(
        "#{} {}/{}@{} after {} attempt(s): {}",
        letter["id"],
        message["topic"].as_str().unwrap_or(""),
        message["partition"],
        message["offset"],
        letter["attempts"],
        letter["reason"].as_str().unwrap_or("")
    );
    let payload = if message["payload"].is_null() {
        &message["payload_base64"]
    } else {
        &message["payload"]
    };
    let text = payload.to_string();
    println!("    {}", text.chars().take(200).collect::<String>());
}

#[derive(Debug, clap::Args)]
pub struct SeekArgs {
    /// The plugin whose cursor to move.
    pub plugin: String,
    /// The topic it consumes.
    pub topic: String,
    /// Move to this offset (in every partition, or only --partition);
    /// clamped to what the partition holds.
    #[arg(long)]
    pub offset: Option<u64>,
    /// With --offset: move only this partition's cursor.
    #[arg(long, requires = "offset")]
    pub partition: Option<u32>,
    /// Move to the first message stored at or after this time (RFC 3339).
    #[arg(long)]
    pub time: Option<String>,
    /// Move to the oldest retained message (replay everything kept).
    #[arg(long)]
    pub earliest: bool,
    /// Move past the newest message (skip the backlog).
    #[arg(long)]
    pub latest: bool,
}

pub async fn seek(client: &Client, args: SeekArgs) -> anyhow::Result<()> {
    let body = match (&args.offset, &args.time, args.earliest, args.latest) {
        (Some(offset), None, false, false) => {
            json!({"offset": offset, "partition": args.partition})
        }
        (None, Some(time), false, false) => json!({"time": time}),
        (None, None, true, false) => json!({"position": "earliest"}),
        (None, None, false, true) => json!({"position": "latest"}),
        _ => bail!("give exactly one of --offset, --time, --earliest, --latest"),
    };
    let body = strip_nulls(body);
    let path = format!("/v1/subscriptions/{}/{}/seek", args.plugin, args.topic);
    let answer = client.post_json(&path, &body).await?;
    if let Some(offset) = args.offset {
        for line in clamped(&answer, offset, args.partition) {
            println!("{line}");
        }
    }
    println!(
        "{} on {} now lags {} messages",
        args.plugin, args.topic, answer["lag"]
    );
    Ok(())
}

/// What an offset seek could not do as asked: one line per partition whose
/// cursor landed elsewhere (the offset was past its end, or below what it
/// still holds).
fn clamped(answer: &Value, offset: u64, only: Option<u32>) -> Vec<String> {
    answer["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|partition| {
            let number = partition["partition"].as_u64()?;
            let committed = partition["committed"].as_u64()?;
            let wanted = only.is_none_or(|only| u64::from(only) == number);
            (wanted && committed != offset).then(|| {
                let why = if committed < offset {
                    "past its end"
                } else {
                    "below its oldest message"
                };
                format!(
                    "partition {number}: offset {offset} is {why}, so the cursor is at {committed}"
                )
            })
        })
        .collect()
}

fn strip_nulls(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.retain(|_, v| !v.is_null());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seek_past_the_end_says_where_the_cursor_went() {
        let answer = json!({"partitions": [
            {"partition": 0, "committed": 5},
            {"partition": 1, "committed": 100},
            {"partition": 2, "committed": 120},
        ]});
        assert_eq!(
            clamped(&answer, 100, None),
            vec![
                "partition 0: offset 100 is past its end, so the cursor is at 5".to_owned(),
                "partition 2: offset 100 is below its oldest message, so the cursor is at 120"
                    .to_owned(),
            ]
        );
        assert!(clamped(&answer, 100, Some(1)).is_empty());
    }
}
