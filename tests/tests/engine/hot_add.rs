//! Hot add: a fourth order plugin dropped into the plugins directory while
//! orders flow starts from the earliest order and ends up exact, and the
//! running plugins do not notice.

use std::time::Duration;

use courier_tests::{TestEngine, example_manifest, install_plugin, wait_until};

use crate::common::{self, Figures, OrderGen, Producer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_added_while_orders_flow_starts_from_the_earliest_order() {
    let engine = TestEngine::start(|dir, _| {
        common::install_order_plugins(dir);
        // Keeps every order readable: retention would otherwise drop what
        // all three plugins consumed before analytics subscribed.
        common::install_archive(dir, "orders");
    })
    .await;
    let client = &engine.client;
    let producer = Producer::spawn(client.clone(), OrderGen::new(31), 20);
    producer.wait_for(0, 1000, Duration::from_secs(30)).await;
    // The three consumed the first orders before analytics exists.
    let consumed = wait_until(Duration::from_secs(30), || async {
        client.committed("membership", "orders").await >= 1000
    })
    .await;
    assert!(consumed, "membership did not get going");

    install_plugin(
        &engine.plugins_dir(),
        "analytics",
        "analytics",
        Some(&example_manifest("analytics")),
    );
    let running = wait_until(Duration::from_secs(20), || async {
        client.state_i64("analytics", "stats/orders").await > 0
    })
    .await;
    assert!(running, "analytics never handled an order");
    producer
        .wait_for(producer.acknowledged(), 1000, Duration::from_secs(30))
        .await;
    let log = producer.stop().await;
    assert!(
        log.unacknowledged.is_empty(),
        "{} publishes failed",
        log.unacknowledged.len()
    );

    let all = ["notification", "recommendation", "membership", "analytics"];
    common::wait_orders_drained(client, &all, Duration::from_secs(60)).await;
    assert_eq!(
        common::stored_orders(client).await.len(),
        log.acknowledged.len()
    );
    let expected = common::expected(&log.acknowledged);
    common::check_figures(client, &expected, Figures::WithAnalytics).await;
    let sub = client
        .subscription("analytics", "orders")
        .await
        .expect("analytics subscribed");
    assert_eq!(sub["mode"], "unordered", "{sub}");
    for plugin in all {
        assert!(
            client.dead_letters(plugin).await.is_empty(),
            "{plugin} dead-lettered a valid order"
        );
    }
    engine.shutdown().await;
}
