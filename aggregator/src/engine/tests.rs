//! The rule engine as timelines: samples and ticks at explicit times in, events out.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::issue::{IssueEventKind, IssueState, UpdateReason};
use crate::model::DiskReading;

const INTERVAL: Duration = Duration::from_secs(15);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(secs * 1000)
}

/// One node's life as seen by the engine.
struct Timeline {
    engine: Engine,
    node: NodeKey,
    seq: u64,
}

/// A compact view of one issue event, for asserting whole timelines.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    kind: &'static str,
    rule: &'static str,
    severity: Severity,
    value: f64,
}

fn seen(events: &[Event]) -> Vec<Seen> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Issue(event) => Some(Seen {
                kind: event.kind.as_str(),
                rule: event.issue.key.rule.known().map_or("unknown", RuleId::name),
                severity: event.issue.severity,
                value: event.issue.value,
            }),
            Event::Notification(_) => None,
        })
        .collect()
}

fn kinds(events: &[Event]) -> Vec<(&'static str, &'static str)> {
    seen(events)
        .into_iter()
        .map(|seen| (seen.kind, seen.rule))
        .collect()
}

pub(super) fn host(load1: f64, memory_used_percent: f64, disk_used_percent: f64) -> HostReading {
    HostReading {
        load1,
        load5: load1,
        load15: load1,
        physical_cores: 1,
        logical_cores: 2,
        physical_cores_estimated: false,
        memory_total_bytes: 1_000_000,
        memory_available_bytes: 1_000_000 - (memory_used_percent * 10_000.0) as u64,
        memory_used_percent,
        disks: vec![DiskReading {
            mount: "/".into(),
            device: "/dev/vda".into(),
            fs_type: "ext4".into(),
            total_bytes: 1_000_000,
            available_bytes: 1_000_000 - (disk_used_percent * 10_000.0) as u64,
            used_percent: disk_used_percent,
            inodes_total: 100,
            inodes_free: 50,
        }],
    }
}

fn hello() -> Hello {
    Hello {
        identity: NodeIdentity::default(),
        agent_version: "test".into(),
        probes: vec![Probe {
            name: "host".into(),
            interval: INTERVAL,
        }],
        seq_epoch: "epoch-1".into(),
    }
}

impl Timeline {
    fn new(rules: RulesConfig) -> Self {
        let node = NodeKey {
            tenant: "acme".into(),
            cluster: "db".into(),
            node: "n1".into(),
        };
        let mut engine = Engine::new(rules, at(0), [], []);
        let greeting = engine.hello(&node, hello(), at(0));
        assert!(
            matches!(greeting[..], [Event::Notification(_)]),
            "a new node is announced"
        );
        Self {
            engine,
            node,
            seq: 0,
        }
    }

    /// A host sample taken at `secs`, arriving at once.
    fn sample(&mut self, secs: i64, reading: HostReading) -> Vec<Event> {
        self.seq += 1;
        let batch = Batch {
            seq: self.seq,
            samples: vec![Sample {
                time: at(secs),
                reading: Reading::Host(reading),
            }],
            n_rejected: 0,
            dropped_batches_total: 0,
        };
        self.engine
            .apply_batch(&self.node, batch, at(secs))
            .unwrap()
            .events
    }

    fn load(&mut self, secs: i64, load1: f64) -> Vec<Event> {
        self.sample(secs, host(load1, 10.0, 10.0))
    }

    fn memory(&mut self, secs: i64, percent: f64) -> Vec<Event> {
        self.sample(secs, host(0.1, percent, 10.0))
    }

    fn disk(&mut self, secs: i64, percent: f64) -> Vec<Event> {
        self.sample(secs, host(0.1, 10.0, percent))
    }

    fn tick(&mut self, secs: i64) -> Vec<Event> {
        self.engine.tick(at(secs))
    }

