//! The hostwatch agent: samples this host and streams the samples to the aggregator.
//!
//! ```text
//! probe::HostProbe ──(every host.interval)──► Outbox ──(Notify)──► uplink ──► aggregator
//! ```
//!
//! [`Agent`] composes the pieces and is the only entry point: build it from a validated
//! [`AgentConfig`] with [`Agent::new`], then [`Agent::run`] it until the shutdown future
//! resolves. The library does not own the runtime, install signal handlers, or set up
//! logging (it only emits `tracing` events); the `hostwatch-agent` binary does those, and
//! the aggregator's embedded mode runs an `Agent` on its own runtime.

pub mod config;
pub mod identity;
pub mod outbox;
pub mod probe;
mod state;
mod uplink;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::v1::{Hello, NodeIdentity, ProbeInfo, Sample, sample};
use tokio::sync::{Notify, watch};
use tonic::transport::Endpoint;

pub use config::{AgentConfig, ConfigError};
pub use outbox::Outbox;
pub use probe::{HostProbe, ProbeError};

use uplink::{SharedOutbox, Uplink, lock};

/// The version sent in `Hello.agent_version`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// HTTP/2 pings keep a silent connection honest: without them a vanished aggregator host
/// would leave the stream (and the unacknowledged batches) waiting for TCP to give up.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("state: {}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state: {}: {message}", path.display())]
    CorruptState { path: PathBuf, message: String },
    #[error("identity: cannot read the hostname from {}: {source}", path.display())]
    Hostname {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config: aggregator.url: {url:?}: {message}")]
    Endpoint { url: String, message: String },
}

/// A built agent, ready to run: identity resolved, state directory opened, probe ready.
#[derive(Debug)]
pub struct Agent {
    identity: NodeIdentity,
    host_interval: Duration,
    shutdown_grace: Duration,
    open_timeout: Duration,
    endpoint: Endpoint,
    probe: HostProbe,
    outbox: Outbox,
}

impl Agent {
    /// Validates `config`, creates the state directory if needed, resolves the identity
    /// (hostname, instance id), reads the next seq and the core counts.
    pub fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        config.validate()?;
        state::ensure_dir(&config.state_dir)?;
        let identity = identity::resolve(&config.identity, &config.state_dir)?;
        let outbox = Outbox::open(
            &config.state_dir,
            outbox::Bounds {
                max_batches: config.outbox.max_batches,
                max_bytes: config.outbox.max_bytes,
            },
        )?;
        let probe = HostProbe::new(&config.host)?;
        let endpoint = Endpoint::from_shared(config.aggregator.url.clone())
            .map_err(|err| AgentError::Endpoint {
                url: config.aggregator.url.clone(),
                message: err.to_string(),
            })?
            .connect_timeout(config.aggregator.connect_timeout)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(Agent {
            identity,
            host_interval: config.host.interval,
            shutdown_grace: config.shutdown_grace,
            open_timeout: config.aggregator.connect_timeout,
            endpoint,
            probe,
            outbox,
        })
    }

    /// The identity the agent announces in `Hello`.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Samples and streams until `shutdown` resolves; then stops sampling and gives the
    /// uplink up to `shutdown_grace` to get the outstanding batches acknowledged.
    ///
    /// Runs on whatever tokio runtime polls it (a current-thread one is enough) and spawns
    /// no tasks. Connection problems are logged and retried, never returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let Agent {
            identity,
            host_interval,
            shutdown_grace,
            open_timeout,
            endpoint,
            probe,
            outbox,
        } = self;
        let hello = Hello {
            identity: Some(identity),
            agent_version: AGENT_VERSION.to_owned(),
            probes: vec![ProbeInfo {
                name: "host".to_owned(),
                interval_ms: u64::try_from(host_interval.as_millis()).unwrap_or(u64::MAX),
            }],
            token: String::new(),
            oldest_unacked_seq: 0,
            seq_epoch: outbox.seq_epoch().to_owned(),
        };
        let outbox: SharedOutbox = Arc::new(Mutex::new(outbox));
        let batch_ready = Arc::new(Notify::new());
        let (draining_sender, draining) = watch::channel(false);

        let uplink = Uplink::new(
            endpoint,
            hello,
            open_timeout,
            Arc::clone(&outbox),
            Arc::clone(&batch_ready),
        )
        .run(draining);
        tokio::pin!(uplink);
        let sampler = sample_host(probe, host_interval, Arc::clone(&outbox), batch_ready);

        tracing::info!(interval = %humantime::format_duration(host_interval), "agent started");
        tokio::select! {
            () = shutdown => {}
            // Neither returns before draining starts; listed so that both are polled.
            () = sampler => {}
            () = &mut uplink => {}
        }

        // The sampler future is gone: no new batches from here on.
        draining_sender.send_replace(true);
        let unacked = lock(&outbox).len();
        tracing::info!(
            unacked,
            grace = %humantime::format_duration(shutdown_grace),
            "shutting down: waiting for outstanding batches to be acknowledged"
        );
        match tokio::time::timeout(shutdown_grace, &mut uplink).await {
            Ok(()) => tracing::info!("all batches acknowledged; agent stopped"),
            Err(_) => {
                let outbox = lock(&outbox);
                tracing::warn!(
                    unacked = outbox.len(),
                    oldest_seq = outbox.oldest_seq().unwrap_or(0),
                    "shutdown grace elapsed; unacknowledged batches are dropped"
                );
            }
        }
        Ok(())
    }
}

/// Takes a host sample every `interval` and queues it as a batch of its own. Never waits
/// for the network: the outbox drops its oldest batch rather than refuse a new one.
async fn sample_host(
    mut probe: HostProbe,
    interval: Duration,
    outbox: SharedOutbox,
    batch_ready: Arc<Notify>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropping = false;
    loop {
        ticker.tick().await;
        let time_unix_ms = unix_ms(SystemTime::now());
        let host = match probe.sample() {
            Ok(host) => host,
            Err(err) => {
                tracing::warn!("host sample failed: {err}");
                continue;
            }
        };
        let samples = vec![Sample {
            time_unix_ms,
            kind: Some(sample::Kind::Host(host)),
        }];
        let pushed = lock(&outbox).push(samples);
        match pushed {
            Ok(pushed) => {
                match (pushed.dropped.last(), dropping) {
                    (Some(seq), false) => {
                        tracing::warn!(
                            dropped_seq = seq,
                            "outbox full: dropping the oldest batches"
                        )
                    }
                    (None, true) => tracing::info!("outbox has room again"),
                    _ => {}
                }
                dropping = !pushed.dropped.is_empty();
                batch_ready.notify_one();
            }
            Err(err) => tracing::error!("sample discarded: cannot number its batch: {err}"),
        }
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn run_is_send_so_a_multi_thread_runtime_can_spawn_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentConfig {
            state_dir: dir.path().to_owned(),
            ..AgentConfig::default()
        };
        config.identity.tenant = "acme".into();
        config.identity.cluster = "orders-db".into();
        config.aggregator.url = "http://127.0.0.1:1".into();
        let agent = Agent::new(config).unwrap();
        assert_send(&agent.run(std::future::pending()));
    }

    #[test]
    fn new_rejects_an_invalid_config() {
        let err = Agent::new(AgentConfig::default()).unwrap_err();
        assert!(
            matches!(err, AgentError::Config(ConfigError::Invalid(_))),
            "{err}"
        );
    }
}
