//! The agent's configuration: the TOML format, its defaults, and its validation.
//!
//! Loading is three steps: parse (serde, unknown fields are errors), [`AgentConfig::validate`]
//! (collects *every* problem, each naming its field), then build ([`crate::Agent::new`]).
//! This module does no I/O beyond reading the file it is given: defaults that need the
//! machine (the hostname, the generated instance id) are resolved by [`crate::identity`]
//! when the agent is built, so `check-config` has no side effects.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole agent configuration, as in `packaging/agent.toml`.
///
/// Every field has a default so that a missing required field is reported by
/// [`AgentConfig::validate`] together with all other problems, not alone by the parser.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the agent keeps its seq counter and generated instance id.
    pub state_dir: PathBuf,
    /// How long the uplink may keep trying to get outstanding batches acknowledged after a
    /// shutdown was requested.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub identity: IdentityConfig,
    pub aggregator: AggregatorConfig,
    pub host: HostConfig,
    pub outbox: OutboxConfig,
    /// The local database node's view of its cluster; absent means no gossip probe.
    pub gossip: Option<GossipConfig>,
    /// Log files to tail and ship line by line (`[[logs]]`).
    pub logs: Vec<LogConfig>,
    /// The Elasticsearch cluster's checks (seed 001); absent means no elasticsearch probe.
    pub elasticsearch: Option<ElasticsearchConfig>,
    /// How the agent's own log lines are written to stderr; `--log-format` overrides it.
    pub log_format: LogFormat,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: PathBuf::from("/var/lib/hostwatch"),
            shutdown_grace: Duration::from_secs(5),
            identity: IdentityConfig::default(),
            aggregator: AggregatorConfig::default(),
            host: HostConfig::default(),
            outbox: OutboxConfig::default(),
            gossip: None,
            logs: Vec::new(),
            elasticsearch: None,
            log_format: LogFormat::Plain,
        }
    }
}

/// The agent's own log output on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (what the journal shows best).
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Who this node is (DESIGN §3).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Required.
    pub tenant: String,
    /// Required.
    pub cluster: String,
    /// Empty means the hostname.
    pub node: String,
    /// Empty means a UUID generated once and kept in `state_dir/instance_id`.
    pub service_instance_id: String,
    pub business_group: String,
    pub cloud_service_name: String,
    pub instance_class: String,
    pub labels: BTreeMap<String, String>,
}

/// Where the aggregator is and how to prove who we are to it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Required; `http://host:port` or `https://host:port`.
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// PEM file of the CA(s) that sign the aggregator's certificate (https only; default:
    /// the system's CA bundle).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key for mutual TLS; both or neither.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// A file holding the bearer token sent with the stream (`authorization: Bearer …` and
    /// `Hello.token`). Surrounding whitespace is ignored. The token is never logged.
    pub token_file: Option<PathBuf>,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            url: String::new(),
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            token_file: None,
        }
    }
}

/// Which database the gossip probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GossipAdapter {
    /// `GET /gossip`.
    Eventstoredb,
    /// `GET /_cat/nodes` and `GET /_cluster/health`.
    Elasticsearch,
}

impl GossipAdapter {
    /// The name sent in `GossipSample.adapter`.
    pub fn name(self) -> &'static str {
        match self {
            GossipAdapter::Eventstoredb => "eventstoredb",
            GossipAdapter::Elasticsearch => "elasticsearch",
        }
    }
}

/// The gossip probe (DESIGN §4): the local database node's view of its cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipConfig {
    /// Required.
    pub adapter: Option<GossipAdapter>,
    /// Required: the local node's HTTP base URL, e.g. `https://127.0.0.1:2113`.
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// For the whole query: connect, TLS, request and answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM file of the CA(s) that sign the node's certificate (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key, when the node asks for a client certificate.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Accept any certificate (test clusters with self-signed certificates only).
    pub insecure_skip_verify: bool,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            adapter: None,
            url: String::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            insecure_skip_verify: false,
        }
    }
}