    fn open(&self, rule: &'static str) -> Option<&Issue> {
        let subject = if rule == "disk_usage" {
            Subject::mount(&self.node, "/")
        } else {
            Subject::node(&self.node)
        };
        self.engine.open_issue(&IssueKey {
            rule: crate::rules::RuleName::parse(rule),
            subject,
        })
    }
}

fn quiet_rules() -> RulesConfig {
    let mut rules = RulesConfig::default();
    rules.node_silent.enabled = false;
    rules
}

// ---- cluster-level values --------------------------------------------------------------

/// A value of `Scope::Cluster` moves one window per cluster, whichever agent reported it:
/// two agents reporting one condition (each missing some samples) open one issue, about
/// the cluster, once the condition held across their samples together.
#[test]
fn a_cluster_level_value_is_one_subject_whichever_agent_reported_it() {
    let rules = quiet_rules();
    let mut issues = IssueBook::default();
    let mut cluster_windows = HashMap::new();
    let (mut n1_windows, mut n2_windows) = (Vec::new(), Vec::new());
    let node = |name: &str| NodeKey {
        tenant: "acme".into(),
        cluster: "db".into(),
        node: name.into(),
    };
    let shard = crate::model::ResourceRef {
        kind: crate::model::ResourceKind::Shard,
        name: "logs/0",
    };
    let describe = |reporter: &NodeKey| crate::rules::Description {
        what: format!("shard logs/0, reported by {reporter}"),
        how: String::new(),
        unit: crate::rules::threshold::Unit::Percent,
    };
    let mut report = |reporter: &NodeKey, own: &mut Vec<RuleWindow>, secs: i64| {
        let measured = Measured {
            rule: RuleId::DiskUsage,
            metric: Metric {
                scope: Scope::Cluster,
                resource: Some(shard),
                value: 90.0,
            },
            describe: &describe,
        };
        let moment = Moment {
            time: at(secs),
            now: at(secs),
            max_gap: Duration::from_secs(45),
        };
        let windows = windows_of(own, &mut cluster_windows, reporter, Scope::Cluster);
        observe(&rules, &mut issues, windows, reporter, measured, moment)
    };
    // disk_usage opens after 1 min over 80 %: n1 at 0 s and 60 s, n2 at 30 s in between.
    assert_eq!(report(&node("n1"), &mut n1_windows, 0), None);
    assert_eq!(report(&node("n2"), &mut n2_windows, 30), None);
    let Some(Event::Issue(opened)) = report(&node("n1"), &mut n1_windows, 60) else {
        panic!("the condition held 1 min across both agents' samples");
    };
    assert_eq!(opened.kind, IssueEventKind::Opened);
    assert_eq!(
        opened.issue.key.subject,
        Subject::cluster("acme", "db", Some(shard))
    );
    // n2 reports the same condition: the same subject, still open, nothing new.
    assert_eq!(report(&node("n2"), &mut n2_windows, 60), None);
    assert_eq!(report(&node("n2"), &mut n2_windows, 75), None);
    assert_eq!(issues.open_issues().count(), 1);
    assert!(n1_windows.is_empty() && n2_windows.is_empty());
}

// ---- exactly at the threshold ---------------------------------------------------------

#[test]
fn a_value_exactly_at_the_threshold_never_opens() {
    let mut timeline = Timeline::new(quiet_rules());
    for step in 0..20 {
        let secs = step * 15;
        assert_eq!(
            kinds(&timeline.load(secs, 2.0)),
            [],
            "core load 2.0 is not over 2.0"
        );
        assert_eq!(
            kinds(&timeline.memory(secs + 1, 90.0)),
            [],
            "90 % is not over 90 %"
        );
        assert_eq!(
            kinds(&timeline.disk(secs + 2, 80.0)),
            [],
            "80 % is not over 80 %"
        );
    }
    assert!(timeline.engine.open_issues().next().is_none());
}

