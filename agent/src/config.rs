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
        }
    }
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

/// Where the aggregator is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Required; `http://host:port`.
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            url: String::new(),
            connect_timeout: Duration::from_secs(5),
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
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        problems.add(
            field,
            format!(
                "{value:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
            ),
        );
    }
}

fn check_url(problems: &mut Problems, field: &str, url: &str) {
    if url.is_empty() {
        problems.add(field, "is required");
        return;
    }
    if url.starts_with("https://") {
        problems.add(
            field,
            "https is not supported yet (TLS comes in a later release); use http://",
        );
        return;
    }
    if !url.starts_with("http://") {
        problems.add(field, format!("{url:?} must start with http://"));
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
            url = "https://agg:7170"
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
            rendered.contains("config: aggregator.url: https is not supported yet"),
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
}
