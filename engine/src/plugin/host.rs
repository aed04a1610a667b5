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

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::StateReader;
use super::bindings::courier::plugin::types::Error as WitError;
use super::bindings::courier::plugin::{config, logging, producer, store, types};
use super::manifest::Manifest;
use crate::storage::{Effects, MAX_STATE_KEY_BYTES, NewMessage, StateOp};

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

/// Staged effects: the current message's, plus the view of what the
/// batch's acknowledged messages wrote (not yet committed).
#[derive(Default)]
pub struct Staging {
    /// The current message's effects, in call order.
    pub effects: Effects,
    /// Bytes the current message staged (payloads and values).
    bytes: usize,
    /// State as the current message sees it after its own writes.
    current: foldhash::HashMap<String, Option<Vec<u8>>>,
    /// State as the batch's acknowledged messages left it.
    batch: foldhash::HashMap<String, Option<Vec<u8>>>,
}

impl Staging {
    fn lookup(&self, key: &str) -> Option<&Option<Vec<u8>>> {
        self.current.get(key).or_else(|| self.batch.get(key))
    }

    /// Starts a message: nothing of it is staged yet.
    pub fn begin_message(&mut self) {
        self.effects = Effects::default();
        self.bytes = 0;
        self.current.clear();
    }

    /// Ends the current message: its effects leave; if it was acknowledged,
    /// its writes stay visible to the rest of the batch.
    pub fn finish_message(&mut self, acknowledged: bool) -> Effects {
        if acknowledged {
            self.batch.extend(self.current.drain());
        } else {
            self.current.clear();
        }
        self.bytes = 0;
        std::mem::take(&mut self.effects)
    }

    /// Starts a batch: everything before it is committed.
    pub fn begin_batch(&mut self) {
        self.batch.clear();
        self.begin_message();
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

    fn push_state(&mut self, op: StateOp, bytes: usize) -> Result<(), WitError> {
        if self.effects.state.len() >= MAX_STATE_OPS_PER_MESSAGE {
            return Err(limit(format!(
                "one message may stage at most {MAX_STATE_OPS_PER_MESSAGE} state writes"
            )));
        }
        self.charge(bytes)?;
        self.effects.state.push(op);
        Ok(())
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
        crate::storage::validate_name("topic", &topic)
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
        if self.staging.effects.publishes.len() >= MAX_PUBLISHES_PER_MESSAGE {
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
        self.staging.effects.publishes.push((
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
        let bytes = key.len() + value.len();
        self.staging.push_state(
            StateOp::Set {
                key: key.clone(),
                value: value.clone(),
            },
            bytes,
        )?;
        self.staging.current.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) -> Result<(), WitError> {
        check_key(&key)?;
        self.staging
            .push_state(StateOp::Delete { key: key.clone() }, key.len())?;
        self.staging.current.insert(key, None);
        Ok(())
    }

    fn exists(&mut self, key: String) -> Result<bool, WitError> {
        check_key(&key)?;
        Ok(self.staged_value(&key)?.is_some())
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, WitError> {
        check_key(&key)?;
        let current = parse_counter(self.staged_value(&key)?.as_deref())?;
        let new = current
            .checked_add(delta)
            .ok_or_else(|| WitError::InvalidArgument("the counter would overflow".into()))?;
        self.staging.push_state(
            StateOp::Increment {
                key: key.clone(),
                delta,
            },
            key.len() + 8,
        )?;
        self.staging
            .current
            .insert(key, Some(new.to_string().into_bytes()));
        Ok(new)
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, context: String, message: String) {
        let message = truncate(&message, MAX_LOG_LINE_BYTES);
        let context = truncate(&context, MAX_LOG_LINE_BYTES / 4);
        let plugin = &*self.plugin.name;
        let (topic, partition, offset) = match &self.current {
            Some((topic, partition, offset)) => (&**topic, *partition, *offset),
            None => ("", 0, 0),
        };
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "courier::plugin::guest", $level, plugin, topic, partition, offset, context, "{message}")
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
    use super::*;

    #[test]
    fn acknowledged_writes_stay_visible_for_the_batch_and_others_vanish() {
        let mut staging = Staging::default();
        staging.begin_batch();
        staging.current.insert("a".into(), Some(b"1".to_vec()));
        staging.effects.state.push(StateOp::Set {
            key: "a".into(),
            value: b"1".to_vec(),
        });
        let effects = staging.finish_message(true);
        assert_eq!(effects.state.len(), 1);
        assert_eq!(staging.lookup("a"), Some(&Some(b"1".to_vec())));

        staging.begin_message();
        staging.current.insert("b".into(), None);
        staging.finish_message(false);
        assert_eq!(staging.lookup("b"), None);

        staging.begin_batch();
        assert_eq!(staging.lookup("a"), None);
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