#[test]
fn a_value_exactly_at_the_threshold_does_not_close() {
    let mut timeline = Timeline::new(quiet_rules());
    assert_eq!(kinds(&timeline.load(0, 3.0)), [("opened", "core_load")]);
    for step in 1..=20 {
        assert_eq!(
            kinds(&timeline.load(step * 15, 2.0)),
            [],
            "2.0 is not under 2.0"
        );
    }
    assert!(timeline.open("core_load").is_some());
}

// ---- core_load: open_for 0, close_for 2 min -------------------------------------------

#[test]
fn core_load_opens_on_the_first_sample_over_and_closes_after_two_minutes_under() {
    let mut timeline = Timeline::new(quiet_rules());
    assert_eq!(kinds(&timeline.load(0, 1.5)), []);
    let opened = timeline.load(15, 2.5);
    assert_eq!(kinds(&opened), [("opened", "core_load")]);
    let Event::Issue(event) = &opened[0] else {
        unreachable!()
    };
    assert_eq!(event.issue.value, 2.5);
    assert_eq!(event.issue.threshold, 2.0);
    assert!(
        event
            .issue
            .remedy
            .contains("increasing the size of the instance type")
    );

    // Under from 30 s on; close_for is 2 minutes.
    for secs in (30..150).step_by(15) {
        assert_eq!(
            kinds(&timeline.load(secs, 1.0)),
            [],
            "at {secs}s only {}s under",
            secs - 30
        );
    }
    assert_eq!(kinds(&timeline.load(150, 1.0)), [("closed", "core_load")]);
    assert!(timeline.open("core_load").is_none());
}

#[test]
fn one_sample_back_over_inside_close_for_restarts_the_wait() {
    let mut timeline = Timeline::new(quiet_rules());
    timeline.load(0, 3.0);
    for secs in [15, 30, 45, 60, 75, 90, 105, 120] {
        assert_eq!(kinds(&timeline.load(secs, 1.0)), []);
    }
    assert_eq!(
        kinds(&timeline.load(135, 2.2)),
        [],
        "still open, same severity: no event"
    );
    for secs in (150..270).step_by(15) {
        assert_eq!(
            kinds(&timeline.load(secs, 1.0)),
            [],
            "the wait restarted at 150s ({secs}s)"
        );
    }
    assert_eq!(kinds(&timeline.load(270, 1.0)), [("closed", "core_load")]);
}

// ---- disk_usage: open_for 1 min, close_for 0 ------------------------------------------

#[test]
fn disk_usage_opens_after_a_minute_over_and_closes_at_once() {
    let mut timeline = Timeline::new(quiet_rules());
    for secs in [0, 15, 30, 45] {
        assert_eq!(kinds(&timeline.disk(secs, 85.0)), [], "only {secs}s over");
    }
    let opened = timeline.disk(60, 85.0);
    assert_eq!(kinds(&opened), [("opened", "disk_usage")]);
    let Event::Issue(event) = &opened[0] else {
        unreachable!()
    };
    assert_eq!(event.issue.key.subject.mount_name(), Some("/"));
    assert!(
        event
            .issue
            .message
            .contains("disk / on acme/db/n1 is 85.0 %, over 80.0 % for 1m")
    );
    assert!(event.issue.remedy.contains("running scavenge"));

    assert_eq!(kinds(&timeline.disk(75, 85.0)), []);
    assert_eq!(kinds(&timeline.disk(90, 79.0)), [("closed", "disk_usage")]);
}

#[test]
fn one_sample_back_under_inside_open_for_restarts_the_wait() {
    let mut timeline = Timeline::new(quiet_rules());
    for secs in [0, 15, 30, 45] {
        timeline.disk(secs, 85.0);
    }
    assert_eq!(kinds(&timeline.disk(50, 70.0)), [], "back under at 50s");
    for secs in [60, 75, 90, 105] {
        assert_eq!(
            kinds(&timeline.disk(secs, 85.0)),
            [],
            "the minute restarted at 60s ({secs}s)"
        );
    }
    assert_eq!(kinds(&timeline.disk(120, 85.0)), [("opened", "disk_usage")]);
}

