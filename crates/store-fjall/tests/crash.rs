//! Crash test: a child process publishes and consumes under load and is
//! killed with SIGKILL at random moments, over and over; after every kill
//! the reopened store must hold everything the child saw acknowledged, and
//! effects must match acknowledgements exactly. The child checkpoints its
//! state often, with passes spanning several commits, so kills land before,
//! during and after checkpoints, and every reopen replays a changelog.
//!
//! The child is this same binary, started with the data directory in
//! `CHILD_DIR_ENV`. The target has no test harness (`harness = false` in
//! Cargo.toml): `main` is the parent unless that variable is set, so a run
//! of this target cannot pass without killing and verifying children.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use courier_store_fjall::{
    DeliveryMode, Effects, FjallStore, NewMessage, Outcome, Poll, Settlement, StateOp, StoreConfig,
    TopicSettings,
};

const CHILD_DIR_ENV: &str = "COURIER_CRASH_CHILD_DIR";
const PARTITIONS: u32 = 4;
const ROUNDS: usize = 6;
/// Small enough that passes start every few commits and copy thousands of
/// keys (`seen/...` is a new key per message).
const CHECKPOINT_BYTES: u64 = 32 * 1024;

fn main() {
    match std::env::var(CHILD_DIR_ENV) {
        Ok(dir) => crash_child(dir),
        Err(_) => {
            println!("running 1 test");
            kill_9_at_random_moments_loses_nothing_acknowledged();
            println!("test kill_9_at_random_moments_loses_nothing_acknowledged ... ok");
            println!(
                "\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
            );
        }
    }
}

/// The child: appends, consumes and settles until it is killed.
fn crash_child(dir: String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(child(dir));
}

fn report(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

async fn child(dir: String) {
    let mut config = StoreConfig::new(&dir);
    config.state_checkpoint_bytes = CHECKPOINT_BYTES;
    let store = FjallStore::open(config).unwrap();
    let topic = TopicSettings {
        partitions: PARTITIONS,
        ..TopicSettings::default()
    };
    store.create_topic("t", topic).await.unwrap();
    let settings = courier_store_fjall::SubscriptionSettings {
        mode: DeliveryMode::Ordered,
        ..Default::default()
    };
    let sub = store.subscribe("s", "t", settings).await.unwrap();
    for producer in 0..4u64 {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0u64.. {
                let batch: Vec<NewMessage> = (0..20)
                    .map(|i| NewMessage {
                        key: Some(format!("{producer}-{round}-{i}").into_bytes()),
                        headers: vec![],
                        payload: vec![7; 100],
                    })
                    .collect();
                for position in store.append("t", &batch).await.unwrap() {
                    report(format!("A {} {}", position.partition, position.offset));
                }
            }
        });
    }
    for partition in 0..PARTITIONS {
        let sub = sub.clone();
        tokio::spawn(async move {
            loop {
                let polled = {
                    let sub = sub.clone();
                    tokio::task::spawn_blocking(move || sub.poll(partition, 50))
                        .await
                        .unwrap()
                        .unwrap()
                };
                let Poll::Ready(lease) = polled else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                let last = lease
                    .deliveries
                    .last()
                    .map(|d| d.message.offset)
                    .unwrap_or(0);
                let results = lease
                    .deliveries
                    .iter()
                    .map(|d| Settlement {
                        offset: d.message.offset,
                        outcome: Outcome::Ack,
                        effects: Effects {
                            publishes: vec![("audit".into(), NewMessage::default())],
                            state: vec![
                                StateOp::Increment {
                                    key: format!("count/{partition}"),
                                    delta: 1,
                                },
                                StateOp::Set {
                                    key: format!("seen/{partition}/{}", d.message.offset),
                                    value: vec![1],
                                },
                            ],
                        },
                    })
                    .collect();
                sub.settle(lease.ticket, results).await.unwrap();
                report(format!("S {partition} {}", last + 1));
            }
        });
    }
    std::future::pending::<()>().await;
}

fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut appended: Vec<(u32, u64)> = Vec::new();
    let mut settled: HashMap<u32, u64> = HashMap::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill at a random moment once the child is under way (its first
        // acknowledged append), however slow the machine is today.
        let mut output = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !output.iter().any(|line: &String| line.starts_with("A ")) {
            assert!(
                Instant::now() < deadline,
                "round {round}: the child never appended"
            );
            if let Ok(line) = received.recv_timeout(Duration::from_millis(100)) {
                output.push(line);
            }
        }
        std::thread::sleep(Duration::from_millis(50 + fastrand_u64(round) % 700));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        output.extend(received.try_iter());
        for line in output {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["A", p, o] => appended.push((p.parse().unwrap(), o.parse().unwrap())),
                ["S", p, cursor] => {
                    let entry = settled.entry(p.parse().unwrap()).or_default();
                    *entry = (*entry).max(cursor.parse().unwrap());
                }
                _ => {}
            }
        }
        verify(dir.path(), &appended, &settled, round);
    }
    assert!(
        appended.len() >= 100,
        "too little work to mean anything: {} appends",
        appended.len()
    );
    assert!(
        settled.values().sum::<u64>() > 0,
        "the child never settled anything"
    );
}

fn verify(
    dir: &std::path::Path,
    appended: &[(u32, u64)],
    settled: &HashMap<u32, u64>,
    round: usize,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = FjallStore::open(StoreConfig::new(dir)).unwrap();
        let topic = store.topic_info("t").unwrap();
        for (partition, offset) in appended {
            let end = topic.partitions[*partition as usize].end;
            assert!(
                offset < &end,
                "round {round}: acknowledged append {partition}/{offset} lost (end {end})"
            );
        }
        let info = store.subscription_info("s", "t").unwrap();
        for partition in &info.partitions {
            let reported = settled.get(&partition.partition).copied().unwrap_or(0);
            assert!(
                partition.committed >= reported,
                "round {round}: acknowledged settle lost in partition {}",
                partition.partition
            );
            let count = store
                .state_get("s", &format!("count/{}", partition.partition))
                .unwrap()
                .map(|v| String::from_utf8(v).unwrap().parse::<u64>().unwrap())
                .unwrap_or(0);
            assert_eq!(
                count, partition.committed,
                "round {round}: effects must commit exactly with acks (partition {})",
                partition.partition
            );
            let prefix = format!("seen/{}/", partition.partition);
            let seen = store.state_scan("s", &prefix, usize::MAX).unwrap();
            assert_eq!(
                seen.len() as u64,
                partition.committed,
                "round {round}: one `seen` key per acknowledged message (partition {})",
                partition.partition
            );
            for offset in [
                0,
                partition.committed / 2,
                partition.committed.saturating_sub(1),
            ] {
                if offset < partition.committed {
                    let key = format!("{prefix}{offset}");
                    assert!(
                        store.state_get("s", &key).unwrap().is_some(),
                        "round {round}: {key} lost"
                    );
                }
            }
        }
        let committed: u64 = info.partitions.iter().map(|p| p.committed).sum();
        let audit = store.topic_info("audit").map(|t| t.messages).unwrap_or(0);
        assert_eq!(
            audit, committed,
            "round {round}: one outbox message per ack"
        );
        store.close().await;
    });
}

/// A small deterministic spread of kill times per round.
fn fastrand_u64(round: usize) -> u64 {
    let mut x = (round as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 7
}
