//! The aggregator's configuration file (TOML): parsing, defaults and validation.
//!
//! Parsing rejects unknown fields; `validate` then collects every problem at once so
//! `check-config` can list them all. Rule defaults are the seeds' (DESIGN §6). This module
//! only describes configuration; it builds nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::model::Severity;
use crate::sink::SinkConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// The one gRPC listener: Ingest and Operator services, reflection and health.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the SQLite database lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// How many connections the listener holds and how long it waits for them.
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// What the operator API allows and how much one answer holds.
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    /// Tokens and TLS; without tokens the listener must be on loopback.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Where events go. Without any, events are only kept and shown through the API.
    #[serde(default)]
    pub integrations: Vec<IntegrationConfig>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7170";

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7170))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/hostwatch")
}

impl AggregatorConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Parses TOML text; the error names the line and field.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|error| error.to_string().trim_end().to_owned())
    }

    /// The configuration `up` runs with: defaults, the given listener and data directory,
    /// and every event on stdout.
    pub fn embedded(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            ingest: IngestConfig::default(),
            connections: ConnectionsConfig::default(),
            api: ApiConfig::default(),
            rules: RulesConfig::default(),
            auth: AuthConfig::default(),
            integrations: vec![IntegrationConfig {
                name: "log".to_owned(),
                source: Vec::new(),
                sink: SinkConfig::Log,
                min_severity: None,
                tenant: None,
                clusters: Vec::new(),
                timeout: default_delivery_timeout(),
                backoff_min: default_backoff_min(),
                backoff_max: default_backoff_max(),
            }],
        }
    }

    /// Every problem, each naming its field, e.g. `config: rules.disk_usage.threshold: …`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        self.ingest.validate(&mut errors);
        self.connections.validate(&mut errors);
        self.rules.validate(&mut errors);
        self.auth.validate(&mut errors);
        errors.extend(self.exposure_error());
        for (index, integration) in self.integrations.iter().enumerate() {
            if integration.name.trim().is_empty() {
                errors.push(format!(
                    "config: integrations[{index}].name: must not be empty"
                ));
            }
            if integration.name.contains('/') {
                errors.push(format!(
                    "config: integrations[{index}].name: {:?} may not contain '/'",
                    integration.name
                ));
            }
            let duplicate = self.integrations[..index]
                .iter()
                .any(|i| i.name == integration.name);
            if duplicate {
                errors.push(format!(
                    "config: integrations[{index}].name: {:?} is used twice",
                    integration.name
                ));
            }
            if integration.backoff_min.is_zero()
                || integration.backoff_min > integration.backoff_max
            {
                errors.push(format!(
                    "config: integrations[{index}].backoff_min: must be over zero and at most backoff_max"
                ));
            }
            if integration.timeout.is_zero() {
                errors.push(format!(
                    "config: integrations[{index}].timeout: must be over zero"
                ));
            }
            if let Err(error) = integration.sink.build(integration.timeout) {
                errors.push(format!("config: integrations[{index}].sink.{error}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl AggregatorConfig {
    /// Without agent and operator tokens anyone who reaches the listener could report as
    /// any node and read every tenant's data: such an aggregator listens on loopback only.
    pub fn exposure_error(&self) -> Option<String> {
        let mut missing = Vec::new();
        if !self.auth.agents_enabled() {
            missing.push("auth.agent_tokens");
        }
        if !self.auth.operators_enabled() {
            missing.push("auth.operator_tokens");
        }
        if missing.is_empty() || self.listen.ip().is_loopback() {
            return None;
        }
        Some(format!(
            "config: listen: {} is not a loopback address, and there are no {}: anyone who \
             reaches it could report as any node or read every tenant's data; configure \
             the tokens or listen on 127.0.0.1",
            self.listen,
            missing.join(" and ")
        ))
    }
}

/// Limits on what agents may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// How far in the future (by the aggregator's clock) a sample may be stamped.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// The largest message an agent may send; larger ones end its stream with
    /// RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_clock_skew: Duration::from_secs(300),
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

impl IngestConfig {
    fn validate(&self, errors: &mut Vec<String>) {
        if self.max_message_bytes < 1024 {
            errors.push("config: ingest.max_message_bytes: must be at least 1024".to_owned());
        }
    }
}

/// The listener's bounds: every connection costs a file descriptor and memory, so their
/// number is capped and a connection that does nothing is closed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// The most connections held at once; further ones wait in the kernel's backlog.
    /// Default: the open-file limit less `listener::RESERVED_FILES` (the database, sinks
    /// and logs need descriptors too); a larger value is lowered to that.
    pub max: Option<usize>,
    /// A new connection must start its first call within this (TLS and HTTP/2
    /// handshakes included), or it is closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection with no call in progress for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// An agent's stream must send its Hello within this, or it ends with DEADLINE_EXCEEDED.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// HTTP/2 PINGs this often find peers that are gone without closing the connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A PING unanswered for this long closes the connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            hello_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl ConnectionsConfig {
    fn validate(&self, errors: &mut Vec<String>) {
        if self.max == Some(0) {
            errors.push("config: connections.max: must be at least 1".to_owned());
        }
        for (field, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("hello_timeout", self.hello_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if value.is_zero() {
                errors.push(format!("config: connections.{field}: must be over zero"));
            }
        }
    }
}

/// The operator API's limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Whether sinks created through the API may send to loopback, link-local and
    /// private addresses (the aggregator's own network). Off: a tenant admin cannot make
    /// the aggregator probe internal services.
    pub allow_private_sink_addresses: bool,
}

/// Per-rule settings. A rule left out keeps all its defaults; a field left out keeps
/// that rule's default for it (each rule has its own, so the file is read as overrides).
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RulesFile")]
pub struct RulesConfig {
    pub core_load: ThresholdRuleConfig,
    pub memory_usage: ThresholdRuleConfig,
    pub disk_usage: ThresholdRuleConfig,
    pub node_silent: NodeSilentConfig,
    pub cluster_consensus: ClusterConsensusConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        let minutes = |n: u64| Duration::from_secs(60 * n);
        Self {
            core_load: ThresholdRuleConfig {
                threshold: 2.0,
                open_for: Duration::ZERO,
                close_for: minutes(2),
                ..ThresholdRuleConfig::default()
            },
            memory_usage: ThresholdRuleConfig {
                threshold: 90.0,
                open_for: Duration::ZERO,
                close_for: minutes(2),
                ..ThresholdRuleConfig::default()
            },
            disk_usage: ThresholdRuleConfig {
                threshold: 80.0,
                open_for: minutes(1),
                close_for: Duration::ZERO,
                ..ThresholdRuleConfig::default()
            },
            node_silent: NodeSilentConfig::default(),
            cluster_consensus: ClusterConsensusConfig::default(),
        }
    }
}

impl RulesConfig {
    fn validate(&self, errors: &mut Vec<String>) {
        self.core_load.validate("core_load", None, errors);
        self.memory_usage
            .validate("memory_usage", Some(100.0), errors);
        self.disk_usage.validate("disk_usage", Some(100.0), errors);
        if self.node_silent.missed_intervals == 0 {
            errors.push("config: rules.node_silent.missed_intervals: must be at least 1".into());
        }
        if self.cluster_consensus.missed_intervals == 0 {
            errors.push(
                "config: rules.cluster_consensus.missed_intervals: must be at least 1".into(),
            );
        }
    }

    /// How far apart two samples of a node may be before they no longer count as
    /// consecutive: the same silence after which `node_silent` opens.
    pub fn max_gap(&self, interval: Duration) -> Duration {
        interval.saturating_mul(self.node_silent.missed_intervals)
    }
}

/// `[rules]` as written: overrides on top of each rule's own defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RulesFile {
    core_load: ThresholdRuleOverrides,
    memory_usage: ThresholdRuleOverrides,
    disk_usage: ThresholdRuleOverrides,
    node_silent: NodeSilentConfig,
    cluster_consensus: ClusterConsensusConfig,
}

