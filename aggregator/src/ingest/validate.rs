//! Turns what an agent sent into domain values, or says exactly what was wrong.
//!
//! A sample is rejected, with a reason and the field at fault, when a number is not
//! finite, a size is negative, a percentage is outside 0..=100, or it is stamped further
//! in the future than the allowed clock skew. The rest of its batch is applied. No I/O.

use std::fmt;
use std::time::Duration;

use proto::v1 as wire;

mod elasticsearch;

use crate::model::{
    DiskReading, GossipMember, GossipReading, HostReading, NodeKey, Reading, Sample, Timestamp,
};

/// Why one sample was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    fn new(reason: &'static str, detail: String) -> Self {
        Self { reason, detail }
    }
}

/// Validates one sample against the aggregator's clock `now`. Takes the sample so its
/// strings move into the reading instead of being copied; names a field only on failure.
pub fn sample(
    sample: wire::Sample,
    now: Timestamp,
    max_clock_skew: Duration,
) -> Result<Sample, Rejection> {
    let time = Timestamp::from_unix_ms(sample.time_unix_ms);
    if time > now.plus(max_clock_skew) {
        return Err(Rejection::new(
            "future_timestamp",
            format!(
                "time_unix_ms: {} is {} ahead of the aggregator's clock (allowed: {})",
                time.to_rfc3339(),
                humantime::format_duration(Duration::from_secs(time.since(now).as_secs())),
                humantime::format_duration(max_clock_skew),
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
        Some(wire::sample::Kind::Host(host)) => Reading::Host(self::host(host)?),
        Some(wire::sample::Kind::Gossip(gossip)) => Reading::Gossip(self::gossip(gossip)),
        Some(wire::sample::Kind::Log(log)) => Reading::Log {
            path: log.path,
            line: log.line,
        },
        Some(wire::sample::Kind::Elasticsearch(es)) => {
            Reading::Elasticsearch(elasticsearch::sample(es)?)
        }
    };
    Ok(Sample { time, reading })
}

fn host(host: wire::HostSample) -> Result<HostReading, Rejection> {
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
    let memory_used_percent = percent(&"host.memory_used_percent", host.memory_used_percent)?;
    let mut disks = Vec::with_capacity(host.disks.len());
    for (index, disk) in host.disks.into_iter().enumerate() {
        let field = |name: &'static str| DiskField { index, name };
        disks.push(DiskReading {
            total_bytes: size(&field("total_bytes"), disk.total_bytes)?,
            available_bytes: size(&field("available_bytes"), disk.available_bytes)?,
            used_percent: percent(&field("used_percent"), disk.used_percent)?,
            inodes_total: size(&field("inodes_total"), disk.inodes_total)?,
            inodes_free: size(&field("inodes_free"), disk.inodes_free)?,
            mount: disk.mount,
            device: disk.device,
            fs_type: disk.fs_type,
        });
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

fn gossip(gossip: wire::GossipSample) -> GossipReading {
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
    GossipReading {
        adapter: gossip.adapter,
        outcome,
        cluster_status: gossip.cluster_status,
        leader_id: gossip.leader_id,
    }
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

/// The node key a Hello claims, checked for shape.
pub fn node_key(identity: Option<&wire::NodeIdentity>) -> Result<NodeKey, String> {
    let identity = identity.ok_or("hello.identity: missing")?;
    let mut errors = Vec::new();
    for (field, value) in [
        ("tenant", &identity.tenant),
        ("cluster", &identity.cluster),
        ("node", &identity.node),
    ] {
        if value.is_empty() {
            errors.push(format!("hello.identity.{field}: must not be empty"));
        } else if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            errors.push(format!(
                "hello.identity.{field}: {value:?} may only hold letters, digits, '.', '_' and '-'"
            ));
        } else if value.len() > 128 {
            errors.push(format!(
                "hello.identity.{field}: longer than 128 characters"
            ));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_secs(300);

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
        sample(host_sample(host), now(), SKEW).unwrap_err()
    }

    #[test]
    fn a_good_host_sample_passes_unchanged() {
        let Sample {
            time,
            reading: Reading::Host(host),
        } = sample(host_sample(good_host()), now(), SKEW).unwrap()
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
            sample(host_sample(host), now(), SKEW).is_ok(),
            "100 % is a full disk, not an error"
        );
    }

    #[test]
    fn far_future_timestamps_are_rejected_but_skew_is_tolerated() {
        let mut ahead = host_sample(good_host());
        ahead.time_unix_ms = now().plus(Duration::from_secs(86_400)).as_unix_ms();
        let rejected = sample(ahead, now(), SKEW).unwrap_err();
        assert_eq!(rejected.reason, "future_timestamp");
        assert!(
            rejected.detail.contains("1day ahead"),
            "{}",
            rejected.detail
        );
        let mut slightly = host_sample(good_host());
        slightly.time_unix_ms = now().plus(Duration::from_secs(299)).as_unix_ms();
        assert!(sample(slightly, now(), SKEW).is_ok());
    }

    #[test]
    fn an_empty_sample_is_rejected() {
        let empty = wire::Sample {
            time_unix_ms: now().as_unix_ms(),
            kind: None,
        };
        assert_eq!(
            sample(empty, now(), SKEW).unwrap_err().reason,
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
}
