//! Courier's cluster storage backend on NATS JetStream: the storage seam
//! of `courier-core` over RAFT-replicated streams, shared by every engine
//! of a cluster. Nothing here replicates anything itself: JetStream does.
//!
//! # Layout on JetStream
//!
//! - A topic's partition `p` is the stream `courier-<h>-<p>` with the one
//!   subject `courier.<h>.<p>` (`<h>`: the xxh3 of the topic name in hex;
//!   stream names may not hold a `.`). One stream per partition makes the
//!   stream sequence the partition's offset (`offset = sequence - 1`) and
//!   keeps a key's order where JetStream keeps it, within a stream. A
//!   message's key travels hex-encoded in the `Courier-Key` header.
//! - A subscription is one durable pull consumer per partition stream,
//!   named after the cluster and the subscriber, in priority group `owner`
//!   with the `pinned_client` policy: the server hands a partition's
//!   messages to one puller at a time. Its ack floor is the cursor; the
//!   server counts deliveries, so attempt counts survive failovers.
//! - A subscriber's state is the stream `courier-state-<s>`, one subject per
//!   key and one message per subject (a key-value table), each value
//!   carrying guards: per source partition, the position of the last
//!   effects record applied to it.
//! - Its effects records are the stream `courier-fx-<s>`, one subject per
//!   source partition, holding the last record.
//! - Its dead letters are the stream `courier-dead-<s>`, one subject per
//!   topic.
//! - The cluster's live engines are the stream `courier-engines-<cluster>`,
//!   one expiring heartbeat per engine ([`presence`](crate::presence)).
//!
//! # Who delivers what
//!
//! Every engine subscribes every plugin as usual. For each partition of a
//! subscription, the live engine ranked highest by rendezvous hashing
//! pulls; the others wait. When an engine dies its heartbeat expires and
//! its consumer pins lapse within the failover time; the partition's new
//! owner is pinned on its next pull, and the dead engine's unacknowledged
//! messages are redelivered to it once their ack wait (the failover time
//! too) runs out. A joining engine takes over the partitions it now ranks
//! highest for: their old owner finishes its batch, gives its buffered
//! messages back (`NAK`) and unpins.
//!
//! # Effects exactly once
//!
//! JetStream has no transaction spanning a state write, a publish and an
//! ack, so a batch of an ordered subscription settles in three steps:
//!
//! 1. **Decide**: one effects record (the batch's state ops, outbox
//!    messages and dead letters, and the offset through which everything
//!    is decided) is written to the partition's record subject with
//!    `Nats-Expected-Last-Subject-Sequence` set to the last record this
//!    engine knows. If another engine wrote a record meanwhile (it took
//!    the partition over), the write fails and the batch is dropped
//!    unapplied. Records form one chain per partition, whoever writes them.
//! 2. **Apply**, idempotently: each state op is a compare-and-set on its
//!    key's subject, skipped if the value's guard for this source is at
//!    or past the record's position; outbox messages and dead letters are
//!    published with ids made of their source position, which the target
//!    streams deduplicate within [`DUPLICATE_WINDOW`](log::DUPLICATE_WINDOW).
//! 3. **Acknowledge** the decided messages; `NAK` with a delay the one to
//!    retry.
//!
//! An engine that gains a partition first reads its last record: if the
//! consumer's ack floor is behind it, the record's writer may have died
//! between steps 1 and 3, so it applies the record again (step 2 makes
//! that harmless) and treats its messages as decided (acknowledging them
//! as they are redelivered) before handing anything out. A seek writes a
//! record of a new epoch: guards of an older epoch never block a newer
//! write, so re-delivered messages have their effects again.
//!
//! Limits: unordered subscriptions are delivered like ordered ones, one
//! batch per partition at a time (a retry holds its partition until it is
//! redelivered); effects of a dead engine are deduplicated if its
//! successor re-applies them within the duplicate window; dead letters can
//! be listed and purged, not yet replayed.
//!
//! # Guarantees
//!
//! Appends and settles answer once JetStream acknowledged every write:
//! stored on a quorum of the streams' replicas, fsynced there if the
//! servers run with `sync_interval: always`, in their memory otherwise.
//! A publish request's messages are published pipelined, not as one atomic
//! batch: a failure can leave a prefix of a request stored.

#![deny(clippy::unwrap_used)]

mod codec;
mod config;
mod effects;
mod feed;
mod log;
mod presence;
mod record;
mod shared;
mod store;
mod subscription;

pub use codec::KEY_HEADER;
pub use config::{DEFAULT_CLUSTER, DEFAULT_FAILOVER, JetStreamConfig};
pub use log::{CONNECT_TIMEOUT, DUPLICATE_WINDOW, JetStreamLog, MAX_READ};
pub use store::JetStreamStore;

fn backend(what: &str, error: impl std::fmt::Display) -> courier_core::Error {
    courier_core::Error::Backend(format!("{what}: {error}"))
}
