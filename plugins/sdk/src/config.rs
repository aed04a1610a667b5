//! Read-only configuration: the manifest's `[config]` table.
//!
//! The configuration belongs to the plugin version: a changed manifest is
//! loaded as a new version with new instances, so values never change under
//! a running instance and may be cached (e.g. in a `std::sync::OnceLock`).

use std::fmt::Display;
use std::str::FromStr;

use crate::Error;
use crate::bindings::courier::plugin::config;

/// The value of `key`, or `None` if the manifest does not set it.
pub fn get(key: &str) -> Result<Option<String>, Error> {
    Ok(config::get(key)?)
}

/// The value of `key`, or `default` if the manifest does not set it.
pub fn get_or(key: &str, default: &str) -> Result<String, Error> {
    Ok(get(key)?.unwrap_or_else(|| default.to_owned()))
}

/// The value of `key` parsed with [`FromStr`], or `None` if the manifest
/// does not set it.
///
/// Fails with [`Error::InvalidConfig`] if the value does not parse, e.g.
/// `config::parse::<u32>("delay_ms")` on `delay_ms = "soon"`.
pub fn parse<T>(key: &str) -> Result<Option<T>, Error>
where
    T: FromStr,
    T::Err: Display,
{
    let Some(value) = get(key)? else {
        return Ok(None);
    };
    match value.trim().parse() {
        Ok(parsed) => Ok(Some(parsed)),
        Err(e) => Err(Error::InvalidConfig {
            key: key.to_owned(),
            reason: e.to_string(),
            value,
        }),
    }
}

/// Every `(key, value)` pair of the manifest's `[config]` table.
pub fn all() -> Result<Vec<(String, String)>, Error> {
    Ok(config::get_all()?)
}
