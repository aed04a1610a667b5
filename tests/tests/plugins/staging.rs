//! The host seen through its API, without an engine: `PluginRuntime::load`,
//! `LoadedPlugin::instantiate`, `PluginInstance::handle` and
//! `PluginInstance::take_effects` on the compiled fixtures. Here a batch's
//! staged effects are visible as data, which makes staging, coalescing,
//! read-your-writes and trap handling easy to pin down.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use courier_core::{Effects, Message, Outcome, StateOp};
use courier_plugin_host::{
    LoadedPlugin, Manifest, PluginInstance, PluginRuntime, RuntimeConfig, StateReader,
};
use courier_workload::{Generator, Shape};

use crate::support::{component_bytes, shared_cache_dir};

/// Committed state, as the store would serve it.
#[derive(Default)]
struct Committed(HashMap<(String, String), Vec<u8>>);

impl Committed {
    fn with(namespace: &str, key: &str, value: &str) -> Committed {
        let mut state = Committed::default();
        state
            .0
            .insert((namespace.into(), key.into()), value.as_bytes().to_vec());
        state
    }
}

impl StateReader for Committed {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(&(namespace.to_owned(), key.to_owned())).cloned())
    }
}

/// Loads fixture `crate_name` as plugin `name` with `manifest`.
fn load(crate_name: &str, name: &str, manifest: &str) -> LoadedPlugin {
    let runtime = PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(shared_cache_dir()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let manifest = Manifest::parse(name, Path::new("test.toml"), manifest).expect("manifest");
    let wasm = component_bytes(crate_name);
    runtime
        .load(name, Path::new("test.wasm"), &wasm, manifest, "test".into())
        .expect("the fixture loads")
}

fn instance(plugin: &LoadedPlugin, state: Committed) -> PluginInstance {
    let mut instance = plugin.instantiate(Arc::new(state)).expect("instantiate");
    instance.begin_batch();
    instance
}

fn message(offset: u64, payload: &[u8]) -> Message {
    Message {
        topic: Arc::from("in"),
        partition: 0,
        offset,
        timestamp_ms: 1_764_000_000_000 + offset,
        key: Some(b"k".to_vec()),
        headers: Vec::new(),
        payload: payload.to_vec(),
    }
}

/// The state writes of a batch's effects, sorted by key (a batch has one
/// write per key), with the kind of write.
fn state_writes(effects: &Effects) -> Vec<String> {
    let mut writes: Vec<String> = effects
        .state
        .iter()
        .map(|op| match op {
            StateOp::Set { key, value } => {
                format!("set {key} {}", String::from_utf8_lossy(value))
            }
            StateOp::Delete { key } => format!("delete {key}"),
            StateOp::Increment { key, delta } => format!("increment {key} {delta}"),
        })
        .collect();
    writes.sort_by(|a, b| a.split(' ').nth(1).cmp(&b.split(' ').nth(1)));
    writes
}

#[test]
fn a_batch_hands_out_the_coalesced_effects_of_its_acknowledged_messages() {
    let plugin = load(
        "fixture-effects",
        "effector",
        "[capabilities]\npublish = [\"out\"]\n[config]\ntarget = \"out\"",
    );
    let mut instance = instance(&plugin, Committed::default());

    let first = instance.handle(message(0, b"a"), 1);
    assert_eq!(first.outcome, Outcome::Ack);
    // A retry and a dead letter keep nothing, though they staged the same
    // writes before answering.
    for (offset, payload) in [(1, &b"retry-me"[..]), (2, b"dead-me")] {
        let handled = instance.handle(message(offset, payload), 1);
        assert!(
            !matches!(handled.outcome, Outcome::Ack),
            "{:?}",
            handled.outcome
        );
        assert!(!handled.trapped);
    }
    let next = instance.handle(message(3, b"b"), 1);
    assert_eq!(next.outcome, Outcome::Ack, "read-your-writes holds");

    let effects = instance.take_effects();
    // One write per key: the two acknowledged increments of `count` are
    // one increment by 2, `last` holds the last acknowledged payload.
    assert_eq!(
        state_writes(&effects),
        [
            "increment count 2",
            "set last b",
            "set seen/0/0 a",
            "set seen/0/3 b"
        ]
    );
    let published: Vec<(&str, &[u8], &str)> = effects
        .publishes
        .iter()
        .map(|(topic, message)| {
            assert_eq!(message.key.as_deref(), Some(&b"k"[..]));
            (
                topic.as_str(),
                &message.payload[..],
                message.headers[0].1.as_str(),
            )
        })
        .collect();
    assert_eq!(
        published,
        [("out", &b"a"[..], "0"), ("out", &b"b"[..], "3")]
    );

    // The next batch starts empty: nothing is handed out twice.
    instance.begin_batch();
    assert!(instance.take_effects().is_empty());
}

#[test]
fn a_message_sees_the_acknowledged_writes_of_earlier_messages_in_its_batch() {
    // One user, and a level reached with the first point: the first order
    // sets the level, the others read it back and leave it alone.
    let plugin = load(
        "membership",
        "membership",
        "[config]\nlevels = \"silver:1,gold:1000000000\"",
    );
    let mut orders = Generator::new(Shape {
        users: 1,
        ..Shape::default()
    });
    let mut order = |offset| {
        let order = orders.next_order();
        message(offset, &serde_json::to_vec(&order).expect("order JSON"))
    };
    let levels_set = |instance: &mut PluginInstance| {
        state_writes(&instance.take_effects())
            .into_iter()
            .filter(|w| w.starts_with("set level/u-00000") || w.contains("upgrades"))
            .collect::<Vec<_>>()
    };

    // The second order sees the level the first one set: the level is
    // written once and the upgrade counted once.
    let mut instance = instance(&plugin, Committed::default());
    for offset in 0..2 {
        assert_eq!(instance.handle(order(offset), 1).outcome, Outcome::Ack);
    }
    assert_eq!(
        levels_set(&mut instance),
        ["set level/u-00000 silver", "increment stats/upgrades 1"]
    );

    // A new batch reads the committed state again (here: still nothing,
    // since nobody committed), so the level is set again.
    instance.begin_batch();
    assert_eq!(instance.handle(order(2), 1).outcome, Outcome::Ack);
    assert_eq!(levels_set(&mut instance).len(), 2);

    // Reads fall through to the committed state.
    let mut instance = self::instance(
        &plugin,
        Committed::with("membership", "level/u-00000", "silver"),
    );
    assert_eq!(instance.handle(order(3), 1).outcome, Outcome::Ack);
    assert!(levels_set(&mut instance).is_empty());
}

#[test]
fn a_host_error_on_committed_state_becomes_a_retry_without_effects() {
    // `count` holds text that is no integer: `increment` fails, the SDK
    // turns the error into a retry, and nothing staged escapes.
    let plugin = load(
        "fixture-effects",
        "effector",
        "[capabilities]\npublish = [\"*\"]",
    );
    let mut instance = instance(
        &plugin,
        Committed::with("effector", "count", "not a number"),
    );
    let handled = instance.handle(message(0, b"a"), 1);
    match &handled.outcome {
        Outcome::Retry { reason, .. } => {
            assert!(reason.contains("not a decimal integer"), "{reason}")
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert!(!handled.trapped);
    assert!(instance.take_effects().is_empty());
}

#[test]
fn a_trap_discards_the_instance_and_a_fresh_one_carries_on() {
    for (crate_name, manifest, payload, reason) in [
        ("fixture-trap", "", "trap", "trap:"),
        (
            "fixture-loop",
            "[limits]\ndeadline_ms = 100",
            "loop",
            "deadline",
        ),
        (
            "fixture-alloc",
            "[limits]\nmemory_mib = 16",
            "alloc",
            "trap:",
        ),
    ] {
        let plugin = load(crate_name, "victim", manifest);
        let mut instance = instance(&plugin, Committed::default());
        assert_eq!(
            instance.handle(message(0, b"fine"), 1).outcome,
            Outcome::Ack,
            "{crate_name}"
        );

        let handled = instance.handle(message(1, payload.as_bytes()), 1);
        assert!(handled.trapped, "{crate_name}: {:?}", handled.outcome);
        match &handled.outcome {
            Outcome::Retry { reason: text, .. } => {
                assert!(text.contains(reason), "{crate_name}: {text}")
            }
            other => panic!("{crate_name}: a trap must be a failed attempt, got {other:?}"),
        }
        // What the message before the trap staged stays: it was acknowledged.
        assert_eq!(
            state_writes(&instance.take_effects()),
            ["increment acked 1"],
            "{crate_name}"
        );
        assert!(
            !instance.is_usable(),
            "{crate_name}: a trapped instance must be discarded"
        );
        // Never entered again: later calls fail without running the guest.
        let again = instance.handle(message(2, b"fine"), 1);
        assert!(
            again.trapped && again.outcome != Outcome::Ack,
            "{crate_name}"
        );

        let mut fresh = self::instance(&plugin, Committed::default());
        let handled = fresh.handle(message(2, b"fine"), 1);
        assert_eq!(handled.outcome, Outcome::Ack, "{crate_name}");
        assert_eq!(
            state_writes(&fresh.take_effects()),
            ["increment acked 1"],
            "{crate_name}"
        );
    }
}
