//! `courier plugins list|info` and `courier state get|list`: what the
//! engine's plugins are and what they keep.

use anyhow::bail;
use serde_json::Value;

use courier_client::Client;

/// Largest page `state list` asks for (the API's own bound).
const STATE_PAGE: usize = 1000;

#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// Every plugin the engine knows: version, status, subscriptions.
    List,
    /// One plugin in full: version, status, when it was loaded, the whole
    /// last error (a rejected version's reason), subscriptions, CPU.
    Info {
        /// The plugin's name (its file name without `.wasm`).
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// One key of a plugin's state.
    Get {
        /// The plugin whose state to read.
        plugin: String,
        /// The key.
        key: String,
    },
    /// A plugin's state keys and values, in key order, page by page.
    List {
        /// The plugin whose state to list.
        plugin: String,
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Start after this key (the last one a previous listing printed).
        #[arg(long)]
        start_after: Option<String>,
        /// Print at most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub async fn plugins(client: &Client, command: PluginsCommand) -> anyhow::Result<()> {
    let answer = client.get("/v1/plugins").await?;
    let plugins = answer["plugins"].as_array().cloned().unwrap_or_default();
    match command {
        PluginsCommand::List => {
            if plugins.is_empty() {
                println!("no plugins");
            }
            for plugin in &plugins {
                println!("{}", summary(plugin));
            }
        }
        PluginsCommand::Info { name } => {
            let Some(plugin) = plugins.iter().find(|p| p["name"] == name.as_str()) else {
                let known: Vec<&str> = plugins.iter().filter_map(|p| p["name"].as_str()).collect();
                bail!(
                    "unknown plugin {name:?} (the engine knows: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                );
            };
            for line in details(plugin) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// `membership  running  6c1f0e2a9b3d4e5f  orders`.
fn summary(plugin: &Value) -> String {
    let text = |key: &str| plugin[key].as_str().unwrap_or("-").to_owned();
    let subscriptions: Vec<&str> = plugin["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut line = format!(
        "{:<20} {:<8} {:<16} {}",
        text("name"),
        text("status"),
        text("version"),
        subscriptions.join(",")
    );
    if !plugin["last_error"].is_null() {
        line.push_str("  (last load failed: `courier plugins info` shows why)");
    }
    line
}

fn details(plugin: &Value) -> Vec<String> {
    let text = |key: &str| match &plugin[key] {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let subscriptions: Vec<&str> = plugin["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    vec![
        format!("name:          {}", text("name")),
        format!("status:        {}", text("status")),
        format!("version:       {}", text("version")),
        format!("loaded at ms:  {}", text("loaded_at_ms")),
        format!("subscriptions: {}", subscriptions.join(", ")),
        format!("cpu seconds:   {}", text("cpu_seconds")),
        format!("last error:    {}", text("last_error")),
    ]
}

pub async fn state(client: &Client, command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Get { plugin, key } => {
            let answer = client
                .get(&format!("/v1/plugins/{plugin}/state/{key}"))
                .await?;
            println!("{}", value_text(&answer));
        }
        StateCommand::List {
            plugin,
            prefix,
            start_after,
            limit,
        } => {
            let mut after = start_after;
            let mut printed = 0;
            while printed < limit {
                let page = (limit - printed).min(STATE_PAGE);
                let mut path = format!(
                    "/v1/plugins/{plugin}/state?limit={page}&prefix={}",
                    encode(&prefix)
                );
                if let Some(after) = &after {
                    path.push_str(&format!("&start_after={}", encode(after)));
                }
                let answer = client.get(&path).await?;
                let entries = answer["entries"].as_array().cloned().unwrap_or_default();
                for entry in &entries {
                    println!(
                        "{} = {}",
                        entry["key"].as_str().unwrap_or(""),
                        value_text(entry)
                    );
                }
                printed += entries.len();
                match answer["next"].as_str() {
                    Some(next) if !entries.is_empty() => after = Some(next.to_owned()),
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

/// A state value as the API shows it: JSON, text, or base64.
fn value_text(entry: &Value) -> String {
    match (&entry["value"], entry["value_base64"].as_str()) {
        (Value::String(text), _) => text.clone(),
        (Value::Null, Some(base64)) => format!("(base64) {base64}"),
        (value, _) => value.to_string(),
    }
}

/// Percent-encodes a query value (keys may hold `/`, `&`, spaces...).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("points/u-1"), "points/u-1");
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
    }

    #[test]
    fn values_print_as_text_json_or_base64() {
        assert_eq!(value_text(&json!({"value": "gold"})), "gold");
        assert_eq!(value_text(&json!({"value": 42})), "42");
        assert_eq!(
            value_text(&json!({"value_base64": "AAE="})),
            "(base64) AAE="
        );
    }
}
