//! The cluster backend's log against a real 3-node cluster of `nats-server`
//! processes on loopback: appends confirmed by a quorum, read back in
//! order, through the loss of a server, from a second connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use courier_core::{Error, NewMessage, Position, TopicSettings};
use courier_store_jetstream::{JetStreamConfig, JetStreamLog};
use courier_tests::nats::NatsCluster;

fn order(user: u32, seq: u32) -> NewMessage {
    NewMessage {
        key: Some(format!("u-{user:03}").into_bytes()),
        headers: vec![("type".into(), "order".into())],
        payload: format!("{{\"user\":{user},\"seq\":{seq}}}").into_bytes(),
    }
}

fn settings(partitions: u32) -> TopicSettings {
    TopicSettings {
        partitions,
        ..TopicSettings::default()
    }
}

/// Appends `count` orders from `first`, `batch` per call; answers the
/// positions and the messages, in the order sent.
async fn append_orders(
    log: &JetStreamLog,
    first: u32,
    count: u32,
    batch: usize,
) -> Vec<(Position, NewMessage)> {
    let messages: Vec<NewMessage> = (first..first + count).map(|i| order(i % 17, i)).collect();
    let mut out = Vec::new();
    for chunk in messages.chunks(batch) {
        let positions = log.append("orders", chunk).await.expect("appended");
        assert_eq!(positions.len(), chunk.len());
        out.extend(positions.into_iter().zip(chunk.iter().cloned()));
    }
    out
}

