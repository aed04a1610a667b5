//! The order fan-out: thousands of orders published over HTTP reach every
//! order plugin exactly once in effect, and the operator's views (the
//! subscriptions endpoint, metrics, `courier status`) agree.

use std::collections::BTreeMap;
use std::time::Duration;

use courier_tests::{Client, TestEngine, run_cli};
use serde_json::Value;

use crate::common::{self, ORDER_PLUGINS, OrderGen};

/// Orders in the fan-out scenario.
const ORDERS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plugin_handles_every_order_exactly_once() {
    let engine = TestEngine::start(|dir, _| common::install_order_plugins(dir)).await;
    let client = &engine.client;
    let orders = OrderGen::new(7).orders(ORDERS);
    common::publish_orders(client, &orders, 500).await;
    common::wait_orders_drained(client, &ORDER_PLUGINS, Duration::from_secs(90)).await;

    let expected = common::expected(&orders);
    common::check_order_plugins(client, &expected).await;
    check_recommendation_updates(client, &orders).await;

    let (_, subscriptions) = client.get("/v1/subscriptions").await;
    for plugin in ORDER_PLUGINS {
        let sub = client
            .subscription(plugin, "orders")
            .await
            .expect("subscribed");
        assert_eq!(sub["lag"], 0, "{plugin}: {sub}");
        assert_eq!(sub["dead_letters"], 0, "{plugin}: {sub}");
        assert_eq!(sub["mode"], "ordered", "{plugin}: {sub}");
        assert_eq!(
            client.committed(plugin, "orders").await,
            ORDERS as u64,
            "{plugin} committed every order: {subscriptions}"
        );
    }

    let metrics = common::metrics(client).await;
    let published = common::metric(&metrics, "courier_published_total", &[("topic", "orders")]);
    assert_eq!(published, Some(ORDERS as f64), "published metric");
    for plugin in ORDER_PLUGINS {
        let labels = [("plugin", plugin), ("topic", "orders")];
        assert_eq!(
            common::metric(&metrics, "courier_plugin_acked_total", &labels),
            Some(ORDERS as f64),
            "{plugin} acked"
        );
        let dead =
            common::metric(&metrics, "courier_plugin_dead_lettered_total", &labels).unwrap_or(0.0);
        assert_eq!(dead, 0.0, "{plugin} dead-lettered");
        // The CPU its batches took: some, and less than the whole run's
        // wall time on the two dispatch threads could hold.
        let cpu = common::metric(
            &metrics,
            "courier_handler_cpu_seconds_total",
            &[("plugin", plugin)],
        )
        .unwrap_or_else(|| panic!("{plugin}: no handler CPU counter"));
        assert!(cpu > 0.0 && cpu < 2.0 * 90.0, "{plugin}: {cpu} CPU seconds");
    }
    // Storage gauges, unlabelled: the memtables of a live store hold
    // something, and its journal has at least one file.
    let gauge = |name: &str| -> f64 {
        let prefix = format!("{name} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(gauge("courier_storage_write_buffer_bytes") > 0.0);
    assert!(gauge("courier_storage_journal_files") >= 1.0);
    assert!(gauge("courier_storage_flushes_queued") >= 0.0);
    // The plugins' state since the last checkpoint is held in memory; the
    // checkpoint counter exists (this short run may not have needed one).
    assert!(gauge("courier_storage_state_dirty_bytes") > 0.0);
    assert!(gauge("courier_storage_state_checkpoints_total") >= 0.0);
    // The writer's latency histograms: every group commit is counted.
    let commits = gauge("courier_storage_commit_seconds_count");
    assert!(commits > 0.0, "no commits counted");
    assert_eq!(
        gauge("courier_storage_commit_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    assert!(gauge("courier_storage_fsync_seconds_count") > 0.0);
    // The process and the build, read at scrape time.
    assert!(gauge("courier_process_resident_memory_bytes") > 10e6);
    assert!(gauge("courier_process_open_fds") > 3.0);
    assert!(gauge("courier_process_threads") >= 4.0);
    assert!(gauge("courier_process_cpu_seconds_total") > 0.0);
    assert_eq!(
        common::metric(&metrics, "courier_build_info", &[("version", "0.1.0")]),
        Some(1.0)
    );
    let content_type = client
        .http()
        .get(client.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "the body is OpenMetrics text"
    );

    cli_status_shows_no_lag(&client.base).await;
    cli_reads_plugins_and_their_state(&client.base, &expected).await;
    engine.shutdown().await;
}

/// `courier plugins` and `courier state` against the drained engine: the
/// plugins listed, one in full, and membership's points read key by key
/// and listed page by page (pages of 7 through a few hundred keys) agree
/// with the orders.
async fn cli_reads_plugins_and_their_state(base: &str, expected: &courier_workload::Expected) {
    let list = run_cli(&["plugins", "list", "--server", base]).await;
    for plugin in ORDER_PLUGINS {
        assert!(
            list.lines()
                .any(|line| line.starts_with(plugin) && line.contains("running")),
            "{list}"
        );
    }
    let info = run_cli(&["plugins", "info", "membership", "--server", base]).await;
    assert!(info.contains("status:        running"), "{info}");
    assert!(info.contains("subscriptions: orders"), "{info}");
    let unknown = tokio::process::Command::new(courier_tests::courier_binary())
        .args(["plugins", "info", "nope", "--server", base])
        .output()
        .await
        .expect("courier runs");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown plugin \"nope\""));

    let (user, points) = expected.points_by_user.iter().next().expect("some member");
    let key = format!("points/{user}");
    let got = run_cli(&["state", "get", "membership", &key, "--server", base]).await;
    assert_eq!(got.trim(), points.to_string(), "{key}");

    let mut listed: BTreeMap<String, i64> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec![
            "state",
            "list",
            "membership",
            "--prefix",
            "points/",
            "--limit",
            "7",
        ];
        if let Some(after) = &after {
            args.extend(["--start-after", after.as_str()]);
        }
        args.extend(["--server", base]);
        let page = run_cli(&args).await;
        let lines: Vec<&str> = page.lines().collect();
        assert!(lines.len() <= 7, "{page}");
        for line in &lines {
            let (key, value) = line.split_once(" = ").expect("key = value");
            let user = key.strip_prefix("points/").expect("a points key");
            let fresh = listed
                .insert(user.to_owned(), value.parse().expect("a counter"))
                .is_none();
            assert!(fresh, "{key} listed twice");
        }
        match lines.last() {
            Some(last) if lines.len() == 7 => {
                after = last.split_once(" = ").map(|(key, _)| key.to_owned());
            }
            _ => break,
        }
    }
    assert_eq!(listed, expected.points_by_user, "points, page by page");
}

/// `courier status` against the drained engine: exit 0, zero lag for the
/// three plugins, in JSON and in the tables.
async fn cli_status_shows_no_lag(base: &str) {
    let stdout = run_cli(&["status", "--json", "--interval", "0", "--server", base]).await;
    let status: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {stdout}"));
    for plugin in ORDER_PLUGINS {
        let sub = status["subscriptions"]
            .as_array()
            .expect("subscriptions")
            .iter()
            .find(|s| s["plugin"] == plugin && s["topic"] == "orders")
            .unwrap_or_else(|| panic!("{plugin} missing from {status}"));
        assert_eq!(sub["lag"], 0, "{plugin} in courier status: {sub}");
        let listed = status["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .any(|p| p["name"] == plugin && p["status"] == "running");
        assert!(listed, "{plugin} not running in {status}");
    }
    // Each plugin's CPU time (its batches ran 3000 orders), and over an
    // interval the share of a core it used: none, now that it is idle.
    let timed = run_cli(&["status", "--json", "--interval", "0.3", "--server", base]).await;
    let timed: Value = serde_json::from_str(&timed).expect("status --json");
    for plugin in ORDER_PLUGINS {
        let entry = timed["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .find(|p| p["name"] == plugin)
            .unwrap_or_else(|| panic!("{plugin} missing from {timed}"));
        let cpu = entry["cpu_seconds"].as_f64().unwrap_or(0.0);
        assert!(cpu > 0.0, "{plugin}: {entry}");
        let cores = &timed["rates"][format!("plugin-cpu/{plugin}")];
        assert_eq!(
            cores.as_f64(),
            Some(0.0),
            "{plugin} idle: {}",
            timed["rates"]
        );
    }

    let tables = run_cli(&["status", "--interval", "0", "--server", base]).await;
    for plugin in ORDER_PLUGINS {
        // Its subscription row (mode `ordered`) and its plugin row, which
        // has no CPU share without an interval to measure it.
        let lag = table_cell(&tables, plugin, "ordered", 3);
        assert_eq!(lag, "0", "lag column of {plugin}:\n{tables}");
        let cpu = table_cell(&tables, plugin, "running", 4);
        assert_eq!(cpu, "-", "CPU column of {plugin}:\n{tables}");
    }
}

/// Cell `index` (counting non-empty cells) of the `courier status` table
/// row that names `plugin` and `marker`.
fn table_cell<'a>(tables: &'a str, plugin: &str, marker: &str, index: usize) -> &'a str {
    let row = tables
        .lines()
        .find(|line| line.contains(plugin) && line.contains(marker))
        .unwrap_or_else(|| panic!("no row with {plugin} and {marker}:\n{tables}"));
    row.split(['│', '┆'])
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .nth(index)
        .unwrap_or_else(|| panic!("no cell {index} in {row}"))
}

/// Topic `recommendations` holds one update per change of a user's top
/// categories, in order: computed here from the orders themselves (units
/// per category, most first, ties by name, at most three).
async fn check_recommendation_updates(client: &Client, orders: &[Value]) {
    let mut units: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut expected: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for order in orders {
        let user = order["user_id"].as_str().expect("user_id").to_owned();
        let categories = units.entry(user.clone()).or_default();
        for item in order["items"].as_array().expect("items") {
            let category = item["category"].as_str().expect("category");
            *categories.entry(category.to_owned()).or_default() +=
                item["quantity"].as_u64().expect("quantity");
        }
        let mut ranked: Vec<(&String, &u64)> = categories.iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = ranked.into_iter().take(3).map(|(c, _)| c.clone()).collect();
        let updates = expected.entry(user).or_default();
        if updates.last() != Some(&top) {
            updates.push(top);
        }
    }
    let mut published: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for message in client.read_topic("recommendations").await {
        let update = &message["payload"];
        assert_eq!(message["key"], update["user_id"], "key of {message}");
        let top = update["top_categories"]
            .as_array()
            .expect("top_categories")
            .iter()
            .map(|c| c.as_str().expect("category").to_owned())
            .collect();
        let user = update["user_id"].as_str().expect("user_id").to_owned();
        published.entry(user).or_default().push(top);
    }
    let changes: usize = expected.values().map(Vec::len).sum();
    assert!(
        changes < orders.len(),
        "the scenario has orders that leave the ranking as it was"
    );
    assert_eq!(
        published, expected,
        "one update per change of a user's top categories, in order"
    );
}