impl From<RulesFile> for RulesConfig {
    fn from(file: RulesFile) -> Self {
        let defaults = RulesConfig::default();
        Self {
            core_load: file.core_load.over(defaults.core_load),
            memory_usage: file.memory_usage.over(defaults.memory_usage),
            disk_usage: file.disk_usage.over(defaults.disk_usage),
            node_silent: file.node_silent,
            cluster_consensus: file.cluster_consensus,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdRuleOverrides {
    enabled: Option<bool>,
    threshold: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    open_for: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    close_for: Option<Duration>,
    severity: Option<Severity>,
    #[serde(default, with = "humantime_serde")]
    renotify: Option<Duration>,
    tiers: Option<Vec<SeverityTier>>,
}

impl ThresholdRuleOverrides {
    fn over(self, defaults: ThresholdRuleConfig) -> ThresholdRuleConfig {
        let tiers = self.tiers.unwrap_or(defaults.tiers);
        // With tiers, the lowest tier is where the rule opens, unless a threshold is
        // written too (then `validate` checks that they agree).
        let tier_threshold = tiers.first().map(|tier| tier.above);
        ThresholdRuleConfig {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            threshold: self
                .threshold
                .or(tier_threshold)
                .unwrap_or(defaults.threshold),
            tiers,
            open_for: self.open_for.unwrap_or(defaults.open_for),
            close_for: self.close_for.unwrap_or(defaults.close_for),
            severity: self.severity.unwrap_or(defaults.severity),
            renotify: self.renotify.unwrap_or(defaults.renotify),
        }
    }
}

/// A rule that compares one value with a threshold: open when over it for `open_for`,
/// close when under it for `close_for`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRuleConfig {
    pub enabled: bool,
    pub threshold: f64,
    pub open_for: Duration,
    pub close_for: Duration,
    pub severity: Severity,
    /// A reminder (`updated`) this long after the issue's last event; zero for none.
    pub renotify: Duration,
    /// Severity tiers, lowest first; empty: one tier, `severity` over `threshold`.
    /// See `detect::tier_severity` for how an open issue moves between them.
    pub tiers: Vec<SeverityTier>,
}

/// One severity tier: the issue has `severity` once the value is over `above`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityTier {
    pub above: f64,
    pub severity: Severity,
}

impl Default for ThresholdRuleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 0.0,
            open_for: Duration::ZERO,
            close_for: Duration::ZERO,
            severity: Severity::Warning,
            renotify: Duration::from_secs(3600),
            tiers: Vec::new(),
        }
    }
}

