//! The rules: what each one measures in a sample, how a value compares with its
//! threshold, and what it concludes from a window (DESIGN §6).
//!
//! Threshold rules (`core_load`, `memory_usage`, `disk_usage`) are decided by samples:
//! each sample moves the rule's window, and the window says whether the open or the
//! clear condition has held long enough. `node_silent` is decided by the passing of time
//! on the aggregator's clock. Rules produce `Condition`s; opening and closing issues is
//! `issue`'s business. No I/O, no clock.

use std::time::Duration;

use crate::config::{NodeSilentConfig, RulesConfig, ThresholdRuleConfig};
use crate::consensus::CLUSTER_CONSENSUS;
use crate::issue::{Condition, Finding, IssueKey};
use crate::model::{DiskReading, HostReading, NodeKey, Severity, Subject, Timestamp};
use crate::window::{ConditionWindow, Verdict};

pub const CORE_LOAD: &str = "core_load";
pub const MEMORY_USAGE: &str = "memory_usage";
pub const DISK_USAGE: &str = "disk_usage";
pub const NODE_SILENT: &str = "node_silent";

/// Every rule this aggregator knows, by name.
pub const RULES: [&str; 5] = [
    CORE_LOAD,
    MEMORY_USAGE,
    DISK_USAGE,
    NODE_SILENT,
    CLUSTER_CONSENSUS,
];

/// The static name of a rule read back from storage or a request.
pub fn rule_name(name: &str) -> Option<&'static str> {
    RULES.into_iter().find(|rule| *rule == name)
}

const REMEDY_INSTANCE_SIZE: &str =
    "consider increasing the size of the instance type for the cluster";
const REMEDY_DISK: &str =
    "consider either removing data, running scavenge or increasing the disk size for the cluster";
const REMEDY_SILENT: &str = "check that the node is up, that hostwatch-agent runs on it \
     (journalctl -u hostwatch-agent) and that it can reach the aggregator";

/// How a rule's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A plain ratio, e.g. core load 2.35.
    Ratio,
    /// A percentage, e.g. 83.2 %.
    Percent,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::Ratio => format!("{value:.2}"),
            Unit::Percent => format!("{value:.1} %"),
        }
    }
}

/// One value a threshold rule watches, taken from one host sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub key: IssueKey,
    pub value: f64,
    /// What was measured, e.g. "disk / on acme/db/node-1".
    what: String,
    /// How it was computed, when that helps, e.g. "load1 4.20 over 2 physical cores".
    how: String,
    unit: Unit,
}

impl Measurement {
    /// What was measured, e.g. "disk / on acme/db/node-1".
    pub fn what(&self) -> &str {
        &self.what
    }

    /// How the value was computed, e.g. "load1 4.20 over 2 physical cores".
    pub fn how(&self) -> &str {
        &self.how
    }

    /// How its values read: "ratio" or "percent".
    pub fn unit(&self) -> &'static str {
        match self.unit {
            Unit::Ratio => "ratio",
            Unit::Percent => "percent",
        }
    }
}

/// One value a threshold rule watches in a host sample, before any text is made: the
/// engine judges every sample with these and builds a `Measurement` (with its message
/// parts) only when a window concludes something.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostMetric<'a> {
    pub rule: &'static str,
    /// The disk, for `disk_usage`.
    pub disk: Option<&'a DiskReading>,
    pub value: f64,
}

impl HostMetric<'_> {
    /// The mount this metric is about; empty for a node-wide one.
    pub fn mount(&self) -> &str {
        self.disk.map_or("", |disk| disk.mount.as_str())
    }
}

/// The values every enabled threshold rule watches in a host sample. Allocates nothing.
pub fn host_metrics<'a>(
    host: &'a HostReading,
    rules: &RulesConfig,
) -> impl Iterator<Item = HostMetric<'a>> {
    let core_load = rules.core_load.enabled.then(|| HostMetric {
        rule: CORE_LOAD,
        disk: None,
        value: host.core_load(),
    });
    let memory = rules.memory_usage.enabled.then_some(HostMetric {
        rule: MEMORY_USAGE,
        disk: None,
        value: host.memory_used_percent,
    });
    let disks = rules.disk_usage.enabled.then_some(&host.disks);
    core_load
        .into_iter()
        .chain(memory)
        .chain(disks.into_iter().flatten().map(|disk| HostMetric {
            rule: DISK_USAGE,
            disk: Some(disk),
            value: disk.used_percent,
        }))
}

