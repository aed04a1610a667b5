//! Shared pieces of the engine's end-to-end tests: orders from the one
//! workload generator (`courier_workload`), their expected figures from its
//! one oracle (computed from the orders the tests published, parsed back,
//! never from the plugins), checks of those figures against the engine's
//! state and topics, a background producer that records what the engine
//! acknowledged, and plugin installers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use courier_tests::{Client, example_manifest, install_plugin};
use courier_workload::{Expected, Generator, Order, Shape};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The three order plugins every order scenario runs.
pub const ORDER_PLUGINS: [&str; 3] = ["notification", "recommendation", "membership"];

/// Distinct buyers: few enough that one state listing holds them all, and
/// many orders per user so per-key order matters.
const USERS: u32 = 150;
/// Distinct sellers.
const MERCHANTS: u32 = 30;
/// Distinct products.
const SKUS: u32 = 500;
/// Product categories.
const CATEGORIES: u32 = 6;

/// Deterministic orders of the shape `plugins/orders` validates, as JSON.
pub struct OrderGen(Generator);

impl OrderGen {
    /// The same seed gives the same orders. Order ids run from
    /// `o-00000000`; `seed` picks users, merchants and items.
    pub fn new(seed: u64) -> OrderGen {
        OrderGen(Generator::new(Shape {
            seed,
            users: USERS,
            merchants: MERCHANTS,
            categories: CATEGORIES,
            skus: SKUS,
            ..Shape::default()
        }))
    }

    pub fn order(&mut self) -> Value {
        serde_json::to_value(self.0.next_order()).expect("an order is JSON")
    }

    pub fn orders(&mut self, count: usize) -> Vec<Value> {
        (0..count).map(|_| self.order()).collect()
    }
}

/// The figures `orders` (as published) must give, by the workload's
/// oracle; panics on an order that does not parse or comes twice.
pub fn expected(orders: &[Value]) -> Expected {
    let mut expected = Expected::default();
    for value in orders {
        let order: Order = serde_json::from_value(value.clone())
            .unwrap_or_else(|error| panic!("{value} is no order: {error}"));
        assert!(
            expected.add(&order),
            "order {} counted twice",
            order.order_id
        );
    }
    expected
}

/// A map of counts as the engine's state shows them (signed counters).
fn signed(counts: &BTreeMap<String, u64>) -> BTreeMap<String, i64> {
    counts
        .iter()
        .map(|(key, count)| (key.clone(), i64::try_from(*count).unwrap_or(i64::MAX)))
        .collect()
}

/// The publish body for orders: `[{"key": user_id, "payload": order}, ..]`.
pub fn envelopes(orders: &[Value]) -> Value {
    Value::Array(
        orders
            .iter()
            .map(|order| json!({"key": order["user_id"], "payload": order}))
            .collect(),
    )
}

/// Publishes `orders` in requests of `batch`, asserting each is accepted.
pub async fn publish_orders(client: &Client, orders: &[Value], batch: usize) {
    for chunk in orders.chunks(batch) {
        let answer = client.publish("orders", &envelopes(chunk)).await;
        assert_eq!(
            answer["messages"].as_array().map(Vec::len),
            Some(chunk.len()),
            "{answer}"
        );
    }
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {value}"))
        .to_owned()
}

fn number(value: &Value, field: &str) -> i64 {
    value[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} missing in {value}"))
}

/// A state value that should be a counter (stored as decimal text, shown
/// as a JSON number).
pub fn counter(value: &Value) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
        .unwrap_or_else(|| panic!("{value} is not a counter"))
}

/// Counters under `prefix`, keyed by what follows it.
async fn counters(client: &Client, plugin: &str, prefix: &str) -> BTreeMap<String, i64> {
    client
        .state_entries(plugin, prefix)
        .await
        .into_iter()
        .map(|(key, value)| (key[prefix.len()..].to_owned(), counter(&value)))
        .collect()
}

/// Mismatches found by a check, described.
pub type Mismatches = Vec<String>;

fn compare<T: PartialEq + std::fmt::Debug>(
    found: &mut Mismatches,
    what: &str,
    actual: T,
    expected: T,
) {
    if actual != expected {
        let text = format!("{what}: got {actual:?}, expected {expected:?}");
        found.push(text.chars().take(2000).collect());
    }
}

/// Which plugins' figures to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figures {
    /// notification, recommendation and membership.
    OrderPlugins,
    /// The three and analytics.
    WithAnalytics,
}

