//! Turns what an agent sent into domain values, or says exactly what was wrong.
//!
//! A sample is rejected, with a reason and the field at fault, when a number is not
//! finite, a size is negative, a percentage is outside 0..=100, an available amount
//! exceeds its total, a string is longer than allowed, it holds more disks or gossip
//! members than allowed, or it is stamped before `min_sample_time` or further in the
//! future than the allowed clock skew. The rest of its batch is applied. A Hello is
//! checked whole: names (`proto::names`), label and probe counts, string sizes.
//! `Rejections` summarises a batch's rejections per reason, so an Ack and the log stay
//! small whatever the batch held. No I/O.

use std::fmt;
use std::time::Duration;

use proto::v1 as wire;

mod elasticsearch;

use crate::config::IngestConfig;
use crate::engine::Hello;
use crate::model::{
    DiskReading, GossipMember, GossipReading, HostReading, NodeIdentity, NodeKey, Probe, Reading,
    Sample, Timestamp,
};

/// Why one sample was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: &'static str, detail: String) -> Self {
        Self { reason, detail }
    }
}

/// What a sample must satisfy, from `[ingest]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleLimits {
    pub max_clock_skew: Duration,
    pub min_time: Timestamp,
    pub max_disks: usize,
    pub max_members: usize,
    pub max_string_bytes: usize,
    pub max_log_line_bytes: usize,
}

impl SampleLimits {
    pub fn from_config(config: &IngestConfig) -> Self {
        Self {
            max_clock_skew: config.max_clock_skew,
            min_time: config.min_sample_timestamp(),
            max_disks: config.max_disks_per_sample,
            max_members: config.max_members_per_view,
            max_string_bytes: config.max_string_bytes,
            max_log_line_bytes: config.max_log_line_bytes,
        }
    }
}

/// Validates one sample against the aggregator's clock `now`. Takes the sample so its
/// strings move into the reading instead of being copied; names a field only on failure.
pub fn sample(
    sample: wire::Sample,
    now: Timestamp,
    limits: &SampleLimits,
) -> Result<Sample, Rejection> {
    let time = Timestamp::from_unix_ms(sample.time_unix_ms);
    if time > now.plus(limits.max_clock_skew) {
        // Past a year the amount says nothing more, and the text stays short for any i64.
        let ahead = time.since(now);
        let ahead = if ahead >= Duration::from_secs(365 * 86_400) {
            "over a year".to_owned()
        } else {
            humantime::format_duration(Duration::from_secs(ahead.as_secs())).to_string()
        };
        return Err(Rejection::new(
            "future_timestamp",
            format!(
                "time_unix_ms: {} is {ahead} ahead of the aggregator's clock (allowed: {})",
                time.to_rfc3339(),
                humantime::format_duration(limits.max_clock_skew),
            ),
        ));
    }
    if time < limits.min_time {
        return Err(Rejection::new(
            "past_timestamp",
            format!(
                "time_unix_ms: {} is before {} (ingest.min_sample_time)",
                time.to_rfc3339(),
                limits.min_time.to_rfc3339(),
            ),
        ));
    }
    let reading = match sample.kind {
        None => {
            return Err(Rejection::new(
                "empty_sample",
                "kind: no reading in the sample".into(),
            ));
        }
        Some(wire::sample::Kind::Host(host)) => Reading::Host(self::host(host, limits)?),
        Some(wire::sample::Kind::Gossip(gossip)) => Reading::Gossip(self::gossip(gossip, limits)?),
        Some(wire::sample::Kind::Log(log)) => {
            string(&"log.path", &log.path, limits.max_string_bytes)?;
            string(&"log.line", &log.line, limits.max_log_line_bytes)?;
            Reading::Log {
                path: log.path,
                line: log.line,
            }
        }
        Some(wire::sample::Kind::Elasticsearch(es)) => {
            Reading::Elasticsearch(elasticsearch::sample(es)?)
        }
    };
    Ok(Sample { time, reading })
}