/// The elasticsearch probe (DESIGN §4, seed 001): a node of the cluster, asked over HTTP(S)
/// by each check at the check's own interval.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Required: the HTTP base URL of a node, e.g. `https://127.0.0.1:9200`, without
    /// credentials (they go in `username`/`password_file` or `api_key_file`).
    pub url: String,
    /// For one check run, all its requests: connect, TLS, requests and answers.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM file of the CA(s) that sign the node's certificate (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key, when the node asks for a client certificate.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Accept any certificate (test clusters with self-signed certificates only).
    pub insecure_skip_verify: bool,
    /// Basic authentication: the user, with its password in `password_file`.
    pub username: String,
    pub password_file: Option<PathBuf>,
    /// API key authentication: a file holding the key's `encoded` form (base64 of
    /// `id:api_key`, as `POST /_security/api_key` returns it).
    pub api_key_file: Option<PathBuf>,
    /// The longest answer read (`_stats` of a big cluster is the longest).
    pub max_body_bytes: usize,
    /// `GET /_cluster/health`; default every 30 s.
    pub health: ElasticsearchCheckConfig,
    /// `_nodes/stats/fs` and the watermarks; default every 30 s.
    pub storage: ElasticsearchCheckConfig,
    /// Shard headroom inputs; default every 30 min (the aggregator decides its cadence).
    pub shards: ElasticsearchCheckConfig,
    /// Documents per primary shard; default every 30 min.
    pub docs: ElasticsearchDocsConfig,
    /// The audit trail's 5XX answers; runs only when `index_pattern` is set.
    pub audit: ElasticsearchAuditConfig,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        ElasticsearchConfig {
            url: String::new(),
            timeout: Duration::from_secs(10),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            insecure_skip_verify: false,
            username: String::new(),
            password_file: None,
            api_key_file: None,
            max_body_bytes: 16 * 1024 * 1024,
            health: ElasticsearchCheckConfig::default(),
            storage: ElasticsearchCheckConfig::default(),
            shards: ElasticsearchCheckConfig::default(),
            docs: ElasticsearchDocsConfig::default(),
            audit: ElasticsearchAuditConfig::default(),
        }
    }
}

impl ElasticsearchConfig {
    /// Health and storage: every 30 s (seed 001 reacts to red within a minute).
    pub const DEFAULT_FAST_INTERVAL: Duration = Duration::from_secs(30);
    /// Shards and docs change slowly: every 30 min.
    pub const DEFAULT_SLOW_INTERVAL: Duration = Duration::from_secs(30 * 60);
    /// The audit search: every 5 min (seed 001).
    pub const DEFAULT_AUDIT_INTERVAL: Duration = Duration::from_secs(5 * 60);
}

/// One check of the elasticsearch probe.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticsearchCheckConfig {
    pub enabled: bool,
    /// Empty means the check's default.
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
}

impl Default for ElasticsearchCheckConfig {
    fn default() -> Self {
        ElasticsearchCheckConfig {
            enabled: true,
            interval: None,
        }
    }
}

/// Documents per primary shard.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticsearchDocsConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Only shards with more documents (count + deleted) than this are reported; keep it
    /// below the rules' lowest threshold (1.8 billion).
    pub floor: u64,
    /// At most this many shards per sample, the fullest first.
    pub max_shards: u32,
}

impl Default for ElasticsearchDocsConfig {
    fn default() -> Self {
        ElasticsearchDocsConfig {
            enabled: true,
            interval: None,
            floor: 1_000_000_000,
            max_shards: 100,
        }
    }
}

/// The audit trail's 5XX count: one search over the last `window`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticsearchAuditConfig {
    /// The indices holding the audit trail, e.g. `audit-*`; empty means no audit check.
    pub index_pattern: String,
    /// The field with each request's time.
    pub time_field: String,
    /// The (numeric) field with each request's HTTP status.
    pub status_field: String,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
}

impl Default for ElasticsearchAuditConfig {
    fn default() -> Self {
        ElasticsearchAuditConfig {
            index_pattern: String::new(),
            time_field: "@timestamp".to_owned(),
            status_field: "http.response.status_code".to_owned(),
            window: Duration::from_secs(15 * 60),
            interval: None,
        }
    }
}

