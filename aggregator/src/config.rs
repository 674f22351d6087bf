//! The aggregator's configuration file (TOML): parsing, defaults and validation.
//!
//! Parsing rejects unknown fields; `validate` then collects every problem at once so
//! `check-config` can list them all. `[rules.*]` is each rule's own config with its own
//! defaults, the seeds' (DESIGN §6), in `rules`. This module only describes
//! configuration; it builds nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::model::{Severity, Timestamp};
pub use crate::rules::cluster_consensus::ClusterConsensusConfig;
pub use crate::rules::node_silent::NodeSilentConfig;
pub use crate::rules::{RulesConfig, SeverityTier, ThresholdRuleConfig};
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
            errors.extend(
                integration
                    .name_errors()
                    .into_iter()
                    .map(|error| format!("config: integrations[{index}].{error}")),
            );
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

/// Limits on what agents may send. Bytes alone do not bound the work: a 2-byte empty
/// sample, disk, gossip member or label decodes to ~100 bytes, so a 4 MiB message could
/// cost 300 MB. Counts are checked on the wire before decoding (`ingest::limits`), sizes
/// and times per sample; each refusal is a counted reason in the batch's Ack.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// How far in the future (by the aggregator's clock) a sample may be stamped.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Samples stamped before this are rejected (`past_timestamp`): a clock that was never
    /// set, or a time that is not one.
    #[serde(with = "humantime_serde")]
    pub min_sample_time: SystemTime,
    /// The largest message an agent may send; larger ones end its stream with
    /// RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// Samples of one batch past this many are rejected (`too_many_samples`), undecoded.
    pub max_samples_per_batch: usize,
    /// A host sample with more disks is rejected (`too_many_disks`), undecoded.
    pub max_disks_per_sample: usize,
    /// A gossip view with more members is rejected (`too_many_members`), undecoded.
    pub max_members_per_view: usize,
    /// A Hello with more labels, or more probes, ends the stream (INVALID_ARGUMENT).
    pub max_labels: usize,
    pub max_probes: usize,
    /// The longest name, label, path, mount, device or gossip field, in bytes
    /// (`string_too_long`; in a Hello, INVALID_ARGUMENT).
    pub max_string_bytes: usize,
    /// The longest log line, in bytes (`string_too_long`).
    pub max_log_line_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_clock_skew: Duration::from_secs(300),
            // 2000-01-01T00:00:00Z
            min_sample_time: SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800),
            max_message_bytes: 4 * 1024 * 1024,
            max_samples_per_batch: 10_000,
            max_disks_per_sample: 1024,
            max_members_per_view: 1024,
            max_labels: 64,
            max_probes: 32,
            max_string_bytes: 1024,
            max_log_line_bytes: 64 * 1024,
        }
    }
}

impl IngestConfig {
    /// `min_sample_time` on the aggregator's time line (validate refuses one before 1970).
    pub fn min_sample_timestamp(&self) -> Timestamp {
        let since_epoch = self
            .min_sample_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_unix_ms(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    fn validate(&self, errors: &mut Vec<String>) {
        if self.max_message_bytes < 1024 {
            errors.push("config: ingest.max_message_bytes: must be at least 1024".to_owned());
        }
        if self.min_sample_time < SystemTime::UNIX_EPOCH {
            errors.push("config: ingest.min_sample_time: must not be before 1970".to_owned());
        }
        for (field, value) in [
            ("max_samples_per_batch", self.max_samples_per_batch),
            ("max_disks_per_sample", self.max_disks_per_sample),
            ("max_members_per_view", self.max_members_per_view),
            ("max_probes", self.max_probes),
            ("max_log_line_bytes", self.max_log_line_bytes),
        ] {
            if value == 0 {
                errors.push(format!("config: ingest.{field}: must be at least 1"));
            }
        }
        // A name may be up to 128 bytes (`proto::names`): shorter strings would refuse
        // valid Hellos.
        if self.max_string_bytes < proto::names::MAX_LEN {
            errors.push(format!(
                "config: ingest.max_string_bytes: must be at least {}",
                proto::names::MAX_LEN
            ));
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

impl IntegrationConfig {
    /// What is wrong with the tenant and cluster names it filters on, each naming its
    /// field (`tenant: …`, `clusters[1]: …`): a filter that names no possible tenant or
    /// cluster would silently route nothing. The config and the Integrations API both ask.
    pub fn name_errors(&self) -> Vec<String> {
        let tenant = self
            .tenant
            .as_deref()
            .and_then(proto::names::check)
            .map(|problem| format!("tenant: {problem}"));
        let clusters = self
            .clusters
            .iter()
            .enumerate()
            .filter_map(|(index, cluster)| {
                proto::names::check(cluster).map(|problem| format!("clusters[{index}]: {problem}"))
            });
        tenant.into_iter().chain(clusters).collect()
    }
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
        assert_eq!(example.ingest, defaults.ingest);
        // Every rule of the registry, each with its own defaults.
        assert_eq!(example.rules, defaults.rules);
        assert_eq!(example.connections, defaults.connections);
        assert_eq!(example.api, defaults.api);
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
    fn integration_tenant_and_cluster_filters_are_names() {
        let text = r#"
            [[integrations]]
            name = "a"
            tenant = ".."
            clusters = ["db", "", "a b"]
            sink = { type = "log" }
            [[integrations]]
            name = "b"
            tenant = "acme"
            clusters = ["db"]
            sink = { type = "log" }
        "#;
        let errors = AggregatorConfig::parse(text)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            errors,
            [
                "config: integrations[0].tenant: \"..\" starts with '.'; a name starts with a \
                 letter, a digit or '_'",
                "config: integrations[0].clusters[1]: must not be empty",
                "config: integrations[0].clusters[2]: \"a b\" contains ' '; only letters, \
                 digits, '.', '_' and '-' are allowed",
            ]
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
