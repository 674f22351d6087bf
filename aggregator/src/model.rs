//! The aggregator's domain vocabulary: time, node keys, subjects, severities and the
//! readings a sample carries once it has passed validation.
//!
//! Wire types (`proto::v1`) stop at `ingest` and `api`; everything between them speaks
//! these types. Nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time, milliseconds since the Unix epoch (UTC). The rule core never reads a
/// clock: time is passed in, so tests drive it with a fake one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_ms(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_unix_ms(self) -> i64 {
        self.0
    }

    /// The wall clock. Only the edges (ingest, the monitor's ticker) call this.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// How long after `earlier` this is; zero when it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    pub fn plus(self, duration: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// RFC 3339 with milliseconds, e.g. `2026-11-21T10:15:02.123Z`. Total: any `i64`
    /// formats, so a time from the wire can never fail (or abort) a message. Years outside
    /// 0000..=9999 are written with a sign and more digits (ISO 8601's expanded years),
    /// which RFC 3339 cannot express; ingest rejects such samples before they get here.
    pub fn to_rfc3339(self) -> String {
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let year = if (0..=9999).contains(&year) {
            format!("{year:04}")
        } else {
            format!("{year:+05}")
        };
        format!(
            "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        )
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`). In `i64` throughout: any day `div_euclid` can produce
/// from an `i64` of milliseconds stays far from overflow.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// How bad an issue or notification is. Ordered from least to most severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `tenant / cluster / node`: a node's key everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeKey {
    pub tenant: String,
    pub cluster: String,
    pub node: String,
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.cluster, self.node)
    }
}

/// The kinds of resource a subject may name below its node or cluster (DESIGN §6a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// A mounted filesystem of a node, e.g. `/data`.
    Mount,
    /// A node of an Elasticsearch cluster, by its node name.
    EsNode,
    /// One shard of an index, e.g. `logs-2026.11/0`.
    Shard,
    Pod,
    /// A Kubernetes node (not a hostwatch node).
    K8sNode,
    /// A service whose requests a rule watches.
    Service,
    Container,
    /// A condition of a Kubernetes node, e.g. `node-3/DiskPressure`.
    Condition,
    /// One check of a probe, e.g. `elasticsearch.audit`.
    Check,
}

impl ResourceKind {
    /// Every kind, for parsing and documentation.
    pub const ALL: [ResourceKind; 9] = [
        ResourceKind::Mount,
        ResourceKind::EsNode,
        ResourceKind::Shard,
        ResourceKind::Pod,
        ResourceKind::K8sNode,
        ResourceKind::Service,
        ResourceKind::Container,
        ResourceKind::Condition,
        ResourceKind::Check,
    ];

    /// The name stored and shown: `mount`, `es_node`, `shard`, `pod`, `k8s_node`,
    /// `service`, `container`, `condition`, `check`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Mount => "mount",
            ResourceKind::EsNode => "es_node",
            ResourceKind::Shard => "shard",
            ResourceKind::Pod => "pod",
            ResourceKind::K8sNode => "k8s_node",
            ResourceKind::Service => "service",
            ResourceKind::Container => "container",
            ResourceKind::Condition => "condition",
            ResourceKind::Check => "check",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed resource below a subject's node or cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    pub kind: ResourceKind,
    pub name: String,
}

/// A resource as a rule measures it, borrowed from the sample: finding a subject's window
/// by it costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceRef<'a> {
    pub kind: ResourceKind,
    pub name: &'a str,
}

impl ResourceRef<'_> {
    pub fn to_owned(self) -> Resource {
        Resource {
            kind: self.kind,
            name: self.name.to_owned(),
        }
    }
}

/// What an issue is about: tenant / cluster / node, plus an optional typed resource. A
/// cluster-level subject has no node: it is the same subject whichever agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    pub tenant: String,
    pub cluster: String,
    /// Empty for a cluster-level subject.
    pub node: String,
    pub resource: Option<Resource>,
}

impl Subject {
    pub fn node(key: &NodeKey) -> Self {
        Self {
            tenant: key.tenant.clone(),
            cluster: key.cluster.clone(),
            node: key.node.clone(),
            resource: None,
        }
    }

    pub fn mount(key: &NodeKey, mount: &str) -> Self {
        Self::resource_of_node(
            key,
            ResourceRef {
                kind: ResourceKind::Mount,
                name: mount,
            },
        )
    }

    /// A resource of one node.
    pub fn resource_of_node(key: &NodeKey, resource: ResourceRef<'_>) -> Self {
        Self {
            resource: Some(resource.to_owned()),
            ..Self::node(key)
        }
    }

    /// A whole cluster, or a resource of it.
    pub fn cluster(tenant: &str, cluster: &str, resource: Option<ResourceRef<'_>>) -> Self {
        Self {
            tenant: tenant.to_owned(),
            cluster: cluster.to_owned(),
            node: String::new(),
            resource: resource.map(ResourceRef::to_owned),
        }
    }

    pub fn node_key(&self) -> Option<NodeKey> {
        (!self.node.is_empty()).then(|| NodeKey {
            tenant: self.tenant.clone(),
            cluster: self.cluster.clone(),
            node: self.node.clone(),
        })
    }

    /// Whether this subject names `resource` (or no resource, for `None`).
    pub fn has_resource(&self, resource: Option<ResourceRef<'_>>) -> bool {
        match (&self.resource, resource) {
            (None, None) => true,
            (Some(own), Some(other)) => own.kind == other.kind && own.name == other.name,
            (None, Some(_)) | (Some(_), None) => false,
        }
    }

    /// The mount this subject names, if it is a mount.
    pub fn mount_name(&self) -> Option<&str> {
        self.resource
            .as_ref()
            .filter(|resource| resource.kind == ResourceKind::Mount)
            .map(|resource| resource.name.as_str())
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.cluster)?;
        if !self.node.is_empty() {
            write!(f, "/{}", self.node)?;
        }
        match &self.resource {
            Some(Resource {
                kind: ResourceKind::Mount,
                name,
            }) => write!(f, ":{name}")?,
            Some(Resource { kind, name }) => write!(f, " {kind} {name}")?,
            None => {}
        }
        Ok(())
    }
}

/// The descriptive identity an agent announces in its Hello.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeIdentity {
    pub service_instance_id: String,
    pub business_group: String,
    pub cloud_service_name: String,
    pub instance_class: String,
    pub labels: BTreeMap<String, String>,
}

/// A probe an agent runs, from its Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub interval: Duration,
}

/// A validated host sample.
#[derive(Debug, Clone, PartialEq)]
pub struct HostReading {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub physical_cores: u32,
    pub logical_cores: u32,
    pub physical_cores_estimated: bool,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_used_percent: f64,
    pub disks: Vec<DiskReading>,
}

impl HostReading {
    /// load1 ÷ physical cores (seed 000).
    pub fn core_load(&self) -> f64 {
        self.load1 / f64::from(self.physical_cores.max(1))
    }
}

/// A validated disk usage.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskReading {
    pub mount: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_percent: f64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

/// A validated gossip view: what one node sees of its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipReading {
    pub adapter: String,
    /// `Err(text)` when the query failed.
    pub outcome: Result<Vec<GossipMember>, String>,
    pub cluster_status: String,
    pub leader_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMember {
    pub instance_id: String,
    pub state: String,
    pub alive: bool,
    pub endpoint: String,
    pub epoch_number: i64,
}

/// One validated sample, stamped with the agent's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub time: Timestamp,
    pub reading: Reading,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Host(HostReading),
    Gossip(GossipReading),
    Log { path: String, line: String },
    Elasticsearch(EsReading),
}

/// A validated run of one check of the agent's `elasticsearch` probe (seed 001): its
/// result, or why it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct EsReading {
    pub check: EsCheck,
    /// The cluster's URL as the agent reaches it, without credentials.
    pub url: String,
    pub outcome: Result<EsResult, EsError>,
}

/// The checks of the `elasticsearch` probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsCheck {
    Health,
    Storage,
    Shards,
    Docs,
    Audit,
}

impl EsCheck {
    /// How many checks there are: the size of a table indexed by [`EsCheck::index`].
    pub const COUNT: usize = 5;

    /// This check's place in a table of `COUNT` entries.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The probe's name as the agent announces it, e.g. `elasticsearch.health`.
    pub const fn probe_name(self) -> &'static str {
        match self {
            EsCheck::Health => "elasticsearch.health",
            EsCheck::Storage => "elasticsearch.storage",
            EsCheck::Shards => "elasticsearch.shards",
            EsCheck::Docs => "elasticsearch.docs",
            EsCheck::Audit => "elasticsearch.audit",
        }
    }
}

/// Why a check failed, as the agent classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsError {
    /// The class, e.g. `refused`, `timeout`, `tls`, `auth`, `server`, `unexpected_body`.
    pub kind: &'static str,
    /// The request that failed, e.g. `/_cluster/health`.
    pub path: String,
    /// 0 when there was no answer.
    pub http_status: u32,
    pub es_error_type: String,
    pub detail: String,
}

/// A check's result.
#[derive(Debug, Clone, PartialEq)]
pub enum EsResult {
    Health(EsHealth),
    Storage(EsStorage),
    Shards(EsShards),
    Docs(EsDocs),
    Audit(EsAudit),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EsHealth {
    pub cluster_name: String,
    /// `green`, `yellow` or `red`.
    pub status: String,
    /// A 408 answer: the body is still valid.
    pub timed_out: bool,
    pub number_of_nodes: u32,
    pub number_of_data_nodes: u32,
    pub unassigned_shards: u32,
}

/// Disk use of every data node, and the effective watermarks (verbatim, e.g. `85%`).
#[derive(Debug, Clone, PartialEq)]
pub struct EsStorage {
    pub nodes: Vec<EsDataNode>,
    pub watermark_low: String,
    pub watermark_high: String,
    pub watermark_flood_stage: String,
}

/// One data node's data path with the least available space.
#[derive(Debug, Clone, PartialEq)]
pub struct EsDataNode {
    pub id: String,
    pub name: String,
    pub host: String,
    pub path: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// 100 − 100 × available ÷ total, in [0, 100].
    pub used_percent: f64,
}

/// Shard headroom inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct EsShards {
    pub max_shards_per_node: u64,
    pub non_frozen_data_nodes: u32,
    /// Σ over open indices of primaries × (1 + replicas).
    pub open_shards: u64,
    pub open_indices: u32,
}

/// Primary shards with more documents than `floor`; a shard left out has at most `floor`,
/// unless `shards_omitted` says the list was cut.
#[derive(Debug, Clone, PartialEq)]
pub struct EsDocs {
    pub floor: u64,
    pub shards: Vec<EsShardDocs>,
    pub primaries_counted: u32,
    pub shards_omitted: u32,
    pub max_docs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EsShardDocs {
    /// `index/shard`, e.g. `logs-2026.11/0`: the `shard` resource.
    pub name: String,
    /// docs.count + docs.deleted.
    pub docs: u64,
    pub docs_count: u64,
    pub docs_deleted: u64,
}

/// Requests and 5XX answers of the audit trail over its window.
#[derive(Debug, Clone, PartialEq)]
pub struct EsAudit {
    pub index_pattern: String,
    pub window_seconds: u32,
    pub requests: u64,
    pub errors_5xx: u64,
    /// Shards that did not answer: the counts are partial.
    pub shards_failed: u32,
    /// The search stopped early: the counts are partial.
    pub timed_out: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_humantime_where_humantime_can_format() {
        for ms in [
            0_i64,
            1,
            951_782_400_000,     // 2000-02-29
            1_800_000_000_123,   // 2027-01-15
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            4_107_542_400_000,   // 2100-03-01
        ] {
            let expected = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()),
            )
            .to_string();
            assert_eq!(Timestamp::from_unix_ms(ms).to_rfc3339(), expected, "{ms}");
        }
    }

    #[test]
    fn rfc3339_formats_any_i64_without_panicking() {
        // Each of these made the aggregator abort before (humantime's `Display` errs past
        // 9999 and panics before 1970).
        assert_eq!(
            Timestamp::from_unix_ms(253_402_300_800_000).to_rfc3339(),
            "+10000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_ms(-1).to_rfc3339(),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_unix_ms(-62_167_219_200_001).to_rfc3339(),
            "-0001-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_unix_ms(i64::MAX).to_rfc3339(),
            "+292278994-08-17T07:12:55.807Z"
        );
        assert_eq!(
            Timestamp::from_unix_ms(i64::MIN).to_rfc3339(),
            "-292275055-05-16T16:47:04.192Z"
        );
    }
}
