//! The `courier` binary: parses the command line and hands over to the
//! engine (`courier_engine::run` for `serve`) or to a client command.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use courier_engine::config::{Config, Overrides};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&Overrides::from(args)),
        command => {
            quiet_on_closed_pipe();
            runtime().and_then(|rt| rt.block_on(cli::run_client(command)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", causes(&error));
            ExitCode::FAILURE
        }
    }
}

/// A client command whose output is cut short (`courier status | head`)
/// ends quietly, as `ls` would, instead of panicking on the broken pipe:
/// the default action of SIGPIPE, which Rust programs start with ignored.
/// (`serve` keeps it ignored: a client hanging up must not stop the engine.)
fn quiet_on_closed_pipe() {
    // SAFETY: called before any thread starts; resetting a signal to its
    // default action has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// An error and its causes, `: `-separated, each said once: a message that
/// already quotes its cause (`cannot listen on ...: Address already in
/// use`) is not followed by that cause again.
fn causes(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(overrides: &Overrides) -> anyhow::Result<()> {
    let config = Config::load(overrides)?;
    courier_engine::telemetry::init(config.log_format, &config.log_filter);
    runtime()?.block_on(courier_engine::run(config, shutdown_signal()))?;
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM. A second one exits at once:
/// everything acknowledged is already durable, so nothing acknowledged is
/// lost; unacknowledged deliveries are redelivered after the next start.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("signal received: shutting down gracefully (signal again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
