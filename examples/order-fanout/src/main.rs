//! The order fan-out demo (`make demo`): one stream of orders, four
//! independent consumers.
//!
//! It starts a Courier engine in this process on a temporary directory,
//! installs the notification, recommendation and membership plugins (built
//! by `make plugins`), publishes 10,000 generated orders over HTTP, waits
//! until all three have handled every one, and checks what each did
//! against the figures computed from the orders themselves
//! (`courier_workload::Expected`), reading the plugins' state over the
//! HTTP API. It then hot-adds the analytics plugin while publishing 5,000
//! more orders; analytics starts from the earliest stored order, so it
//! catches up on all 15,000. Finally it stops the engine gracefully. It
//! exits non-zero, saying which check failed, if anything does not add up.
//!
//! Courier drops an order once every subscription has handled it; retention
//! runs every 5 s by default, which would remove some of the first 10,000
//! orders before analytics arrives, depending on timing. The demo's engine
//! runs retention hourly instead ([`RETENTION_PASS`]), so what analytics
//! sees, and therefore every figure checked, is the same on every run.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use courier_client::Client;
use courier_engine::config::Config;
use courier_workload::{Expected, Generator, Order, Shape};
use order_fanout::*;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\ndemo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let repo = repo_root();
    let dir = tempfile::Builder::new().prefix("courier-demo-").tempdir()?;
    let mut config = Config::local(dir.path());
    config.store.maintenance_interval = RETENTION_PASS;
    std::fs::create_dir_all(&config.plugins_dir)?;
    for name in FIRST_PLUGINS {
        install(&repo, name, &config.plugins_dir)?;
    }
    let plugins_dir = config.plugins_dir.clone();
    let engine = courier_engine::start(config)
        .await
        .context("starting the engine")?;
    let api = Api {
        client: Arc::new(Client::new(&format!("http://{}", engine.addr()), None)?),
    };
    println!("Courier order fan-out demo");
    println!(
        "engine on http://{}, data in {}",
        engine.addr(),
        dir.path().display()
    );
    let result = scenario(&api, &repo, &plugins_dir).await;
    println!("stopping the engine gracefully");
    engine.shutdown().await;
    result?;
    println!("all checks passed");
    Ok(())
}

async fn scenario(api: &Api, repo: &Path, plugins_dir: &Path) -> anyhow::Result<()> {
    api.wait_subscribed(&FIRST_PLUGINS).await?;
    println!("plugins running: {}", FIRST_PLUGINS.join(", "));
    let mut generator = Generator::new(Shape {
        seed: SEED,
        users: USERS,
        merchants: MERCHANTS,
        ..Shape::default()
    });
    let first = generator.orders(FIRST_ORDERS);
    let mut expected = Expected::from_orders(&first);
    let started = Instant::now();
    api.publish(&first).await?;
    let published = started.elapsed().as_secs_f64();
    api.wait_drained(&FIRST_PLUGINS).await?;
    println!(
        "published {FIRST_ORDERS} orders ({USERS} users, {MERCHANTS} merchants) in {published:.2}s; \
         all three plugins done after {:.2}s\n",
        started.elapsed().as_secs_f64()
    );
    check_notification(api, &expected).await?;
    check_recommendation(api, &expected).await?;
    check_membership(api, &expected, &levels(repo)?).await?;

    println!(
        "\nhot-adding {HOT_PLUGIN} while publishing {MORE_ORDERS} more orders \
         (it starts at the oldest stored order; this engine runs retention hourly)"
    );
    let more = generator.orders(MORE_ORDERS);
    for order in &more {
        anyhow::ensure!(
            expected.add(order),
            "order {} generated twice",
            order.order_id
        );
    }
    let publisher = tokio::spawn(publish_slowly(api.clone(), more));
    let started = Instant::now();
    install(repo, HOT_PLUGIN, plugins_dir)?;
    let mut all = FIRST_PLUGINS.to_vec();
    all.push(HOT_PLUGIN);
    api.wait_subscribed(&all).await?;
    println!(
        "{HOT_PLUGIN} running {:.2}s after it was copied in",
        started.elapsed().as_secs_f64()
    );
    publisher.await.context("the publisher panicked")??;
    api.wait_drained(&all).await?;
    println!(
        "all four plugins done with all {} orders {:.2}s after it was copied in\n",
        expected.orders,
        started.elapsed().as_secs_f64()
    );
    check_analytics(api, &expected).await?;
    check_membership_totals(api, &expected).await?;
    check_no_dead_letters(api).await
}

/// Publishes in batches a little apart, so orders flow while the new
/// plugin is being loaded.
async fn publish_slowly(api: Api, orders: Vec<Order>) -> anyhow::Result<()> {
    for batch in orders.chunks(BATCH) {
        api.publish(batch).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
