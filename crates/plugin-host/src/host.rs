//! The host side of the contract: what a plugin can ask of Courier while
//! `handle` runs.
//!
//! Nothing here performs an effect. `publish` and the `store` writes are
//! *staged* in [`Staging`]: the current message's effects are handed out
//! with its outcome, and only an acknowledged message's effects become
//! visible to the rest of the batch (reads see the committed state, then the
//! batch's acknowledged writes, then the current message's writes).
//!
//! Every guest-driven allocation is bounded: sizes of keys, values,
//! payloads, headers and log lines, and the number of effects per message.
//! A call over a limit fails with `limit-exceeded`; it never grows host
//! memory without bound.

use std::collections::hash_map::Entry;
use std::io::Write as _;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::StateReader;
use super::bindings::courier::plugin::types::Error as WitError;
use super::bindings::courier::plugin::{config, logging, producer, store, types};
use super::manifest::{LogLevelSpec, Manifest};
use courier_core::{Effects, MAX_STATE_KEY_BYTES, NewMessage, StateOp};

/// Largest state value a plugin may write.
pub const MAX_STATE_VALUE_BYTES: usize = 1024 * 1024;
/// Most publishes one message may stage.
pub const MAX_PUBLISHES_PER_MESSAGE: usize = 1024;
/// Most state writes one message may stage.
pub const MAX_STATE_OPS_PER_MESSAGE: usize = 4096;
/// Most bytes one message may stage in all (payloads + values).
pub const MAX_STAGED_BYTES_PER_MESSAGE: usize = 16 * 1024 * 1024;
/// Most headers on a published message, and the longest name or value.
pub const MAX_PUBLISH_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 4096;
/// Longest log line kept (longer lines are truncated).
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// What every instance of one plugin version shares.
pub struct PluginContext {
    pub name: Arc<str>,
    pub manifest: Manifest,
    /// Largest payload a publish may carry (the store's message limit).
    pub max_message_bytes: usize,
}

/// The store data of one instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) plugin: Arc<PluginContext>,
    state: Arc<dyn StateReader>,
    pub(super) staging: Staging,
    /// The message being handled, for log lines.
    pub(super) current: Option<(Arc<str>, u32, u64)>,
    logs: LogBudget,
}

/// The rate limit of one instance's log lines (`[logging]
/// max_lines_per_second`), by whole seconds.
#[derive(Default)]
struct LogBudget {
    second: Option<std::time::Instant>,
    lines: u32,
    dropped: u64,
}

