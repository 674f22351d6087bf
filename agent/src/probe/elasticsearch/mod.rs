//! The elasticsearch probe (DESIGN §4, seed 001): a cluster's health, its data nodes' disk
//! use against the watermarks, its shard headroom, the documents of its fullest primary
//! shards and the 5XX share of an audit trail, as `ElasticsearchSample`s.
//!
//! Each check is a [`Probe`] of its own ("elasticsearch.health", "elasticsearch.storage",
//! "elasticsearch.shards", "elasticsearch.docs", "elasticsearch.audit"), so that each runs
//! at its own interval and a slow or failing check neither delays nor hides the others:
//! one sample per check run, with either the check's result or its classified error (the
//! es_unreachable rule's input). The checks share one [`Client`]: the node's URL, the TLS
//! configuration and the credentials (`probe::http`, no pool: one short connection per
//! request).
//!
//! It does not judge: thresholds, windows and the cadence of the shard headroom rule are
//! the aggregator's. Parsing is in `parse`, pure functions over the bodies.

mod parse;

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use proto::v1::elasticsearch_sample::Result as CheckResult;
use proto::v1::{
    ElasticsearchAudit, ElasticsearchCheck, ElasticsearchError, ElasticsearchErrorKind,
    ElasticsearchSample, ElasticsearchShardHeadroom, ElasticsearchStorage, sample,
};
use tokio::time::Instant;

use super::http::{HttpClient, HttpError};
use super::{Collected, Collecting, Probe};
use crate::AgentError;
use crate::config::{AgentConfig, ElasticsearchConfig};
use crate::tls::TlsFiles;

const HEALTH_PATH: &str = "/_cluster/health";
const NODES_FS_PATH: &str = "/_nodes/stats/fs?filter_path=nodes.*.name,nodes.*.host,nodes.*.ip,\
                             nodes.*.roles,nodes.*.fs.total,nodes.*.fs.data";
const SETTINGS_PATH: &str = "/_cluster/settings?include_defaults=true&flat_settings=true";
const CAT_NODES_PATH: &str = "/_cat/nodes?format=json&full_id=true&h=id,node.role";
const CAT_INDICES_PATH: &str =
    "/_cat/indices?format=json&expand_wildcards=all&h=index,status,pri,rep";
const DOCS_PATH: &str = "/_stats/docs?level=shards&filter_path=indices.*.shards.*.routing.primary,\
                         indices.*.shards.*.docs";

/// The elasticsearch probe's checks when `[elasticsearch]` is configured.
pub(crate) fn probes(config: &AgentConfig) -> Result<Vec<Box<dyn Probe>>, AgentError> {
    let Some(es) = &config.elasticsearch else {
        return Ok(Vec::new());
    };
    Ok(ElasticsearchProbe::from_config(es)?
        .into_iter()
        .map(|probe| Box::new(probe) as Box<dyn Probe>)
        .collect())
}

/// One check of the elasticsearch probe.
#[derive(Debug)]
pub struct ElasticsearchProbe {
    check: ElasticsearchCheck,
    interval: Duration,
    client: Arc<Client>,
    /// The last run failed: a failure is logged once, and so is the recovery.
    failing: bool,
}

/// What the checks share: where the node is and how to ask it.
#[derive(Debug)]
struct Client {
    base_url: String,
    http: HttpClient,
    /// The `authorization` header, marked sensitive (its `Debug` shows no value).
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    docs_floor: u64,
    docs_max_shards: u32,
    audit_index_pattern: String,
    audit_window_seconds: u32,
    /// The audit search's body, built once.
    audit_query: Bytes,
}