/// The issue key a host metric of `node` decides.
pub fn metric_key(node: &NodeKey, metric: &HostMetric<'_>) -> IssueKey {
    IssueKey {
        rule: metric.rule,
        subject: match metric.disk {
            Some(disk) => Subject::mount(node, &disk.mount),
            None => Subject::node(node),
        },
    }
}

/// A host metric with the words its messages need: what was measured and how.
pub fn measurement(
    node: &NodeKey,
    host: &HostReading,
    metric: &HostMetric<'_>,
    key: IssueKey,
) -> Measurement {
    let (what, how, unit) = match metric.disk {
        Some(disk) => (
            format!("disk {} on {node}", disk.mount),
            format!(
                "{} of {} bytes available on {}",
                disk.available_bytes, disk.total_bytes, disk.device
            ),
            Unit::Percent,
        ),
        None if metric.rule == CORE_LOAD => {
            let estimated = if host.physical_cores_estimated {
                " (logical, no topology)"
            } else {
                ""
            };
            (
                format!("core load on {node}"),
                format!(
                    "load1 {:.2} over {} physical cores{estimated}",
                    host.load1, host.physical_cores
                ),
                Unit::Ratio,
            )
        }
        None => (
            format!("memory on {node}"),
            format!(
                "{} of {} bytes available",
                host.memory_available_bytes, host.memory_total_bytes
            ),
            Unit::Percent,
        ),
    };
    Measurement {
        key,
        value: metric.value,
        what,
        how,
        unit,
    }
}

/// The values every enabled threshold rule watches in a host sample, with their words.
pub fn measure_host(node: &NodeKey, host: &HostReading, rules: &RulesConfig) -> Vec<Measurement> {
    host_metrics(host, rules)
        .map(|metric| measurement(node, host, &metric, metric_key(node, &metric)))
        .collect()
}

/// Whether `conclude` could change the issue book for a window that has just moved:
/// the open condition held (opens, or may change the tier of, an issue), or the clear
/// condition held while an issue is open (closes it). A clear with nothing open, or
/// neither condition held, changes nothing, so no message need be made for it.
pub fn may_decide(
    window: &ConditionWindow,
    config: &ThresholdRuleConfig,
    issue_open: bool,
) -> bool {
    window.breach_held_for(config.open_for)
        || (issue_open && window.clear_held_for(config.close_for))
}

/// The settings of the threshold rule named `rule`.
pub fn threshold_rule<'a>(rules: &'a RulesConfig, rule: &str) -> Option<&'a ThresholdRuleConfig> {
    match rule {
        CORE_LOAD => Some(&rules.core_load),
        MEMORY_USAGE => Some(&rules.memory_usage),
        DISK_USAGE => Some(&rules.disk_usage),
        _ => None,
    }
}

/// Over the threshold opens, under it clears, exactly at it does neither.
pub fn verdict(value: f64, threshold: f64) -> Verdict {
    if value > threshold {
        Verdict::Breach
    } else if value < threshold {
        Verdict::Clear
    } else {
        Verdict::Neither
    }
}

/// The severity tier an issue is at after a breaching `value`, given the tier it was at
/// (`current`, `None` when it is just opening), and the threshold of that tier.
///
/// Escalation is immediate: a value over a higher tier's `above` takes that tier at once.
/// De-escalation has one tier of hysteresis: a tier, once reached, holds while the value
/// stays over the `above` of the tier beneath it; falling under that, the issue goes to
/// the highest tier that still holds (at most one above the tier the value is in). In
/// numbers, with tiers 85/88/90 % (info/warning/error): 91 % is error; 89 % keeps error
/// (still over warning's 88 %); 87 % gives warning (under 88 %, but warning holds while
/// over info's 85 %); 86 % then stays warning. This keeps a value wobbling around one
/// tier boundary from sending an update on every sample, and it is decided by values,
/// not by how many samples arrived (a one-tier-per-sample rule would make the severity
/// depend on the agent's interval). Without tiers: the rule's one severity and threshold.
pub fn tier_severity(
    config: &ThresholdRuleConfig,
    value: f64,
    current: Option<Severity>,
) -> (Severity, f64) {
    let tiers = &config.tiers;
    if tiers.is_empty() {
        return (config.severity, config.threshold);
    }
    // The highest tier the value is over (0 when under all: the lowest tier).
    let reached = tiers.iter().rposition(|tier| value > tier.above);
    let held = current
        .and_then(|severity| tiers.iter().position(|tier| tier.severity == severity))
        .map(|current_index| current_index.min(reached.map_or(0, |index| index + 1)));
    let index = match (reached, held) {
        (Some(reached), Some(held)) => reached.max(held),
        (Some(reached), None) => reached,
        (None, Some(held)) => held,
        (None, None) => 0,
    };
    (tiers[index].severity, tiers[index].above)
}