/// One log file (or a `*`/`?` pattern in its file name) to tail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Required: an absolute path; the file name may contain `*` and `?`.
    pub path: String,
    /// How often the files are checked for new lines, rotation and truncation.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Longer lines are cut to this many bytes (and counted).
    pub max_line_bytes: usize,
    /// At most this many lines go into one batch.
    pub max_lines_per_batch: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            path: String::new(),
            poll_interval: Duration::from_secs(1),
            max_line_bytes: 16 * 1024,
            max_lines_per_batch: 500,
        }
    }
}

/// The host probe.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// When non-empty, only these mount points are reported.
    pub mounts_include: Vec<String>,
    /// Mount points never reported.
    pub mounts_exclude: Vec<String>,
    /// Filesystem types skipped in addition to the built-in pseudo filesystems.
    pub fs_types_exclude: Vec<String>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            interval: Duration::from_secs(15),
            mounts_include: Vec::new(),
            mounts_exclude: Vec::new(),
            fs_types_exclude: Vec::new(),
        }
    }
}

/// The unacknowledged batches, spooled to `state_dir/outbox`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// When the outbox holds this many batches, the oldest is dropped for each new one.
    pub max_batches: usize,
    /// When the spooled batches would take more than this many bytes (encoded), the oldest
    /// are dropped to make room for a new one.
    pub max_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_batches: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The shortest sampling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown fields and wrong types. The parser stops at the first one.
    #[error("config: {origin}: {message}")]
    Parse { origin: String, message: String },
    /// Every validation problem found, in field order.
    #[error("{}", InvalidFields(.0))]
    Invalid(Vec<InvalidField>),
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// Dotted path of the field, e.g. `host.interval` or `host.mounts_include[2]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config: {}: {}", self.field, self.message)
    }
}

/// Displays a list of invalid fields one per line.
struct InvalidFields<'a>(&'a [InvalidField]);

impl fmt::Display for InvalidFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (idx, invalid) in self.0.iter().enumerate() {
            if idx > 0 {
                writeln!(f)?;
            }
            write!(f, "{invalid}")?;
        }
        Ok(())
    }
}

