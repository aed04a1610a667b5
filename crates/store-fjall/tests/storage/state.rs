//! Subscriber state across checkpoints: state goes to disk as a changelog
//! and is copied into the `state` keyspace by checkpoint passes; reads,
//! scans and reopens must see exactly the committed values whatever the
//! checkpoint threshold (checkpointing after every commit, passes spanning
//! several commits, or never until a reopen replays the changelog).

use std::collections::BTreeMap;

use courier_store_fjall::{
    DeliveryMode, Effects, FjallStore, FjallSubscription, Outcome, Poll, Settlement, StateOp,
};

use crate::common::{create_topic, messages, open_with, poll, settings};

/// Distinct keys written: many checkpoint chunks (at most 512 keys each).
const KEYS: u64 = 5000;
const MESSAGES: usize = 12_000;

type Model = BTreeMap<String, Vec<u8>>;

fn open(dir: &std::path::Path, threshold: u64) -> FjallStore {
    open_with(dir, |config| config.state_checkpoint_bytes = threshold)
}

/// The writes message `offset` stages, applied to `model` too: a set that
/// cycles through the keys, a delete of another key, a counter.
fn effects(offset: u64, model: &mut Model) -> Effects {
    let set = format!("k/{:05}", offset % KEYS);
    let gone = format!("k/{:05}", (offset + KEYS / 2) % KEYS);
    let value = offset.to_string().into_bytes();
    model.insert(set.clone(), value.clone());
    model.remove(&gone);
    let count = model.get("count").map_or(0, |v| {
        String::from_utf8_lossy(v).parse::<u64>().unwrap_or(0)
    });
    model.insert("count".into(), (count + 1).to_string().into_bytes());
    Effects {
        publishes: Vec::new(),
        state: vec![
            StateOp::Set { key: set, value },
            StateOp::Delete { key: gone },
            StateOp::Increment {
                key: "count".into(),
                delta: 1,
            },
        ],
    }
}

/// Handles everything with `effects`, checking a few reads after each
/// settle.
async fn handle_all(store: &FjallStore, sub: &FjallSubscription, model: &mut Model) {
    while let Poll::Ready(lease) = poll(sub, 0, 64).await {
        let results: Vec<Settlement> = lease
            .deliveries
            .iter()
            .map(|delivery| {
                let offset = delivery.message.offset;
                Settlement {
                    offset,
                    outcome: Outcome::Ack,
                    effects: effects(offset, model),
                }
            })
            .collect();
        let last = lease.deliveries.last().map(|d| d.message.offset);
        sub.settle(lease.ticket, results).await.expect("settle");
        if let Some(last) = last {
            let key = format!("k/{:05}", last % KEYS);
            assert_eq!(
                store.state_get("s", &key).expect("get"),
                model.get(&key).cloned()
            );
        }
    }
}