impl LogBudget {
    /// Whether one more line may go out now; reports what the last full
    /// second dropped when a new one starts.
    fn admit(&mut self, limit: u32, plugin: &str) -> bool {
        if limit == 0 {
            return true;
        }
        let now = std::time::Instant::now();
        let fresh = self
            .second
            .is_none_or(|start| now.duration_since(start) >= std::time::Duration::from_secs(1));
        if fresh {
            if self.dropped > 0 {
                tracing::warn!(
                    plugin,
                    dropped = self.dropped,
                    limit,
                    "plugin logged more lines than [logging] max_lines_per_second; dropped the rest"
                );
            }
            *self = LogBudget {
                second: Some(now),
                lines: 0,
                dropped: 0,
            };
        }
        if self.lines < limit {
            self.lines += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

impl HostState {
    pub fn new(
        plugin: Arc<PluginContext>,
        wasi: WasiCtx,
        state: Arc<dyn StateReader>,
    ) -> HostState {
        let memory = (plugin.manifest.limits.memory_mib as usize) << 20;
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            plugin,
            state,
            staging: Staging::default(),
            current: None,
            logs: LogBudget::default(),
        }
    }

    fn staged_value(&self, key: &str) -> Result<Option<Vec<u8>>, WitError> {
        if let Some(value) = self.staging.lookup(key) {
            return Ok(value.clone());
        }
        self.state
            .get(&self.plugin.name, key)
            .map_err(WitError::Other)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// One key's staged write, as the handler sees it.
#[derive(Debug)]
struct Staged {
    /// The value after the staged writes (`None`: absent).
    view: Option<Vec<u8>>,
    /// How it commits.
    change: Change,
    /// The message that wrote it last, and what it held before that
    /// message: restored if the message is not acknowledged.
    writer: u64,
    before: Before,
}

#[derive(Debug)]
enum Before {
    /// The batch had not written the key.
    Absent,
    Was {
        view: Option<Vec<u8>>,
        change: Change,
    },
    /// A counter that only increments staged (kept as a number: undoing
    /// an increment copies no bytes).
    Counter { value: i64, change: Change },
}

impl Staged {
    /// Adds `delta` to the counter; returns the new value. Changes nothing
    /// if the value is not a counter or would overflow.
    fn add(&mut self, delta: i64) -> Result<i64, WitError> {
        let overflow = || WitError::InvalidArgument("the counter would overflow".into());
        let new = parse_counter(self.view.as_deref())?
            .checked_add(delta)
            .ok_or_else(overflow)?;
        if let Change::Add(sum) = &mut self.change {
            *sum = sum.checked_add(delta).ok_or_else(overflow)?;
        }
        // Reuses the old value's buffer: no allocation per increment.
        let mut text = self.view.take().unwrap_or_default();
        text.clear();
        // Writing to a Vec cannot fail.
        let _ = write!(text, "{new}");
        self.view = Some(text);
        Ok(new)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// `set` or `delete`: `view` is written as is.
    Write,
    /// Only `increment`s: the sum of their deltas is added at commit time
    /// to the latest committed value (so concurrent increments from other
    /// partitions are never lost).
    Add(i64),
}

/// Staged effects, coalesced per batch.
///
/// `staged` holds each key as the batch's writes left it: the acknowledged
/// messages' and the current message's. A message's first write to a key
/// keeps what the key held before it; an ack leaves the new value, any
/// other outcome puts the old one back (rare: a scan of the batch's keys).
/// So each key has one staged write per batch, whatever number of calls
/// made it: a counter every message increments costs one `Increment` of
/// the summed deltas, a key set by many messages one `Set` of the last
/// value. That is what committing every message's writes in order would
/// leave, because a batch's acknowledgements commit together in one atomic
/// write (see [`Staging::take_batch`]). Publishes keep their order.
#[derive(Default)]
pub struct Staging {
    /// The current message's publishes, in call order.
    publishes: Vec<(String, NewMessage)>,
    /// State writes the current message made (bounded per message).
    writes: usize,
    /// Bytes the current message staged (payloads and values).
    bytes: usize,
    /// Numbers the messages of a batch, from 1.
    message: u64,
    /// Every key the batch wrote, as the current message sees it.
    staged: foldhash::HashMap<String, Staged>,
    /// The acknowledged messages' publishes, in order.
    batch_publishes: Vec<(String, NewMessage)>,
}

impl Staging {
    fn lookup(&self, key: &str) -> Option<&Option<Vec<u8>>> {
        self.staged.get(key).map(|staged| &staged.view)
    }

    /// Starts a message: nothing of it is staged yet.
    pub fn begin_message(&mut self) {
        self.publishes.clear();
        self.message += 1;
        self.writes = 0;
        self.bytes = 0;
    }

    /// Ends the current message: if it was acknowledged, its effects join
    /// the batch's (and its writes stay visible to the rest of the batch);
    /// otherwise they are undone.
    pub fn finish_message(&mut self, acknowledged: bool) {
        if acknowledged {
            self.batch_publishes.append(&mut self.publishes);
        } else if self.writes > 0 {
            let message = self.message;
            self.staged.retain(|_, staged| {
                if staged.writer != message {
                    return true;
                }
                staged.writer = 0;
                match std::mem::replace(&mut staged.before, Before::Absent) {
                    Before::Absent => false,
                    Before::Was { view, change } => {
                        staged.view = view;
                        staged.change = change;
                        true
                    }
                    Before::Counter { value, change } => {
                        staged.view = Some(value.to_string().into_bytes());
                        staged.change = change;
                        true
                    }
                }
            });
        }
        self.begin_message();
    }

    /// Starts a batch: everything before it is committed (or dropped).
    pub fn begin_batch(&mut self) {
        self.staged.clear();
        self.batch_publishes.clear();
        self.message = 0;
        self.begin_message();
    }

    /// The coalesced effects of the batch's acknowledged messages, to commit
    /// with their acknowledgements; the batch starts over empty. Call it
    /// between messages (after `finish_message`).
    pub fn take_batch(&mut self) -> Effects {
        let state = self
            .staged
            .drain()
            .map(|(key, staged)| match (staged.change, staged.view) {
                (Change::Add(delta), _) => StateOp::Increment { key, delta },
                (Change::Write, Some(value)) => StateOp::Set { key, value },
                (Change::Write, None) => StateOp::Delete { key },
            })
            .collect();
        let publishes = std::mem::take(&mut self.batch_publishes);
        self.begin_message();
        Effects { publishes, state }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), WitError> {
        if self.bytes + bytes > MAX_STAGED_BYTES_PER_MESSAGE {
            return Err(limit(format!(
                "one message may stage at most {MAX_STAGED_BYTES_PER_MESSAGE} bytes of effects"
            )));
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Counts one state write of the current message against its limits.
    fn charge_write(&mut self, bytes: usize) -> Result<(), WitError> {
        if self.writes >= MAX_STATE_OPS_PER_MESSAGE {
            return Err(limit(format!(
                "one message may stage at most {MAX_STATE_OPS_PER_MESSAGE} state writes"
            )));
        }
        self.charge(bytes)?;
        self.writes += 1;
        Ok(())
    }

    /// Stages an absolute write (`set`, or `delete` with `None`).
    fn write(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), WitError> {
        self.charge_write(key.len() + value.as_ref().map_or(0, Vec::len))?;
        let message = self.message;
        match self.staged.entry(key) {
            Entry::Occupied(mut entry) => {
                let staged = entry.get_mut();
                if staged.writer != message {
                    let view = std::mem::take(&mut staged.view);
                    staged.before = Before::Was {
                        view,
                        change: staged.change,
                    };
                    staged.writer = message;
                }
                staged.view = value;
                staged.change = Change::Write;
            }
            Entry::Vacant(entry) => {
                entry.insert(Staged {
                    view: value,
                    change: Change::Write,
                    writer: message,
                    before: Before::Absent,
                });
            }
        }
        Ok(())
    }

    /// Stages `key += delta` on top of the `committed` counter (read only
    /// when the batch has not written `key`) and returns the new value.
    fn increment(
        &mut self,
        key: String,
        delta: i64,
        committed: impl FnOnce(&str) -> Result<i64, WitError>,
    ) -> Result<i64, WitError> {
        self.charge_write(key.len() + 8)?;
        let message = self.message;
        if let Some(staged) = self.staged.get_mut(&key) {
            if staged.writer != message {
                staged.before = match staged.change {
                    // Only increments staged it: the view is the counter's
                    // own text, rebuilt exactly from the number.
                    Change::Add(_) => Before::Counter {
                        value: parse_counter(staged.view.as_deref())?,
                        change: staged.change,
                    },
                    // A set or delete: restore its bytes as they were
                    // (absent, or text like `007`).
                    Change::Write => Before::Was {
                        view: staged.view.clone(),
                        change: staged.change,
                    },
                };
                staged.writer = message;
            }
            return staged.add(delta);
        }
        let new = committed(&key)?
            .checked_add(delta)
            .ok_or_else(|| WitError::InvalidArgument("the counter would overflow".into()))?;
        let mut view = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = write!(view, "{new}");
        let staged = Staged {
            view: Some(view),
            change: Change::Add(delta),
            writer: message,
            before: Before::Absent,
        };
        self.staged.insert(key, staged);
        Ok(new)
    }
}

fn limit(text: String) -> WitError {
    WitError::LimitExceeded(text)
}

fn check_key(key: &str) -> Result<(), WitError> {
    if key.is_empty() || key.len() > MAX_STATE_KEY_BYTES {
        return Err(WitError::InvalidArgument(format!(
            "state keys must have 1 to {MAX_STATE_KEY_BYTES} bytes (got {})",
            key.len()
        )));
    }
    Ok(())
}

fn parse_counter(value: Option<&[u8]>) -> Result<i64, WitError> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| {
                WitError::InvalidArgument("the current value is not a decimal integer".into())
            }),
    }
}

impl types::Host for HostState {}

impl producer::Host for HostState {
    fn publish(
        &mut self,
        topic: String,
        key: Option<Vec<u8>>,
        headers: Vec<(String, String)>,
        payload: Vec<u8>,
    ) -> Result<(), WitError> {
        if !self.plugin.manifest.capabilities.may_publish(&topic) {
            return Err(WitError::AccessDenied);
        }
        courier_core::validate_name("topic", &topic)
            .map_err(|e| WitError::InvalidArgument(e.to_string()))?;
        if payload.len() > self.plugin.max_message_bytes {
            return Err(limit(format!(
                "a published payload may have at most {} bytes",
                self.plugin.max_message_bytes
            )));
        }
        if headers.len() > MAX_PUBLISH_HEADERS
            || headers.iter().any(|(name, value)| {
                name.len() > MAX_HEADER_BYTES || value.len() > MAX_HEADER_BYTES
            })
        {
            return Err(limit(format!(
                "at most {MAX_PUBLISH_HEADERS} headers of at most {MAX_HEADER_BYTES} bytes each"
            )));
        }
        if self.staging.publishes.len() >= MAX_PUBLISHES_PER_MESSAGE {
            return Err(limit(format!(
                "one message may stage at most {MAX_PUBLISHES_PER_MESSAGE} publishes"
            )));
        }
        let size = payload.len()
            + key.as_ref().map_or(0, Vec::len)
            + headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        self.staging.charge(size)?;
        self.staging.publishes.push((
            topic,
            NewMessage {
                key,
                headers,
                payload,
            },
        ));
        Ok(())
    }
}

impl store::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        check_key(&key)?;
        self.staged_value(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        check_key(&key)?;
        if value.len() > MAX_STATE_VALUE_BYTES {
            return Err(limit(format!(
                "state values may have at most {MAX_STATE_VALUE_BYTES} bytes"
            )));
        }
        self.staging.write(key, Some(value))
    }

    fn delete(&mut self, key: String) -> Result<(), WitError> {
        check_key(&key)?;
        self.staging.write(key, None)
    }

    fn exists(&mut self, key: String) -> Result<bool, WitError> {
        check_key(&key)?;
        Ok(self.staged_value(&key)?.is_some())
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, WitError> {
        check_key(&key)?;
        let (state, name) = (&self.state, &self.plugin.name);
        self.staging.increment(key, delta, |key| {
            // Parsed where it lies: a counter read copies nothing.
            let mut parsed = Ok(0);
            state
                .read(name, key, &mut |value| parsed = parse_counter(value))
                .map_err(WitError::Other)?;
            parsed
        })
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, context: String, message: String) {
        let logging = &self.plugin.manifest.logging;
        if severity(level) < logging.level {
            return;
        }
        let plugin = &*self.plugin.name;
        if !self.logs.admit(logging.max_lines_per_second, plugin) {
            return;
        }
        let message = truncate(&message, MAX_LOG_LINE_BYTES);
        let context = truncate(&context, MAX_LOG_LINE_BYTES / 4);
        let (topic, partition, offset) = match &self.current {
            Some((topic, partition, offset)) => (&**topic, *partition, *offset),
            None => ("", 0, 0),
        };
        // No `context=""` on every line of plugins that name none.
        macro_rules! emit {
            ($level:expr) => {
                if context.is_empty() {
                    tracing::event!(target: "courier::plugin::guest", $level, plugin, topic, partition, offset, "{message}")
                } else {
                    tracing::event!(target: "courier::plugin::guest", $level, plugin, topic, partition, offset, context, "{message}")
                }
            };
        }
        match level {
            logging::Level::Trace => emit!(tracing::Level::TRACE),
            logging::Level::Debug => emit!(tracing::Level::DEBUG),
            logging::Level::Info => emit!(tracing::Level::INFO),
            logging::Level::Warn => emit!(tracing::Level::WARN),
            logging::Level::Error | logging::Level::Critical => emit!(tracing::Level::ERROR),
        }
    }
}

/// The manifest's scale for a guest's level (`critical` is an error).
fn severity(level: logging::Level) -> LogLevelSpec {
    match level {
        logging::Level::Trace => LogLevelSpec::Trace,
        logging::Level::Debug => LogLevelSpec::Debug,
        logging::Level::Info => LogLevelSpec::Info,
        logging::Level::Warn => LogLevelSpec::Warn,
        logging::Level::Error | logging::Level::Critical => LogLevelSpec::Error,
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<String>, WitError> {
        Ok(self.plugin.manifest.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, WitError> {
        Ok(self
            .plugin
            .manifest
            .config
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(super) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_beyond_the_budget_are_dropped_and_counted_per_second() {
        let mut budget = LogBudget::default();
        assert!((0..3).all(|_| budget.admit(3, "p")));
        assert!(!budget.admit(3, "p"));
        assert!(!budget.admit(3, "p"));
        assert_eq!(budget.dropped, 2);
        // A new second: the count is reported (a warning) and reset.
        budget.second = budget
            .second
            .and_then(|start| start.checked_sub(std::time::Duration::from_secs(1)));
        assert!(budget.admit(3, "p"));
        assert_eq!((budget.lines, budget.dropped), (1, 0));
        let mut unlimited = LogBudget::default();
        assert!((0..10_000).all(|_| unlimited.admit(0, "p")));
    }

    #[test]
    fn guest_levels_map_onto_the_manifest_scale() {
        assert_eq!(severity(logging::Level::Critical), LogLevelSpec::Error);
        assert!(severity(logging::Level::Info) < LogLevelSpec::Warn);
        assert!(severity(logging::Level::Warn) >= LogLevelSpec::Warn);
    }

    use super::*;

    fn committed(value: Option<&str>) -> impl FnOnce(&str) -> Result<i64, WitError> {
        move |_| parse_counter(value.map(str::as_bytes))
    }

    fn sorted(effects: &Effects) -> Vec<StateOp> {
        let mut state = effects.state.clone();
        state.sort_by(|a, b| state_key(a).cmp(state_key(b)));
        state
    }

    fn state_key(op: &StateOp) -> &str {
        match op {
            StateOp::Set { key, .. } | StateOp::Delete { key } | StateOp::Increment { key, .. } => {
                key
            }
        }
    }

    #[test]
    fn acknowledged_writes_stay_visible_for_the_batch_and_others_vanish() {
        let mut staging = Staging::default();
        staging.begin_batch();
        staging.write("a".into(), Some(b"1".to_vec())).expect("set");
        staging.finish_message(true);
        assert_eq!(staging.lookup("a"), Some(&Some(b"1".to_vec())));

        staging.write("b".into(), None).expect("delete");
        staging.write("a".into(), Some(b"2".to_vec())).expect("set");
        staging.finish_message(false);
        assert_eq!(staging.lookup("b"), None);
        assert_eq!(staging.lookup("a"), Some(&Some(b"1".to_vec())));

        let effects = staging.take_batch();
        assert_eq!(
            effects.state,
            [StateOp::Set {
                key: "a".into(),
                value: b"1".to_vec()
            }]
        );
        assert_eq!(staging.lookup("a"), None, "a new batch starts empty");
    }

    #[test]
    fn a_batch_commits_one_write_per_key() {
        let mut staging = Staging::default();
        staging.begin_batch();
        for _ in 0..3 {
            assert!(
                staging
                    .increment("hits".into(), 2, committed(Some("10")))
                    .is_ok()
            );
            staging
                .write("last".into(), Some(b"x".to_vec()))
                .expect("set");
            staging.finish_message(true);
        }
        // The committed value is read once; later messages see the staged one.
        let read = staging.increment("hits".into(), 1, |_| panic!("read again"));
        assert_eq!(read.ok(), Some(17));
        staging.finish_message(false);
        // A set then an increment commits the resulting value.
        staging.write("n".into(), Some(b"5".to_vec())).expect("set");
        assert_eq!(
            staging.increment("n".into(), 1, committed(None)).ok(),
            Some(6)
        );
        // A delete then an increment counts from 0.
        staging.write("gone".into(), None).expect("delete");
        assert_eq!(
            staging
                .increment("gone".into(), 3, committed(Some("9")))
                .ok(),
            Some(3)
        );
        staging.finish_message(true);

        let effects = staging.take_batch();
        assert_eq!(
            sorted(&effects),
            [
                StateOp::Set {
                    key: "gone".into(),
                    value: b"3".to_vec()
                },
                StateOp::Increment {
                    key: "hits".into(),
                    delta: 6
                },
                StateOp::Set {
                    key: "last".into(),
                    value: b"x".to_vec()
                },
                StateOp::Set {
                    key: "n".into(),
                    value: b"6".to_vec()
                },
            ]
        );
    }

    #[test]
    fn a_message_that_is_not_acknowledged_leaves_the_batch_as_it_was() {
        let never = |_: &str| -> Result<i64, WitError> { panic!("read again") };
        let mut staging = Staging::default();
        staging.begin_batch();
        assert_eq!(
            staging.increment("n".into(), 5, committed(Some("1"))).ok(),
            Some(6)
        );
        staging.write("s".into(), Some(b"a".to_vec())).expect("set");
        staging.finish_message(true);
        // The next message writes `n` twice, `s` and a new key, then fails.
        assert_eq!(staging.increment("n".into(), 1, never).ok(), Some(7));
        assert_eq!(staging.increment("n".into(), 1, never).ok(), Some(8));
        staging.write("s".into(), None).expect("delete");
        staging
            .write("new".into(), Some(b"x".to_vec()))
            .expect("set");
        staging.finish_message(false);
        assert_eq!(staging.lookup("n"), Some(&Some(b"6".to_vec())));
        assert_eq!(staging.lookup("s"), Some(&Some(b"a".to_vec())));
        assert_eq!(staging.lookup("new"), None);
        // One more acknowledged increment: the batch commits +6 in all.
        assert_eq!(staging.increment("n".into(), 1, never).ok(), Some(7));
        staging.finish_message(true);
        assert_eq!(
            sorted(&staging.take_batch()),
            [
                StateOp::Increment {
                    key: "n".into(),
                    delta: 6
                },
                StateOp::Set {
                    key: "s".into(),
                    value: b"a".to_vec()
                },
            ]
        );
    }

    #[test]
    fn an_undone_increment_restores_a_deleted_or_hand_written_value_exactly() {
        let never = |_: &str| -> Result<i64, WitError> { panic!("read again") };
        let mut staging = Staging::default();
        staging.begin_batch();
        // One message deletes `gone` and sets `padded` to a counter with
        // leading zeros; the next increments both, then fails.
        staging.write("gone".into(), None).expect("delete");
        staging
            .write("padded".into(), Some(b"007".to_vec()))
            .expect("set");
        staging.finish_message(true);
        assert_eq!(staging.increment("gone".into(), 1, never).ok(), Some(1));
        assert_eq!(staging.increment("padded".into(), 1, never).ok(), Some(8));
        staging.finish_message(false);
        assert_eq!(staging.lookup("gone"), Some(&None));
        assert_eq!(staging.lookup("padded"), Some(&Some(b"007".to_vec())));
    }

    #[test]
    fn increments_refuse_non_counters_and_overflow_without_staging() {
        let mut staging = Staging::default();
        staging.begin_batch();
        assert!(
            staging
                .increment("k".into(), 1, committed(Some("x")))
                .is_err()
        );
        assert!(
            staging
                .increment("k".into(), 1, committed(Some(&i64::MAX.to_string())))
                .is_err()
        );
        staging.finish_message(true);
        assert!(staging.take_batch().is_empty());
    }

    #[test]
    fn publishes_keep_their_order_and_leave_with_acks_only() {
        let mut staging = Staging::default();
        staging.begin_batch();
        let publish = |staging: &mut Staging, payload: &[u8]| {
            let message = NewMessage {
                payload: payload.to_vec(),
                ..NewMessage::default()
            };
            staging.publishes.push(("out".into(), message));
        };
        publish(&mut staging, b"1");
        staging.finish_message(true);
        publish(&mut staging, b"dropped");
        staging.finish_message(false);
        publish(&mut staging, b"2");
        publish(&mut staging, b"3");
        staging.finish_message(true);
        let payloads: Vec<Vec<u8>> = staging
            .take_batch()
            .publishes
            .into_iter()
            .map(|(_, message)| message.payload)
            .collect();
        assert_eq!(payloads, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    }

    #[test]
    fn counters_parse_decimal_text_only() {
        assert_eq!(parse_counter(None).ok(), Some(0));
        assert_eq!(parse_counter(Some(b"-42")).ok(), Some(-42));
        assert!(parse_counter(Some(b"4x")).is_err());
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
