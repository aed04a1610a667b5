//! `courier status`: topics, plugins and subscriptions as tables (or JSON),
//! with rates measured over a short interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

use courier_client::Client;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Seconds between the two samples rates are computed from (0: no rates).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
}

pub async fn run(client: &Client, args: StatusArgs) -> anyhow::Result<()> {
    let first = snapshot(client).await?;
    let started = Instant::now();
    let mut rates = HashMap::new();
    let mut last = first.clone();
    if args.interval > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
        last = snapshot(client).await?;
        rates = compute_rates(&first, &last, started.elapsed().as_secs_f64());
    }
    if args.json {
        let mut out = last.clone();
        out["rates"] = json!(rates);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_tables(&last, &rates);
    }
    Ok(())
}

async fn snapshot(client: &Client) -> anyhow::Result<Value> {
    Ok(json!({
        "topics": client.get("/v1/topics").await?["topics"],
        "plugins": client.get("/v1/plugins").await?["plugins"],
        "subscriptions": client.get("/v1/subscriptions").await?["subscriptions"],
    }))
}

fn total_end(topic: &Value) -> u64 {
    topic["partitions"].as_array().map_or(0, |ps| {
        ps.iter().map(|p| p["end"].as_u64().unwrap_or(0)).sum()
    })
}

fn total_committed(sub: &Value) -> u64 {
    sub["partitions"].as_array().map_or(0, |ps| {
        ps.iter()
            .map(|p| p["committed"].as_u64().unwrap_or(0))
            .sum()
    })
}

/// Messages per second: published per topic, handled per subscription.
fn compute_rates(first: &Value, last: &Value, secs: f64) -> HashMap<String, f64> {
    let mut rates = HashMap::new();
    let before: HashMap<String, u64> = list(first, "topics")
        .iter()
        .map(|t| (str_of(t, "name"), total_end(t)))
        .collect();
    for topic in list(last, "topics") {
        let name = str_of(topic, "name");
        let delta = total_end(topic).saturating_sub(before.get(&name).copied().unwrap_or(0));
        rates.insert(format!("topic/{name}"), delta as f64 / secs);
    }
    let before: HashMap<String, u64> = list(first, "subscriptions")
        .iter()
        .map(|s| (sub_key(s), total_committed(s)))
        .collect();
    for sub in list(last, "subscriptions") {
        let key = sub_key(sub);
        let delta = total_committed(sub).saturating_sub(before.get(&key).copied().unwrap_or(0));
        rates.insert(format!("subscription/{key}"), delta as f64 / secs);
    }
    let cpu = |plugin: &Value| plugin["cpu_seconds"].as_f64();
    let before: HashMap<String, f64> = list(first, "plugins")
        .iter()
        .filter_map(|p| Some((str_of(p, "name"), cpu(p)?)))
        .collect();
    for plugin in list(last, "plugins") {
        let name = str_of(plugin, "name");
        if let (Some(now), Some(then)) = (cpu(plugin), before.get(&name)) {
            // CPU seconds per second: the cores the plugin's batches used.
            rates.insert(format!("plugin-cpu/{name}"), (now - then).max(0.0) / secs);
        }
    }
    rates
}

fn list<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value[field].as_array().map_or(&[], Vec::as_slice)
}

fn str_of(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or("").to_owned()
}

fn sub_key(sub: &Value) -> String {
    format!("{}/{}", str_of(sub, "plugin"), str_of(sub, "topic"))
}

fn rate(rates: &HashMap<String, f64>, key: &str) -> String {
    rates.get(key).map_or("-".into(), |r| format!("{r:.0}/s"))
}

/// The share of a core `plugin`'s batches used over the interval.
fn cores(rates: &HashMap<String, f64>, plugin: &str) -> String {
    rates
        .get(&format!("plugin-cpu/{plugin}"))
        .map_or("-".into(), |cores| format!("{:.0}%", cores * 100.0))
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}

fn print_tables(status: &Value, rates: &HashMap<String, f64>) {
    let mut topics = table(&["topic", "partitions", "messages", "disk", "published"]);
    for topic in list(status, "topics") {
        let name = str_of(topic, "name");
        topics.add_row(vec![
            name.clone(),
            list(topic, "partitions").len().to_string(),
            topic["messages"].to_string(),
            format!(
                "{:.1} MB",
                topic["disk_bytes"].as_f64().unwrap_or(0.0) / 1e6
            ),
            rate(rates, &format!("topic/{name}")),
        ]);
    }
    println!("Topics\n{topics}\n");
    let mut plugins = table(&["plugin", "status", "version", "topics", "CPU", "last error"]);
    for plugin in list(status, "plugins") {
        let topics: Vec<String> = list(plugin, "subscriptions")
            .iter()
            .map(|t| t.as_str().unwrap_or("").to_owned())
            .collect();
        plugins.add_row(vec![
            str_of(plugin, "name"),
            str_of(plugin, "status"),
            str_of(plugin, "version"),
            topics.join(", "),
            cores(rates, &str_of(plugin, "name")),
            plugin["last_error"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect(),
        ]);
    }
    println!("Plugins\n{plugins}\n");
    let mut subs = table(&[
        "plugin",
        "topic",
        "mode",
        "lag",
        "in flight",
        "retrying",
        "dead letters",
        "expired",
        "handled",
    ]);
    for sub in list(status, "subscriptions") {
        subs.add_row(vec![
            str_of(sub, "plugin"),
            str_of(sub, "topic"),
            str_of(sub, "mode"),
            sub["lag"].to_string(),
            sub["in_flight"].to_string(),
            sub["scheduled"].to_string(),
            sub["dead_letters"].to_string(),
            sub["expired"].to_string(),
            rate(rates, &format!("subscription/{}", sub_key(sub))),
        ]);
    }
    println!("Subscriptions\n{subs}");
    print_owners(status);
}

/// On a cluster: which engine delivers which partitions of each
/// subscription.
fn print_owners(status: &Value) {
    let mut owners = table(&["plugin", "topic", "engine", "partitions"]);
    let mut any = false;
    for sub in list(status, "subscriptions") {
        let mut by_engine: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for partition in list(sub, "partitions") {
            if let Some(owner) = partition["owner"].as_str() {
                by_engine
                    .entry(owner.to_owned())
                    .or_default()
                    .push(partition["partition"].to_string());
            }
        }
        for (engine, partitions) in by_engine {
            any = true;
            owners.add_row(vec![
                str_of(sub, "plugin"),
                str_of(sub, "topic"),
                engine,
                partitions.join(","),
            ]);
        }
    }
    if any {
        println!("\nPartitions by engine\n{owners}");
    }
}