fn host(host: wire::HostSample, limits: &SampleLimits) -> Result<HostReading, Rejection> {
    for (field, value) in [
        ("load1", host.load1),
        ("load5", host.load5),
        ("load15", host.load15),
    ] {
        finite(&format_args!("host.{field}"), value)?;
        if value < 0.0 {
            return Err(Rejection::new(
                "invalid_field",
                format!("host.{field}: {value} is negative"),
            ));
        }
    }
    let memory_total_bytes = size(&"host.memory_total_bytes", host.memory_total_bytes)?;
    let memory_available_bytes = size(&"host.memory_available_bytes", host.memory_available_bytes)?;
    at_most(
        &"host.memory_available_bytes",
        memory_available_bytes,
        &"host.memory_total_bytes",
        memory_total_bytes,
    )?;
    let memory_used_percent = percent(&"host.memory_used_percent", host.memory_used_percent)?;
    if host.disks.len() > limits.max_disks {
        return Err(Rejection::new(
            "too_many_disks",
            format!(
                "host.disks: {} disks, at most {} (ingest.max_disks_per_sample)",
                host.disks.len(),
                limits.max_disks
            ),
        ));
    }
    let mut disks = Vec::with_capacity(host.disks.len());
    for (index, disk) in host.disks.into_iter().enumerate() {
        let field = |name: &'static str| DiskField { index, name };
        for (name, value) in [
            ("mount", &disk.mount),
            ("device", &disk.device),
            ("fs_type", &disk.fs_type),
        ] {
            string(&field(name), value, limits.max_string_bytes)?;
        }
        let reading = DiskReading {
            total_bytes: size(&field("total_bytes"), disk.total_bytes)?,
            available_bytes: size(&field("available_bytes"), disk.available_bytes)?,
            used_percent: percent(&field("used_percent"), disk.used_percent)?,
            inodes_total: size(&field("inodes_total"), disk.inodes_total)?,
            inodes_free: size(&field("inodes_free"), disk.inodes_free)?,
            mount: disk.mount,
            device: disk.device,
            fs_type: disk.fs_type,
        };
        at_most(
            &field("available_bytes"),
            reading.available_bytes,
            &field("total_bytes"),
            reading.total_bytes,
        )?;
        at_most(
            &field("inodes_free"),
            reading.inodes_free,
            &field("inodes_total"),
            reading.inodes_total,
        )?;
        disks.push(reading);
    }
    if host.physical_cores == 0 {
        return Err(Rejection::new(
            "invalid_field",
            "host.physical_cores: must not be 0".into(),
        ));
    }
    Ok(HostReading {
        load1: host.load1,
        load5: host.load5,
        load15: host.load15,
        physical_cores: host.physical_cores,
        logical_cores: host.logical_cores,
        physical_cores_estimated: host.physical_cores_estimated,
        memory_total_bytes,
        memory_available_bytes,
        memory_used_percent,
        disks,
    })
}

/// `host.disks[i].name`, written out only when a rejection names it.
struct DiskField {
    index: usize,
    name: &'static str,
}

impl fmt::Display for DiskField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host.disks[{}].{}", self.index, self.name)
    }
}

/// `gossip.members[i].name`, written out only when a rejection names it.
struct MemberField {
    index: usize,
    name: &'static str,
}

impl fmt::Display for MemberField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gossip.members[{}].{}", self.index, self.name)
    }
}

fn gossip(gossip: wire::GossipSample, limits: &SampleLimits) -> Result<GossipReading, Rejection> {
    if gossip.members.len() > limits.max_members {
        return Err(Rejection::new(
            "too_many_members",
            format!(
                "gossip.members: {} members, at most {} (ingest.max_members_per_view)",
                gossip.members.len(),
                limits.max_members
            ),
        ));
    }
    for (field, value) in [
        ("gossip.adapter", &gossip.adapter),
        ("gossip.error", &gossip.error),
        ("gossip.cluster_status", &gossip.cluster_status),
        ("gossip.leader_id", &gossip.leader_id),
    ] {
        string(&field, value, limits.max_string_bytes)?;
    }
    for (index, member) in gossip.members.iter().enumerate() {
        let field = |name: &'static str| MemberField { index, name };
        for (name, value) in [
            ("instance_id", &member.instance_id),
            ("state", &member.state),
            ("endpoint", &member.endpoint),
        ] {
            string(&field(name), value, limits.max_string_bytes)?;
        }
    }
    let outcome = if gossip.ok {
        Ok(gossip
            .members
            .into_iter()
            .map(|member| GossipMember {
                instance_id: member.instance_id,
                state: member.state,
                alive: member.alive,
                endpoint: member.endpoint,
                epoch_number: member.epoch_number,
            })
            .collect())
    } else {
        Err(gossip.error)
    };
    Ok(GossipReading {
        adapter: gossip.adapter,
        outcome,
        cluster_status: gossip.cluster_status,
        leader_id: gossip.leader_id,
    })
}

