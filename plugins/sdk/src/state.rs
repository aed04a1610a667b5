//! The plugin's private key-value state.
//!
//! Every plugin has its own namespace: keys need no prefix and no other
//! plugin sees them. Writes ([`set`], [`delete`], [`increment`]) are staged
//! and committed atomically with the acknowledgement of the message being
//! handled, or discarded if it is not acknowledged. Reads ([`get`],
//! [`exists`]) see the committed state plus this plugin's own staged writes
//! in the current batch, so a handler always reads its own writes.

use serde::{Serialize, de::DeserializeOwned};

use crate::Error;
use crate::bindings::courier::plugin::store;

/// The value of `key`, or `None` if it has none.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(store::get(key)?)
}

/// The value of `key` parsed as JSON, or `None` if it has none.
///
/// Fails with [`Error::Json`] if the stored value is not JSON for `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match store::get(key)? {
        Some(bytes) => Ok(Some(crate::from_json(&bytes)?)),
        None => Ok(None),
    }
}

/// Sets `key` to `value` (staged until the ack).
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
    Ok(store::set(key, value.as_ref())?)
}

/// Sets `key` to `value` serialized as JSON (staged until the ack).
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value)?;
    Ok(store::set(key, &bytes)?)
}

/// Removes `key` (staged until the ack); removing a missing key is not an
/// error.
pub fn delete(key: &str) -> Result<(), Error> {
    Ok(store::delete(key)?)
}

/// Whether `key` has a value.
pub fn exists(key: &str) -> Result<bool, Error> {
    Ok(store::exists(key)?)
}

/// Adds `delta` to the integer at `key` (decimal text; a missing key counts
/// as 0) and returns the new value as this handler sees it.
///
/// The addition itself is applied at commit time on top of the latest
/// committed value, so increments of one key from concurrent handlers (other
/// partitions, other workers) never lose an update. Use it for every counter
/// instead of `get` + `set`. Fails with [`Error::InvalidArgument`] if the
/// current value is not a decimal integer.
pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
    Ok(store::increment(key, delta)?)
}