/// Checks that every partition holds exactly what was appended to it, in
/// order, at dense offsets from 0.
async fn assert_log_holds(log: &JetStreamLog, appended: &[(Position, NewMessage)]) {
    let mut by_partition: BTreeMap<u32, Vec<(u64, &NewMessage)>> = BTreeMap::new();
    for (position, message) in appended {
        by_partition
            .entry(position.partition)
            .or_default()
            .push((position.offset, message));
    }
    for (partition, expected) in by_partition {
        let offsets: Vec<u64> = expected.iter().map(|(offset, _)| *offset).collect();
        let dense: Vec<u64> = (0..expected.len() as u64).collect();
        assert_eq!(offsets, dense, "partition {partition}'s offsets");
        let stored = log
            .read("orders", partition, 0, expected.len() + 10)
            .await
            .expect("read");
        assert_eq!(stored.len(), expected.len(), "partition {partition}");
        for (message, (offset, sent)) in stored.iter().zip(&expected) {
            assert_eq!(message.offset, *offset);
            assert_eq!(message.partition, partition);
            assert_eq!(&*message.topic, "orders");
            assert_eq!(message.payload, sent.payload);
            assert_eq!(message.key, sent.key);
            assert_eq!(message.headers, sent.headers);
            assert!(message.timestamp_ms > 1_700_000_000_000);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_confirmed_by_a_quorum_and_read_back_in_order() {
    let cluster = NatsCluster::start(3).await;
    let log = JetStreamLog::connect(JetStreamConfig::new(cluster.urls()))
        .await
        .expect("connected");
    let info = log
        .create_topic("orders", settings(4))
        .await
        .expect("topic");
    assert_eq!(info.partitions.len(), 4);
    assert_eq!(info.messages, 0);

    let appended = append_orders(&log, 0, 200, 20).await;
    // A key always lands in the same partition.
    let mut partition_of: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for (position, message) in &appended {
        let key = message.key.clone().expect("keyed");
        let first = *partition_of.entry(key).or_insert(position.partition);
        assert_eq!(first, position.partition, "a key moved partitions");
    }
    assert_log_holds(&log, &appended).await;
    let info = log
        .create_topic("orders", settings(4))
        .await
        .expect("the same topic again");
    assert_eq!(info.messages, 200);

    // Every partition stream is replicated on all three servers.
    let client = async_nats::connect(cluster.urls()[1].as_str())
        .await
        .expect("a second client");
    let context = async_nats::jetstream::new(client);
    let mut streams = 0;
    let mut names = context.stream_names();
    use futures_util::StreamExt;
    while let Some(name) = names.next().await {
        let mut stream = context
            .get_stream(name.expect("a stream name"))
            .await
            .expect("stream");
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3);
        streams += 1;
    }
    assert_eq!(streams, 4, "one stream per partition");

    // A topic is created once, with one partition count.
    match log.create_topic("orders", settings(2)).await {
        Err(Error::TopicConflict {
            existing,
            requested,
            ..
        }) => assert_eq!((existing, requested), (4, 2)),
        other => panic!("expected a topic conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_while_a_server_is_killed_and_after_it_returns() {
    let mut cluster = NatsCluster::start(3).await;
    let log = JetStreamLog::connect(JetStreamConfig::new(cluster.urls()))
        .await
        .expect("connected");
    log.create_topic("orders", settings(2))
        .await
        .expect("topic");
    let mut appended = append_orders(&log, 0, 60, 10).await;

    // SIGKILL one server: a quorum of two still confirms every append
    // (the client may need a moment to move off a dead connection).
    cluster.kill(0);
    let started = Instant::now();
    let mut next = 60;
    while next < 120 {
        let batch: Vec<NewMessage> = (next..next + 10).map(|i| order(i % 17, i)).collect();
        match log.append("orders", &batch).await {
            Ok(positions) => {
                appended.extend(positions.into_iter().zip(batch));
                next += 10;
            }
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "appends failed for 30 s after one of three servers died: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    cluster.restart(0).await;
    appended.extend(append_orders(&log, 120, 30, 10).await);
    // A failed attempt above may have stored part of a batch: what was
    // confirmed must be there, in order; nothing else was confirmed.
    let confirmed: Vec<(Position, NewMessage)> = appended;
    let mut per_partition: BTreeMap<u32, Vec<&(Position, NewMessage)>> = BTreeMap::new();
    for entry in &confirmed {
        per_partition
            .entry(entry.0.partition)
            .or_default()
            .push(entry);
    }
    for (partition, entries) in per_partition {
        let last = entries.iter().map(|(p, _)| p.offset).max().unwrap_or(0);
        let stored = log
            .read("orders", partition, 0, last as usize + 1)
            .await
            .expect("read");
        for (position, message) in entries {
            let found = stored
                .iter()
                .find(|m| m.offset == position.offset)
                .unwrap_or_else(|| panic!("confirmed {position:?} is missing"));
            assert_eq!(found.payload, message.payload, "at {position:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_finds_the_topic_and_appends_after_it() {
    let cluster = NatsCluster::start(3).await;
    let first = JetStreamLog::connect(JetStreamConfig::new(cluster.urls()))
        .await
        .expect("connected");
    first
        .create_topic("orders", settings(3))
        .await
        .expect("topic");
    let mut appended = append_orders(&first, 0, 30, 7).await;

    // Another engine, knowing nothing of the topic, appends to it by name.
    let second = JetStreamLog::connect(JetStreamConfig::new(vec![cluster.urls()[2].clone()]))
        .await
        .expect("connected");
    appended.extend(append_orders(&second, 30, 30, 7).await);
    assert_log_holds(&second, &appended).await;
    assert!(matches!(
        second.read("nope", 0, 0, 10).await,
        Err(Error::UnknownTopic(_))
    ));
    assert!(matches!(
        second.read("orders", 3, 0, 10).await,
        Err(Error::UnknownPartition { partition: 3, .. })
    ));
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a port")
        .port();
    let started = Instant::now();
    let error = JetStreamLog::connect(JetStreamConfig::new(vec![format!(
        "nats://127.0.0.1:{port}"
    )]))
    .await
    .expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(15));
    let text = error.to_string();
    assert!(text.contains("NATS"), "{text}");
    assert!(
        JetStreamLog::connect(JetStreamConfig::new(Vec::new()))
            .await
            .is_err()
    );
}