fn finite(field: &dyn fmt::Display, value: f64) -> Result<f64, Rejection> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Rejection::new(
            "not_finite",
            format!("{field}: {value} is not a finite number"),
        ))
    }
}

fn size(field: &dyn fmt::Display, value: i64) -> Result<u64, Rejection> {
    u64::try_from(value)
        .map_err(|_| Rejection::new("negative_size", format!("{field}: {value} is negative")))
}

/// A part that cannot exceed its whole (available ≤ total, free inodes ≤ total).
fn at_most(
    part_field: &dyn fmt::Display,
    part: u64,
    whole_field: &dyn fmt::Display,
    whole: u64,
) -> Result<(), Rejection> {
    if part <= whole {
        Ok(())
    } else {
        Err(Rejection::new(
            "inconsistent",
            format!("{part_field}: {part} is more than {whole_field} ({whole})"),
        ))
    }
}

fn percent(field: &dyn fmt::Display, value: f64) -> Result<f64, Rejection> {
    finite(field, value)?;
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(Rejection::new(
            "percent_out_of_range",
            format!("{field}: {value} is outside 0..=100"),
        ))
    }
}

fn string(field: &dyn fmt::Display, value: &str, max_bytes: usize) -> Result<(), Rejection> {
    if value.len() <= max_bytes {
        Ok(())
    } else {
        Err(Rejection::new(
            "string_too_long",
            format!("{field}: {} bytes, at most {max_bytes}", value.len()),
        ))
    }
}

/// The node key a Hello claims, checked for shape (`proto::names`).
pub fn node_key(identity: Option<&wire::NodeIdentity>) -> Result<NodeKey, String> {
    let identity = identity.ok_or("hello.identity: missing")?;
    let errors: Vec<String> = [
        ("tenant", &identity.tenant),
        ("cluster", &identity.cluster),
        ("node", &identity.node),
    ]
    .into_iter()
    .filter_map(|(field, value)| {
        proto::names::check(value).map(|problem| format!("hello.identity.{field}: {problem}"))
    })
    .collect();
    if errors.is_empty() {
        Ok(NodeKey {
            tenant: identity.tenant.clone(),
            cluster: identity.cluster.clone(),
            node: identity.node.clone(),
        })
    } else {
        Err(errors.join("; "))
    }
}

/// What a Hello may hold, from `[ingest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloLimits {
    pub max_labels: usize,
    pub max_probes: usize,
    pub max_string_bytes: usize,
}

impl HelloLimits {
    pub fn from_config(config: &IngestConfig) -> Self {
        Self {
            max_labels: config.max_labels,
            max_probes: config.max_probes,
            max_string_bytes: config.max_string_bytes,
        }
    }
}

