//! The `courier` command line: `serve` runs the engine; every other command
//! talks to a running engine over its HTTP API.

mod admin;
mod bench;
mod client;
mod publish;
mod scrape;
mod status;

use clap::{Parser, Subcommand};

pub use client::Client;

use crate::config::Overrides;

/// Courier: a durable message queue with WebAssembly consumers.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the engine is, for client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The engine's base URL.
    #[arg(
        long,
        env = "COURIER_SERVER",
        default_value = "http://127.0.0.1:7171",
        global = true
    )]
    pub server: String,
    /// Bearer token, if the engine requires one.
    #[arg(long, env = "COURIER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine (flags > environment > --config file > defaults).
    Serve(Overrides),
    /// Publish NDJSON lines from a file or standard input.
    Publish {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        args: publish::PublishArgs,
    },
    /// Show topics, plugins and subscriptions.
    Status {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        args: status::StatusArgs,
    },
    /// List, replay or purge a plugin's dead letters.
    DeadLetters {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: admin::DeadLetterCommand,
    },
    /// Move a plugin's cursor on a topic (replay or skip).
    Seek {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        args: admin::SeekArgs,
    },
    /// Print generated orders as NDJSON envelopes, for `publish --envelope`.
    GenerateOrders(bench::GenerateArgs),
    /// Benchmark the order fan-out: publish rate, end-to-end drain rate,
    /// latency at a fixed rate and peak memory.
    Bench(bench::BenchArgs),
}

/// Runs a client command.
pub async fn run_client(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => anyhow::bail!("serve is not a client command"),
        Command::Publish { server, args } => publish::run(&connect(&server)?, args).await,
        Command::Status { server, args } => status::run(&connect(&server)?, args).await,
        Command::DeadLetters { server, command } => {
            admin::dead_letters(&connect(&server)?, command).await
        }
        Command::Seek { server, args } => admin::seek(&connect(&server)?, args).await,
        Command::GenerateOrders(args) => bench::generate(&args),
        Command::Bench(args) => bench::run(args).await,
    }
}

fn connect(server: &ServerArgs) -> anyhow::Result<Client> {
    Client::new(&server.server, server.token.clone())
}
