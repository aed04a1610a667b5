//! What both order fan-out demos share: the engine's HTTP API as they use
//! it, installing the plugins, and the checks of every plugin's figures
//! against the ones computed from the orders themselves
//! (`courier_workload::Expected`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_client::Client;
use courier_workload::{Expected, Order, envelope_ndjson};
use serde_json::Value;

/// Orders published before analytics exists, and while it is added.
pub const FIRST_ORDERS: usize = 10_000;
pub const MORE_ORDERS: usize = 5_000;
/// Orders per publish request.
pub const BATCH: usize = 1_000;
/// Fewer users and merchants than one state listing returns (1,000), so
/// one request lists them all.
pub const USERS: u32 = 800;
pub const MERCHANTS: u32 = 40;
pub const SEED: u64 = 42;
pub const FIRST_PLUGINS: [&str; 3] = ["notification", "recommendation", "membership"];
pub const HOT_PLUGIN: &str = "analytics";
/// Longest wait for plugins to load or drain.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// How often the demo's engine runs retention (see the module doc).
pub const RETENTION_PASS: Duration = Duration::from_secs(3600);
/// The most entries `GET /v1/plugins/{plugin}/state` returns.
pub const MAX_LIST: usize = 1_000;

/// Where the repository is: the demo reads the plugins from it.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Copies `plugins/NAME/NAME.toml`, then the component (through a rename,
/// so the engine never sees half a file), into the plugins directory.
pub fn install(repo: &Path, name: &str, plugins_dir: &Path) -> anyhow::Result<()> {
    let wasm = repo.join(format!("plugins/target/wasm32-wasip2/release/{name}.wasm"));
    if !wasm.is_file() {
        bail!("{} is missing: run `make plugins` first", wasm.display());
    }
    let manifest = repo.join(format!("plugins/{name}/{name}.toml"));
    std::fs::copy(&manifest, plugins_dir.join(format!("{name}.toml")))
        .with_context(|| format!("copying {}", manifest.display()))?;
    let tmp = plugins_dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(&wasm, &tmp).with_context(|| format!("copying {}", wasm.display()))?;
    std::fs::rename(&tmp, plugins_dir.join(format!("{name}.wasm")))?;
    Ok(())
}

/// The membership level table from the manifest's `[config] levels`
/// (`name:threshold,...`), ascending by threshold.
pub fn levels(repo: &Path) -> anyhow::Result<Vec<(i64, String)>> {
    let path = repo.join("plugins/membership/membership.toml");
    let manifest: toml::Table = std::fs::read_to_string(&path)?.parse()?;
    let text = manifest
        .get("config")
        .and_then(|config| config.get("levels"))
        .and_then(toml::Value::as_str)
        .context("membership.toml has no [config] levels")?;
    let mut table = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, threshold) = entry
            .split_once(':')
            .context("a level is not name:threshold")?;
        table.push((threshold.trim().parse()?, name.trim().to_owned()));
    }
    table.sort_unstable();
    Ok(table)
}

pub fn level_for(levels: &[(i64, String)], points: i64) -> &str {
    levels
        .iter()
        .rev()
        .find(|(threshold, _)| points >= *threshold)
        .map_or("basic", |(_, name)| name.as_str())
}

pub fn check(ok: bool, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    if !ok {
        bail!("check failed: {}", what());
    }
    Ok(())
}

pub async fn check_notification(api: &Api, expected: &Expected) -> anyhow::Result<()> {
    let per_merchant = api.numbers("notification", "notices/").await?;
    let notices: i64 = per_merchant.values().sum();
    check(notices == expected.orders as i64, || {
        format!(
            "notification sent {notices} notices for {} orders",
            expected.orders
        )
    })?;
    let wanted: BTreeMap<String, i64> = expected
        .orders_by_merchant
        .iter()
        .map(|(merchant, n)| (format!("notices/{merchant}"), *n as i64))
        .collect();
    check(per_merchant == wanted, || {
        "notices per merchant differ from orders per merchant".into()
    })?;
    let (busiest, count) = expected
        .orders_by_merchant
        .iter()
        .max_by_key(|(_, n)| **n)
        .context("no merchants")?;
    println!(
        "notification    {notices} notices to {} merchants (busiest: {busiest}, {count} orders)",
        per_merchant.len()
    );
    Ok(())
}

