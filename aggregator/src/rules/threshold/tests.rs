//! The threshold rules' shared logic, and what the host rules measure.

use super::*;
use crate::config::RulesConfig;
use crate::issue::IssueKey;
use crate::model::{DiskReading, HostReading, NodeKey, Reading, Subject, Timestamp};
use crate::rules::RuleId;

/// Every value the enabled rules watch in a host sample, with its words, as the engine
/// would make them.
fn measure_host(
    node: &NodeKey,
    host: &HostReading,
    rules: &RulesConfig,
) -> Vec<(RuleId, Measurement)> {
    let reading = Reading::Host(host.clone());
    let mut measurements = Vec::new();
    rules.measure(&reading, &mut |rule, metric, describe| {
        let subject = match metric.resource {
            Some(resource) => Subject::resource_of_node(node, resource),
            None => Subject::node(node),
        };
        let key = IssueKey {
            rule: rule.into(),
            subject,
        };
        measurements.push((rule, Measurement::new(key, metric.value, describe(node))));
    });
    measurements
}

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
    let (_, core) = measurements
        .iter()
        .find(|(rule, _)| *rule == RuleId::CoreLoad)
        .unwrap();
    assert_eq!(core.value, 2.5);
    let (_, disk) = measurements
        .iter()
        .find(|(rule, _)| *rule == RuleId::DiskUsage)
        .unwrap();
    assert_eq!(disk.key.subject.mount_name(), Some("/data"));
}

#[test]
fn disabled_rules_measure_nothing() {
    let mut rules = RulesConfig::default();
    rules.disk_usage.enabled = false;
    rules.core_load.enabled = false;
    let measurements = measure_host(&node(), &host(5.0, 10.0, 10.0), &rules);
    assert_eq!(measurements.len(), 1);
    assert_eq!(measurements[0].0, RuleId::MemoryUsage);
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
    let (_, disk) = measurements
        .iter()
        .find(|(rule, _)| *rule == RuleId::DiskUsage)
        .unwrap();
    let mut window = ConditionWindow::default();
    let gap = Duration::from_secs(60);
    window.observe(Timestamp::from_unix_ms(0), Verdict::Breach, gap);
    window.observe(Timestamp::from_unix_ms(60_000), Verdict::Breach, gap);
    let remedy = RuleId::DiskUsage.remedy();
    let Some(Condition::Breach(finding)) =
        conclude(disk, &window, &[], &rules.disk_usage, None, remedy)
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
