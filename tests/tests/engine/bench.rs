//! `courier bench`, the real binary on an engine of its own: a small run
//! reports every measure (the store's waits and the plugins' CPU time from
//! `/metrics` included), and the orders it published were all handled.

use courier_tests::{component, plugin_build_dir, repo_root, run_cli};
use serde_json::Value;

#[tokio::test]
async fn a_small_bench_run_reports_every_measure_and_loses_no_order() {
    component("membership"); // builds the plugins workspace if needed
    let plugins = plugin_build_dir();
    let manifests = repo_root().join("plugins");
    let output = run_cli(&[
        "bench",
        "--json",
        "--orders",
        "2000",
        "--rate",
        "500",
        "--latency-secs",
        "1",
        "--plugins-from",
        plugins.to_str().expect("utf-8 path"),
        "--manifests-from",
        manifests.to_str().expect("utf-8 path"),
    ])
    .await;
    let report: Value = serde_json::from_str(&output).expect("one JSON object");
    let number = |value: &Value, what: &str| {
        value
            .as_f64()
            .unwrap_or_else(|| panic!("{what} is not a number: {report}"))
    };

    assert_eq!(report["throughput"]["orders"], 2000, "{report}");
    assert!(number(&report["throughput"]["drain_orders_per_sec"], "drain rate") > 0.0);
    assert!(
        number(
            &report["throughput"]["publish_orders_per_sec"],
            "publish rate"
        ) > 0.0
    );
    // Every published order, the latency phase's included, got one notice
    // from notification, and none was dead-lettered.
    let published = number(&report["orders_published"], "orders published");
    assert_eq!(published, 2500.0, "{report}");
    assert_eq!(report["notices_published"], report["orders_published"]);
    assert_eq!(report["dead_letters"], 0, "{report}");

    let latency = &report["latency"];
    let (p50, p99) = (
        number(&latency["p50_ms"], "p50"),
        number(&latency["p99_ms"], "p99"),
    );
    assert!(0.0 < p50 && p50 <= p99, "{latency}");
    // The store's waits over the latency phase, read back from /metrics:
    // its 500 orders were fsynced before they were answered.
    let store = &report["store_in_latency_phase"];
    for kind in ["fsync", "commit"] {
        let waits = &store[kind];
        let count = waits["count"].as_u64().unwrap_or(0);
        assert!(count > 0, "no {kind} in the latency phase: {store}");
        assert!(number(&waits["mean_ms"], "mean wait") > 0.0, "{store}");
        let over = |key: &str| waits[key].as_u64().unwrap_or(u64::MAX);
        assert!(
            over("over_100ms") <= over("over_10ms")
                && over("over_10ms") <= over("over_1ms")
                && over("over_1ms") <= count,
            "{store}"
        );
        assert!(
            waits["slowest_at_most_ms"].is_number() || waits["slowest_over_ms"].is_number(),
            "{store}"
        );
    }
    assert!(store["write_stall"]["count"].is_u64(), "{store}");
    // The engine's process: memory and CPU come from its /proc files.
    assert!(number(&report["peak_rss_mb"], "peak RSS") > 10.0);
    let cpu = &report["engine_cpu"];
    let engine_per_order = number(&cpu["us_per_order_drained"], "CPU per order");
    assert!(engine_per_order > 0.0);
    // The plugins' batches ran on the engine's dispatch threads: each took
    // some of its CPU, and all of them together no more than the engine
    // used (both read as CPU time, the engine's in clock ticks).
    let plugins = &report["plugins_in_drain"];
    let each = plugins["plugins_cpu_us_per_order"]
        .as_object()
        .unwrap_or_else(|| panic!("no per-plugin CPU: {plugins}"));
    let mut names: Vec<&str> = each.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["membership", "notification", "recommendation"]);
    let sum: f64 = each.values().map(|us| number(us, "plugin CPU")).sum();
    assert!(each.values().all(|us| us.as_f64() > Some(0.0)), "{plugins}");
    let total = number(&plugins["cpu_us_per_order"], "plugins' CPU per order");
    assert!((total - sum).abs() < 1e-6, "{plugins}");
    assert!(total < engine_per_order * 1.1, "{plugins} vs {cpu}");
    assert!(
        number(
            &cpu["latency_phase_core_percent"],
            "CPU in the latency phase"
        ) > 0.0
    );
}