pub async fn check_recommendation(api: &Api, expected: &Expected) -> anyhow::Result<()> {
    let profiles = api.entries("recommendation", "profile/").await?;
    let updates: u64 = profiles.values().filter_map(|p| p["orders"].as_u64()).sum();
    check(updates == expected.orders, || {
        format!(
            "recommendation's profiles hold {updates} orders of {}",
            expected.orders
        )
    })?;
    check(profiles.len() == expected.points_by_user.len(), || {
        format!(
            "{} profiles for {} users",
            profiles.len(),
            expected.points_by_user.len()
        )
    })?;
    let (key, profile) = profiles
        .iter()
        .max_by_key(|(_, p)| p["orders"].as_u64())
        .context("no profiles")?;
    let mut categories: Vec<(&String, u64)> = profile["categories"]
        .as_object()
        .map(|c| {
            c.iter()
                .map(|(name, units)| (name, units.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    categories.sort_by_key(|(_, units)| std::cmp::Reverse(*units));
    let top: Vec<&str> = categories
        .iter()
        .take(3)
        .map(|(name, _)| name.as_str())
        .collect();
    println!(
        "recommendation  {updates} orders in {} profiles; {} ({} orders) buys mostly {}",
        profiles.len(),
        key.trim_start_matches("profile/"),
        profile["orders"],
        top.join(", ")
    );
    Ok(())
}

pub async fn check_membership(
    api: &Api,
    expected: &Expected,
    levels: &[(i64, String)],
) -> anyhow::Result<()> {
    let points = check_membership_totals(api, expected).await?;
    let points: BTreeMap<String, i64> = points
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("points/").to_owned(), v))
        .collect();
    check(points == expected.points_by_user, || {
        "points per member differ from the orders".into()
    })?;
    let stored = api.entries("membership", "level/").await?;
    let mut by_level: BTreeMap<String, usize> = BTreeMap::new();
    for (key, level) in &stored {
        let user = key.trim_start_matches("level/");
        let wanted = level_for(levels, points.get(user).copied().unwrap_or(0));
        check(level.as_str() == Some(wanted), || {
            format!("{user} is {level}, expected {wanted}")
        })?;
        *by_level.entry(wanted.to_owned()).or_default() += 1;
    }
    check(stored.len() == points.len(), || {
        format!("{} levels for {} members", stored.len(), points.len())
    })?;
    let (user, top) = points
        .iter()
        .max_by_key(|(_, p)| **p)
        .context("no members")?;
    let level = api.text("membership", &format!("level/{user}")).await?;
    let mix: Vec<String> = by_level
        .iter()
        .map(|(level, n)| format!("{level} {n}"))
        .collect();
    println!("                members by level: {}", mix.join(", "));
    println!("                top member {user}: {top} points, level {level}");
    Ok(())
}

/// Checks the points awarded in all; answers every member's points.
pub async fn check_membership_totals(
    api: &Api,
    expected: &Expected,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let members = api.numbers("membership", "points/").await?;
    let points: i64 = members.values().sum();
    check(points == expected.total_points(), || {
        format!(
            "membership awarded {points} points, expected {}",
            expected.total_points()
        )
    })?;
    let upgrades = api.number("membership", "stats/upgrades").await?;
    println!(
        "membership      {points} points to {} members (as expected), {upgrades} level changes",
        members.len()
    );
    Ok(members)
}

pub async fn check_analytics(api: &Api, expected: &Expected) -> anyhow::Result<()> {
    let orders = api.number("analytics", "stats/orders").await?;
    check(orders == expected.orders as i64, || {
        format!(
            "analytics counted {orders} orders, expected all {}",
            expected.orders
        )
    })?;
    let per_merchant = api.numbers("analytics", "orders/").await?;
    let total: i64 = per_merchant.values().sum();
    check(total == expected.orders as i64, || {
        format!("analytics orders per merchant sum to {total}")
    })?;
    let revenue = api.numbers("analytics", "revenue/").await?;
    let wanted: BTreeMap<String, i64> = expected
        .revenue_by_category
        .iter()
        .map(|(c, cents)| (format!("revenue/{c}"), *cents as i64))
        .collect();
    check(revenue == wanted, || {
        "revenue per category differs from the orders".into()
    })?;
    let mut ranked: Vec<(&String, &i64)> = revenue.iter().collect();
    ranked.sort_by_key(|(_, cents)| std::cmp::Reverse(**cents));
    let top: Vec<String> = ranked
        .iter()
        .take(3)
        .map(|(c, cents)| {
            format!(
                "{} {:.2} EUR",
                c.trim_start_matches("revenue/"),
                **cents as f64 / 100.0
            )
        })
        .collect();
    println!(
        "analytics       {orders} orders (every one, from the earliest); top revenue: {}",
        top.join(", ")
    );
    Ok(())
}

pub async fn check_no_dead_letters(api: &Api) -> anyhow::Result<()> {
    let subscriptions = api.client.get("/v1/subscriptions").await?;
    let dead: u64 = list(&subscriptions, "subscriptions")
        .iter()
        .map(|s| s["dead_letters"].as_u64().unwrap_or(0))
        .sum();
    check(dead == 0, || format!("{dead} orders were dead-lettered"))
}

pub fn list<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value[field].as_array().map_or(&[], Vec::as_slice)
}

/// The engine's HTTP API, as the demo uses it.
#[derive(Clone)]
pub struct Api {
    pub client: Arc<Client>,
}

impl Api {
    pub async fn publish(&self, orders: &[Order]) -> anyhow::Result<()> {
        for batch in orders.chunks(BATCH) {
            let answer = self
                .client
                .post_ndjson("/v1/topics/orders/messages", envelope_ndjson(batch)?)
                .await?;
            let published = list(&answer, "messages").len();
            check(published == batch.len(), || {
                format!("published {} orders, {published} accepted", batch.len())
            })?;
        }
        Ok(())
    }

    /// Waits until each of `plugins` subscribes to `orders`.
    pub async fn wait_subscribed(&self, plugins: &[&str]) -> anyhow::Result<()> {
        self.wait(plugins, "load", |_| true).await
    }

    /// Waits until each of `plugins` has handled everything on `orders`.
    pub async fn wait_drained(&self, plugins: &[&str]) -> anyhow::Result<()> {
        self.wait(plugins, "drain", |s| {
            ["lag", "in_flight", "scheduled"]
                .iter()
                .all(|field| s[*field] == 0)
        })
        .await
    }

    async fn wait(
        &self,
        plugins: &[&str],
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let answer = self.client.get("/v1/subscriptions").await?;
            let subscriptions: Vec<&Value> = list(&answer, "subscriptions")
                .iter()
                .filter(|s| s["topic"] == "orders")
                .collect();
            let ready = plugins.iter().all(|plugin| {
                subscriptions
                    .iter()
                    .any(|s| s["plugin"] == *plugin && done(s))
            });
            if ready {
                return Ok(());
            }
            if started.elapsed() > TIMEOUT {
                let plugins = self.client.get("/v1/plugins").await?;
                bail!("plugins did not {what} within {TIMEOUT:?}: {answer} {plugins}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn value(&self, plugin: &str, key: &str) -> anyhow::Result<Value> {
        let answer = self
            .client
            .get(&format!("/v1/plugins/{plugin}/state/{key}"))
            .await;
        let answer = answer.with_context(|| format!("reading {plugin} state {key}"))?;
        Ok(answer["value"].clone())
    }

    pub async fn number(&self, plugin: &str, key: &str) -> anyhow::Result<i64> {
        let value = self.value(plugin, key).await?;
        value
            .as_i64()
            .with_context(|| format!("{plugin} state {key} is {value}, not a number"))
    }

    pub async fn text(&self, plugin: &str, key: &str) -> anyhow::Result<String> {
        let value = self.value(plugin, key).await?;
        Ok(value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned))
    }

    /// Every state entry of `plugin` under `prefix` (key, value).
    pub async fn entries(
        &self,
        plugin: &str,
        prefix: &str,
    ) -> anyhow::Result<BTreeMap<String, Value>> {
        let path = format!("/v1/plugins/{plugin}/state?prefix={prefix}&limit={MAX_LIST}");
        let answer = self.client.get(&path).await?;
        let entries = list(&answer, "entries");
        check(entries.len() < MAX_LIST, || {
            format!("{plugin} has too many {prefix} keys to list")
        })?;
        Ok(entries
            .iter()
            .map(|e| {
                (
                    e["key"].as_str().unwrap_or("").to_owned(),
                    e["value"].clone(),
                )
            })
            .collect())
    }

    /// Like [`Api::entries`], for counters.
    pub async fn numbers(
        &self,
        plugin: &str,
        prefix: &str,
    ) -> anyhow::Result<BTreeMap<String, i64>> {
        let entries = self.entries(plugin, prefix).await?;
        entries
            .into_iter()
            .map(|(key, value)| {
                let number = value
                    .as_i64()
                    .with_context(|| format!("{plugin} {key} is not a number"));
                number.map(|n| (key, n))
            })
            .collect()
    }
}