impl ElasticsearchProbe {
    /// One probe per enabled check, from a validated config; reads the TLS and credential
    /// files it names.
    pub fn from_config(
        config: &ElasticsearchConfig,
    ) -> Result<Vec<ElasticsearchProbe>, AgentError> {
        let tls = if config.url.starts_with("https://") {
            let files = TlsFiles {
                section: "elasticsearch",
                ca_file: config.ca_file.as_deref(),
                client_cert_file: config.client_cert_file.as_deref(),
                client_key_file: config.client_key_file.as_deref(),
            };
            Some(files.client_config(config.insecure_skip_verify)?)
        } else {
            None
        };
        let mut headers = Vec::new();
        if let Some(value) = authorization(config)? {
            headers.push((AUTHORIZATION, value));
        }
        let audit = &config.audit;
        let audit_window_seconds = u32::try_from(audit.window.as_secs()).unwrap_or(u32::MAX);
        let client = Arc::new(Client {
            base_url: config.url.trim_end_matches('/').to_owned(),
            http: HttpClient::new(tls, config.max_body_bytes),
            headers,
            timeout: config.timeout,
            docs_floor: config.docs.floor,
            docs_max_shards: config.docs.max_shards,
            audit_index_pattern: audit.index_pattern.clone(),
            audit_window_seconds,
            audit_query: audit_query(&audit.time_field, &audit.status_field, audit_window_seconds),
        });
        let fast = ElasticsearchConfig::DEFAULT_FAST_INTERVAL;
        let slow = ElasticsearchConfig::DEFAULT_SLOW_INTERVAL;
        let checks = [
            (
                ElasticsearchCheck::Health,
                config.health.enabled,
                config.health.interval.unwrap_or(fast),
            ),
            (
                ElasticsearchCheck::Storage,
                config.storage.enabled,
                config.storage.interval.unwrap_or(fast),
            ),
            (
                ElasticsearchCheck::Shards,
                config.shards.enabled,
                config.shards.interval.unwrap_or(slow),
            ),
            (
                ElasticsearchCheck::Docs,
                config.docs.enabled,
                config.docs.interval.unwrap_or(slow),
            ),
            (
                ElasticsearchCheck::Audit,
                !audit.index_pattern.is_empty(),
                audit
                    .interval
                    .unwrap_or(ElasticsearchConfig::DEFAULT_AUDIT_INTERVAL),
            ),
        ];
        Ok(checks
            .into_iter()
            .filter(|(_, enabled, _)| *enabled)
            .map(|(check, _, interval)| ElasticsearchProbe {
                check,
                interval,
                client: Arc::clone(&client),
                failing: false,
            })
            .collect())
    }

    /// Which check this probe runs.
    pub fn check_kind(&self) -> ElasticsearchCheck {
        self.check
    }

    /// Runs the check once, within the configured timeout; a failure is a sample too.
    pub async fn check(&self) -> ElasticsearchSample {
        let deadline = Instant::now() + self.client.timeout;
        let client = &self.client;
        let result = match self.check {
            ElasticsearchCheck::Health => client.health(deadline).await,
            ElasticsearchCheck::Storage => client.storage(deadline).await,
            ElasticsearchCheck::Shards => client.shards(deadline).await,
            ElasticsearchCheck::Docs => client.docs(deadline).await,
            // `from_config` never builds an unspecified check.
            ElasticsearchCheck::Audit | ElasticsearchCheck::Unspecified => {
                client.audit(deadline).await
            }
        };
        let (result, error) = match result {
            Ok(result) => (Some(result), None),
            Err(error) => (None, Some(error)),
        };
        ElasticsearchSample {
            check: self.check.into(),
            url: self.client.base_url.clone(),
            error,
            result,
        }
    }
}

impl Probe for ElasticsearchProbe {
    fn name(&self) -> &str {
        match self.check {
            ElasticsearchCheck::Health => "elasticsearch.health",
            ElasticsearchCheck::Storage => "elasticsearch.storage",
            ElasticsearchCheck::Shards => "elasticsearch.shards",
            ElasticsearchCheck::Docs => "elasticsearch.docs",
            ElasticsearchCheck::Audit | ElasticsearchCheck::Unspecified => "elasticsearch.audit",
        }
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// A failed check is queued too: the aggregator must hear why.
    fn collect(&mut self) -> Collecting<'_> {
        Box::pin(async move {
            let sample = self.check().await;
            match (&sample.error, self.failing) {
                (Some(error), false) => {
                    tracing::warn!(
                        check = self.name(),
                        "elasticsearch check failed: {}",
                        error.detail
                    )
                }
                (None, true) => tracing::info!(check = self.name(), "elasticsearch check ok again"),
                _ => {}
            }
            self.failing = sample.error.is_some();
            Collected {
                samples: vec![sample::Kind::Elasticsearch(sample)],
                more: false,
            }
        })
    }
}

