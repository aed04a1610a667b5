//! Property test: random appends, polls, settlements, releases and reopens
//! against a simple in-memory model of what must hold.

use std::collections::HashMap;
use std::time::Duration;

use courier_store_fjall::{
    DeliveryMode, FjallStore, FjallSubscription, FsyncPolicy, Lease, Outcome, Poll, Settlement,
    StoreConfig, SubscriptionSettings, TopicSettings,
};
use proptest::prelude::*;

const PARTITIONS: u32 = 2;
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Step {
    Append {
        count: u8,
        key: u8,
    },
    Poll {
        partition: u8,
        max: u8,
    },
    /// Outcome codes per delivery: 0 ack, 1 retry, 2 dead letter.
    Settle {
        lease: u8,
        outcomes: Vec<u8>,
    },
    Release {
        lease: u8,
    },
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1..6u8, 0..4u8).prop_map(|(count, key)| Step::Append { count, key }),
        4 => (0..PARTITIONS as u8, 1..6u8).prop_map(|(partition, max)| Step::Poll { partition, max }),
        4 => (0..4u8, prop::collection::vec(prop_oneof![6 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)], 1..6))
            .prop_map(|(lease, outcomes)| Step::Settle { lease, outcomes }),
        1 => (0..4u8).prop_map(|lease| Step::Release { lease }),
        1 => Just(Step::Reopen),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open { failures: u32 },
    Acked,
    Dead,
}

struct Harness {
    dir: tempfile::TempDir,
    mode: DeliveryMode,
    /// The open store and its subscription (None only while reopening).
    open: Option<(FjallStore, FjallSubscription)>,
    leases: Vec<Lease>,
    model: HashMap<(u32, u64), State>,
}

fn sub_settings(mode: DeliveryMode) -> SubscriptionSettings {
    let mut settings = SubscriptionSettings {
        mode,
        max_attempts: MAX_ATTEMPTS,
        ..SubscriptionSettings::default()
    };
    settings.backoff.base = Duration::from_millis(1);
    settings.backoff.max = Duration::from_millis(1);
    settings
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    // Reopens here are clean (close persists); crash safety is crash.rs's job.
    config.fsync = FsyncPolicy::Never;
    config
}

impl Harness {
    async fn new(mode: DeliveryMode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(config(dir.path())).unwrap();
        let topic = TopicSettings {
            partitions: PARTITIONS,
            ..TopicSettings::default()
        };
        store.create_topic("t", topic).await.unwrap();
        let sub = store.subscribe("s", "t", sub_settings(mode)).await.unwrap();
        Harness {
            dir,
            mode,
            open: Some((store, sub)),
            leases: Vec::new(),
            model: HashMap::new(),
        }
    }

    fn store(&self) -> &FjallStore {
        &self.open.as_ref().expect("store is open").0
    }

    fn sub(&self) -> &FjallSubscription {
        &self.open.as_ref().expect("store is open").1
    }

    async fn run(&mut self, step: Step) {
        match step {
            Step::Append { count, key } => {
                let batch: Vec<_> = (0..count)
                    .map(|i| courier_store_fjall::NewMessage {
                        key: Some(vec![key]),
                        headers: vec![],
                        payload: vec![i],
                    })
                    .collect();
                for position in self.store().append("t", &batch).await.unwrap() {
                    self.model.insert(
                        (position.partition, position.offset),
                        State::Open { failures: 0 },
                    );
                }
            }
            Step::Poll { partition, max } => self.poll(u32::from(partition), usize::from(max)),
            Step::Settle { lease, outcomes } => {
                if self.leases.is_empty() {
                    return;
                }
                let lease = self.leases.remove(usize::from(lease) % self.leases.len());
                self.settle(lease, &outcomes).await;
            }
            Step::Release { lease } => {
                if self.leases.is_empty() {
                    return;
                }
                let lease = self.leases.remove(usize::from(lease) % self.leases.len());
                self.sub().release(lease.ticket);
            }
            Step::Reopen => {
                self.leases.clear();
                self.store().close().await;
                // Every handle must go before the directory can be reopened.
                self.open = None;
                let store = FjallStore::open(config(self.dir.path())).unwrap();
                let sub = store.subscription("s", "t").unwrap();
                self.open = Some((store, sub));
            }
        }
    }

