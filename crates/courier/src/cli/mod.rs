//! The `courier` command line: `serve` runs the engine; every other command
//! talks to a running engine over its HTTP API.

mod admin;
mod inspect;
mod publish;
mod scaffold;
mod status;
mod tail;
mod topics;

use clap::{Parser, Subcommand};

use courier_bench as bench;
use courier_client::Client;
use std::path::PathBuf;

use courier_engine::config::Overrides;

/// `0.1.0 (3f2a9c1e0b7d, built 2026-12-04)`: `courier --version`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("COURIER_COMMIT"),
    ", built ",
    env!("COURIER_BUILD_DATE"),
    ")"
);

/// Courier: a durable message queue with WebAssembly consumers.
#[derive(Debug, Parser)]
#[command(name = "courier", version = VERSION, about, propagate_version = true)]
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
    /// Write a new plugin: `courier plugin new NAME`.
    Plugin {
        #[command(subcommand)]
        command: scaffold::PluginCommand,
    },
    /// List, describe or create topics.
    Topics {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// Print a topic's messages, from a starting point, optionally as they
    /// arrive (moves no cursor).
    Tail {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        args: tail::TailArgs,
    },
    /// List plugins, or show one in full (with its last load error).
    Plugins {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: inspect::PluginsCommand,
    },
    /// Read a plugin's state: one key, or a listing page by page.
    State {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: inspect::StateCommand,
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
    /// Print a shell completion script: `courier completions bash >
    /// /etc/bash_completion.d/courier` (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
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
        Command::Plugin { command } => scaffold::run(command),
        Command::Topics { server, command } => topics::run(&connect(&server)?, command).await,
        Command::Tail { server, args } => tail::run(&connect(&server)?, args).await,
        Command::Plugins { server, command } => inspect::plugins(&connect(&server)?, command).await,
        Command::State { server, command } => inspect::state(&connect(&server)?, command).await,
        Command::GenerateOrders(args) => bench::generate(&args),
        Command::Bench(args) => bench::run(args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "courier", &mut std::io::stdout());
            Ok(())
        }
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
    /// Bearer token required by every endpoint but `/healthz`.
    #[arg(long, env = "COURIER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve a non-loopback address without a token (otherwise refused).
    #[arg(long, env = "COURIER_INSECURE")]
    pub insecure: bool,
    /// Let `/metrics` answer without the token (scrapers without one).
    #[arg(long, env = "COURIER_PUBLIC_METRICS")]
    pub public_metrics: bool,
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
            insecure: args.insecure,
            public_metrics: args.public_metrics,
            data_dir: args.data_dir,
            plugins_dir: args.plugins_dir,
            fsync: args.fsync,
            plugin_threads: args.plugin_threads,
            log_format: args.log_format,
            log: args.log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag and argument of every command, with the names of those
    /// that lack a help text.
    fn undocumented(command: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            if sub.get_about().is_none() {
                out.push(format!("{path} {} (the command)", sub.get_name()));
            }
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_command_flag_and_argument_has_a_help_text() {
        Cli::command().debug_assert();
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "courier", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