/// Every key reads back as the model holds it, and scans agree.
fn check(store: &FjallStore, model: &Model, when: &str) {
    for i in 0..KEYS {
        let key = format!("k/{i:05}");
        assert_eq!(
            store.state_get("s", &key).expect("get"),
            model.get(&key).cloned(),
            "{when}: {key}"
        );
    }
    assert_eq!(
        store.state_get("s", "count").expect("get"),
        model.get("count").cloned(),
        "{when}: count"
    );
    let scanned = store.state_scan("s", "k/", 100_000).expect("scan");
    let expected: Vec<(String, Vec<u8>)> = model
        .iter()
        .filter(|(key, _)| key.starts_with("k/"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    assert_eq!(scanned, expected, "{when}: full scan");
    let first = store.state_scan("s", "k/", 10).expect("scan");
    assert_eq!(first, expected[..10], "{when}: limited scan");
}

#[tokio::test]
async fn state_reads_back_exactly_whether_checkpointed_often_rarely_or_never() {
    // Every commit; passes of thousands of keys spread over commits; never
    // (the reopen replays the whole changelog).
    for threshold in [1, 64 * 1024, u64::MAX] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = Model::new();
        let store = open(dir.path(), threshold);
        create_topic(&store, "t", 1).await;
        let sub = store
            .subscribe("s", "t", settings(DeliveryMode::Ordered))
            .await
            .expect("subscribe");
        for chunk in 0..MESSAGES / 1000 {
            store
                .append("t", &messages(1000, |i| Some(format!("{chunk}-{i}"))))
                .await
                .expect("append");
            handle_all(&store, &sub, &mut model).await;
        }
        check(&store, &model, &format!("threshold {threshold}, running"));
        let checkpoints = store.stats().state_checkpoints;
        if threshold == u64::MAX {
            assert_eq!(checkpoints, 0, "never checkpointed");
        } else {
            assert!(checkpoints > 0, "threshold {threshold}: no checkpoint");
        }
        store.close().await;
        // The directory is released once every handle is gone.
        drop((sub, store));

        let store = open(dir.path(), threshold);
        assert_eq!(
            store.stats().state_dirty_bytes,
            0,
            "a reopen starts with everything checkpointed"
        );
        check(&store, &model, &format!("threshold {threshold}, reopened"));
    }
}

#[tokio::test]
async fn scans_merge_checkpointed_values_with_newer_writes_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model::new();
    let write = |model: &mut Model, ops: Vec<StateOp>| {
        for op in &ops {
            match op {
                StateOp::Set { key, value } => {
                    model.insert(key.clone(), value.clone());
                }
                StateOp::Delete { key } => {
                    model.remove(key);
                }
                StateOp::Increment { .. } => unreachable!(),
            }
        }
        ops
    };
    let set = |key: &str, value: &str| StateOp::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    };
    let settle_one = |store: FjallStore, ops: Vec<StateOp>| async move {
        store
            .append("t", &messages(1, |_| None))
            .await
            .expect("append");
        let sub = store.subscription("s", "t").expect("subscription");
        let Poll::Ready(lease) = poll(&sub, 0, 1).await else {
            panic!("no message");
        };
        let offset = lease.deliveries[0].message.offset;
        let effects = Effects {
            publishes: Vec::new(),
            state: ops,
        };
        let results = vec![Settlement {
            offset,
            outcome: Outcome::Ack,
            effects,
        }];
        sub.settle(lease.ticket, results).await.expect("settle");
    };

    // a/1..a/5 end up in `state` (the reopen replays them).
    let store = open(dir.path(), u64::MAX);
    create_topic(&store, "t", 1).await;
    store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .expect("subscribe");
    let ops = (1..=5)
        .map(|i| set(&format!("a/{i}"), "old"))
        .chain([set("b/1", "other")])
        .collect();
    settle_one(store.clone(), write(&mut model, ops)).await;
    store.close().await;
    drop(store);

    // Newer values around, between and over them stay in memory.
    let store = open(dir.path(), u64::MAX);
    let ops = vec![
        set("a/0", "new"),
        set("a/2", "new"),
        StateOp::Delete { key: "a/3".into() },
        set("a/6", "new"),
        set("a/45", "new"),
    ];
    settle_one(store.clone(), write(&mut model, ops)).await;
    assert!(store.stats().state_dirty_bytes > 0);

    let expected: Vec<(String, Vec<u8>)> = model
        .iter()
        .filter(|(key, _)| key.starts_with("a/"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    assert_eq!(
        expected.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["a/0", "a/1", "a/2", "a/4", "a/45", "a/5", "a/6"]
    );
    assert_eq!(store.state_scan("s", "a/", 100).expect("scan"), expected);
    for limit in 0..expected.len() {
        assert_eq!(
            store.state_scan("s", "a/", limit).expect("scan"),
            expected[..limit],
            "limit {limit}"
        );
    }
    assert_eq!(
        store.state_scan("s", "a/4", 100).expect("scan"),
        expected[3..5],
        "a longer prefix"
    );
    // Pages: each starts after the previous page's last key, through the
    // checkpointed keys and the newer ones in memory alike.
    for page_size in 1..=expected.len() {
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .state_scan_after("s", "a/", after.as_deref(), page_size)
                .expect("scan");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|(key, _)| key.clone());
            pages.extend(page);
        }
        assert_eq!(pages, expected, "pages of {page_size}");
    }
    assert_eq!(
        store
            .state_scan_after("s", "a/", Some("0"), 100)
            .expect("scan"),
        expected,
        "a start before the prefix starts at the prefix"
    );
    assert!(
        store
            .state_scan_after("s", "a/", Some("a/6"), 100)
            .expect("scan")
            .is_empty()
    );
}

/// A store with checkpoint `threshold`, topic `t` (one partition) holding
/// 200 messages, and subscription `s` of it (ordered): one message for
/// each [`settle_one`].
async fn store_with_messages(
    dir: &std::path::Path,
    threshold: u64,
) -> (FjallStore, FjallSubscription) {
    let store = open(dir, threshold);
    create_topic(&store, "t", 1).await;
    let sub = store
        .subscribe("s", "t", settings(DeliveryMode::Ordered))
        .await
        .expect("subscribe");
    store
        .append("t", &messages(200, |_| None))
        .await
        .expect("append");
    (store, sub)
}