impl ThresholdRuleConfig {
    fn validate(&self, rule: &str, max: Option<f64>, errors: &mut Vec<String>) {
        let field = format!("config: rules.{rule}.threshold");
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            errors.push(format!("{field}: must be a non-negative number"));
        } else if let Some(max) = max.filter(|max| self.threshold > *max) {
            errors.push(format!("{field}: {} is over {max}", self.threshold));
        }
        if let Some(first) = self.tiers.first()
            && first.above != self.threshold
        {
            errors.push(format!(
                "{field}: {} differs from the lowest tier's `above` ({}); leave it out",
                self.threshold, first.above
            ));
        }
        for (index, pair) in self.tiers.windows(2).enumerate() {
            let (lower, upper) = (pair[0], pair[1]);
            if upper.above <= lower.above || upper.severity <= lower.severity {
                errors.push(format!(
                    "config: rules.{rule}.tiers[{}]: tiers must rise in both `above` and \
                     `severity` ({} {} follows {} {})",
                    index + 1,
                    upper.above,
                    upper.severity,
                    lower.above,
                    lower.severity
                ));
            }
        }
    }
}

/// `node_silent`: no sample for `missed_intervals` × the node's host interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSilentConfig {
    pub enabled: bool,
    pub missed_intervals: u32,
    pub severity: Severity,
    /// After this much silence the issue is raised to `escalated_severity`.
    #[serde(with = "humantime_serde")]
    pub escalate_after: Duration,
    pub escalated_severity: Severity,
    #[serde(with = "humantime_serde")]
    pub renotify: Duration,
}

