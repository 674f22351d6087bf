//! `hostwatch-aggregator up`: the embedded default. One process runs the aggregator
//! (SQLite in the data directory, gRPC on loopback, every event on stdout) and an agent
//! sampling this host, so a newcomer sees this node appear and its issues as they happen.
//!
//! It builds both from defaults and runs them side by side; it adds no behaviour of its
//! own. On shutdown the agent stops first and flushes to the aggregator, then the
//! aggregator drains.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::config::AggregatorConfig;
use crate::server::{Aggregator, ServerError};

/// The embedded agent's place: tenant and cluster "local", node = the hostname.
const LOCAL: &str = "local";

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("embedded agent: {0}")]
    Agent(#[from] agent::AgentError),
    #[error("the aggregator stopped: {0}")]
    Stopped(String),
}

/// Where `up` keeps its data when not told: `$XDG_STATE_HOME/hostwatch`, else
/// `~/.local/state/hostwatch`, else `./hostwatch-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(state).join("hostwatch");
    }
    match std::env::var_os("HOME").filter(|dir| !dir.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/hostwatch"),
        None => PathBuf::from("hostwatch-data"),
    }
}

/// Runs aggregator and local agent until `shutdown` completes.
pub async fn run(
    listen: SocketAddr,
    data_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), UpError> {
    let aggregator = Aggregator::bind(AggregatorConfig::embedded(listen, data_dir.clone())).await?;
    let mut agent_target = aggregator.local_addr()?;
    if agent_target.ip().is_unspecified() {
        agent_target.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let defaults = agent::config::AgentConfig::default();
    let agent_config = agent::config::AgentConfig {
        state_dir: data_dir.join("agent"),
        identity: agent::config::IdentityConfig {
            tenant: LOCAL.to_owned(),
            cluster: LOCAL.to_owned(),
            ..defaults.identity.clone()
        },
        aggregator: agent::config::AggregatorConfig {
            url: format!("http://{agent_target}"),
            ..defaults.aggregator.clone()
        },
        ..defaults
    };
    let agent = agent::Agent::new(agent_config)?;
    tracing::info!(
        "hostwatch up: operator API on {agent_target} (try: hostwatchctl --addr http://{agent_target} nodes), data in {}",
        data_dir.display()
    );

    let stop_agent = CancellationToken::new();
    let stop_aggregator = CancellationToken::new();
    let mut aggregator_task = {
        let stop = stop_aggregator.clone();
        tokio::spawn(aggregator.run(async move { stop.cancelled().await }))
    };
    let agent_run = agent.run({
        let stop = stop_agent.clone();
        async move { stop.cancelled().await }
    });
    tokio::pin!(agent_run);
    tokio::pin!(shutdown);
    let agent_result = tokio::select! {
        () = &mut shutdown => {
            stop_agent.cancel();
            agent_run.await
        }
        result = &mut agent_run => result,
        // The aggregator ended on its own (a store it cannot open, say): say why now
        // rather than at Ctrl-C; the agent has no one to report to, and what it has not
        // delivered stays spooled.
        finished = &mut aggregator_task => {
            stop_agent.cancel();
            return match finished {
                Ok(result) => result.map_err(UpError::from),
                Err(panicked) => Err(UpError::Stopped(panicked.to_string())),
            };
        }
    };
    stop_aggregator.cancel();
    let aggregator_result = aggregator_task.await.unwrap_or(Ok(()));
    agent_result?;
    aggregator_result?;
    Ok(())
}
