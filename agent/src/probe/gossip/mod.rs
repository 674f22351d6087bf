//! The gossip probe: the local database node's view of its cluster (DESIGN §4), as a
//! `GossipSample`, every `[gossip] interval`. One file per adapter (`eventstoredb`,
//! `elasticsearch`) turns the node's JSON into members; `probe::http` fetches it.
//!
//! Every failure (refused, timeout, a 5xx, invalid JSON, a TLS error, an answer without the
//! expected fields) becomes a sample with `ok = false` and the error's text: the aggregator
//! must hear that the query failed, so [`GossipProbe::sample`] has no error to return.
//!
//! It does not judge the view (consensus is the aggregator's), nor keep connections open
//! between samples: one short connection every interval costs less memory than a pool.

mod elasticsearch;
mod eventstoredb;

use std::time::Duration;

use proto::v1::{GossipMember, GossipSample, sample};

use crate::AgentError;
use crate::config::{AgentConfig, GossipAdapter, GossipConfig};
use crate::tls::{TlsError, TlsFiles};

use super::http::{HttpClient, HttpError};
use super::{Collected, Collecting, Probe};

/// The largest answer read: a gossip of a few dozen members is a few tens of KB.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The gossip probe when `[gossip]` is configured.
pub(crate) fn probes(config: &AgentConfig) -> Result<Vec<Box<dyn Probe>>, AgentError> {
    match &config.gossip {
        Some(gossip) => {
            let probe: Box<dyn Probe> = Box::new(GossipProbe::new(gossip)?);
            Ok(vec![probe])
        }
        None => Ok(Vec::new()),
    }
}

/// Why a gossip query failed; its text becomes `GossipSample.error`.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("timeout after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP {status} from {path}")]
    Status {
        status: hyper::StatusCode,
        path: String,
    },
    #[error("HTTP: {path}: {message}")]
    Http { path: String, message: String },
    #[error("invalid JSON from {path}: {message}")]
    InvalidJson { path: String, message: String },
    #[error("unexpected answer from {path}: {message}")]
    Unexpected { path: String, message: String },
    #[error("invalid URL {url:?}: {message}")]
    Url { url: String, message: String },
}

impl From<HttpError> for GossipError {
    fn from(err: HttpError) -> GossipError {
        match err {
            HttpError::Connect { addr, message, .. } => GossipError::Connect { addr, message },
            HttpError::Tls(message) => GossipError::Tls(message),
            HttpError::Http { path, message } => GossipError::Http { path, message },
            HttpError::Url { url, message } => GossipError::Url { url, message },
        }
    }
}

/// What an adapter understood from the node's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub members: Vec<GossipMember>,
    pub cluster_status: String,
    pub leader_id: String,
}

/// Asks the local database node for its view of the cluster.
#[derive(Debug)]
pub struct GossipProbe {
    adapter: GossipAdapter,
    base_url: String,
    interval: Duration,
    timeout: Duration,
    http: HttpClient,
    /// The last query failed: a failure is logged once, and so is the recovery.
    failing: bool,
}

impl GossipProbe {
    /// Builds the probe from a validated config: reads the TLS files named there.
    pub fn new(config: &GossipConfig) -> Result<GossipProbe, TlsError> {
        let adapter = config.adapter.unwrap_or(GossipAdapter::Eventstoredb);
        let tls = if config.url.starts_with("https://") {
            let files = TlsFiles {
                section: "gossip",
                ca_file: config.ca_file.as_deref(),
                client_cert_file: config.client_cert_file.as_deref(),
                client_key_file: config.client_key_file.as_deref(),
            };
            Some(files.client_config(config.insecure_skip_verify)?)
        } else {
            None
        };
        Ok(GossipProbe {
            adapter,
            base_url: config.url.trim_end_matches('/').to_owned(),
            interval: config.interval,
            timeout: config.timeout,
            http: HttpClient::new(tls, MAX_BODY_BYTES),
            failing: false,
        })
    }

    pub fn adapter(&self) -> GossipAdapter {
        self.adapter
    }

    /// Queries the node once, within the configured timeout; a failure is a sample too.
    pub async fn sample(&self) -> GossipSample {
        let query = async {
            match self.adapter {
                GossipAdapter::Eventstoredb => {
                    let path = eventstoredb::PATH;
                    let body = self.get(path).await?;
                    eventstoredb::parse(&body, path)
                }
                GossipAdapter::Elasticsearch => {
                    let nodes = self.get(elasticsearch::NODES_PATH).await?;
                    let health = self.get(elasticsearch::HEALTH_PATH).await?;
                    elasticsearch::parse(&nodes, &health)
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, query).await {
            Ok(result) => result,
            Err(_) => Err(GossipError::Timeout(self.timeout)),
        };
        let adapter = self.adapter.name().to_owned();
        match result {
            Ok(view) => GossipSample {
                adapter,
                ok: true,
                error: String::new(),
                members: view.members,
                cluster_status: view.cluster_status,
                leader_id: view.leader_id,
            },
            Err(err) => GossipSample {
                adapter,
                ok: false,
                error: err.to_string(),
                ..GossipSample::default()
            },
        }
    }

    /// The body of a 2xx answer to a GET of `path`.
    async fn get(&self, path: &str) -> Result<hyper::body::Bytes, GossipError> {
        let answer = self.http.get(&self.base_url, path, &[]).await?;
        if !answer.status.is_success() {
            return Err(GossipError::Status {
                status: answer.status,
                path: path.to_owned(),
            });
        }
        Ok(answer.body)
    }
}

impl Probe for GossipProbe {
    fn name(&self) -> &str {
        "gossip"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// A failed query is queued too: the aggregator must hear that it failed.
    fn collect(&mut self) -> Collecting<'_> {
        Box::pin(async move {
            let gossip = self.sample().await;
            let adapter = self.adapter.name();
            match (gossip.ok, self.failing) {
                (false, false) => {
                    tracing::warn!(adapter, "gossip query failed: {}", gossip.error)
                }
                (true, true) => tracing::info!(adapter, "gossip query ok again"),
                _ => {}
            }
            self.failing = !gossip.ok;
            Collected {
                samples: vec![sample::Kind::Gossip(gossip)],
                more: false,
            }
        })
    }
}

/// `ip:port`, with brackets around an IPv6 address.
fn endpoint(ip: &str, port: Option<u16>) -> String {
    match (ip.contains(':'), port) {
        (true, Some(port)) => format!("[{ip}]:{port}"),
        (false, Some(port)) => format!("{ip}:{port}"),
        (_, None) => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests;
