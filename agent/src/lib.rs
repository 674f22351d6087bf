//! The hostwatch agent: samples this host and streams the samples to the aggregator.
//!
//! ```text
//! probe::HostProbe   ──(every host.interval)───┐
//! probe::GossipProbe ──(every gossip.interval)─┼─► Outbox ──(Notify)──► uplink ──► aggregator
//! probe::LogTailer   ──(every poll_interval)───┘   (spooled)
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::v1::{Hello, NodeIdentity, ProbeInfo, Sample, sample};
use tokio::sync::{Notify, watch};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

pub use config::{AgentConfig, ConfigError};
pub use outbox::Outbox;
pub use probe::{GossipProbe, HostProbe, LogTailer, ProbeError};
pub use tls::TlsError;

use ticker::Ticker;
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

/// A built agent, ready to run: identity resolved, state directory opened, probe ready.
#[derive(Debug)]
pub struct Agent {
    identity: NodeIdentity,
    host_interval: Duration,
    shutdown_grace: Duration,
    open_timeout: Duration,
    endpoint: Endpoint,
    token: Option<Secret>,
    probe: HostProbe,
    gossip: Option<(GossipProbe, Duration)>,
    logs: Option<(LogTailer, Duration)>,
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
        let endpoint = uplink_endpoint(&config.aggregator)?;
        let token = config
            .aggregator
            .token_file
            .as_deref()
            .map(read_token)
            .transpose()?;
        let gossip = match &config.gossip {
            Some(gossip) => Some((GossipProbe::new(gossip)?, gossip.interval)),
            None => None,
        };
        let logs = (!config.logs.is_empty()).then(|| {
            let poll_interval = config
                .logs
                .iter()
                .map(|log| log.poll_interval)
                .min()
                .unwrap_or(Duration::from_secs(1));
            (LogTailer::new(&config.logs), poll_interval)
        });
        Ok(Agent {
            identity,
            host_interval: config.host.interval,
            shutdown_grace: config.shutdown_grace,
            open_timeout: config.aggregator.connect_timeout,
            endpoint,
            token,
            probe,
            gossip,
            logs,
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
            host_interval,
            shutdown_grace,
            open_timeout,
            endpoint,
            token,
            probe,
            gossip,
            logs,
            outbox,
        } = self;
        let mut probes = vec![probe_info("host", host_interval)];
        if let Some((_, interval)) = &gossip {
            probes.push(probe_info("gossip", *interval));
        }
        if logs.is_some() {
            // Event-driven: silence says nothing about the node.
            probes.push(probe_info("logs", Duration::ZERO));
        }
        let hello = Hello {
            identity: Some(identity),
            agent_version: AGENT_VERSION.to_owned(),
            probes,
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
        };
        let host_sampler = sample_host(probe, host_interval, queue.clone());
        let gossip_sampler = async {
            match gossip {
                Some((probe, interval)) => sample_gossip(probe, interval, queue.clone()).await,
                None => std::future::pending().await,
            }
        };
        let log_tailer = async {
            match logs {
                Some((tailer, poll_interval)) => {
                    tail_logs(tailer, poll_interval, queue.clone()).await
                }
                None => std::future::pending().await,
            }
        };

        tracing::info!(interval = %humantime::format_duration(host_interval), "agent started");
        tokio::select! {
            () = shutdown => {}
            // None returns before draining starts; listed so that all are polled.
            () = host_sampler => {}
            () = gossip_sampler => {}
            () = log_tailer => {}
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
#[derive(Clone)]
struct Queue {
    outbox: SharedOutbox,
    batch_ready: Arc<Notify>,
}

impl Queue {
    /// Numbers `samples` as one batch and spools it. Never waits for the network: the
    /// outbox drops its oldest batch rather than refuse a new one. `dropping` remembers
    /// whether the last push dropped, so that a full outbox is logged once, not per batch.
    fn push(&self, samples: Vec<Sample>, dropping: &mut bool) {
        let pushed = lock(&self.outbox).push(samples);
        match pushed {
            Ok(pushed) => {
                match (pushed.dropped.last(), *dropping) {
                    (Some(seq), false) => {
                        tracing::warn!(
                            dropped_seq = seq,
                            "outbox full: dropping the oldest batches"
                        )
                    }
                    (None, true) => tracing::info!("outbox has room again"),
                    _ => {}
                }
                *dropping = !pushed.dropped.is_empty();
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

/// Takes a host sample every `interval` and queues it as a batch of its own.
async fn sample_host(mut probe: HostProbe, interval: Duration, queue: Queue) {
    let mut ticker = Ticker::new(interval);
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
        queue.push(samples, &mut dropping);
    }
}

/// Asks the database for its cluster view every `interval`; a failed query is queued too.
async fn sample_gossip(probe: GossipProbe, interval: Duration, queue: Queue) {
    let mut ticker = Ticker::new(interval);
    let mut dropping = false;
    let mut failing = false;
    loop {
        ticker.tick().await;
        let time_unix_ms = unix_ms(SystemTime::now());
        let gossip = probe.sample().await;
        match (gossip.ok, failing) {
            (false, false) => tracing::warn!(
                adapter = probe.adapter().name(),
                "gossip query failed: {}",
                gossip.error
            ),
            (true, true) => {
                tracing::info!(adapter = probe.adapter().name(), "gossip query ok again")
            }
            _ => {}
        }
        failing = !gossip.ok;
        let samples = vec![Sample {
            time_unix_ms,
            kind: Some(sample::Kind::Gossip(gossip)),
        }];
        queue.push(samples, &mut dropping);
    }
}

/// Ships the lines appended to the tailed files every `poll_interval`, in batches of at
/// most the configured number of lines.
async fn tail_logs(mut tailer: LogTailer, poll_interval: Duration, queue: Queue) {
    let mut ticker = Ticker::new(poll_interval);
    let mut dropping = false;
    loop {
        ticker.tick().await;
        loop {
            let polled = tailer.poll();
            if polled.cut_lines > 0 {
                tracing::warn!(
                    cut_lines = polled.cut_lines,
                    cut_lines_total = tailer.cut_lines_total,
                    "log lines longer than max_line_bytes were cut"
                );
            }
            if !polled.records.is_empty() {
                let time_unix_ms = unix_ms(SystemTime::now());
                let samples = polled
                    .records
                    .into_iter()
                    .map(|record| Sample {
                        time_unix_ms,
                        kind: Some(sample::Kind::Log(record)),
                    })
                    .collect();
                queue.push(samples, &mut dropping);
            }
            if !polled.more {
                break;
            }
            // Let the uplink and the other probes run between batches of a long backlog.
            tokio::task::yield_now().await;
        }
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
