//! `hostwatch-agent`: parses flags, loads the config, builds the agent and runs it on a
//! single-threaded runtime until SIGTERM or Ctrl-C. Everything else is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use agent::Agent;
use agent::config::{AgentConfig, LogFormat};
use agent::probe::HostProbe;
use agent::probe::host::HostSampleView;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "hostwatch-agent",
    version,
    about = "Samples this host and streams the samples to the hostwatch aggregator"
)]
struct Cli {
    /// How log lines are written to stderr (default: the config's log_format, else plain).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: sample every host.interval and stream to the aggregator.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Take host samples and print them as JSON (every host.interval unless --once).
    Sample {
        /// Print one sample and exit.
        #[arg(long)]
        once: bool,
        /// Use this config's [host] settings; defaults apply without it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Parse and validate a config file, printing every problem found.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config, cli.log_format),
        Command::Sample { once, config } => {
            init_logging(cli.log_format.unwrap_or_default());
            sample(once, config.as_deref())
        }
        Command::CheckConfig { config } => Ok(check_config(&config)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // The library's messages already name the file or field and include the cause.
            eprintln!("hostwatch-agent: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, which systemd hands to the journal: plain lines without colours
/// unless stderr is a terminal, or one JSON object per line.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn run(config_path: &Path, log_format: Option<LogFormat>) -> anyhow::Result<ExitCode> {
    // Read before logging starts: the config may choose the log format. Its errors are
    // printed by main either way.
    let config = AgentConfig::load(config_path)?;
    init_logging(log_format.unwrap_or(config.log_format));
    let agent = Agent::new(config)?;
    // One thread: the agent waits on a timer and one socket, and must stay tiny.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        agent.run(shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or SIGINT. Handlers are installed before this returns,
/// so a signal that arrives while the agent starts is not lost.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!("{name} received");
    })
}

fn sample(once: bool, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = match config_path {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    let mut probe = HostProbe::new(&config.host)?;
    loop {
        let time = SystemTime::now();
        let host = probe.sample()?;
        println!(
            "{}",
            serde_json::to_string_pretty(&HostSampleView::new(time, &host))?
        );
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(config.host.interval);
    }
}

fn check_config(config_path: &Path) -> ExitCode {
    match AgentConfig::load(config_path) {
        Ok(_) => {
            println!("config: {}: ok", config_path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
