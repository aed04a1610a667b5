//! The order fan-out on three engines sharing one cluster: every order
//! reaches every plugin exactly once in effect, whichever engine ran it,
//! and the work is spread over the engines.

use std::time::Duration;

use courier_engine::config::Config;
use courier_store_jetstream::JetStreamConfig;
use courier_tests::TestEngine;
use courier_tests::nats::NatsCluster;

use crate::common::{self, ORDER_PLUGINS, OrderGen};

const ORDERS: usize = 1500;

/// An engine of the cluster at `servers`, named `engine-<index>`, with a
/// short failover so the tests do not wait long.
pub fn join(config: &mut Config, servers: &[String], index: usize) {
    let mut cluster = JetStreamConfig::new(servers.to_vec());
    cluster.engine = format!("engine-{index}");
    cluster.failover = Duration::from_secs(2);
    cluster.default_topic = config.store.default_topic;
    config.jetstream = Some(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_engines_share_the_order_fanout_and_apply_every_effect_once() {
    courier_tests::log_if_asked();
    let nats = NatsCluster::start(3).await;
    let servers = nats.urls();
    let mut engines = Vec::new();
    for index in 0..3 {
        let servers = servers.clone();
        engines.push(
            TestEngine::start(move |dir, config| {
                common::install_order_plugins(dir);
                join(config, &servers, index);
            })
            .await,
        );
    }
    // Every engine sees the others before the orders come, so partitions
    // are spread from the start (a later join would move them).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let orders = OrderGen::new(11).orders(ORDERS);
    for (index, chunk) in orders.chunks(ORDERS / 3).enumerate() {
        common::publish_orders(&engines[index % 3].client, chunk, 100).await;
    }
    common::wait_orders_drained(&engines[0].client, &ORDER_PLUGINS, Duration::from_secs(120)).await;

    // State and topics read through another engine than the one that ran
    // most of the work: every figure exact.
    let expected = common::expected(&orders);
    common::check_order_plugins(&engines[1].client, &expected).await;

    // Every engine names the same owner for every partition, and the
    // partitions spread over all three.
    let mut owners = std::collections::BTreeSet::new();
    for plugin in ORDER_PLUGINS {
        let views: Vec<Vec<String>> =
            futures_util::future::join_all(engines.iter().map(|engine| async {
                let sub = engine
                    .client
                    .subscription(plugin, "orders")
                    .await
                    .expect("subscribed");
                sub["partitions"]
                    .as_array()
                    .expect("partitions")
                    .iter()
                    .map(|p| p["owner"].as_str().expect("an owner").to_owned())
                    .collect()
            }))
            .await;
        assert!(
            views.windows(2).all(|pair| pair[0] == pair[1]),
            "{plugin}: {views:?}"
        );
        let mut shares = std::collections::BTreeMap::new();
        for owner in &views[0] {
            *shares.entry(owner.clone()).or_insert(0) += 1;
        }
        assert!(
            shares.len() == 3 && shares.values().all(|&share| share == 2 || share == 3),
            "{plugin}: 8 partitions split {shares:?}"
        );
        owners.extend(views[0].iter().cloned());
    }
    assert_eq!(owners.len(), 3, "partitions owned by {owners:?}");
    let status = courier_tests::run_cli(&[
        "status",
        "--server",
        &format!(
            "http://{}",
            engines[2].engine.as_ref().expect("running").addr()
        ),
    ])
    .await;
    assert!(status.contains("Partitions by engine"), "{status}");

    // Each engine acknowledged a share of every plugin's orders.
    let mut total = [0.0; 3];
    for (index, engine) in engines.iter().enumerate() {
        let metrics = common::metrics(&engine.client).await;
        for plugin in ORDER_PLUGINS {
            let acked = common::metric(
                &metrics,
                "courier_plugin_acked_total",
                &[("plugin", plugin), ("topic", "orders")],
            )
            .unwrap_or(0.0);
            assert!(acked > 0.0, "engine-{index} ran no {plugin} batch");
            total[ORDER_PLUGINS.iter().position(|p| *p == plugin).unwrap_or(0)] += acked;
        }
    }
    for (plugin, acked) in ORDER_PLUGINS.iter().zip(total) {
        assert!(
            acked >= ORDERS as f64,
            "{plugin}: the engines acknowledged {acked} of {ORDERS} orders"
        );
    }
    // A seek to the earliest order replays the topic for one plugin on
    // every engine: its effects apply again (a new epoch), exactly once
    // more.
    let (status, answer) = engines[2]
        .client
        .post(
            "/v1/subscriptions/recommendation/orders/seek",
            &serde_json::json!({"position": "earliest"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    engines[0]
        .client
        .wait_drained("recommendation", "orders", Duration::from_secs(120))
        .await;
    let profiles = engines[0]
        .client
        .state_entries("recommendation", "profile/")
        .await;
    for (key, profile) in &profiles {
        let user = &key["profile/".len()..];
        let once = expected.orders_by_user.get(user).copied().unwrap_or(0);
        assert_eq!(
            profile["orders"].as_u64(),
            Some(2 * once),
            "{key} after replaying every order once more"
        );
    }
    assert_eq!(profiles.len(), expected.orders_by_user.len());
    for engine in engines {
        engine.shutdown().await;
    }
}
