//! The engine's end-to-end tests: the real engine (in-process on port 0,
//! or the real `courier` binary for crash and CLI tests), real fjall, real
//! compiled plugins and real HTTP. One test binary, one module per theme;
//! every test is named after the scenario it proves.
//!
//! Run with `cargo test -p courier-tests --test engine` (build the binary
//! first with `cargo build -p courier`, or run `cargo test --workspace`).

mod api_errors;
mod bench;
mod common;
mod config;
mod crash;
mod failures;
mod fanout;
mod hot_add;
mod isolation;
mod restart;
mod scaffold;
mod sync;
mod tail;
