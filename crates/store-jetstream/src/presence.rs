//! Which engines of a cluster are alive, and which of them owns what.
//!
//! Every engine publishes a heartbeat to its own subject of the cluster's
//! presence stream (one message per subject, expiring after the failover
//! time), and reads the subjects back: the live engines. A partition of a
//! subscription belongs to the live engine that ranks highest for it by
//! rendezvous hashing among those not yet holding their share, so every
//! engine computes the same owners without talking to the others, each
//! subscription is split evenly, and a join or a death moves few
//! partitions besides the ones it must. Ownership only decides who *pulls*: the
//! consumer's pinned-client priority group still lets a single puller at a
//! time receive messages, so a brief disagreement (an engine that has not
//! yet seen another's heartbeat) costs a pause, never a double delivery.

use async_nats::jetstream::stream;
use courier_core::Result;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backend;
use crate::log::JetStreamLog;

/// The live engines of a cluster, as this engine sees them.
#[derive(Clone)]
pub(crate) struct Presence {
    me: String,
    live: watch::Receiver<Vec<String>>,
}

impl Presence {
    /// Starts heartbeating and watching; the first list is read before this
    /// returns.
    pub async fn start(log: &JetStreamLog, stop: CancellationToken) -> Result<Presence> {
        let config = log.config();
        let me = config.engine.clone();
        let cluster = config.cluster.clone();
        let failover = config.failover;
        let config = stream::Config {
            name: format!("courier-engines-{cluster}"),
            subjects: vec![format!("courier.engines.{cluster}.*")],
            description: Some(format!("live engines of cluster {cluster}")),
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_messages_per_subject: 1,
            max_age: failover,
            allow_direct: true,
            ..Default::default()
        };
        // Engines starting together race to create the stream; a request
        // that timed out meanwhile is asked again.
        let mut attempts = 0;
        let stream = loop {
            attempts += 1;
            match log.context().get_or_create_stream(config.clone()).await {
                Ok(stream) => break stream,
                Err(error) if attempts < 4 => {
                    tracing::info!(%error, "creating the presence stream: trying again");
                }
                Err(error) => return Err(backend("creating the presence stream", error)),
            }
        };
        let subject = format!("courier.engines.{cluster}.{}", token(&me));
        let (sender, live) =
            watch::channel(with_me(beat(log, &subject, &stream, &cluster).await?, &me));
        let log = log.clone();
        let me_task = me.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(failover / 4);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match tokio::time::timeout(failover, beat(&log, &subject, &stream, &cluster)).await
                {
                    Ok(Ok(engines)) => {
                        sender.send_if_modified(|live| {
                            let engines = with_me(engines, &me_task);
                            let changed = *live != engines;
                            if changed {
                                tracing::info!(engines = ?engines, "cluster membership changed");
                                *live = engines;
                            }
                            changed
                        });
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "cluster heartbeat failed"),
                    Err(_) => tracing::warn!("cluster heartbeat timed out"),
                }
            }
        });
        Ok(Presence { me, live })
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The live engines (sorted, this one included).
    pub fn live(&self) -> Vec<String> {
        self.live.borrow().clone()
    }

    /// A receiver that wakes when the live set changes.
    pub fn watch(&self) -> watch::Receiver<Vec<String>> {
        self.live.clone()
    }

    /// The engine that should deliver `partition` of a subscription
    /// (`subscription`: a name unique in the cluster) with `partitions`
    /// partitions, among `live`: each partition in turn goes to the engine
    /// that ranks highest for it by rendezvous hashing among those not yet
    /// holding their share (`ceil(partitions / engines)`). So the split is
    /// even, every engine computes the same one from the same live set,
    /// and a change of the set moves few partitions.
    pub fn owner<'a>(
        live: &'a [String],
        subscription: &str,
        partitions: u32,
        partition: u32,
    ) -> Option<&'a str> {
        if live.is_empty() {
            return None;
        }
        let share = partitions.div_ceil(live.len() as u32);
        let mut load = vec![0u32; live.len()];
        for current in 0..=partition.min(partitions.saturating_sub(1)) {
            let rank = |engine: &String| {
                xxhash_rust::xxh3::xxh3_64(
                    format!("{engine}\u{0}{subscription}/{current}").as_bytes(),
                )
            };
            let chosen = (0..live.len())
                .filter(|&index| load[index] < share)
                .max_by_key(|&index| rank(&live[index]))?;
            if current == partition {
                return Some(live[chosen].as_str());
            }
            load[chosen] += 1;
        }
        None
    }
}

/// Publishes this engine's heartbeat, then reads who else is alive.
async fn beat(
    log: &JetStreamLog,
    subject: &str,
    stream: &stream::Stream,
    cluster: &str,
) -> Result<Vec<String>> {
    let me = log.config().engine.clone();
    log.publish_when_ready(subject.to_owned(), async_nats::HeaderMap::new(), me.into())
        .await?;
    read_live(stream, cluster).await
}

/// Engine names as one subject token.
fn token(engine: &str) -> String {
    crate::codec::hex(engine.as_bytes())
}

fn with_me(mut engines: Vec<String>, me: &str) -> Vec<String> {
    if !engines.iter().any(|engine| engine == me) {
        engines.push(me.to_owned());
    }
    engines.sort();
    engines.dedup();
    engines
}

async fn read_live(stream: &stream::Stream, cluster: &str) -> Result<Vec<String>> {
    let prefix = format!("courier.engines.{cluster}.");
    let mut subjects = stream
        .info_with_subjects(format!("{prefix}*"))
        .await
        .map_err(|error| backend("listing live engines", error))?;
    let mut engines = Vec::new();
    while let Some(entry) = subjects.next().await {
        let (subject, _) = entry.map_err(|error| backend("listing live engines", error))?;
        if let Some(name) = subject
            .strip_prefix(&prefix)
            .and_then(crate::codec::unhex)
            .and_then(|bytes| String::from_utf8(bytes).ok())
        {
            engines.push(name);
        }
    }
    Ok(engines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_evenly_and_agree() {
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        let three = names(&["engine-0", "engine-1", "engine-2"]);
        let two = names(&["engine-0", "engine-1"]);
        for subscription in ["courier-a/orders", "courier-b/orders", "courier-c/payments"] {
            let owners = |live: &[String]| -> Vec<String> {
                (0..8)
                    .map(|p| {
                        Presence::owner(live, subscription, 8, p)
                            .expect("an owner")
                            .to_owned()
                    })
                    .collect()
            };
            let mut counts = std::collections::BTreeMap::new();
            for owner in owners(&three) {
                *counts.entry(owner).or_insert(0) += 1;
            }
            let mut loads: Vec<_> = counts.values().copied().collect();
            loads.sort();
            assert_eq!(loads, vec![2, 3, 3], "{subscription}: {counts:?}");
            let after = owners(&two);
            assert_eq!(after.iter().filter(|o| *o == "engine-0").count(), 4);
            // Engine-2's partitions moved; most of the others stayed.
            let stayed = owners(&three)
                .iter()
                .zip(&after)
                .filter(|(before, after)| before != &"engine-2" && before == after)
                .count();
            assert!(stayed >= 4, "{subscription}: only {stayed} stayed");
        }
        assert_eq!(Presence::owner(&[], "s", 8, 0), None);
        assert_eq!(Presence::owner(&three[..1], "s", 8, 7), Some("engine-0"));
    }
}