impl AgentConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text, &path.display().to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating it; `origin` names the text in errors (a path).
    pub fn parse(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
        toml::from_str(text).map_err(|err| ConfigError::Parse {
            origin: origin.to_owned(),
            message: err.to_string().trim_end().to_owned(),
        })
    }

    /// Checks every field and returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();

        if self.state_dir.as_os_str().is_empty() {
            problems.add("state_dir", "must not be empty");
        }

        let identity = &self.identity;
        check_name(&mut problems, "identity.tenant", &identity.tenant, true);
        check_name(&mut problems, "identity.cluster", &identity.cluster, true);
        check_name(&mut problems, "identity.node", &identity.node, false);
        if !identity.service_instance_id.is_empty()
            && uuid::Uuid::parse_str(&identity.service_instance_id).is_err()
        {
            problems.add(
                "identity.service_instance_id",
                format!(
                    "{:?} is not a UUID (leave it empty to generate one)",
                    identity.service_instance_id
                ),
            );
        }
        for key in identity.labels.keys() {
            if key.trim().is_empty() {
                problems.add("identity.labels", "a label name must not be empty");
            }
        }

        check_url(&mut problems, "aggregator.url", &self.aggregator.url);
        if self.aggregator.connect_timeout.is_zero() {
            problems.add("aggregator.connect_timeout", "must be more than 0s");
        }
        check_client_identity(
            &mut problems,
            "aggregator",
            &self.aggregator.client_cert_file,
            &self.aggregator.client_key_file,
        );
        if !self.aggregator.url.starts_with("https://") {
            for (field, value) in [
                ("ca_file", &self.aggregator.ca_file),
                ("client_cert_file", &self.aggregator.client_cert_file),
            ] {
                if value.is_some() {
                    problems.add(
                        format!("aggregator.{field}"),
                        "needs an https:// aggregator.url",
                    );
                }
            }
        }

        if self.host.interval < MIN_INTERVAL {
            problems.add(
                "host.interval",
                format!(
                    "must be at least {}",
                    humantime::format_duration(MIN_INTERVAL)
                ),
            );
        }
        for (list_name, list) in [
            ("mounts_include", &self.host.mounts_include),
            ("mounts_exclude", &self.host.mounts_exclude),
        ] {
            for (idx, mount) in list.iter().enumerate() {
                if !mount.starts_with('/') {
                    problems.add(
                        format!("host.{list_name}[{idx}]"),
                        format!("{mount:?} is not an absolute mount point"),
                    );
                }
            }
        }
        for (idx, fs_type) in self.host.fs_types_exclude.iter().enumerate() {
            if fs_type.trim().is_empty() {
                problems.add(format!("host.fs_types_exclude[{idx}]"), "must not be empty");
            }
        }

        if self.outbox.max_batches == 0 {
            problems.add("outbox.max_batches", "must be at least 1");
        }
        if self.outbox.max_bytes == 0 {
            problems.add("outbox.max_bytes", "must be at least 1");
        }

        if let Some(gossip) = &self.gossip {
            if gossip.adapter.is_none() {
                problems.add(
                    "gossip.adapter",
                    "is required (\"eventstoredb\" or \"elasticsearch\")",
                );
            }
            check_url(&mut problems, "gossip.url", &gossip.url);
            if gossip.interval < MIN_INTERVAL {
                problems.add(
                    "gossip.interval",
                    format!(
                        "must be at least {}",
                        humantime::format_duration(MIN_INTERVAL)
                    ),
                );
            }
            if gossip.timeout.is_zero() {
                problems.add("gossip.timeout", "must be more than 0s");
            }
            check_client_identity(
                &mut problems,
                "gossip",
                &gossip.client_cert_file,
                &gossip.client_key_file,
            );
        }

        if let Some(es) = &self.elasticsearch {
            check_elasticsearch(&mut problems, es);
        }

        for (idx, log) in self.logs.iter().enumerate() {
            if log.path.is_empty() {
                problems.add(format!("logs[{idx}].path"), "is required");
            } else if !log.path.starts_with('/') {
                problems.add(
                    format!("logs[{idx}].path"),
                    format!("{:?} is not an absolute path", log.path),
                );
            } else if log
                .path
                .rsplit_once('/')
                .is_some_and(|(dir, _)| dir.contains(['*', '?']))
            {
                problems.add(
                    format!("logs[{idx}].path"),
                    format!("{:?}: only the file name may contain '*' or '?'", log.path),
                );
            }
            if log.poll_interval < MIN_INTERVAL {
                problems.add(
                    format!("logs[{idx}].poll_interval"),
                    format!(
                        "must be at least {}",
                        humantime::format_duration(MIN_INTERVAL)
                    ),
                );
            }
            if log.max_line_bytes == 0 {
                problems.add(format!("logs[{idx}].max_line_bytes"), "must be at least 1");
            }
            if log.max_lines_per_batch == 0 {
                problems.add(
                    format!("logs[{idx}].max_lines_per_batch"),
                    "must be at least 1",
                );
            }
        }

        problems.into_result()
    }
}

#[derive(Default)]
struct Problems(Vec<InvalidField>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(InvalidField {
            field: field.into(),
            message: message.into(),
        });
    }

    fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

/// Tenant, cluster and node names end up in keys, topics and metric dimensions, so they
/// are restricted to a charset that is safe in all of them.
fn check_name(problems: &mut Problems, field: &str, value: &str, required: bool) {
    if value.is_empty() {
        if required {
            problems.add(field, "is required");
        }
        return;
    }
    // The aggregator refuses a Hello with any other name: one rule for both.
    if let Some(problem) = proto::names::check(value) {
        problems.add(field, problem);
    }
}