/// What a threshold rule concludes once `measurement` has been observed in `window`.
/// `current` is the severity of the rule's open issue on this subject, if one is open.
pub fn conclude(
    measurement: &Measurement,
    window: &ConditionWindow,
    config: &ThresholdRuleConfig,
    current: Option<Severity>,
) -> Option<Condition> {
    let unit = measurement.unit;
    let value = unit.format(measurement.value);
    let (severity, tier_threshold) = tier_severity(config, measurement.value, current);
    let threshold = unit.format(config.threshold);
    let finding = |message: String, remedy: &str| Finding {
        severity,
        value: measurement.value,
        threshold: tier_threshold,
        message,
        remedy: remedy.to_owned(),
    };
    let remedy = match measurement.key.rule {
        DISK_USAGE => REMEDY_DISK,
        _ => REMEDY_INSTANCE_SIZE,
    };
    if window.breach_held_for(config.open_for) {
        let held = held_phrase(config.open_for);
        let tier = if config.tiers.is_empty() {
            String::new()
        } else if measurement.value > tier_threshold {
            format!(" ({severity}: over {})", unit.format(tier_threshold))
        } else {
            format!(
                " ({severity}: from {}, held until under {})",
                unit.format(tier_threshold),
                tier_below(config, severity).map_or(threshold.clone(), |above| unit.format(above))
            )
        };
        let message = format!(
            "{} is {value}, over {threshold}{held}{tier} ({})",
            measurement.what, measurement.how
        );
        Some(Condition::Breach(finding(message, remedy)))
    } else if window.clear_held_for(config.close_for) {
        let held = held_phrase(config.close_for);
        let message = format!(
            "{} is {value}, back under {threshold}{held}",
            measurement.what
        );
        Some(Condition::Clear(finding(message, remedy)))
    } else {
        None
    }
}

/// The `above` of the tier beneath the one with `severity`.
fn tier_below(config: &ThresholdRuleConfig, severity: Severity) -> Option<f64> {
    let index = config
        .tiers
        .iter()
        .position(|tier| tier.severity == severity)?;
    index.checked_sub(1).map(|below| config.tiers[below].above)
}

fn held_phrase(span: Duration) -> String {
    if span.is_zero() {
        String::new()
    } else {
        format!(" for {}", humantime::format_duration(span))
    }
}

/// `node_silent`: what the silence of a node concludes at `now`. `silent_since` is when
/// it last sent a sample, or when the aggregator started if that is later (a node is not
/// blamed for the aggregator's own downtime).
pub fn silence(
    node: &NodeKey,
    silent_since: Timestamp,
    interval: Duration,
    now: Timestamp,
    config: &NodeSilentConfig,
) -> Option<Condition> {
    let allowed = interval.saturating_mul(config.missed_intervals);
    let silent_for = now.since(silent_since);
    if silent_for < allowed || silent_for.is_zero() {
        return None;
    }
    let severity = if silent_for >= config.escalate_after {
        config.escalated_severity
    } else {
        config.severity
    };
    let message = format!(
        "no sample from {node} for {} (expected one every {})",
        humantime::format_duration(whole_seconds(silent_for)),
        humantime::format_duration(interval),
    );
    Some(Condition::Breach(Finding {
        severity,
        value: silent_for.as_secs_f64(),
        threshold: allowed.as_secs_f64(),
        message,
        remedy: REMEDY_SILENT.to_owned(),
    }))
}