impl Client {
    async fn health(&self, deadline: Instant) -> Result<CheckResult, ElasticsearchError> {
        // A health request that timed out waiting answers 408 with a valid body.
        let body = self
            .request(
                Method::GET,
                HEALTH_PATH,
                Bytes::new(),
                deadline,
                &[StatusCode::REQUEST_TIMEOUT],
            )
            .await?;
        let health = parse::health(&body).map_err(|message| unexpected(HEALTH_PATH, message))?;
        Ok(CheckResult::Health(health))
    }

    async fn storage(&self, deadline: Instant) -> Result<CheckResult, ElasticsearchError> {
        let nodes_body = self.get(NODES_FS_PATH, deadline).await?;
        let nodes =
            parse::data_nodes(&nodes_body).map_err(|message| unexpected(NODES_FS_PATH, message))?;
        let settings = self.settings(deadline).await?;
        let setting = |key: &str| settings.get(key).unwrap_or_default().to_owned();
        Ok(CheckResult::Storage(ElasticsearchStorage {
            nodes,
            watermark_low: setting(parse::WATERMARK_LOW),
            watermark_high: setting(parse::WATERMARK_HIGH),
            watermark_flood_stage: setting(parse::WATERMARK_FLOOD_STAGE),
        }))
    }

    async fn shards(&self, deadline: Instant) -> Result<CheckResult, ElasticsearchError> {
        let settings = self.settings(deadline).await?;
        let max_shards_per_node = settings
            .max_shards_per_node()
            .map_err(|message| unexpected(SETTINGS_PATH, message))?;
        let nodes_body = self.get(CAT_NODES_PATH, deadline).await?;
        let non_frozen_data_nodes = parse::non_frozen_data_nodes(&nodes_body)
            .map_err(|message| unexpected(CAT_NODES_PATH, message))?;
        let indices_body = self.get(CAT_INDICES_PATH, deadline).await?;
        let (open_shards, open_indices) = parse::open_shards(&indices_body)
            .map_err(|message| unexpected(CAT_INDICES_PATH, message))?;
        Ok(CheckResult::Shards(ElasticsearchShardHeadroom {
            max_shards_per_node,
            non_frozen_data_nodes,
            open_shards,
            open_indices,
        }))
    }

    async fn docs(&self, deadline: Instant) -> Result<CheckResult, ElasticsearchError> {
        let body = self.get(DOCS_PATH, deadline).await?;
        let docs = parse::docs(&body, self.docs_floor, self.docs_max_shards)
            .map_err(|message| unexpected(DOCS_PATH, message))?;
        Ok(CheckResult::Docs(docs))
    }

    async fn audit(&self, deadline: Instant) -> Result<CheckResult, ElasticsearchError> {
        // A pattern matching no index counts nothing rather than failing.
        let path = format!(
            "/{}/_search?ignore_unavailable=true&allow_no_indices=true",
            self.audit_index_pattern
        );
        let body = self
            .request(Method::POST, &path, self.audit_query.clone(), deadline, &[])
            .await?;
        let counts = parse::audit(&body).map_err(|message| unexpected(&path, message))?;
        Ok(CheckResult::Audit(ElasticsearchAudit {
            index_pattern: self.audit_index_pattern.clone(),
            window_seconds: self.audit_window_seconds,
            requests: counts.requests,
            errors_5xx: counts.errors_5xx,
            shards_failed: counts.shards_failed,
            timed_out: counts.timed_out,
        }))
    }

    async fn settings(&self, deadline: Instant) -> Result<parse::Settings, ElasticsearchError> {
        let body = self.get(SETTINGS_PATH, deadline).await?;
        parse::settings(&body).map_err(|message| unexpected(SETTINGS_PATH, message))
    }

    async fn get(&self, path: &str, deadline: Instant) -> Result<Bytes, ElasticsearchError> {
        self.request(Method::GET, path, Bytes::new(), deadline, &[])
            .await
    }