fn check_elasticsearch(problems: &mut Problems, es: &ElasticsearchConfig) {
    check_url(problems, "elasticsearch.url", &es.url);
    if es.url.split_once("://").is_some_and(|(_, rest)| {
        rest.split(['/', '?', '#'])
            .next()
            .is_some_and(|authority| authority.contains('@'))
    }) {
        problems.add(
            "elasticsearch.url",
            "must not hold credentials (use username and password_file, or api_key_file)",
        );
    }
    if es.timeout.is_zero() {
        problems.add("elasticsearch.timeout", "must be more than 0s");
    }
    check_client_identity(
        problems,
        "elasticsearch",
        &es.client_cert_file,
        &es.client_key_file,
    );
    if !es.url.starts_with("https://") {
        for (field, value) in [
            ("ca_file", &es.ca_file),
            ("client_cert_file", &es.client_cert_file),
        ] {
            if value.is_some() {
                problems.add(
                    format!("elasticsearch.{field}"),
                    "needs an https:// elasticsearch.url",
                );
            }
        }
    }
    match (es.username.is_empty(), &es.password_file) {
        (false, None) => problems.add("elasticsearch.password_file", "is required with username"),
        (true, Some(_)) => problems.add("elasticsearch.username", "is required with password_file"),
        _ => {}
    }
    if es.api_key_file.is_some() && (!es.username.is_empty() || es.password_file.is_some()) {
        problems.add(
            "elasticsearch.api_key_file",
            "use either api_key_file or username and password_file, not both",
        );
    }
    if es.max_body_bytes < 1024 {
        problems.add("elasticsearch.max_body_bytes", "must be at least 1024");
    }
    for (name, interval) in [
        ("health", es.health.interval),
        ("storage", es.storage.interval),
        ("shards", es.shards.interval),
        ("docs", es.docs.interval),
        ("audit", es.audit.interval),
    ] {
        if interval.is_some_and(|interval| interval < MIN_INTERVAL) {
            problems.add(
                format!("elasticsearch.{name}.interval"),
                format!(
                    "must be at least {}",
                    humantime::format_duration(MIN_INTERVAL)
                ),
            );
        }
    }
    if es.docs.max_shards == 0 {
        problems.add("elasticsearch.docs.max_shards", "must be at least 1");
    }
    let audit = &es.audit;
    if !audit.index_pattern.is_empty() {
        if let Some(bad) = audit
            .index_pattern
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\\'))
        {
            problems.add(
                "elasticsearch.audit.index_pattern",
                format!("{:?} contains {bad:?}", audit.index_pattern),
            );
        }
        for (field, value) in [
            ("time_field", &audit.time_field),
            ("status_field", &audit.status_field),
        ] {
            if value.trim().is_empty() {
                problems.add(format!("elasticsearch.audit.{field}"), "must not be empty");
            }
        }
        if audit.window < Duration::from_secs(1) {
            problems.add("elasticsearch.audit.window", "must be at least 1s");
        }
    }
}

/// A client certificate needs its key and the reverse.
fn check_client_identity(
    problems: &mut Problems,
    section: &str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) {
    match (cert, key) {
        (Some(_), None) => problems.add(
            format!("{section}.client_key_file"),
            "is required with client_cert_file",
        ),
        (None, Some(_)) => problems.add(
            format!("{section}.client_cert_file"),
            "is required with client_key_file",
        ),
        _ => {}
    }
}