// ---- memory_usage: open_for 0, close_for 2 min ----------------------------------------

#[test]
fn memory_usage_opens_at_once_and_closes_after_two_minutes_under() {
    let mut timeline = Timeline::new(quiet_rules());
    assert_eq!(
        kinds(&timeline.memory(0, 95.0)),
        [("opened", "memory_usage")]
    );
    for secs in (15..135).step_by(15) {
        assert_eq!(kinds(&timeline.memory(secs, 50.0)), []);
    }
    assert_eq!(
        kinds(&timeline.memory(135, 50.0)),
        [("closed", "memory_usage")]
    );
}

#[test]
fn memory_close_for_needs_the_whole_span_not_just_two_samples() {
    let mut timeline = Timeline::new(quiet_rules());
    timeline.memory(0, 95.0);
    for secs in (15..=120).step_by(15) {
        assert_eq!(kinds(&timeline.memory(secs, 50.0)), []);
    }
    assert_eq!(
        kinds(&timeline.memory(134, 50.0)),
        [],
        "119 s under is not 2 minutes"
    );
    assert_eq!(
        kinds(&timeline.memory(135, 50.0)),
        [("closed", "memory_usage")]
    );
}

// ---- gaps -----------------------------------------------------------------------------

#[test]
fn a_gap_in_samples_neither_opens_nor_closes() {
    let mut timeline = Timeline::new(quiet_rules());
    // Over at 0 and 15 s, then nothing for 10 minutes: the minute is not proven.
    timeline.disk(0, 85.0);
    timeline.disk(15, 85.0);
    assert_eq!(kinds(&timeline.tick(300)), []);
    assert_eq!(
        kinds(&timeline.disk(615, 85.0)),
        [],
        "the gap broke the run"
    );
    assert_eq!(kinds(&timeline.disk(630, 85.0)), []);
    assert_eq!(kinds(&timeline.disk(675, 85.0)), [("opened", "disk_usage")]);

    // Open core load, under once, then a gap: the gap does not count as time under.
    timeline.load(700, 3.0);
    assert_eq!(kinds(&timeline.load(715, 1.0)), []);
    assert_eq!(kinds(&timeline.tick(1000)), []);
    assert_eq!(
        kinds(&timeline.load(1015, 1.0)),
        [],
        "10 minutes apart, yet no close"
    );
    assert!(timeline.open("core_load").is_some());
}

// ---- renotify -------------------------------------------------------------------------

// Severity tiers: one issue moves between tiers with `updated`, never a new issue.
// Falling back, a tier holds while the value is over the tier beneath it (see
// `rules::threshold::tier_severity`): 87 % is under warning's 88 % but over info's 85 %, so an
// error issue drops to warning, not to info.
#[test]
fn severity_tiers_update_one_issue_and_step_down_with_hysteresis() {
    let text = r#"
        [rules.memory_usage]
        tiers = [{above = 85, severity = "info"}, {above = 88, severity = "warning"}, {above = 90, severity = "error"}]
        open_for = "0s"
        close_for = "0s"
    "#;
    let config = crate::config::AggregatorConfig::parse(text).unwrap();
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.rules.memory_usage.threshold, 85.0);
    let mut timeline = Timeline::new(config.rules);
    let mut all = Vec::new();
    for (secs, percent) in [
        (0, 84.0),
        (15, 86.0),
        (30, 89.0),
        (45, 91.0),
        (60, 87.0),
        (75, 80.0),
    ] {
        all.extend(seen(&timeline.memory(secs, percent)));
    }
    let steps: Vec<(&str, Severity, f64)> = all
        .iter()
        .map(|seen| (seen.kind, seen.severity, seen.value))
        .collect();
    assert_eq!(
        steps,
        [
            ("opened", Severity::Info, 86.0),
            ("updated", Severity::Warning, 89.0),
            ("updated", Severity::Error, 91.0),
            ("updated", Severity::Warning, 87.0),
            ("closed", Severity::Warning, 80.0),
        ]
    );
}

