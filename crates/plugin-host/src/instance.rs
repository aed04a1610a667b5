//! One plugin instance: a wasmtime store with its instance, called once per
//! message.
//!
//! # Instance strategy
//!
//! Crossing the boundary with a 300-byte message costs a fraction of a
//! microsecond on a reused instance, a fresh instance per message tens of
//! microseconds, a fresh instance per batch well under a microsecond per
//! message (`cargo bench -p courier-plugin-host --bench plugin`; current
//! figures in `docs/benchmarks.md`). So the default (`instance = "reused"`)
//! keeps a few idle instances per plugin version (`LoadedPlugin::checkout`
//! / `checkin`): a worker takes one for a batch and gives it back, so a
//! plugin with 8 partition workers holds about as many instances as run at
//! once, not 8. An instance that trapped is discarded (its memory may be
//! corrupt). `instance = "per-batch"` buys
//! isolation between batches (no guest memory survives a batch) for a
//! fraction of a microsecond per message. A fresh instance per message is not
//! offered: it would cost more than the plugin's own work.
//!
//! The contract has one `handle` per message rather than a batch call:
//! batching the boundary saves little of an already small cost, and one
//! call per message keeps each message's staged effects and trap isolated.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;

use super::bindings::Consumer;
use super::bindings::courier::plugin::types::{Message as WitMessage, Outcome as WitOutcome};
use super::host::{HostState, truncate};
use courier_core::{Effects, Message, Outcome};

/// Longest retry or dead-letter reason kept.
pub const MAX_REASON_BYTES: usize = 4096;

/// What one call produced. Its staged effects stay in the instance: an
/// acknowledged message's join the batch's ([`PluginInstance::take_effects`]),
/// any other outcome drops them.
#[derive(Debug)]
pub struct Handled {
    pub outcome: Outcome,
    /// The guest trapped (panic, deadline, memory, ...): the outcome is a
    /// retry and the instance must not be used again.
    pub trapped: bool,
}

/// How often the runtime's ticker advances the engine's epoch: the
/// granularity of call deadlines.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Epoch ticks for a deadline in milliseconds (at least one full tick).
pub(super) fn deadline_ticks(deadline_ms: u64) -> u64 {
    deadline_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1
}

/// One live instance. Never entered concurrently (`&mut self`).
pub struct PluginInstance {
    store: Store<HostState>,
    bindings: Consumer,
    usable: bool,
    deadline_ticks: u64,
    /// The topic name as the last message carried it: reused, so lowering
    /// a message allocates no `String` for it.
    topic: String,
}

impl PluginInstance {
    /// `store` has its deadline set already (instantiation runs guest code).
    pub(super) fn new(store: Store<HostState>, bindings: Consumer) -> PluginInstance {
        let deadline_ticks = deadline_ticks(store.data().plugin.manifest.limits.deadline_ms);
        PluginInstance {
            store,
            bindings,
            usable: true,
            deadline_ticks,
            topic: String::new(),
        }
    }

    /// False after a trap.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// Starts a batch: everything staged before was committed (or dropped),
    /// so reads go to the store again.
    pub fn begin_batch(&mut self) {
        self.store.data_mut().staging.begin_batch();
    }

    /// The effects the batch's acknowledged messages staged, coalesced (one
    /// write per key, publishes in order), to commit atomically with their
    /// acknowledgements. Still valid after a trap: staging is host memory,
    /// and the messages acknowledged before the trap stay acknowledged.
    pub fn take_effects(&mut self) -> Effects {
        self.store.data_mut().staging.take_batch()
    }

    /// Calls the plugin's `handle` for one delivery. Blocking (runs Wasm).
    /// Takes the message by value: its payload moves into the call.
    pub fn handle(&mut self, message: Message, attempt: u32) -> Handled {
        if !self.usable {
            return trapped("the instance trapped earlier and was discarded".into());
        }
        {
            let host = self.store.data_mut();
            host.staging.begin_message();
            host.current = Some((
                Arc::clone(&message.topic),
                message.partition,
                message.offset,
            ));
        }
        let mut topic = std::mem::take(&mut self.topic);
        if topic != *message.topic {
            topic.clear();
            topic.push_str(&message.topic);
        }
        let wit = WitMessage {
            topic,
            partition: message.partition,
            offset: message.offset,
            key: message.key,
            headers: message.headers,
            payload: message.payload,
            timestamp_ms: message.timestamp_ms,
            attempt,
        };
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self
            .bindings
            .courier_plugin_handler()
            .call_handle(&mut self.store, &wit);
        self.topic = wit.topic;
        let host = self.store.data_mut();
        host.current = None;
        match result {
            Ok(outcome) => {
                let outcome = convert(outcome);
                let acknowledged = outcome == Outcome::Ack;
                host.staging.finish_message(acknowledged);
                Handled {
                    outcome,
                    trapped: false,
                }
            }
            Err(error) => {
                host.staging.finish_message(false);
                self.usable = false;
                trapped(trap_reason(&error))
            }
        }
    }
}

fn trapped(reason: String) -> Handled {
    Handled {
        outcome: Outcome::Retry {
            delay: None,
            reason,
        },
        trapped: true,
    }
}

/// A short, operator-readable reason for a trap.
fn trap_reason(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            "trap: the call exceeded its deadline (limits.deadline_ms)".into()
        }
        Some(trap) => format!("trap: {trap}"),
        None => format!("trap: {}", first_line(&format!("{error:#}"))),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The storage outcome of a plugin's answer; guest-chosen reasons are cut
/// to [`MAX_REASON_BYTES`] (they are stored with dead letters).
fn convert(outcome: WitOutcome) -> Outcome {
    let bounded = |reason: String| truncate(&reason, MAX_REASON_BYTES).to_owned();
    match outcome {
        WitOutcome::Ack => Outcome::Ack,
        WitOutcome::Retry(request) => Outcome::Retry {
            delay: request.delay_ms.map(|ms| Duration::from_millis(ms.into())),
            reason: bounded(request.reason),
        },
        WitOutcome::DeadLetter(reason) => Outcome::DeadLetter {
            reason: bounded(reason),
        },
    }
}
