//! The Courier plugin SDK: write a consumer plugin in a few lines.
//!
//! A Courier plugin is a WebAssembly component that implements the
//! `consumer` world of `wit/courier-plugin.wit`. This crate generates the
//! bindings for that world once and wraps them in a small Rust API:
//!
//! - [`Plugin`], the trait a plugin implements, and [`export!`], which turns
//!   the implementing type into the component's `handler` export;
//! - [`Message`] (one delivery) and [`Outcome`] (the plugin's decision);
//! - [`state`], the plugin's private key-value store;
//! - [`publish`], [`publish_json`] and [`publish_with_headers`];
//! - [`config`], the manifest's `[config]` table, and [`log`].
//!
//! # Guarantees
//!
//! Delivery is at-least-once, but everything a plugin does through [`state`]
//! and the `publish` functions is *staged* while [`Plugin::handle`] runs and
//! committed atomically with the acknowledgement of that message. If the
//! plugin answers [`Outcome::retry`] or [`Outcome::dead_letter`], or traps
//! (panics, runs out of memory or time), the staged effects are discarded.
//! A plugin that keeps all its effects inside these capabilities therefore
//! has effectively-once effects, whatever happens to it. Reads through
//! [`state`] see the committed state plus the plugin's own staged writes.
//!
//! # Example
//!
//! ```no_run
//! use courier_plugin::{Error, Message, Outcome, Plugin, ResultExt, config, log, publish_json, state};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Signup<'a> {
//!     user_id: &'a str,
//! }
//!
//! #[derive(Serialize)]
//! struct Welcome<'a> {
//!     user_id: &'a str,
//!     number: i64,
//! }
//!
//! struct Greeter;
//!
//! impl Plugin for Greeter {
//!     fn handle(message: Message) -> Result<Outcome, Error> {
//!         // A signup that does not parse never will: dead-letter it.
//!         let signup: Signup = message.json().permanent()?;
//!         // A host error (`?`) retries the message, its text the reason.
//!         let number = state::increment("stats/signups", 1)?;
//!         let topic = config::get_or("topic", "welcome")?;
//!         let welcome = Welcome { user_id: signup.user_id, number };
//!         publish_json(&topic, Some(signup.user_id.as_bytes()), &welcome)?;
//!         log::debug!("welcomed {} as number {number}", signup.user_id);
//!         Ok(Outcome::ack())
//!     }
//! }
//!
//! courier_plugin::export!(Greeter);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: a `cdylib`
//! crate compiles straight to a component.

#![warn(missing_docs)]

pub mod config;
mod errors;
pub mod log;
mod message;
pub mod state;

pub use errors::{Error, ResultExt};
pub use message::{Message, Outcome, RetryRequest};

/// Parses JSON bytes into `T`, which may borrow from them: like
/// `serde_json::from_slice`, but the bytes are checked as UTF-8 once, not
/// string by string (a call each in Wasm, several per order). Bytes that
/// are not UTF-8 go to `from_slice`, whose error says where they are.
pub fn from_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// The generated bindings of the `consumer` world. Used by [`export!`]; not
/// part of the supported API.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "consumer",
        // Borrowed arguments for imports: calling the host copies nothing
        // into fresh `String`s or `Vec`s first.
        ownership: Borrowing { duplicate_if_necessary: true },
        pub_export_macro: true,
        export_macro_name: "export_consumer",
        default_bindings_module: "$crate::bindings",
    });
}

use bindings::courier::plugin::producer;

/// A consumer plugin: decides the [`Outcome`] of each message.
///
/// Courier calls [`handle`](Plugin::handle) once per delivered message, in
/// partition order for ordered subscriptions, and never concurrently on one
/// instance. Register the implementing type with [`export!`].
pub trait Plugin {
    /// Handles one delivery of one message.
    ///
    /// Effects made through [`state`] and the `publish` functions during this
    /// call are committed with the message's acknowledgement if this returns
    /// `Ok(`[`Outcome::ack`]`)`, and discarded otherwise. An `Err` is a retry
    /// with the error's text as the reason, or a dead letter if the error
    /// is [permanent](Error::permanent). A panic traps the instance: that
    /// counts as a failed attempt, like a retry with the default backoff.
    fn handle(message: Message) -> Result<Outcome, Error>;
}

/// Exports a [`Plugin`] type as the component's `courier:plugin/handler`.
///
/// Use it once per plugin crate, at the crate root, with the name of the type
/// (an identifier) that implements [`Plugin`]:
///
/// ```ignore
/// courier_plugin::export!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export {
    ($plugin:ident) => {
        impl $crate::bindings::exports::courier::plugin::handler::Guest for $plugin {
            #[inline]
            fn handle(message: $crate::Message) -> $crate::Outcome {
                match <$plugin as $crate::Plugin>::handle(message) {
                    Ok(outcome) => outcome,
                    Err(error) => $crate::Outcome::from(error),
                }
            }
        }
        $crate::bindings::export_consumer!($plugin with_types_in $crate::bindings);
    };
}

/// Publishes `payload` to `topic`, partitioned by `key`.
///
/// The message is staged: consumers see it only once the message being
/// handled is acknowledged, in the same atomic write; it is discarded if that
/// message is retried or dead-lettered. Fails with [`Error::AccessDenied`]
/// unless the manifest's `[capabilities] publish` list grants `topic`.
pub fn publish(topic: &str, key: Option<&[u8]>, payload: impl AsRef<[u8]>) -> Result<(), Error> {
    publish_with_headers(topic, key, &[], payload)
}

/// Serializes `value` as JSON and publishes it like [`publish`] does.
///
/// Fails with [`Error::Json`] if `value` cannot be serialized; nothing is
/// staged then.
pub fn publish_json<T: serde::Serialize + ?Sized>(
    topic: &str,
    key: Option<&[u8]>,
    value: &T,
) -> Result<(), Error> {
    let payload = serde_json::to_vec(value)?;
    publish_with_headers(topic, key, &[], payload)
}

/// Publishes `payload` to `topic` with `(name, value)` headers, which
/// subscribers see in this order. Staged like [`publish`].
pub fn publish_with_headers(
    topic: &str,
    key: Option<&[u8]>,
    headers: &[(&str, &str)],
    payload: impl AsRef<[u8]>,
) -> Result<(), Error> {
    producer::publish(topic, key, headers, payload.as_ref())?;
    Ok(())
}