#[test]
fn a_tier_holds_while_the_value_stays_over_the_tier_beneath() {
    let text = r#"
        [rules.memory_usage]
        tiers = [{above = 85, severity = "info"}, {above = 88, severity = "warning"}, {above = 90, severity = "error"}]
        open_for = "0s"
        close_for = "0s"
    "#;
    let rules = crate::config::AggregatorConfig::parse(text).unwrap().rules;
    let mut timeline = Timeline::new(rules);
    let mut all = Vec::new();
    // Straight to error; 89 % keeps error (over 88 %); 86 % drops to warning, which 86.5 %
    // keeps; 95 % is error again at once; 85.5 % drops to warning, not further.
    for (secs, percent) in [
        (0, 92.0),
        (15, 89.0),
        (30, 86.0),
        (45, 86.5),
        (60, 95.0),
        (75, 85.5),
    ] {
        all.extend(seen(&timeline.memory(secs, percent)));
    }
    let steps: Vec<(&str, Severity)> = all.iter().map(|seen| (seen.kind, seen.severity)).collect();
    assert_eq!(
        steps,
        [
            ("opened", Severity::Error),
            ("updated", Severity::Warning),
            ("updated", Severity::Error),
            ("updated", Severity::Warning),
        ]
    );
    let issue = timeline.open("memory_usage").unwrap();
    assert!(
        issue
            .message
            .contains("(warning: from 88.0 %, held until under 85.0 %)"),
        "{}",
        issue.message
    );
}

#[test]
fn tiers_must_rise_and_agree_with_the_threshold() {
    let text = r#"
        [rules.disk_usage]
        threshold = 80.0
        tiers = [{above = 85, severity = "warning"}, {above = 84, severity = "error"}]
    "#;
    let errors = crate::config::AggregatorConfig::parse(text)
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("differs from the lowest tier"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("rules.disk_usage.tiers[1]"),
        "{errors:?}"
    );
}

#[test]
fn renotify_produces_updated_reminders() {
    let mut rules = quiet_rules();
    rules.memory_usage.renotify = Duration::from_secs(600);
    let mut timeline = Timeline::new(rules);
    timeline.memory(0, 95.0);
    assert_eq!(kinds(&timeline.tick(599)), []);
    let reminder = timeline.tick(600);
    assert_eq!(kinds(&reminder), [("updated", "memory_usage")]);
    let Event::Issue(event) = &reminder[0] else {
        unreachable!()
    };
    assert_eq!(event.kind, IssueEventKind::Updated(UpdateReason::Reminder));
    assert_eq!(
        kinds(&timeline.tick(900)),
        [],
        "counted from the last reminder"
    );
    assert_eq!(kinds(&timeline.tick(1200)), [("updated", "memory_usage")]);
}

#[test]
fn renotify_zero_sends_no_reminders() {
    let mut rules = quiet_rules();
    rules.memory_usage.renotify = Duration::ZERO;
    let mut timeline = Timeline::new(rules);
    timeline.memory(0, 95.0);
    assert_eq!(kinds(&timeline.tick(100_000)), []);
}

// ---- node_silent ----------------------------------------------------------------------

#[test]
fn node_silent_opens_after_three_intervals_escalates_and_closes_on_a_sample() {
    let mut timeline = Timeline::new(RulesConfig::default());
    timeline.load(0, 0.1);
    assert_eq!(kinds(&timeline.tick(44)), []);
    let opened = timeline.tick(45);
    assert_eq!(seen(&opened)[0].kind, "opened");
    assert_eq!(seen(&opened)[0].rule, "node_silent");
    assert_eq!(seen(&opened)[0].severity, Severity::Warning);
    assert_eq!(kinds(&timeline.tick(200)), [], "still silent: no news");
    let escalated = timeline.tick(300);
    assert_eq!(kinds(&escalated), [("updated", "node_silent")]);
    assert_eq!(seen(&escalated)[0].severity, Severity::Error);
    let closed = timeline.load(310, 0.1);
    assert_eq!(kinds(&closed), [("closed", "node_silent")]);
    assert_eq!(
        seen(&closed)[0].severity,
        Severity::Error,
        "closes at the severity it had"
    );
}

