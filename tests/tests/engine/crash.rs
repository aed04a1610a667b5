//! Crashes: the real `courier serve` binary, killed with SIGKILL at random
//! moments while a producer publishes orders and the order plugins consume
//! them, then started again. Whatever the engine acknowledged survives, and
//! every stored order has its effects exactly once.

use std::time::Duration;

use courier_tests::CourierProcess;

use crate::common::{self, ORDER_PLUGINS, OrderGen, Producer};

/// SIGKILLs per run.
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_survives_repeated_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    common::install_order_plugins(&plugins);
    common::install_archive(&plugins, "orders");
    let mut engine = CourierProcess::spawn(
        &dir.path().join("data"),
        &plugins,
        &[],
        &dir.path().join("courier.log"),
    );
    engine.wait_ready(Duration::from_secs(30)).await;

    // COURIER_CRASH_SEED=<seed> repeats a run's order data and kill times.
    let seed = std::env::var("COURIER_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (COURIER_CRASH_SEED)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let producer = Producer::spawn(engine.client.clone(), OrderGen::new(seed), 20);
    for _ in 0..KILLS {
        // Some acknowledged publishes (and so some consumption) in every
        // life of the process, then a kill at a random moment.
        producer
            .wait_for(producer.acknowledged(), 200, Duration::from_secs(30))
            .await;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..400))).await;
        engine.kill();
        engine.restart(Duration::from_secs(30)).await;
    }
    producer
        .wait_for(producer.acknowledged(), 200, Duration::from_secs(30))
        .await;
    let log = producer.stop().await;
    assert!(engine.is_running(), "courier died:\n{}", engine.log());

    let client = &engine.client;
    common::wait_orders_drained(client, &ORDER_PLUGINS, Duration::from_secs(60)).await;
    let stored = common::stored_orders(client).await;
    common::assert_acknowledged_stored(&log.acknowledged, &stored);
    assert!(
        stored.len() <= log.acknowledged.len() + log.unacknowledged.len(),
        "more orders stored than sent"
    );
    eprintln!(
        "crash test: {} acknowledged, {} unacknowledged, {} stored",
        log.acknowledged.len(),
        log.unacknowledged.len(),
        stored.len()
    );
    common::check_order_plugins(client, &common::expected(&stored)).await;
    for plugin in ORDER_PLUGINS {
        assert!(
            client.dead_letters(plugin).await.is_empty(),
            "{plugin} dead-lettered a valid order"
        );
    }
}