/// The node key and the domain Hello, or every problem of the Hello in one message.
pub fn hello(hello: wire::Hello, limits: &HelloLimits) -> Result<(NodeKey, Hello), String> {
    let key = node_key(hello.identity.as_ref());
    let identity = hello.identity.unwrap_or_default();
    let mut errors: Vec<String> = key.as_ref().err().cloned().into_iter().collect();
    let too_long = |field: &dyn fmt::Display, value: &str| {
        string(field, value, limits.max_string_bytes)
            .err()
            .map(|rejection| format!("hello.{}", rejection.detail))
    };
    errors.extend(too_long(
        &"identity.service_instance_id",
        &identity.service_instance_id,
    ));
    errors.extend(too_long(
        &"identity.business_group",
        &identity.business_group,
    ));
    errors.extend(too_long(
        &"identity.cloud_service_name",
        &identity.cloud_service_name,
    ));
    errors.extend(too_long(
        &"identity.instance_class",
        &identity.instance_class,
    ));
    errors.extend(too_long(&"agent_version", &hello.agent_version));
    errors.extend(too_long(&"seq_epoch", &hello.seq_epoch));
    if identity.labels.len() > limits.max_labels {
        errors.push(format!(
            "hello.identity.labels: {} labels, at most {} (ingest.max_labels)",
            identity.labels.len(),
            limits.max_labels
        ));
    } else {
        for (name, value) in &identity.labels {
            errors.extend(too_long(&"identity.labels: a name", name));
            errors.extend(too_long(&format_args!("identity.labels[{name:?}]"), value));
        }
    }
    if hello.probes.len() > limits.max_probes {
        errors.push(format!(
            "hello.probes: {} probes, at most {} (ingest.max_probes)",
            hello.probes.len(),
            limits.max_probes
        ));
    } else {
        for (index, probe) in hello.probes.iter().enumerate() {
            errors.extend(too_long(&format_args!("probes[{index}].name"), &probe.name));
        }
    }
    let key = match key {
        Ok(key) if errors.is_empty() => key,
        _ => return Err(errors.join("; ")),
    };
    let hello = Hello {
        identity: NodeIdentity {
            service_instance_id: identity.service_instance_id,
            business_group: identity.business_group,
            cloud_service_name: identity.cloud_service_name,
            instance_class: identity.instance_class,
            labels: identity.labels.into_iter().collect(),
        },
        agent_version: hello.agent_version,
        probes: hello
            .probes
            .into_iter()
            .map(|probe| Probe {
                name: probe.name,
                interval: Duration::from_millis(probe.interval_ms),
            })
            .collect(),
        seq_epoch: hello.seq_epoch,
    };
    Ok((key, hello))
}

/// How many indices a summary keeps per reason.
pub const INDICES_KEPT: usize = 10;

/// One reason's share of a batch's rejections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonSummary {
    pub reason: &'static str,
    pub count: u64,
    /// The first `INDICES_KEPT` indices, in the order they were added.
    pub indices: Vec<u32>,
    /// The first such sample's detail.
    pub detail: String,
}

/// The rejections of one batch, one entry per reason (a handful), whatever the number of
/// samples: what the Ack says and what the log shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    by_reason: Vec<ReasonSummary>,
}

impl Rejections {
    pub fn add(&mut self, index: u32, rejection: Rejection) {
        self.add_with(index, rejection.reason, || rejection.detail);
    }

    /// Adds a rejection whose detail is made only if it is the reason's first.
    pub fn add_with(&mut self, index: u32, reason: &'static str, detail: impl FnOnce() -> String) {
        match self
            .by_reason
            .iter_mut()
            .find(|entry| entry.reason == reason)
        {
            Some(entry) => {
                entry.count += 1;
                if entry.indices.len() < INDICES_KEPT {
                    entry.indices.push(index);
                }
            }
            None => self.by_reason.push(ReasonSummary {
                reason,
                count: 1,
                indices: vec![index],
                detail: detail(),
            }),
        }
    }

    pub fn merge(&mut self, other: Rejections) {
        for entry in other.by_reason {
            match self
                .by_reason
                .iter_mut()
                .find(|own| own.reason == entry.reason)
            {
                Some(own) => {
                    // The detail stays the earliest sample's, as `index` will say.
                    if entry.indices.first() < own.indices.first() {
                        own.detail = entry.detail;
                    }
                    own.count += entry.count;
                    own.indices.extend(entry.indices);
                    own.indices.sort_unstable();
                    own.indices.truncate(INDICES_KEPT);
                }
                None => self.by_reason.push(entry),
            }
        }
    }