fn check_url(problems: &mut Problems, field: &str, url: &str) {
    if url.is_empty() {
        problems.add(field, "is required");
        return;
    }
    if !url.starts_with("http://") && !url.starts_with("https://") {
        problems.add(
            field,
            format!("{url:?} must start with http:// or https://"),
        );
        return;
    }
    match url.parse::<tonic::codegen::http::Uri>() {
        Ok(uri) if uri.host().is_some_and(|host| !host.is_empty()) => {}
        Ok(_) => problems.add(field, format!("{url:?} names no host")),
        Err(err) => problems.add(field, format!("{url:?} is not a URL: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [identity]
        tenant = "acme"
        cluster = "orders-db"
        [aggregator]
        url = "http://127.0.0.1:7170"
    "#;

    fn invalid_fields(err: ConfigError) -> Vec<String> {
        match err {
            ConfigError::Invalid(fields) => fields.iter().map(|f| f.field.clone()).collect(),
            other => panic!("expected validation errors, got {other}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = AgentConfig::parse(MINIMAL, "test").unwrap();
        config.validate().unwrap();
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/hostwatch"));
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
        assert_eq!(config.host.interval, Duration::from_secs(15));
        assert_eq!(config.aggregator.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.outbox.max_batches, 10_000);
        assert_eq!(config.identity.node, "");
    }

    #[test]
    fn durations_are_human() {
        let text = format!("shutdown_grace = \"1m 30s\"\n[host]\ninterval = \"250ms\"\n{MINIMAL}");
        // [host] must come after the top-level keys; MINIMAL's tables follow it.
        let config = AgentConfig::parse(&text, "test").unwrap();
        assert_eq!(config.shutdown_grace, Duration::from_secs(90));
        assert_eq!(config.host.interval, Duration::from_millis(250));
    }

    #[test]
    fn validation_lists_every_error_at_once() {
        let text = r#"
            state_dir = ""
            [identity]
            tenant = ""
            cluster = "orders db"
            node = "db/1"
            service_instance_id = "not-a-uuid"
            [aggregator]
            url = "ftp://agg:7170"
            connect_timeout = "0s"
            [host]
            interval = "50ms"
            mounts_include = ["/", "data"]
            mounts_exclude = ["boot"]
            fs_types_exclude = [""]
            [outbox]
            max_batches = 0
        "#;
        let err = AgentConfig::parse(text, "test")
            .unwrap()
            .validate()
            .unwrap_err();
        let rendered = err.to_string();
        assert_eq!(
            invalid_fields(err),
            [
                "state_dir",
                "identity.tenant",
                "identity.cluster",
                "identity.node",
                "identity.service_instance_id",
                "aggregator.url",
                "aggregator.connect_timeout",
                "host.interval",
                "host.mounts_include[1]",
                "host.mounts_exclude[0]",
                "host.fs_types_exclude[0]",
                "outbox.max_batches",
            ]
        );
        assert_eq!(rendered.lines().count(), 12);
        assert!(
            rendered.contains("config: host.interval: must be at least 100ms"),
            "{rendered}"
        );
        assert!(
            rendered.contains("config: identity.tenant: is required"),
            "{rendered}"
        );
        assert!(
            rendered.contains("config: aggregator.url: \"ftp://agg:7170\" must start with"),
            "{rendered}"
        );
    }

    #[test]
    fn empty_file_reports_all_required_fields() {
        let err = AgentConfig::parse("", "test")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            invalid_fields(err),
            ["identity.tenant", "identity.cluster", "aggregator.url"]
        );
    }

    #[test]
    fn url_must_be_http_with_a_host() {
        for (url, ok) in [
            ("http://127.0.0.1:7170", true),
            ("http://agg.example:7170/", true),
            ("https://agg.example:7170", true),
            ("ftp://agg:7170", false),
            ("127.0.0.1:7170", false),
            ("http://", false),
            ("http://bad host", false),
        ] {
            let mut problems = Problems::default();
            check_url(&mut problems, "aggregator.url", url);
            assert_eq!(problems.0.is_empty(), ok, "{url}: {:?}", problems.0);
        }
    }

    #[test]
    fn unknown_fields_are_errors() {
        let text = format!("{MINIMAL}\n[host]\nintervall = \"15s\"\n");
        let err = AgentConfig::parse(&text, "agent.toml").unwrap_err();
        let rendered = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(rendered.starts_with("config: agent.toml: "), "{rendered}");
        assert!(rendered.contains("intervall"), "{rendered}");
    }

    #[test]
    fn a_configured_instance_id_must_be_a_uuid() {
        let text = MINIMAL.replace(
            "[aggregator]",
            "service_instance_id = \"6c1b8c1e-2d7a-4f5e-9b1a-0d6f3e2a9c11\"\n[aggregator]",
        );
        AgentConfig::parse(&text, "test")
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn gossip_logs_and_tls_sections_are_checked_together() {
        let text = format!(
            r#"{MINIMAL}
            client_cert_file = "/etc/hostwatch/agent.pem"
            [gossip]
            url = "tcp://127.0.0.1:2113"
            interval = "10ms"
            timeout = "0s"
            client_key_file = "/etc/hostwatch/es.key"
            [[logs]]
            path = "var/log/x.json"
            [[logs]]
            path = "/var/log/*/x.json"
            max_lines_per_batch = 0
            "#
        );
        let err = AgentConfig::parse(&text, "test")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            invalid_fields(err),
            [
                "aggregator.client_key_file",
                "aggregator.client_cert_file",
                "gossip.adapter",
                "gossip.url",
                "gossip.interval",
                "gossip.timeout",
                "gossip.client_cert_file",
                "logs[0].path",
                "logs[1].path",
                "logs[1].max_lines_per_batch",
            ]
        );
    }

    #[test]
    fn a_full_gossip_section_with_defaults() {
        let text = format!(
            "log_format = \"json\"\n{MINIMAL}\n[gossip]\nadapter = \"elasticsearch\"\n\
             url = \"https://127.0.0.1:9200\"\ninsecure_skip_verify = true\n\
             [[logs]]\npath = \"/var/log/eventstore/*.json\"\n"
        );
        let config = AgentConfig::parse(&text, "test").unwrap();
        config.validate().unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        let gossip = config.gossip.unwrap();
        assert_eq!(gossip.adapter, Some(GossipAdapter::Elasticsearch));
        assert_eq!(gossip.interval, Duration::from_secs(30));
        assert_eq!(gossip.timeout, Duration::from_secs(5));
        assert!(gossip.insecure_skip_verify);
        assert_eq!(config.logs[0].poll_interval, Duration::from_secs(1));
        assert!(
            AgentConfig::parse(MINIMAL, "test")
                .unwrap()
                .gossip
                .is_none()
        );
    }

    #[test]
    fn an_elasticsearch_section_with_the_seed_defaults() {
        let text = format!(
            "{MINIMAL}\n[elasticsearch]\nurl = \"https://127.0.0.1:9200\"\n\
             username = \"hostwatch\"\npassword_file = \"/etc/hostwatch/es.password\"\n\
             [elasticsearch.docs]\nfloor = 5\n[elasticsearch.audit]\nindex_pattern = \"audit-*\"\n"
        );
        let config = AgentConfig::parse(&text, "test").unwrap();
        config.validate().unwrap();
        let es = config.elasticsearch.unwrap();
        assert_eq!(es.timeout, Duration::from_secs(10));
        assert!(es.health.enabled && es.storage.enabled && es.shards.enabled && es.docs.enabled);
        assert_eq!(es.health.interval, None);
        assert_eq!(es.docs.floor, 5);
        assert_eq!(es.docs.max_shards, 100);
        assert_eq!(es.audit.window, Duration::from_secs(900));
        assert_eq!(es.audit.time_field, "@timestamp");
        assert_eq!(es.audit.interval, None);
    }

    #[test]
    fn elasticsearch_validation_lists_every_error() {
        let text = format!(
            r#"{MINIMAL}
            [elasticsearch]
            url = "http://elastic:changeme@127.0.0.1:9200"
            timeout = "0s"
            ca_file = "/etc/es/ca.pem"
            username = "hostwatch"
            api_key_file = "/etc/hostwatch/es.key"
            max_body_bytes = 10
            [elasticsearch.health]
            interval = "10ms"
            [elasticsearch.docs]
            max_shards = 0
            [elasticsearch.audit]
            index_pattern = "audit /x"
            status_field = " "
            window = "0s"
            "#
        );
        let err = AgentConfig::parse(&text, "test")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            invalid_fields(err),
            [
                "elasticsearch.url",
                "elasticsearch.timeout",
                "elasticsearch.ca_file",
                "elasticsearch.password_file",
                "elasticsearch.api_key_file",
                "elasticsearch.max_body_bytes",
                "elasticsearch.health.interval",
                "elasticsearch.docs.max_shards",
                "elasticsearch.audit.index_pattern",
                "elasticsearch.audit.status_field",
                "elasticsearch.audit.window",
            ]
        );
    }
}