#[test]
fn node_silent_follows_the_interval_the_agent_announced() {
    let mut rules = RulesConfig::default();
    rules.node_silent.missed_intervals = 3;
    let node = NodeKey {
        tenant: "t".into(),
        cluster: "c".into(),
        node: "fast".into(),
    };
    let mut engine = Engine::new(rules, at(0), [], []);
    let fast = Hello {
        probes: vec![Probe {
            name: "host".into(),
            interval: Duration::from_secs(1),
        }],
        ..hello()
    };
    engine.hello(&node, fast, at(0));
    let batch = Batch {
        seq: 1,
        samples: vec![],
        n_rejected: 0,
        dropped_batches_total: 0,
    };
    engine.apply_batch(&node, batch, at(10)).unwrap();
    assert_eq!(kinds(&engine.tick(at(12))), []);
    assert_eq!(kinds(&engine.tick(at(13))), [("opened", "node_silent")]);
}

// ---- severity and values carried --------------------------------------------------------

#[test]
fn rule_severity_is_configurable() {
    let mut rules = quiet_rules();
    rules.disk_usage.severity = Severity::Critical;
    rules.disk_usage.open_for = Duration::ZERO;
    let mut timeline = Timeline::new(rules);
    assert_eq!(
        seen(&timeline.disk(0, 99.0))[0].severity,
        Severity::Critical
    );
}

// ---- replays and restarts ------------------------------------------------------------

#[test]
fn a_replayed_seq_is_ignored_but_proves_the_node_alive() {
    let mut timeline = Timeline::new(RulesConfig::default());
    timeline.memory(0, 95.0);
    let node = timeline.node.clone();
    let replay = Batch {
        seq: 1,
        samples: vec![Sample {
            time: at(0),
            reading: Reading::Host(host(0.1, 95.0, 10.0)),
        }],
        n_rejected: 0,
        dropped_batches_total: 0,
    };
    timeline.tick(60);
    assert!(timeline.open("node_silent").is_some());
    let outcome = timeline.engine.apply_batch(&node, replay, at(61)).unwrap();
    assert!(outcome.duplicate);
    assert_eq!(kinds(&outcome.events), [("closed", "node_silent")]);
    let state = timeline.engine.node(&node).unwrap();
    assert_eq!(state.applied_seq, 1);
    assert_eq!(
        (state.batches_applied_total, state.duplicate_batches_total),
        (1, 1)
    );
}

#[test]
fn seqs_jumped_over_are_counted() {
    let mut timeline = Timeline::new(quiet_rules());
    let node = timeline.node.clone();
    let batch = |seq| Batch {
        seq,
        samples: vec![],
        n_rejected: 0,
        dropped_batches_total: 0,
    };
    for seq in [1, 2, 5, 6, 10] {
        timeline
            .engine
            .apply_batch(&node, batch(seq), at(seq as i64))
            .unwrap();
    }
    let state = timeline.engine.node(&node).unwrap();
    assert_eq!(state.skipped_seqs_total, 2 + 3);
    assert_eq!(state.batches_applied_total, 5);
    assert_eq!(state.duplicate_batches_total, 0);
}

