//! `courier bench`: the order fan-out benchmark. It publishes generated
//! orders (`courier-workload`) to an engine of its own or a running one,
//! measures the publish rate, the end-to-end drain and the latency at a
//! fixed rate, reads the engine's own histograms back from `/metrics`
//! ([`scrape`]), and checks that the plugins did their work.

#![deny(clippy::unwrap_used)]

mod bench;
pub mod scrape;

pub use bench::{BenchArgs, GenerateArgs, generate, run};