/// Waits (up to 20 s) until the plugins' figures match `expected`, then
/// asserts they do, naming every mismatch.
///
/// Waiting first is needed because `GET /v1/subscriptions` may show a
/// subscription drained a moment before its last acknowledgement, and the
/// effects that come with it, are committed (see the test
/// `sync::a_drained_subscription_shows_all_its_effects`). A double effect
/// still fails: counters only grow, so they never come back to the
/// expected figure.
pub async fn check_figures(client: &Client, expected: &Expected, figures: Figures) {
    let matched = courier_tests::wait_until(Duration::from_secs(20), || async {
        mismatches(client, expected, figures).await.is_empty()
    })
    .await;
    let found = mismatches(client, expected, figures).await;
    assert!(
        matched && found.is_empty(),
        "figures differ from the orders:\n{}",
        found.join("\n")
    );
}

/// The three order plugins' figures.
pub async fn check_order_plugins(client: &Client, expected: &Expected) {
    check_figures(client, expected, Figures::OrderPlugins).await;
}

async fn mismatches(client: &Client, expected: &Expected, figures: Figures) -> Mismatches {
    let mut found = Mismatches::new();
    membership(client, expected, &mut found).await;
    notification(client, expected, &mut found).await;
    recommendation(client, expected, &mut found).await;
    if figures == Figures::WithAnalytics {
        analytics(client, expected, &mut found).await;
    }
    found
}

/// membership: points per user (and their sum).
async fn membership(client: &Client, expected: &Expected, found: &mut Mismatches) {
    let points = counters(client, "membership", "points/").await;
    compare(
        found,
        "sum of all members' points",
        points.values().sum::<i64>(),
        expected.total_points(),
    );
    compare(
        found,
        "points per user",
        points,
        expected.points_by_user.clone(),
    );
}

/// notification: notices per merchant, and every order id in
/// topic `notifications` exactly once, keyed by its merchant.
async fn notification(client: &Client, expected: &Expected, found: &mut Mismatches) {
    let notices = counters(client, "notification", "notices/").await;
    compare(
        found,
        "notices per merchant",
        notices,
        signed(&expected.orders_by_merchant),
    );
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for message in client.read_topic("notifications").await {
        let notice = &message["payload"];
        compare(
            found,
            "key of a notice",
            &message["key"],
            &notice["merchant_id"],
        );
        *seen.entry(text(notice, "order_id")).or_default() += 1;
    }
    let repeated: Vec<_> = seen
        .iter()
        .filter(|(_, count)| **count > 1)
        .take(10)
        .collect();
    compare(
        found,
        "orders notified more than once",
        repeated,
        Vec::new(),
    );
    let notified: BTreeSet<String> = seen.into_keys().collect();
    let missing: Vec<_> = expected.order_ids.difference(&notified).take(10).collect();
    compare(found, "orders never notified", missing, Vec::new());
    let unexpected: Vec<_> = notified.difference(&expected.order_ids).take(10).collect();
    compare(found, "notices of unknown orders", unexpected, Vec::new());
}

/// recommendation: orders per user profile.
async fn recommendation(client: &Client, expected: &Expected, found: &mut Mismatches) {
    let profiles: BTreeMap<String, i64> = client
        .state_entries("recommendation", "profile/")
        .await
        .into_iter()
        .map(|(key, profile)| {
            (
                key["profile/".len()..].to_owned(),
                number(&profile, "orders"),
            )
        })
        .collect();
    compare(
        found,
        "orders per user profile",
        profiles,
        signed(&expected.orders_by_user),
    );
}

/// analytics: revenue per category, orders per merchant and its stats.
async fn analytics(client: &Client, expected: &Expected, found: &mut Mismatches) {
    let revenue = counters(client, "analytics", "revenue/").await;
    compare(
        found,
        "revenue per category",
        revenue,
        signed(&expected.revenue_by_category),
    );
    let orders = counters(client, "analytics", "orders/").await;
    compare(
        found,
        "analytics orders per merchant",
        orders,
        signed(&expected.orders_by_merchant),
    );
    compare(
        found,
        "analytics stats/orders",
        client.state_i64("analytics", "stats/orders").await,
        i64::try_from(expected.orders).unwrap_or(i64::MAX),
    );
}

/// Waits until every plugin in `plugins` has drained `orders`.
pub async fn wait_orders_drained(client: &Client, plugins: &[&str], timeout: Duration) {
    for plugin in plugins {
        client.wait_drained(plugin, "orders", timeout).await;
    }
}