#[test]
fn a_new_seq_epoch_restarts_dedup() {
    let mut timeline = Timeline::new(quiet_rules());
    for secs in [0, 15, 30] {
        timeline.memory(secs, 10.0);
    }
    let node = timeline.node.clone();
    let fresh = Hello {
        seq_epoch: "epoch-2".into(),
        ..hello()
    };
    timeline.engine.hello(&node, fresh, at(40));
    let batch = Batch {
        seq: 1,
        samples: vec![Sample {
            time: at(45),
            reading: Reading::Host(host(0.1, 95.0, 10.0)),
        }],
        n_rejected: 0,
        dropped_batches_total: 0,
    };
    let outcome = timeline.engine.apply_batch(&node, batch, at(45)).unwrap();
    assert!(!outcome.duplicate);
    assert_eq!(kinds(&outcome.events), [("opened", "memory_usage")]);
}

#[test]
fn after_a_restart_an_open_issue_stays_open_and_closes_once() {
    let mut timeline = Timeline::new(quiet_rules());
    let opened = timeline.memory(0, 95.0);
    let Event::Issue(opened) = &opened[0] else {
        unreachable!()
    };
    let issue_id = opened.issue.id.clone();

    // What the store would give back after a restart: the node and the open issue.
    let persisted_node = timeline.engine.node(&timeline.node).unwrap().clone();
    let persisted_open: Vec<Issue> = timeline.engine.open_issues().cloned().collect();
    let mut engine = Engine::new(quiet_rules(), at(100), [persisted_node], persisted_open);
    let node = timeline.node.clone();
    engine.hello(&node, hello(), at(100));
    let mut events = Vec::new();
    let mut seq = timeline.seq;
    let mut send = |engine: &mut Engine, secs: i64, percent: f64| {
        seq += 1;
        let batch = Batch {
            seq,
            samples: vec![Sample {
                time: at(secs),
                reading: Reading::Host(host(0.1, percent, 10.0)),
            }],
            n_rejected: 0,
            dropped_batches_total: 0,
        };
        engine.apply_batch(&node, batch, at(secs)).unwrap().events
    };
    events.extend(send(&mut engine, 105, 96.0));
    assert_eq!(kinds(&events), [], "still open: no second opened");
    for secs in (120..=240).step_by(15) {
        events.extend(send(&mut engine, secs, 40.0));
    }
    assert_eq!(kinds(&events), [("closed", "memory_usage")]);
    let Event::Issue(closed) = &events[0] else {
        unreachable!()
    };
    assert_eq!(closed.issue.id, issue_id);
    assert_eq!(closed.issue.state, IssueState::Closed);
}

#[test]
fn silence_is_not_counted_over_the_aggregators_own_downtime() {
    let mut timeline = Timeline::new(RulesConfig::default());
    timeline.load(0, 0.1);
    let node = timeline.engine.node(&timeline.node).unwrap().clone();
    // The aggregator was down from 1 s to 600 s.
    let mut engine = Engine::new(RulesConfig::default(), at(600), [node], []);
    assert_eq!(kinds(&engine.tick(at(601))), []);
    assert_eq!(kinds(&engine.tick(at(645))), [("opened", "node_silent")]);
}

#[test]
fn dropped_batches_raise_a_notification_with_the_exact_count() {
    let mut timeline = Timeline::new(quiet_rules());
    let node = timeline.node.clone();
    let batch = |seq, dropped| Batch {
        seq,
        samples: vec![],
        n_rejected: 0,
        dropped_batches_total: dropped,
    };
    let outcome = timeline
        .engine
        .apply_batch(&node, batch(1, 7), at(1))
        .unwrap();
    let [Event::Notification(note)] = &outcome.events[..] else {
        panic!("{:?}", outcome.events)
    };
    assert!(note.text.contains("dropped 7 batches"), "{}", note.text);
    let outcome = timeline
        .engine
        .apply_batch(&node, batch(2, 7), at(2))
        .unwrap();
    assert!(outcome.events.is_empty(), "no new drops, no news");
    let outcome = timeline
        .engine
        .apply_batch(&node, batch(3, 10), at(3))
        .unwrap();
    let [Event::Notification(note)] = &outcome.events[..] else {
        panic!()
    };
    assert!(note.text.contains("dropped 3 batches"), "{}", note.text);
    assert_eq!(
        timeline.engine.node(&node).unwrap().dropped_batches_total,
        10
    );
}

