//! The cluster backend's end-to-end tests: real 3-node `nats-server`
//! clusters on loopback (`make nats-server` installs the binary), engines
//! on the `jetstream` backend in-process, the real compiled order plugins,
//! real HTTP.

#[allow(dead_code)]
#[path = "../engine/common.rs"]
mod common;
mod failover;
mod fanout;
mod log;
