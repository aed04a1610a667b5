//! Engines of a cluster killed with SIGKILL under load: their partitions
//! move to the survivors, every publish the producer saw confirmed is
//! stored, and every stored order has its effects exactly once.

use std::path::Path;
use std::time::{Duration, Instant};

use courier_tests::CourierProcess;
use courier_tests::nats::NatsCluster;

use crate::common::{self, ORDER_PLUGINS, OrderGen, Producer};

/// SIGKILLs per run (each of a random engine but the producer's).
const KILLS: usize = 3;

/// A `courier serve` of the cluster at `servers`, named `engine-<index>`.
fn engine(dir: &Path, servers: &[String], index: usize) -> CourierProcess {
    let home = dir.join(format!("engine-{index}"));
    let plugins = home.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    common::install_order_plugins(&plugins);
    let config = home.join("courier.toml");
    let servers: Vec<String> = servers.iter().map(|url| format!("{url:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"jetstream\"\n\n[jetstream]\nservers = [{}]\nengine = \"engine-{index}\"\nfailover = \"2s\"\n",
            servers.join(", ")
        ),
    )
    .expect("writing a config");
    let config = config.to_string_lossy().into_owned();
    CourierProcess::spawn(
        &home.join("data"),
        &plugins,
        &["--config", &config],
        &home.join("courier.log"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_engines_lose_nothing_and_double_nothing() {
    let nats = NatsCluster::start(3).await;
    let servers = nats.urls();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engines = Vec::new();
    for index in 0..3 {
        let mut started = engine(dir.path(), &servers, index);
        started.wait_ready(Duration::from_secs(60)).await;
        engines.push(started);
    }
    let seed = std::env::var("COURIER_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("cluster failover seed: {seed} (COURIER_CRASH_SEED)");
    let mut rng = fastrand::Rng::with_seed(seed);

    // The producer talks to engine 0, which is never killed.
    let producer = Producer::spawn(engines[0].client.clone(), OrderGen::new(seed), 20);
    for _ in 0..KILLS {
        producer
            .wait_for(producer.acknowledged(), 200, Duration::from_secs(60))
            .await;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..1500))).await;
        let victim = rng.usize(1..3);
        engines[victim].kill();
        let killed = Instant::now();
        // Publishes keep being confirmed while its partitions move.
        producer
            .wait_for(producer.acknowledged(), 100, Duration::from_secs(30))
            .await;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..3000))).await;
        engines[victim].restart(Duration::from_secs(60)).await;
        eprintln!(
            "engine-{victim} killed and back after {:?}",
            killed.elapsed()
        );
    }
    producer
        .wait_for(producer.acknowledged(), 200, Duration::from_secs(60))
        .await;
    let log = producer.stop().await;

    let client = &engines[0].client;
    common::wait_orders_drained(client, &ORDER_PLUGINS, Duration::from_secs(120)).await;
    let stored = common::stored_orders(client).await;
    common::assert_acknowledged_stored(&log.acknowledged, &stored);
    eprintln!(
        "cluster failover: {} acknowledged, {} unacknowledged, {} stored",
        log.acknowledged.len(),
        log.unacknowledged.len(),
        stored.len()
    );
    common::check_order_plugins(&engines[2].client, &common::expected(&stored)).await;
    for plugin in ORDER_PLUGINS {
        assert!(
            client.dead_letters(plugin).await.is_empty(),
            "{plugin} dead-lettered a valid order"
        );
    }
    for engine in &mut engines {
        assert!(engine.is_running(), "an engine died:\n{}", engine.log());
    }
}