#[test]
fn a_batch_before_hello_is_an_error() {
    let mut engine = Engine::new(RulesConfig::default(), at(0), [], []);
    let node = NodeKey {
        tenant: "t".into(),
        cluster: "c".into(),
        node: "n".into(),
    };
    let batch = Batch {
        seq: 1,
        samples: vec![],
        n_rejected: 0,
        dropped_batches_total: 0,
    };
    assert_eq!(
        engine.apply_batch(&node, batch, at(0)),
        Err(EngineError::UnknownNode(node))
    );
}

// ---- properties -----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    /// A host sample after `delay` seconds with these values.
    Sample {
        delay: u8,
        load1: f64,
        memory: f64,
        disk: f64,
    },
    /// Time passes with no sample.
    Tick { delay: u16 },
}

fn step() -> impl Strategy<Value = Step> {
    // Values cluster around the thresholds so every edge is exercised.
    let load = prop_oneof![Just(2.0), 0.0..4.0];
    let memory = prop_oneof![Just(90.0), 80.0..100.0];
    let disk = prop_oneof![Just(80.0), 70.0..90.0];
    prop_oneof![
        4 => (1u8..40, load, memory, disk)
            .prop_map(|(delay, load1, memory, disk)| Step::Sample { delay, load1, memory, disk }),
        1 => (1u16..400).prop_map(|delay| Step::Tick { delay }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Never two open issues for one key; every issue's events are one `opened`, any
    /// number of `updated`, and at most one `closed`, last.
    #[test]
    fn the_issue_lifecycle_holds_for_any_timeline(steps in proptest::collection::vec(step(), 1..120)) {
        let mut rules = RulesConfig::default();
        rules.renotify_all(Duration::from_secs(300));
        let mut timeline = Timeline::new(rules);
        let mut secs = 0i64;
        let mut histories: HashMap<String, Vec<IssueEventKind>> = HashMap::new();
        let mut open_per_key: HashMap<IssueKey, String> = HashMap::new();
        for step in steps {
            let events = match step {
                Step::Sample { delay, load1, memory, disk } => {
                    secs += i64::from(delay);
                    let mut events = timeline.sample(secs, host(load1, memory, disk));
                    events.extend(timeline.tick(secs));
                    events
                }
                Step::Tick { delay } => {
                    secs += i64::from(delay);
                    timeline.tick(secs)
                }
            };
            for event in events {
                let Event::Issue(event) = event else { continue };
                let history = histories.entry(event.issue.id.clone()).or_default();
                match event.kind {
                    IssueEventKind::Opened => {
                        prop_assert!(history.is_empty(), "opened twice: {history:?}");
                        let previous = open_per_key.insert(event.issue.key.clone(), event.issue.id.clone());
                        prop_assert!(previous.is_none(), "two open issues for {:?}", event.issue.key);
                    }
                    IssueEventKind::Updated(_) => {
                        prop_assert_eq!(history.first(), Some(&IssueEventKind::Opened));
                        prop_assert!(!history.contains(&IssueEventKind::Closed), "updated after closed");
                    }
                    IssueEventKind::Closed => {
                        prop_assert_eq!(history.first(), Some(&IssueEventKind::Opened), "closed without opened");
                        prop_assert!(!history.contains(&IssueEventKind::Closed), "closed twice");
                        prop_assert_eq!(open_per_key.remove(&event.issue.key), Some(event.issue.id.clone()));
                    }
                }
                history.push(event.kind);
            }
            let engine_open: Vec<&Issue> = timeline.engine.open_issues().collect();
            prop_assert_eq!(engine_open.len(), open_per_key.len());
        }
    }
}

impl RulesConfig {
    fn renotify_all(&mut self, every: Duration) {
        self.core_load.renotify = every;
        self.memory_usage.renotify = every;
        self.disk_usage.renotify = every;
        self.node_silent.renotify = every;
    }
}
