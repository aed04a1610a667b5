//! `courier dead-letters ...` and `courier seek ...`.

use anyhow::bail;
use serde_json::{Value, json};

use courier_client::Client;

#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// Show a plugin's dead letters, oldest first.
    List {
        plugin: String,
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Deliver a plugin's dead letters to it again, with fresh attempts.
    Replay {
        plugin: String,
        #[arg(long)]
        topic: Option<String>,
    },
    /// Delete a plugin's dead letters.
    Purge {
        plugin: String,
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
    pub plugin: String,
    pub topic: String,
    /// Move to this offset (in every partition, or only --partition).
    #[arg(long)]
    pub offset: Option<u64>,
    #[arg(long, requires = "offset")]
    pub partition: Option<u32>,
    /// Move to the first message stored at or after this time (RFC 3339).
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long)]
    pub earliest: bool,
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
    println!(
        "{} on {} now lags {} messages",
        args.plugin, args.topic, answer["lag"]
    );
    Ok(())
}

fn strip_nulls(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.retain(|_, v| !v.is_null());
    }
    value
}