impl Default for NodeSilentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            missed_intervals: 3,
            severity: Severity::Warning,
            escalate_after: Duration::from_secs(300),
            escalated_severity: Severity::Error,
            renotify: Duration::from_secs(3600),
        }
    }
}

/// `cluster_consensus`: every node of a cluster must see the same members (id, state,
/// alive) and the same single leader, and every node's gossip query must succeed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConsensusConfig {
    pub enabled: bool,
    /// How long a disagreement must last before the issue opens (aggregator clock).
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// How long agreement must last before it closes.
    #[serde(with = "humantime_serde")]
    pub close_for: Duration,
    pub severity: Severity,
    #[serde(with = "humantime_serde")]
    pub renotify: Duration,
    /// A node that sent no gossip view for this many × its gossip interval counts as a
    /// failed query.
    pub missed_intervals: u32,
}

impl Default for ClusterConsensusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            open_for: Duration::from_secs(60),
            close_for: Duration::ZERO,
            severity: Severity::Error,
            renotify: Duration::from_secs(3600),
            missed_intervals: 3,
        }
    }
}

/// Routes one or more event sources to one sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Unique among integrations; names it in logs and the API.
    #[serde(default = "default_integration_name")]
    pub name: String,
    /// The sources routed: "issues", "notifications", "logs", "metrics", "health"
    /// (empty: issues and notifications).
    #[serde(default, deserialize_with = "one_or_many")]
    pub source: Vec<EventSourceConfig>,
    pub sink: SinkConfig,
    /// Only issue events and notifications at least this severe.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Only this tenant's events (default: every tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only these clusters' events (default: every cluster).
    #[serde(default)]
    pub clusters: Vec<String>,
    /// How long one delivery attempt may take before it counts as failed (transient).
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The first retry's wait; it doubles per failure up to `backoff_max` (with jitter).
    #[serde(default = "default_backoff_min", with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_backoff_min() -> Duration {
    Duration::from_secs(1)
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}

