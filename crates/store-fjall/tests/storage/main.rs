//! Scenario tests of the durable log, on real fjall databases in temp dirs.
//! One binary (faster to link) with a module per area.

mod common;

mod delivery;
mod durable_publish;
mod effects;
mod fanout;
mod faults;
mod introspection;
mod model;
mod retention;
mod retries;
mod state;
mod topics;
