//! The `courier` command line: `serve` runs the engine; every other command
//! talks to a running engine over its HTTP API.

mod admin;
mod publish;
mod status;

use clap::{Parser, Subcommand};

use courier_bench as bench;
use courier_client::Client;
use std::path::PathBuf;

use courier_engine::config::Overrides;

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
    Serve(ServeArgs),
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

/// `courier serve`'s flags, each with its environment twin (flags beat
/// environment variables). `None` = not given.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML).
    #[arg(long, env = "COURIER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7171].
    #[arg(long, env = "COURIER_LISTEN")]
    pub listen: Option<String>,
    /// Bearer token required by every endpoint.
    #[arg(long, env = "COURIER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory [default: ./courier-data].
    #[arg(long, env = "COURIER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Plugins directory, watched for changes [default: ./plugins].
    #[arg(long, env = "COURIER_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// When to fsync: always | interval:<ms> | never [default: always].
    #[arg(long, env = "COURIER_FSYNC")]
    pub fsync: Option<String>,
    /// Plugin executions at once [default: number of cores].
    #[arg(long, env = "COURIER_PLUGIN_THREADS")]
    pub plugin_threads: Option<usize>,
    /// Log format: text | json [default: text].
    #[arg(long, env = "COURIER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, tracing EnvFilter syntax [default: info].
    #[arg(long, env = "COURIER_LOG")]
    pub log: Option<String>,
}

impl From<ServeArgs> for Overrides {
    fn from(args: ServeArgs) -> Overrides {
        Overrides {
            config: args.config,
            listen: args.listen,
            token: args.token,
            data_dir: args.data_dir,
            plugins_dir: args.plugins_dir,
            fsync: args.fsync,
            plugin_threads: args.plugin_threads,
            log_format: args.log_format,
            log: args.log,
        }
    }
}