fn default_integration_name() -> String {
    "log".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSourceConfig {
    Issues,
    Notifications,
    Logs,
    Metrics,
    Health,
}

fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<EventSourceConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(EventSourceConfig),
        Many(Vec<EventSourceConfig>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(source) => vec![source],
        OneOrMany::Many(sources) => sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_is_valid_and_states_the_defaults() {
        let example = AggregatorConfig::parse(include_str!("../../packaging/aggregator.toml"))
            .expect("packaging/aggregator.toml parses");
        assert_eq!(example.validate(), Ok(()));
        let defaults = AggregatorConfig::parse("").unwrap();
        assert_eq!(example.listen, defaults.listen);
        assert_eq!(example.data_dir, defaults.data_dir);
        assert_eq!(example.connections, defaults.connections);
        assert_eq!(example.api, defaults.api);
        assert_eq!(example.rules.core_load, defaults.rules.core_load);
        assert_eq!(example.rules.memory_usage, defaults.rules.memory_usage);
        assert_eq!(example.rules.disk_usage, defaults.rules.disk_usage);
        assert_eq!(
            example.rules.cluster_consensus,
            defaults.rules.cluster_consensus
        );
        assert_eq!(example.integrations.len(), 1);
    }

    /// The commented `[auth]` examples, uncommented, are the config format: every key
    /// is known and every value has the right type.
    #[test]
    fn the_packaged_auth_example_parses_when_uncommented() {
        let example = include_str!("../../packaging/aggregator.toml");
        let start = example.find("# Authentication").unwrap();
        let end = start + example[start..].find("# Integrations").unwrap();
        let uncommented: String = example[start..end]
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| {
                line.starts_with('[')
                    || line.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config = AggregatorConfig::parse(&uncommented).expect("the auth example parses");
        assert_eq!(config.auth.agent_tokens.len(), 1);
        assert_eq!(config.auth.agent_certs.len(), 1);
        let binding = &config.auth.agent_certs[0];
        assert_eq!(binding.dns_name.as_deref(), Some("*.db.acme.example"));
        assert_eq!(binding.common_name, None);
        assert_eq!(config.auth.operator_tokens.len(), 1);
        let tls = config.auth.tls.unwrap();
        assert!(tls.require_agent_client_cert && tls.client_ca_file.is_some());
    }

    #[test]
    fn empty_file_gives_the_seed_defaults() {
        let config = AggregatorConfig::parse("").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.rules.core_load.threshold, 2.0);
        assert_eq!(config.rules.core_load.close_for, Duration::from_secs(120));
        assert_eq!(config.rules.disk_usage.threshold, 80.0);
        assert_eq!(config.rules.disk_usage.open_for, Duration::from_secs(60));
        assert_eq!(config.rules.memory_usage.threshold, 90.0);
        assert_eq!(config.rules.node_silent.missed_intervals, 3);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn a_partial_rule_keeps_its_other_defaults() {
        let config = AggregatorConfig::parse("[rules.disk_usage]\nthreshold = 1.0\n").unwrap();
        assert_eq!(config.rules.disk_usage.threshold, 1.0);
        assert_eq!(config.rules.disk_usage.open_for, Duration::from_secs(60));
        assert_eq!(config.rules.disk_usage.severity, Severity::Warning);
        assert_eq!(config.rules.core_load.close_for, Duration::from_secs(120));
    }

    #[test]
    fn unknown_fields_are_named() {
        let error = AggregatorConfig::parse("[rules.disk_usage]\nthreshhold = 1.0\n").unwrap_err();
        assert!(error.contains("threshhold"), "{error}");
    }

    #[test]
    fn validation_lists_every_error() {
        let text = r#"
            [ingest]
            max_message_bytes = 10
            [rules.disk_usage]
            threshold = 150.0
            [rules.core_load]
            threshold = -1.0
            [rules.node_silent]
            missed_intervals = 0
        "#;
        let errors = AggregatorConfig::parse(text)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("rules.disk_usage.threshold: 150 is over 100"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("rules.core_load.threshold"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("rules.node_silent.missed_intervals"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("ingest.max_message_bytes"))
        );
    }

    #[test]
    fn integrations_take_one_source_or_several() {
        let text = r#"
            [[integrations]]
            source = "issues"
            sink = { type = "log" }
            [[integrations]]
            name = "everything"
            source = ["issues", "notifications"]
            min_severity = "error"
            sink = { type = "log" }
        "#;
        let config = AggregatorConfig::parse(text).unwrap();
        assert_eq!(
            config.integrations[0].source,
            vec![EventSourceConfig::Issues]
        );
        assert_eq!(config.integrations[1].source.len(), 2);
        assert_eq!(config.integrations[1].min_severity, Some(Severity::Error));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn without_tokens_only_loopback_is_allowed() {
        let open = AggregatorConfig::parse("listen = \"0.0.0.0:7170\"").unwrap();
        let errors = open.validate().unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("config: listen: 0.0.0.0:7170 is not a loopback address, and there are no auth.agent_tokens and auth.operator_tokens"),
            "{errors:?}"
        );
        let loopback = AggregatorConfig::parse("listen = \"[::1]:7170\"").unwrap();
        assert!(loopback.validate().is_ok());
        let digest = crate::auth::token_sha256("t");
        let guarded = AggregatorConfig::parse(&format!(
            "listen = \"0.0.0.0:7170\"\n\
             [[auth.agent_tokens]]\nname = \"a\"\ntenant = \"acme\"\nsha256 = \"{digest}\"\n\
             [[auth.operator_tokens]]\nname = \"o\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n"
        ))
        .unwrap();
        assert_eq!(guarded.validate(), Ok(()));
    }

    #[test]
    fn integration_names_must_be_unique() {
        let text = "[[integrations]]\nsink = { type = \"log\" }\n[[integrations]]\nsink = { type = \"log\" }\n";
        let errors = AggregatorConfig::parse(text)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(errors[0].contains("integrations[1].name"), "{errors:?}");
    }
}