    /// How many samples were rejected, over all reasons.
    pub fn total(&self) -> u64 {
        self.by_reason.iter().map(|entry| entry.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_reason.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ReasonSummary> {
        self.by_reason.iter()
    }

    /// The Ack's `rejected`: one entry per reason.
    pub fn to_wire(&self) -> Vec<wire::SampleRejection> {
        self.by_reason
            .iter()
            .map(|entry| wire::SampleRejection {
                index: entry.indices.first().copied().unwrap_or_default(),
                reason: entry.reason.to_owned(),
                detail: entry.detail.clone(),
                count: u32::try_from(entry.count).unwrap_or(u32::MAX),
                indices: entry.indices.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SampleLimits = SampleLimits {
        max_clock_skew: Duration::from_secs(300),
        min_time: Timestamp::from_unix_ms(946_684_800_000),
        max_disks: 4,
        max_members: 4,
        max_string_bytes: 64,
        max_log_line_bytes: 256,
    };

    fn now() -> Timestamp {
        Timestamp::from_unix_ms(1_800_000_000_000)
    }

    fn good_host() -> wire::HostSample {
        wire::HostSample {
            load1: 0.5,
            load5: 0.4,
            load15: 0.3,
            physical_cores: 2,
            logical_cores: 4,
            physical_cores_estimated: false,
            memory_total_bytes: 8 << 30,
            memory_available_bytes: 4 << 30,
            memory_used_percent: 50.0,
            disks: vec![wire::DiskUsage {
                mount: "/".into(),
                device: "/dev/vda".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                available_bytes: 80 << 30,
                used_percent: 20.0,
                inodes_total: 1000,
                inodes_free: 900,
            }],
        }
    }

    fn host_sample(host: wire::HostSample) -> wire::Sample {
        wire::Sample {
            time_unix_ms: now().as_unix_ms(),
            kind: Some(wire::sample::Kind::Host(host)),
        }
    }

    fn rejection(host: wire::HostSample) -> Rejection {
        sample(host_sample(host), now(), &LIMITS).unwrap_err()
    }

    #[test]
    fn a_good_host_sample_passes_unchanged() {
        let Sample {
            time,
            reading: Reading::Host(host),
        } = sample(host_sample(good_host()), now(), &LIMITS).unwrap()
        else {
            panic!("not a host reading");
        };
        assert_eq!(time, now());
        assert_eq!(host.disks[0].total_bytes, 100 << 30);
        assert_eq!(host.core_load(), 0.25);
    }

    #[test]
    fn nan_is_rejected_naming_the_field() {
        let rejected = rejection(wire::HostSample {
            load1: f64::NAN,
            ..good_host()
        });
        assert_eq!(rejected.reason, "not_finite");
        assert_eq!(rejected.detail, "host.load1: NaN is not a finite number");
    }

    #[test]
    fn negative_sizes_are_rejected_naming_the_disk() {
        let mut host = good_host();
        host.disks[0].total_bytes = -4096;
        let rejected = rejection(host);
        assert_eq!(rejected.reason, "negative_size");
        assert_eq!(
            rejected.detail,
            "host.disks[0].total_bytes: -4096 is negative"
        );
    }

    #[test]
    fn percentages_over_100_are_rejected() {
        let rejected = rejection(wire::HostSample {
            memory_used_percent: 150.0,
            ..good_host()
        });
        assert_eq!(rejected.reason, "percent_out_of_range");
        assert_eq!(
            rejected.detail,
            "host.memory_used_percent: 150 is outside 0..=100"
        );
        let mut host = good_host();
        host.disks[0].used_percent = 100.0;
        assert!(
            sample(host_sample(host), now(), &LIMITS).is_ok(),
            "100 % is a full disk, not an error"
        );
    }

    #[test]
    fn far_future_timestamps_are_rejected_but_skew_is_tolerated() {
        let mut ahead = host_sample(good_host());
        ahead.time_unix_ms = now().plus(Duration::from_secs(86_400)).as_unix_ms();
        let rejected = sample(ahead, now(), &LIMITS).unwrap_err();
        assert_eq!(rejected.reason, "future_timestamp");
        assert!(
            rejected.detail.contains("1day ahead"),
            "{}",
            rejected.detail
        );
        let mut slightly = host_sample(good_host());
        slightly.time_unix_ms = now().plus(Duration::from_secs(299)).as_unix_ms();
        assert!(sample(slightly, now(), &LIMITS).is_ok());
    }

    #[test]
    fn an_empty_sample_is_rejected() {
        let empty = wire::Sample {
            time_unix_ms: now().as_unix_ms(),
            kind: None,
        };
        assert_eq!(
            sample(empty, now(), &LIMITS).unwrap_err().reason,
            "empty_sample"
        );
    }

    #[test]
    fn hello_identity_is_checked_field_by_field() {
        let identity = wire::NodeIdentity {
            tenant: String::new(),
            cluster: "a b".into(),
            node: "n1".into(),
            ..Default::default()
        };
        let error = node_key(Some(&identity)).unwrap_err();
        assert!(
            error.contains("hello.identity.tenant: must not be empty"),
            "{error}"
        );
        assert!(error.contains("hello.identity.cluster: \"a b\""), "{error}");
        assert!(node_key(None).is_err());
    }

    fn at(time_unix_ms: i64) -> Result<Sample, Rejection> {
        let mut timed = host_sample(good_host());
        timed.time_unix_ms = time_unix_ms;
        sample(timed, now(), &LIMITS)
    }

    #[test]
    fn times_no_clock_could_give_are_rejected_with_a_reason_not_a_panic() {
        // Year 10000 made the detail's formatting panic (and the aggregator abort).
        let year_10000 = at(253_402_300_800_000).unwrap_err();
        assert_eq!(year_10000.reason, "future_timestamp");
        assert!(
            year_10000
                .detail
                .starts_with("time_unix_ms: +10000-01-01T00:00:00.000Z is over a year ahead"),
            "{}",
            year_10000.detail
        );
        assert_eq!(at(i64::MAX).unwrap_err().reason, "future_timestamp");
        let minimum = at(i64::MIN).unwrap_err();
        assert_eq!(minimum.reason, "past_timestamp");
        assert_eq!(
            minimum.detail,
            "time_unix_ms: -292275055-05-16T16:47:04.192Z is before \
             2000-01-01T00:00:00.000Z (ingest.min_sample_time)"
        );
        assert_eq!(at(-1).unwrap_err().reason, "past_timestamp");
        assert_eq!(at(0).unwrap_err().reason, "past_timestamp");
        assert_eq!(at(946_684_799_999).unwrap_err().reason, "past_timestamp");
        assert!(at(946_684_800_000).is_ok(), "the floor itself is allowed");
    }

    #[test]
    fn an_available_amount_over_its_total_is_inconsistent() {
        let memory = rejection(wire::HostSample {
            memory_total_bytes: 16_000_000_000,
            memory_available_bytes: 20_000_000_000,
            ..good_host()
        });
        assert_eq!(memory.reason, "inconsistent");
        assert_eq!(
            memory.detail,
            "host.memory_available_bytes: 20000000000 is more than \
             host.memory_total_bytes (16000000000)"
        );
        let mut disk = good_host();
        disk.disks[0].available_bytes = disk.disks[0].total_bytes + 1;
        let disk = rejection(disk);
        assert_eq!(disk.reason, "inconsistent");
        assert!(
            disk.detail.starts_with("host.disks[0].available_bytes: "),
            "{}",
            disk.detail
        );
        let mut inodes = good_host();
        inodes.disks[0].inodes_free = 1001;
        assert_eq!(
            rejection(inodes).detail,
            "host.disks[0].inodes_free: 1001 is more than host.disks[0].inodes_total (1000)"
        );
        let mut full = good_host();
        full.disks[0].available_bytes = full.disks[0].total_bytes;
        full.disks[0].inodes_free = full.disks[0].inodes_total;
        assert!(
            sample(host_sample(full), now(), &LIMITS).is_ok(),
            "equal is fine"
        );
    }

    #[test]
    fn counts_and_strings_over_the_limits_are_rejected() {
        let mut many = good_host();
        many.disks = vec![many.disks[0].clone(); 5];
        let rejected = rejection(many);
        assert_eq!(rejected.reason, "too_many_disks");
        assert_eq!(
            rejected.detail,
            "host.disks: 5 disks, at most 4 (ingest.max_disks_per_sample)"
        );
        let mut long = good_host();
        long.disks[0].mount = "/".repeat(65);
        let rejected = rejection(long);
        assert_eq!(
            (rejected.reason, rejected.detail.as_str()),
            (
                "string_too_long",
                "host.disks[0].mount: 65 bytes, at most 64"
            )
        );
        let gossip = |members: usize| wire::Sample {
            time_unix_ms: now().as_unix_ms(),
            kind: Some(wire::sample::Kind::Gossip(wire::GossipSample {
                adapter: "eventstoredb".into(),
                ok: true,
                members: vec![wire::GossipMember::default(); members],
                ..Default::default()
            })),
        };
        assert!(sample(gossip(4), now(), &LIMITS).is_ok());
        assert_eq!(
            sample(gossip(5), now(), &LIMITS).unwrap_err().reason,
            "too_many_members"
        );
        let log = |line: String| wire::Sample {
            time_unix_ms: now().as_unix_ms(),
            kind: Some(wire::sample::Kind::Log(wire::LogRecord {
                path: "/var/log/x".into(),
                line,
            })),
        };
        assert!(sample(log("x".repeat(256)), now(), &LIMITS).is_ok());
        assert_eq!(
            sample(log("x".repeat(257)), now(), &LIMITS)
                .unwrap_err()
                .detail,
            "log.line: 257 bytes, at most 256"
        );
    }

    const HELLO_LIMITS: HelloLimits = HelloLimits {
        max_labels: 2,
        max_probes: 2,
        max_string_bytes: 128,
    };

    fn good_hello() -> wire::Hello {
        wire::Hello {
            identity: Some(wire::NodeIdentity {
                tenant: "acme".into(),
                cluster: "db".into(),
                node: "n1".into(),
                labels: [("az".to_owned(), "eu-1a".to_owned())].into(),
                ..Default::default()
            }),
            agent_version: "0.1.0".into(),
            probes: vec![wire::ProbeInfo {
                name: "host".into(),
                interval_ms: 15_000,
            }],
            seq_epoch: "e1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_hello_becomes_a_key_and_a_domain_hello() {
        let (key, hello) = hello(good_hello(), &HELLO_LIMITS).unwrap();
        assert_eq!(key.to_string(), "acme/db/n1");
        assert_eq!(hello.identity.labels["az"], "eu-1a");
        assert_eq!(hello.probes[0].interval, Duration::from_secs(15));
    }

    #[test]
    fn a_hello_over_its_limits_or_with_dot_names_is_refused_whole() {
        let mut crowded = good_hello();
        if let Some(identity) = &mut crowded.identity {
            identity.labels = (0..3).map(|n| (n.to_string(), String::new())).collect();
            identity.node = "..".into();
        }
        crowded.agent_version = "v".repeat(129);
        let error = hello(crowded, &HELLO_LIMITS).unwrap_err();
        assert!(
            error.contains("hello.identity.node: \"..\" starts with '.'"),
            "{error}"
        );
        assert!(
            error.contains("hello.identity.labels: 3 labels, at most 2 (ingest.max_labels)"),
            "{error}"
        );
        assert!(
            error.contains("hello.agent_version: 129 bytes, at most 128"),
            "{error}"
        );
        let mut probes = good_hello();
        probes.probes = vec![wire::ProbeInfo::default(); 3];
        assert!(
            hello(probes, &HELLO_LIMITS)
                .unwrap_err()
                .contains("hello.probes: 3 probes, at most 2")
        );
    }

    #[test]
    fn rejections_are_summarised_per_reason() {
        let mut rejections = Rejections::default();
        for index in 0..1_000_000 {
            rejections.add_with(index, "empty_sample", || format!("first at {index}"));
        }
        rejections.add(7, Rejection::new("not_finite", "host.load1: NaN".into()));
        let mut late = Rejections::default();
        late.add(3, Rejection::new("out_of_order", "older".into()));
        late.add(2, Rejection::new("not_finite", "host.load5: inf".into()));
        rejections.merge(late);
        assert_eq!(rejections.total(), 1_000_003);
        let wire = rejections.to_wire();
        assert_eq!(wire.len(), 3, "one entry per reason");
        assert_eq!(
            (wire[0].reason.as_str(), wire[0].count, wire[0].index),
            ("empty_sample", 1_000_000, 0)
        );
        assert_eq!(wire[0].indices, (0..10).collect::<Vec<u32>>());
        assert_eq!(wire[0].detail, "first at 0");
        assert_eq!(
            (wire[1].count, wire[1].index, wire[1].indices.clone()),
            (2, 2, vec![2, 7])
        );
        assert_eq!(wire[1].detail, "host.load5: inf", "the detail of index 2");
        assert_eq!(wire[2].reason, "out_of_order");
    }
}
