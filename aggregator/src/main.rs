//! `hostwatch-aggregator`: parses flags, loads the config, runs until SIGTERM or Ctrl-C.
//! Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use aggregator::config::{AggregatorConfig, ConfigError, DEFAULT_LISTEN};
use aggregator::server::Aggregator;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hostwatch-aggregator",
    version,
    about = "hostwatch aggregator: ingest, rules, issues, operator API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the aggregator with a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file, listing every problem.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The embedded default: the aggregator and an agent sampling this host, events on
    /// stdout, operator API on loopback.
    Up {
        /// Where the gRPC services listen.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        grpc_listen: SocketAddr,
        /// Where the SQLite database and the local agent's state live
        /// [default: $XDG_STATE_HOME/hostwatch or ~/.local/state/hostwatch].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    aggregator::panics::install_hook();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hostwatch-aggregator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::CheckConfig { config } => match AggregatorConfig::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                Ok(())
            }
            Err(ConfigError::Invalid(errors)) => {
                for error in &errors {
                    eprintln!("{error}");
                }
                anyhow::bail!("{}: {} errors", config.display(), errors.len())
            }
            Err(error) => Err(error.into()),
        },
        Command::Run { config } => {
            let config = AggregatorConfig::load(&config)?;
            runtime()?.block_on(async {
                let aggregator = Aggregator::bind(config).await?;
                aggregator.run(shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Up {
            grpc_listen,
            data_dir,
        } => {
            let data_dir = data_dir.unwrap_or_else(aggregator::up::default_data_dir);
            runtime()?.block_on(async {
                aggregator::up::run(grpc_listen, data_dir, shutdown_signal()).await?;
                Ok(())
            })
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