/// Every order stored in topic `orders`, with no order id twice.
pub async fn stored_orders(client: &Client) -> Vec<Value> {
    let orders: Vec<Value> = client
        .read_topic("orders")
        .await
        .into_iter()
        .map(|message| message["payload"].clone())
        .collect();
    let ids: BTreeSet<&str> = orders
        .iter()
        .filter_map(|order| order["order_id"].as_str())
        .collect();
    assert_eq!(ids.len(), orders.len(), "an order id is stored twice");
    orders
}

/// Asserts every acknowledged order is stored.
pub fn assert_acknowledged_stored(acknowledged: &[Value], stored: &[Value]) {
    let stored: BTreeSet<&str> = stored
        .iter()
        .filter_map(|order| order["order_id"].as_str())
        .collect();
    let lost: Vec<&str> = acknowledged
        .iter()
        .filter_map(|order| order["order_id"].as_str())
        .filter(|id| !stored.contains(id))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged orders missing from topic orders: {lost:?}"
    );
}

/// Installs the three order plugins with their shipped manifests.
pub fn install_order_plugins(dir: &Path) {
    for plugin in ORDER_PLUGINS {
        install_plugin(dir, plugin, plugin, Some(&example_manifest(plugin)));
    }
}

/// Installs plugin `archive`, a subscriber of `topic` that never gets
/// past the first message of any partition (fixture-retry asking for a
/// retry in an hour). Retention never drops what some subscription has not
/// passed, so with it the whole topic stays readable and a test can check
/// what was stored after the other plugins consumed it.
pub fn install_archive(dir: &Path, topic: &str) {
    let manifest = format!(
        "[[subscriptions]]\ntopic = \"{topic}\"\n\n[delivery]\nmax_attempts = 1000\n\n[config]\ndelay_ms = \"3600000\"\n"
    );
    install_plugin(dir, "fixture-retry", "archive", Some(&manifest));
}

/// A [`Producer`]'s pause after each accepted request: orders keep
/// flowing while the plugins keep up, rather than a flood that only makes
/// every drain longer.
const PRODUCER_PAUSE: Duration = Duration::from_millis(5);

/// What a [`Producer`] saw.
#[derive(Debug, Default)]
pub struct ProducerLog {
    /// Orders whose publish request answered 200.
    pub acknowledged: Vec<Value>,
    /// Orders sent whose request failed (they may or may not be stored).
    pub unacknowledged: Vec<Value>,
}

/// Publishes batches of fresh orders in a loop until stopped, recording
/// which were acknowledged. A failed request is never resent: its orders
/// may or may not be stored, and the test finds out from the topic.
pub struct Producer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    task: JoinHandle<ProducerLog>,
}

impl Producer {
    pub fn spawn(client: Client, mut orders: OrderGen, batch: usize) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        let task = tokio::spawn(async move {
            let mut log = ProducerLog::default();
            let url = client.url("/v1/topics/orders/messages");
            while !stop_flag.load(Ordering::Relaxed) {
                let chunk = orders.orders(batch);
                let sent = client
                    .http()
                    .post(&url)
                    .timeout(Duration::from_secs(10))
                    .json(&envelopes(&chunk))
                    .send()
                    .await;
                if sent.is_ok_and(|response| response.status().as_u16() == 200) {
                    count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    log.acknowledged.extend(chunk);
                    tokio::time::sleep(PRODUCER_PAUSE).await;
                } else {
                    log.unacknowledged.extend(chunk);
                    // The engine is down or shutting down: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            log
        });
        Producer {
            stop,
            acknowledged,
            task,
        }
    }

    /// Orders acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until `more` orders beyond `since` were acknowledged.
    pub async fn wait_for(&self, since: u64, more: u64, timeout: Duration) {
        let ok =
            courier_tests::wait_until(timeout, || async { self.acknowledged() >= since + more })
                .await;
        assert!(
            ok,
            "the producer got only {} acknowledgements within {timeout:?}",
            self.acknowledged() - since
        );
    }

    pub async fn stop(self) -> ProducerLog {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("producer task")
    }
}

/// `GET /metrics`, as text.
pub async fn metrics(client: &Client) -> String {
    client.metrics_text().await
}

/// The value of the sample `name{labels..}` in Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with('{'))
        .find(|line| {
            labels
                .iter()
                .all(|(label, value)| line.contains(&format!("{label}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
