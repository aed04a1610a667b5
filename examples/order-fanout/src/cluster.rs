//! The cluster demo (`make demo-cluster`): the order fan-out on three
//! Courier engines sharing a three-node NATS JetStream cluster, with an
//! engine and a NATS server killed (SIGKILL) while orders flow.
//!
//! It starts three `nats-server` processes (`sync_interval: always`) and
//! three `courier serve` processes on loopback, in a temporary directory,
//! installs the three order plugins into every engine, publishes 10,000
//! orders through engine 0, kills engine 2 and NATS server n1 mid-run,
//! shows the partitions moving, restarts both, waits until every plugin is
//! done and checks every figure through engine 1 against the ones computed
//! from the orders. Everything it started is killed by PID when it ends,
//! whatever happens. It exits non-zero, saying which check failed, if
//! anything does not add up.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_client::Client;
use courier_workload::{Expected, Generator, Shape};
use order_fanout::*;

const NATS_VERSION: &str = "2.15.1";
const ORDERS: usize = 10_000;
/// Orders per request, and the pause between requests, so orders are
/// still flowing when the kills come.
const REQUEST: usize = 250;
const PAUSE: Duration = Duration::from_millis(150);
const FAILOVER: &str = "2s";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\ncluster demo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A child process, killed by PID when dropped.
struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn new(name: &str, program: &Path, args: Vec<String>, log: PathBuf) -> Process {
        Process {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            log,
            child: None,
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| !matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Starts an engine and waits until it answers; an engine that exits
/// (JetStream not ready yet) is started again, for up to a minute.
async fn start_engine(engine: &mut Process, client: &Client) -> anyhow::Result<()> {
    let started = Instant::now();
    engine.start()?;
    loop {
        if client.get("/healthz").await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "{} did not start; see {}",
                engine.name,
                engine.log.display()
            );
        }
        if engine.exited() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            engine.start()?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Partitions of the subscriptions of `orders` per engine, as one engine
/// reports them.
async fn owners(api: &Api) -> anyhow::Result<BTreeMap<String, usize>> {
    let answer = api.client.get("/v1/subscriptions").await?;
    let mut owners = BTreeMap::new();
    for sub in list(&answer, "subscriptions") {
        for partition in list(sub, "partitions") {
            if let Some(owner) = partition["owner"].as_str() {
                *owners.entry(owner.to_owned()).or_default() += 1;
            }
        }
    }
    Ok(owners)
}

async fn run() -> anyhow::Result<()> {
    let repo = repo_root();
    let nats_bin = repo.join(format!("target/tools/nats-{NATS_VERSION}/bin/nats-server"));
    let courier_bin = repo.join("target/release/courier");
    for binary in [&nats_bin, &courier_bin] {
        if !binary.is_file() {
            bail!(
                "{} is missing: run `make demo-cluster` (it builds the engine and installs nats-server)",
                binary.display()
            );
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("courier-cluster-demo-")
        .tempdir()?;
    let ports = free_ports(9)?;
    let (client_ports, rest) = ports.split_at(3);
    let (route_ports, http_ports) = rest.split_at(3);
    let routes: Vec<String> = route_ports
        .iter()
        .map(|port| format!("nats-route://127.0.0.1:{port}"))
        .collect();
    let urls: Vec<String> = client_ports
        .iter()
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect();

    println!(
        "Courier cluster demo: 3 NATS servers, 3 engines, in {}",
        dir.path().display()
    );
    let mut nats = Vec::new();
    for index in 0..3 {
        let config = dir.path().join(format!("n{index}.conf"));
        std::fs::write(
            &config,
            format!(
                "server_name: n{index}\nlisten: 127.0.0.1:{}\nmax_payload: 8MB\n\
                 jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
                 cluster {{ name: demo, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                client_ports[index],
                dir.path().join(format!("n{index}")).display(),
                route_ports[index],
                routes.join(", ")
            ),
        )?;
        let mut server = Process::new(
            &format!("nats n{index}"),
            &nats_bin,
            vec!["-c".into(), config.to_string_lossy().into_owned()],
            dir.path().join(format!("n{index}.log")),
        );
        server.start()?;
        nats.push(server);
    }

    let mut engines = Vec::new();
    let mut apis = Vec::new();
    for (index, http_port) in http_ports.iter().enumerate() {
        let home = dir.path().join(format!("engine-{index}"));
        let plugins = home.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        for name in FIRST_PLUGINS {
            install(&repo, name, &plugins)?;
        }
        // Engine 0 takes the orders; it talks to n0, which stays up.
        let servers: Vec<String> = match index {
            0 => vec![format!("{:?}", urls[0])],
            _ => urls.iter().map(|url| format!("{url:?}")).collect(),
        };
        let config = home.join("courier.toml");
        std::fs::write(
            &config,
            format!(
                "[storage]\nbackend = \"jetstream\"\n\n[jetstream]\nservers = [{}]\nengine = \"engine-{index}\"\nfailover = \"{FAILOVER}\"\n",
                servers.join(", ")
            ),
        )?;
        let mut engine = Process::new(
            &format!("engine-{index}"),
            &courier_bin,
            vec![
                "serve".into(),
                "--listen".into(),
                format!("127.0.0.1:{http_port}"),
                "--data-dir".into(),
                home.join("data").to_string_lossy().into_owned(),
                "--plugins-dir".into(),
                plugins.to_string_lossy().into_owned(),
                "--config".into(),
                config.to_string_lossy().into_owned(),
            ],
            home.join("courier.log"),
        );
        let client = Client::new(&format!("http://127.0.0.1:{http_port}"), None)?;
        start_engine(&mut engine, &client).await?;
        println!("engine-{index} on http://127.0.0.1:{http_port}");
        engines.push(engine);
        apis.push(Api {
            client: Arc::new(client),
        });
    }
    apis[0].wait_subscribed(&FIRST_PLUGINS).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("partitions by engine: {:?}", owners(&apis[0]).await?);

    let mut generator = Generator::new(Shape {
        seed: SEED,
        users: USERS,
        merchants: MERCHANTS,
        ..Shape::default()
    });
    let orders = generator.orders(ORDERS);
    let expected = Expected::from_orders(&orders);
    let started = Instant::now();
    let publisher = {
        let api = apis[0].clone();
        tokio::spawn(async move {
            for request in orders.chunks(REQUEST) {
                api.publish(request).await?;
                tokio::time::sleep(PAUSE).await;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    engines[2].kill();
    println!(
        "{:>5.1}s  engine-2 killed (SIGKILL)",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats[1].kill();
    println!(
        "{:>5.1}s  NATS server n1 killed (SIGKILL)",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    println!(
        "{:>5.1}s  partitions by engine: {:?}",
        started.elapsed().as_secs_f64(),
        owners(&apis[0]).await?
    );
    publisher.await.context("the publisher panicked")??;
    println!(
        "{:>5.1}s  all {ORDERS} orders published and confirmed through engine-0",
        started.elapsed().as_secs_f64()
    );
    nats[1].start()?;
    start_engine(&mut engines[2], &apis[2].client).await?;
    println!(
        "{:>5.1}s  n1 and engine-2 back",
        started.elapsed().as_secs_f64()
    );
    apis[0].wait_drained(&FIRST_PLUGINS).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "{:>5.1}s  all three plugins done; partitions by engine: {:?}\n",
        started.elapsed().as_secs_f64(),
        owners(&apis[0]).await?
    );
    // Read through another engine than the one that took the orders.
    let api = &apis[1];
    check_notification(api, &expected).await?;
    check_recommendation(api, &expected).await?;
    check_membership(api, &expected, &levels(&repo)?).await?;
    check_no_dead_letters(api).await?;
    println!("all checks passed; stopping everything");
    Ok(())
}
