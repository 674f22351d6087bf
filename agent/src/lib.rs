//! The hostwatch agent: samples this host and streams the samples to the aggregator.
//!
//! ```text
//! probe::registry ─► [host, gossip, logs, …] ──probe::drive_all (each every interval)──┐
//!                                                                                        │
//!        aggregator ◄── uplink ◄──(Notify)── Outbox (spooled) ◄────────── Queue ◄───────┘
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
mod ticker;
pub mod tls;
mod uplink;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::v1::{Hello, NodeIdentity, ProbeInfo, Sample};
use tokio::sync::{Notify, watch};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

pub use config::{AgentConfig, ConfigError};
pub use outbox::Outbox;
pub use probe::{GossipProbe, HostProbe, LogTailer, Probe, ProbeError};
pub use tls::TlsError;

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
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("config: aggregator.token_file: cannot read {}: {source}", path.display())]
    TokenRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The token itself is never part of the message.
    #[error("config: aggregator.token_file: {}: {message}", path.display())]
    Token {
        path: PathBuf,
        message: &'static str,
    },
    #[error("config: {field}: cannot read {}: {source}", path.display())]
    SecretRead {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The secret itself is never part of the message.
    #[error("config: {field}: {message}")]
    Secret {
        field: &'static str,
        message: &'static str,
    },
}

/// A bearer token: shown as `<redacted>` by `Debug`, so it cannot reach a log by accident.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A built agent, ready to run: identity resolved, state directory opened, probes ready.
#[derive(Debug)]
pub struct Agent {
    identity: NodeIdentity,
    shutdown_grace: Duration,
    open_timeout: Duration,
    endpoint: Endpoint,
    token: Option<Secret>,
    probes: Vec<Box<dyn Probe>>,
    outbox: Outbox,
}

impl Agent {
    /// Validates `config`, creates the state directory if needed, resolves the identity
    /// (hostname, instance id), reads the next seq, builds the configured probes.
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
        let probes = probe::probes(&config)?;
        let endpoint = uplink_endpoint(&config.aggregator)?;
        let token = config
            .aggregator
            .token_file
            .as_deref()
            .map(read_token)
            .transpose()?;
        Ok(Agent {
            identity,
            shutdown_grace: config.shutdown_grace,
            open_timeout: config.aggregator.connect_timeout,
            endpoint,
            token,
            probes,
            outbox,
        })
    }

    /// The identity the agent announces in `Hello`.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Samples and streams until `shutdown` resolves; then stops sampling and gives the
    /// uplink up to `shutdown_grace` to get the outstanding batches acknowledged. What is
    /// still unacknowledged then stays spooled and is replayed at the next start.
    ///
    /// Runs on whatever tokio runtime polls it (a current-thread one with I/O and time
    /// enabled is enough); it spawns no tasks of its own (tonic's channel spawns its
    /// connection's). Connection problems are logged and retried, never returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let Agent {
            identity,
            shutdown_grace,
            open_timeout,
            endpoint,
            token,
            probes,
            outbox,
        } = self;
        let probe_infos: Vec<ProbeInfo> = probes
            .iter()
            .map(|probe| probe_info(probe.name(), probe.announced_interval()))
            .collect();
        let hello = Hello {
            identity: Some(identity),
            agent_version: AGENT_VERSION.to_owned(),
            probes: probe_infos,
            // Filled in per stream by the uplink, which holds the token.
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
            token,
            open_timeout,
            Arc::clone(&outbox),
            Arc::clone(&batch_ready),
        )
        .run(draining);
        tokio::pin!(uplink);
        let queue = Queue {
            outbox: Arc::clone(&outbox),
            batch_ready,
            dropping: AtomicBool::new(false),
        };
        let probe_names: Vec<String> = probes
            .iter()
            .map(|probe| {
                format!(
                    "{} every {}",
                    probe.name(),
                    humantime::format_duration(probe.interval())
                )
            })
            .collect();
        let samplers = probe::drive_all(probes, &queue);

        tracing::info!(probes = probe_names.join(", "), "agent started");
        tokio::select! {
            () = shutdown => {}
            // Neither returns before draining starts; listed so that both are polled.
            () = samplers => {}
            () = &mut uplink => {}
        }

        // The sampler futures are gone: no new batches from here on.
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
                    "shutdown grace elapsed; the unacknowledged batches stay spooled for the next start"
                );
            }
        }
        // A clean stop: the next seq becomes durable, so even a reboot resumes exactly.
        if let Err(err) = lock(&outbox).sync() {
            tracing::warn!("cannot make the seq counter durable: {err}");
        }
        Ok(())
    }
}

/// Where probes put their samples: the outbox, and the uplink's wake-up call.
struct Queue {
    outbox: SharedOutbox,
    batch_ready: Arc<Notify>,
    /// Whether the last push dropped, so that a full outbox is logged once, not per batch.
    dropping: AtomicBool,
}

impl probe::Sink for Queue {
    /// Numbers `samples` as one batch and spools it. Never waits for the network: the
    /// outbox drops its oldest batch rather than refuse a new one.
    fn push(&self, samples: Vec<Sample>) {
        let pushed = lock(&self.outbox).push(samples);
        match pushed {
            Ok(pushed) => {
                let dropping = self
                    .dropping
                    .swap(!pushed.dropped.is_empty(), Ordering::Relaxed);
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
                self.batch_ready.notify_one();
            }
            Err(err) => tracing::error!("samples discarded: cannot spool their batch: {err}"),
        }
    }
}

fn probe_info(name: &str, interval: Duration) -> ProbeInfo {
    ProbeInfo {
        name: name.to_owned(),
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The gRPC endpoint of the aggregator, with TLS when its URL is `https`.
fn uplink_endpoint(config: &config::AggregatorConfig) -> Result<Endpoint, AgentError> {
    let endpoint_error = |message: String| AgentError::Endpoint {
        url: config.url.clone(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(config.url.clone())
        .map_err(|err| endpoint_error(err.to_string()))?
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if config.url.starts_with("https://") {
        let files = tls::TlsFiles {
            section: "aggregator",
            ca_file: config.ca_file.as_deref(),
            client_cert_file: config.client_cert_file.as_deref(),
            client_key_file: config.client_key_file.as_deref(),
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(files.ca_pem()?));
        if let Some(identity) = files.client_identity_pem()? {
            tls = tls.identity(Identity::from_pem(identity.cert, identity.key));
        }
        if let Some(host) = endpoint.uri().host() {
            tls = tls.domain_name(host.trim_start_matches('[').trim_end_matches(']'));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|err| endpoint_error(format!("TLS: {err}")))?;
    }
    Ok(endpoint)
}

/// Reads the bearer token; it must be one line of visible ASCII (it goes into a header).
fn read_token(path: &std::path::Path) -> Result<Secret, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|source| AgentError::TokenRead {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(AgentError::Token {
            path: path.to_owned(),
            message: "is empty",
        });
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(AgentError::Token {
            path: path.to_owned(),
            message: "the token must be one word of visible ASCII characters",
        });
    }
    Ok(Secret(token.to_owned()))
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