/// `node_silent` clears as soon as a sample arrives.
pub fn heard_from(node: &NodeKey, silent_for: Duration, config: &NodeSilentConfig) -> Condition {
    Condition::Clear(Finding {
        severity: config.severity,
        value: silent_for.as_secs_f64(),
        threshold: 0.0,
        message: format!(
            "{node} is sending samples again after {} of silence",
            humantime::format_duration(whole_seconds(silent_for))
        ),
        remedy: String::new(),
    })
}

fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DiskReading;

    fn node() -> NodeKey {
        NodeKey {
            tenant: "acme".into(),
            cluster: "db".into(),
            node: "n1".into(),
        }
    }

    fn host(load1: f64, mem: f64, disk: f64) -> HostReading {
        HostReading {
            load1,
            load5: load1,
            load15: load1,
            physical_cores: 2,
            logical_cores: 4,
            physical_cores_estimated: false,
            memory_total_bytes: 1000,
            memory_available_bytes: 1000 - (mem * 10.0) as u64,
            memory_used_percent: mem,
            disks: vec![DiskReading {
                mount: "/data".into(),
                device: "/dev/vdb".into(),
                fs_type: "ext4".into(),
                total_bytes: 1000,
                available_bytes: 100,
                used_percent: disk,
                inodes_total: 10,
                inodes_free: 5,
            }],
        }
    }

    #[test]
    fn core_load_divides_by_physical_cores() {
        let measurements = measure_host(&node(), &host(5.0, 10.0, 10.0), &RulesConfig::default());
        let core = measurements
            .iter()
            .find(|m| m.key.rule == CORE_LOAD)
            .unwrap();
        assert_eq!(core.value, 2.5);
        let disk = measurements
            .iter()
            .find(|m| m.key.rule == DISK_USAGE)
            .unwrap();
        assert_eq!(disk.key.subject.mount, "/data");
    }

    #[test]
    fn disabled_rules_measure_nothing() {
        let mut rules = RulesConfig::default();
        rules.disk_usage.enabled = false;
        rules.core_load.enabled = false;
        let measurements = measure_host(&node(), &host(5.0, 10.0, 10.0), &rules);
        assert_eq!(measurements.len(), 1);
        assert_eq!(measurements[0].key.rule, MEMORY_USAGE);
    }

    #[test]
    fn exactly_at_the_threshold_is_neither() {
        assert_eq!(verdict(80.0, 80.0), Verdict::Neither);
        assert_eq!(verdict(80.01, 80.0), Verdict::Breach);
        assert_eq!(verdict(79.99, 80.0), Verdict::Clear);
    }

    #[test]
    fn messages_name_the_subject_value_threshold_and_remedy() {
        let rules = RulesConfig::default();
        let measurements = measure_host(&node(), &host(0.0, 10.0, 83.24), &rules);
        let disk = measurements
            .iter()
            .find(|m| m.key.rule == DISK_USAGE)
            .unwrap();
        let mut window = ConditionWindow::default();
        let gap = Duration::from_secs(60);
        window.observe(Timestamp::from_unix_ms(0), Verdict::Breach, gap);
        window.observe(Timestamp::from_unix_ms(60_000), Verdict::Breach, gap);
        let Some(Condition::Breach(finding)) = conclude(disk, &window, &rules.disk_usage, None)
        else {
            panic!("expected a breach");
        };
        assert_eq!(
            finding.message,
            "disk /data on acme/db/n1 is 83.2 %, over 80.0 % for 1m \
             (100 of 1000 bytes available on /dev/vdb)"
        );
        assert!(finding.remedy.contains("running scavenge"));
    }

    #[test]
    fn silence_escalates_after_five_minutes() {
        let config = NodeSilentConfig::default();
        let interval = Duration::from_secs(15);
        let since = Timestamp::from_unix_ms(0);
        let at = |secs: i64| Timestamp::from_unix_ms(secs * 1000);
        assert_eq!(silence(&node(), since, interval, at(44), &config), None);
        let Some(Condition::Breach(warning)) = silence(&node(), since, interval, at(45), &config)
        else {
            panic!("silent for 3 intervals");
        };
        assert_eq!(warning.severity, crate::model::Severity::Warning);
        assert_eq!(
            warning.message,
            "no sample from acme/db/n1 for 45s (expected one every 15s)"
        );
        let Some(Condition::Breach(error)) = silence(&node(), since, interval, at(300), &config)
        else {
            panic!("silent for 5 minutes");
        };
        assert_eq!(error.severity, crate::model::Severity::Error);
    }
}
