//! The gossip probe: the local database node's view of its cluster (DESIGN §4), as a
//! `GossipSample`. One file per adapter (`eventstoredb`, `elasticsearch`) turns the node's
//! JSON into members; `http` fetches it.
//!
//! Every failure (refused, timeout, a 5xx, invalid JSON, a TLS error, an answer without the
//! expected fields) becomes a sample with `ok = false` and the error's text: the aggregator
//! must hear that the query failed, so [`GossipProbe::sample`] has no error to return.
//!
//! **Why not reqwest**: the agent needs one GET every 30 s to one host. hyper's HTTP/1
//! client connection, tokio-rustls and rustls are already in the binary (tonic's channel and
//! its TLS), so `http` adds a few hundred lines of our code and ~60 KB to the stripped
//! binary; reqwest 0.12 (rustls, no default features) brings its pool, tower stack, URL
//! parser and compiled-in webpki roots. Measured here on the same one-GET program built both
//! ways (release, stripped): see the README's Performance section for the figures.
//!
//! It does not judge the view (consensus is the aggregator's), nor keep connections open
//! between samples: one short connection every interval costs less memory than a pool.

mod elasticsearch;
mod eventstoredb;
mod http;

use std::time::Duration;

use proto::v1::{GossipMember, GossipSample};

use crate::config::{GossipAdapter, GossipConfig};
use crate::tls::{TlsError, TlsFiles};

use http::HttpGet;

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
    timeout: Duration,
    http: HttpGet,
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
            timeout: config.timeout,
            http: HttpGet::new(tls),
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
                    let body = self.http.get(&self.base_url, path).await?;
                    eventstoredb::parse(&body, path)
                }
                GossipAdapter::Elasticsearch => {
                    let nodes = self
                        .http
                        .get(&self.base_url, elasticsearch::NODES_PATH)
                        .await?;
                    let health = self
                        .http
                        .get(&self.base_url, elasticsearch::HEALTH_PATH)
                        .await?;
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