/// Settles the next message (batch of one) with `state` as its effects.
async fn settle_one(sub: &FjallSubscription, state: Vec<StateOp>) {
    let Poll::Ready(lease) = poll(sub, 0, 1).await else {
        panic!("a message should be ready");
    };
    let offset = lease.deliveries[0].message.offset;
    let effects = Effects {
        publishes: Vec::new(),
        state,
    };
    let results = vec![Settlement {
        offset,
        outcome: Outcome::Ack,
        effects,
    }];
    sub.settle(lease.ticket, results).await.expect("settle");
}

#[tokio::test]
async fn small_commits_carry_small_checkpoint_chunks_and_the_pass_still_ends() {
    // A pass starts after every commit (threshold 1 byte). One commit makes
    // 2,000 keys dirty; then commits that write one key each copy the
    // pass's keys a chunk at a time: twice their own writes, at least 32,
    // so 2,000 keys take dozens of such commits (with 512 per commit, as
    // before, the pass ended after four), and the pass does end.
    const DIRTY: usize = 2000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, sub) = store_with_messages(dir.path(), 1).await;
    let bulk = (0..DIRTY)
        .map(|i| StateOp::Set {
            key: format!("bulk/{i:05}"),
            value: vec![1; 8],
        })
        .collect();
    settle_one(&sub, bulk).await;
    let before = store.stats().state_checkpoints;
    let mut small_commits = 0;
    while store.stats().state_checkpoints == before {
        assert!(small_commits < 199, "the pass never ended");
        let key = format!("small/{small_commits:03}");
        settle_one(
            &sub,
            vec![StateOp::Set {
                key,
                value: vec![2],
            }],
        )
        .await;
        small_commits += 1;
    }
    assert!(
        small_commits > DIRTY / 512 + 10,
        "the pass ended after {small_commits} one-key commits: its chunks were not small"
    );
    assert!(
        small_commits <= DIRTY / 32 + 10,
        "the pass took {small_commits} one-key commits: chunks under 32 keys"
    );
    for i in [0, DIRTY / 2, DIRTY - 1] {
        let key = format!("bulk/{i:05}");
        assert_eq!(
            store.state_get("s", &key).expect("get"),
            Some(vec![1; 8]),
            "{key}"
        );
    }
}

/// `count` keys named `{prefix}{i}`, each set to 1,000 bytes of `fill`.
fn sets(prefix: &str, count: usize, fill: u8) -> Vec<StateOp> {
    (0..count)
        .map(|i| StateOp::Set {
            key: format!("{prefix}{i:03}"),
            value: vec![fill; 1000],
        })
        .collect()
}

#[tokio::test]
async fn rewriting_the_same_keys_checkpoints_rarely_and_new_keys_as_often_as_before() {
    // Threshold 64 KiB; every commit writes ~10 KB of changelog.
    const THRESHOLD: u64 = 64 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, sub) = store_with_messages(dir.path(), THRESHOLD).await;

    // The same ten keys over and over: the dirty values stay ~11 KB, so no
    // pass starts at 64 KiB of changelog, nor at 4x that (40 commits
    // write ~400 KB)...
    for round in 0..40u8 {
        settle_one(&sub, sets("hot/", 10, round)).await;
    }
    assert_eq!(store.stats().state_checkpoints, 0, "checkpointed hot keys");
    assert!(store.stats().state_dirty_bytes < THRESHOLD);
    // ...but one does by 8x (512 KiB: a reopen's replay stays bounded).
    for round in 40..70u8 {
        settle_one(&sub, sets("hot/", 10, round)).await;
    }
    let after_hot = store.stats().state_checkpoints;
    assert!(after_hot >= 1, "no checkpoint after ~700 KB of changelog");

    // New keys every commit: the dirty values grow as fast as the
    // changelog, so passes start every 64 KiB again and bound them.
    for round in 0..60u8 {
        settle_one(&sub, sets(&format!("new/{round:02}/"), 10, round)).await;
        assert!(
            store.stats().state_dirty_bytes < 3 * THRESHOLD,
            "dirty values grew to {} bytes",
            store.stats().state_dirty_bytes
        );
    }
    let passes = store.stats().state_checkpoints - after_hot;
    assert!(passes >= 5, "{passes} checkpoints over ~600 KB of new keys");

    // Every value reads back, and again after a reopen (which replays
    // the changelog written since the last checkpoint).
    let check = |store: &FjallStore| {
        for (key, fill) in [
            ("hot/000", 69),
            ("hot/009", 69),
            ("new/00/000", 0),
            ("new/59/009", 59),
        ] {
            assert_eq!(
                store.state_get("s", key).expect("get"),
                Some(vec![fill; 1000]),
                "{key}"
            );
        }
    };
    check(&store);
    store.close().await;
    drop((sub, store));
    check(&open(dir.path(), THRESHOLD));
}
