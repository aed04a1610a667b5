//! Which engines of a cluster are alive, and which of them owns what.
//!
//! Every engine publishes a heartbeat to its own subject of the cluster's
//! presence stream (one message per subject, expiring after the failover
//! time), and reads the subjects back: the live engines. A partition of a
//! subscription belongs to the live engine that ranks highest for it by
//! rendezvous hashing, so every engine computes the same owners without
//! talking to the others, a join or a death moves only the partitions it
//! must, and the spread is even. Ownership only decides who *pulls*: the
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

    /// The engine that should own `what` among `live`.
    pub fn owner<'a>(live: &'a [String], what: &str) -> Option<&'a str> {
        live.iter()
            .max_by_key(|engine| {
                xxhash_rust::xxh3::xxh3_64(format!("{engine}\u{0}{what}").as_bytes())
            })
            .map(String::as_str)
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
    fn owners_spread_and_move_only_what_they_must() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let mut counts = std::collections::HashMap::new();
        for partition in 0..48 {
            let what = format!("sub/{partition}");
            let owner = Presence::owner(&three, &what).expect("an owner");
            *counts.entry(owner).or_insert(0) += 1;
            let after = Presence::owner(&two, &what).expect("an owner");
            if owner != "c" {
                assert_eq!(owner, after, "{what} moved though its owner stayed");
            }
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&count| count >= 8), "{counts:?}");
    }
}