    fn poll(&mut self, partition: u32, max: usize) {
        // Retries are due after at most 1 ms.
        std::thread::sleep(Duration::from_millis(2));
        let Poll::Ready(lease) = self.sub().poll(partition, max).unwrap() else {
            return;
        };
        for delivery in &lease.deliveries {
            let at = (partition, delivery.message.offset);
            let state = self.model.get(&at).copied();
            let Some(State::Open { failures }) = state else {
                panic!(
                    "{at:?} delivered in state {state:?}: finished messages must never come back"
                );
            };
            assert_eq!(delivery.attempt, failures + 1, "{at:?}: attempt count");
        }
        if self.mode == DeliveryMode::Ordered {
            // A batch is a contiguous run, and everything before it is finished.
            let offsets: Vec<u64> = lease.deliveries.iter().map(|d| d.message.offset).collect();
            assert!(
                offsets.windows(2).all(|w| w[1] == w[0] + 1),
                "gaps in {offsets:?}"
            );
            let first = offsets[0];
            for ((p, offset), state) in &self.model {
                if *p == partition && *offset < first {
                    assert!(
                        !matches!(state, State::Open { .. }),
                        "{first} delivered before {offset} finished"
                    );
                }
            }
        }
        self.leases.push(lease);
    }

    async fn settle(&mut self, lease: Lease, codes: &[u8]) {
        let partition = lease.ticket.partition();
        let results: Vec<Settlement> = lease
            .deliveries
            .iter()
            .zip(codes.iter().cycle())
            .map(|(delivery, code)| Settlement {
                offset: delivery.message.offset,
                outcome: match code {
                    0 => Outcome::Ack,
                    1 => Outcome::Retry {
                        delay: Some(Duration::ZERO),
                        reason: "r".into(),
                    },
                    _ => Outcome::DeadLetter { reason: "d".into() },
                },
                effects: Default::default(),
            })
            .collect();
        let report = self
            .sub()
            .settle(lease.ticket, results.clone())
            .await
            .unwrap();
        if report.stale {
            return;
        }
        for result in &results {
            let at = (partition, result.offset);
            let Some(State::Open { failures }) = self.model.get(&at).copied() else {
                panic!("settled a finished message {at:?}");
            };
            let next = match result.outcome {
                Outcome::Ack => State::Acked,
                Outcome::DeadLetter { .. } => State::Dead,
                Outcome::Retry { .. } if failures + 1 >= MAX_ATTEMPTS => State::Dead,
                Outcome::Retry { .. } => State::Open {
                    failures: failures + 1,
                },
            };
            self.model.insert(at, next);
            let stop = matches!(next, State::Open { .. });
            if self.mode == DeliveryMode::Ordered && stop {
                break;
            }
        }
    }

    /// Acknowledges everything left; every message must end acked or dead.
    async fn finish(mut self) {
        for lease in std::mem::take(&mut self.leases) {
            self.sub().release(lease.ticket);
        }
        for _ in 0..1000 {
            let mut idle = true;
            for partition in 0..PARTITIONS {
                self.poll(partition, 100);
                if let Some(lease) = self.leases.pop() {
                    idle = false;
                    self.settle(lease, &[0]).await;
                }
            }
            if idle && !self.model.values().any(|s| matches!(s, State::Open { .. })) {
                break;
            }
        }
        let open: Vec<_> = self
            .model
            .iter()
            .filter(|(_, s)| matches!(s, State::Open { .. }))
            .collect();
        assert!(open.is_empty(), "lost messages: {open:?}");
        let dead = self.model.values().filter(|s| **s == State::Dead).count();
        assert_eq!(
            self.store().dead_letters("s", None, 10_000).unwrap().len(),
            dead
        );
        assert_eq!(self.store().subscription_info("s", "t").unwrap().lag, 0);
    }
}

fn check(mode: DeliveryMode, steps: Vec<Step>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut harness = Harness::new(mode).await;
        for step in steps {
            harness.run(step).await;
        }
        harness.finish().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn ordered_subscriptions_match_the_model(steps in prop::collection::vec(step(), 1..40)) {
        check(DeliveryMode::Ordered, steps);
    }

    #[test]
    fn unordered_subscriptions_match_the_model(steps in prop::collection::vec(step(), 1..40)) {
        check(DeliveryMode::Unordered, steps);
    }
}