    /// The body of a 2xx answer (or of an answer with one of the `also_valid` statuses);
    /// every other outcome is the classified error.
    async fn request(
        &self,
        method: Method,
        path: &str,
        json: Bytes,
        deadline: Instant,
        also_valid: &[StatusCode],
    ) -> Result<Bytes, ElasticsearchError> {
        let error = |kind: ElasticsearchErrorKind, detail: String| ElasticsearchError {
            kind: kind.into(),
            path: path.to_owned(),
            http_status: 0,
            es_error_type: String::new(),
            detail,
        };
        let sent = self
            .http
            .send(method, &self.base_url, path, &self.headers, json);
        let answer = match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => {
                return Err(error(
                    ElasticsearchErrorKind::Timeout,
                    format!(
                        "timeout after {} waiting for {path}",
                        humantime::format_duration(self.timeout)
                    ),
                ));
            }
            Ok(Err(err)) => {
                let kind = match &err {
                    HttpError::Connect { refused: true, .. } => ElasticsearchErrorKind::Refused,
                    HttpError::Connect { .. } | HttpError::Url { .. } => {
                        ElasticsearchErrorKind::Connect
                    }
                    HttpError::Tls(_) => ElasticsearchErrorKind::Tls,
                    HttpError::Http { .. } => ElasticsearchErrorKind::Protocol,
                };
                return Err(error(kind, err.to_string()));
            }
            Ok(Ok(answer)) => answer,
        };
        let status = answer.status;
        if status.is_success() || also_valid.contains(&status) {
            return Ok(answer.body);
        }
        let kind = match status.as_u16() {
            401 | 403 => ElasticsearchErrorKind::Auth,
            500..=599 => ElasticsearchErrorKind::Server,
            _ => ElasticsearchErrorKind::Http,
        };
        let es_error_type = parse::error_type(&answer.body).unwrap_or_default();
        let mut detail = format!("HTTP {status} from {path}");
        if !es_error_type.is_empty() {
            detail.push_str(": ");
            detail.push_str(&es_error_type);
        }
        Err(ElasticsearchError {
            http_status: u32::from(status.as_u16()),
            es_error_type,
            ..error(kind, detail)
        })
    }
}

fn unexpected(path: &str, message: String) -> ElasticsearchError {
    ElasticsearchError {
        kind: ElasticsearchErrorKind::UnexpectedBody.into(),
        path: path.to_owned(),
        http_status: 0,
        es_error_type: String::new(),
        detail: format!("unexpected answer from {path}: {message}"),
    }
}

/// The search counting the window's requests (`hits.total`, exact with
/// `track_total_hits`) and, among them, the 5XX answers (a filter aggregation).
fn audit_query(time_field: &str, status_field: &str, window_seconds: u32) -> Bytes {
    let query = serde_json::json!({
        "size": 0,
        "track_total_hits": true,
        "query": {"range": {time_field: {"gte": format!("now-{window_seconds}s")}}},
        "aggs": {
            parse::ERRORS_AGGREGATION: {
                "filter": {"range": {status_field: {"gte": 500, "lt": 600}}}
            }
        }
    });
    Bytes::from(query.to_string())
}

/// The `authorization` header: `Basic` with the username and the password file's content,
/// or `ApiKey` with the API key file's; none without credentials.
fn authorization(config: &ElasticsearchConfig) -> Result<Option<HeaderValue>, AgentError> {
    let value = if let Some(path) = &config.api_key_file {
        format!(
            "ApiKey {}",
            read_secret("elasticsearch.api_key_file", path)?
        )
    } else if let Some(path) = &config.password_file {
        let password = read_secret("elasticsearch.password_file", path)?;
        let pair = format!("{}:{password}", config.username);
        format!("Basic {}", base64(pair.as_bytes()))
    } else {
        return Ok(None);
    };
    let mut value = HeaderValue::try_from(value).map_err(|_| AgentError::Secret {
        field: "elasticsearch credentials",
        message: "must be visible ASCII characters",
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// A secret file's content without surrounding whitespace; it must be one word of visible
/// ASCII. The content is never part of an error.
fn read_secret(field: &'static str, path: &std::path::Path) -> Result<String, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|source| AgentError::SecretRead {
        field,
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(AgentError::Secret {
            field,
            message: "the file is empty",
        });
    }
    if !secret.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(AgentError::Secret {
            field,
            message: "the secret must be one word of visible ASCII characters",
        });
    }
    Ok(secret.to_owned())
}

/// Standard base64 with padding (RFC 4648 §4), for the `Basic` credentials: a few lines
/// instead of a dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (idx, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if idx <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
