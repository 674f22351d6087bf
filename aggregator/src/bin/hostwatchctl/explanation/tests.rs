//! The explanation block and its JSON, from hand-built responses: a threshold rule with
//! an elided run and tiers, a closed issue, node_silent and cluster_consensus.

use proto::v1::{
    DecidingSample, Evidence, EvidenceWindow, Explanation, NodeEvidence, NormalizedMember,
    RuleCondition, Severity, SeverityTier, SilenceEvidence,
};

use super::*;

const T0: i64 = 1_700_000_000_000;

/// disk_usage opened after a run of 75 samples, 15 s apart (60 kept, 15 elided).
pub(crate) fn disk_explanation() -> Explanation {
    let samples: Vec<DecidingSample> = (0..75)
        .filter(|index| *index < 10 || *index >= 25)
        .map(|index| DecidingSample {
            time_unix_ms: T0 + index * 15_000,
            value: 81.0 + index as f64 / 10.0,
        })
        .collect();
    Explanation {
        opened: Some(Evidence {
            rule: "disk_usage".into(),
            decided_unix_ms: T0 + 74 * 15_000 + 200,
            severity: Severity::Warning as i32,
            measured: "disk / on acme/e2e/node-a".into(),
            detail: "100 of 1000 bytes available on /dev/vda".into(),
            condition: Some(RuleCondition {
                text: "over 80 % for 1m".into(),
                comparator: ">".into(),
                threshold: 80.0,
                unit: "percent".into(),
                tiers: vec![
                    SeverityTier {
                        severity: Severity::Warning as i32,
                        above: 80.0,
                    },
                    SeverityTier {
                        severity: Severity::Error as i32,
                        above: 90.0,
                    },
                ],
                tier_threshold: 80.0,
            }),
            window: Some(EvidenceWindow {
                open_for_ms: 60_000,
                close_for_ms: 0,
                from_unix_ms: T0,
                to_unix_ms: T0 + 74 * 15_000,
                clock: "agent".into(),
            }),
            samples,
            samples_elided: 15,
            ..Default::default()
        }),
        closed: None,
    }
}

#[test]
fn an_open_threshold_issue_shows_rule_condition_window_and_samples() {
    let text = block(&disk_explanation());
    insta::assert_snapshot!(text);
}

#[test]
fn the_samples_table_shows_the_earliest_and_latest_and_counts_the_rest() {
    let rows = samples_table(disk_explanation().opened.as_ref().unwrap());
    assert_eq!(rows.header, ["SAMPLE TIME", "VALUE"]);
    // 3 earliest, a note, 7 latest; 75 - 10 = 65 not shown (15 elided by the server).
    assert_eq!(rows.rows.len(), 11);
    assert_eq!(rows.rows[0], ["2023-11-14T22:13:20Z", "81 %"]);
    assert_eq!(rows.rows[3], ["… 65 samples not shown", ""]);
    assert_eq!(rows.rows[4], ["2023-11-14T22:30:20Z", "87.8 %"]);
    assert_eq!(rows.rows[10], ["2023-11-14T22:31:50Z", "88.4 %"]);
}

#[test]
fn a_short_run_is_shown_whole() {
    let mut evidence = disk_explanation().opened.unwrap();
    evidence.samples.truncate(10);
    evidence.samples_elided = 0;
    let rows = samples_table(&evidence);
    assert_eq!(rows.rows.len(), 10);
    assert!(rows.rows.iter().all(|row| !row[0].starts_with('…')));
}

#[test]
fn a_closed_issue_shows_why_it_was_open_and_why_it_closed() {
    let mut explanation = disk_explanation();
    let mut closed = explanation.opened.clone().unwrap();
    closed.condition.as_mut().unwrap().text = "under 80 %".into();
    closed.condition.as_mut().unwrap().comparator = "<".into();
    closed.samples = vec![DecidingSample {
        time_unix_ms: T0 + 90 * 15_000,
        value: 42.5,
    }];
    closed.samples_elided = 0;
    explanation.closed = Some(closed);
    let text = block(&explanation);
    let was_open = text.find("Why it was open:").unwrap();
    let closed_at = text.find("Why it closed:").unwrap();
    assert!(was_open < closed_at, "{text}");
    assert!(
        text[closed_at..].contains("Condition:  under 80 %\n"),
        "{text}"
    );
    assert!(text[closed_at..].contains("42.5 %"), "{text}");
    assert!(!text.contains("Why it is open"), "{text}");
}

#[test]
fn node_silent_shows_the_silence_and_its_allowance() {
    let explanation = Explanation {
        opened: Some(Evidence {
            rule: "node_silent".into(),
            decided_unix_ms: T0 + 45_000,
            severity: Severity::Warning as i32,
            measured: "samples from acme/e2e/node-a".into(),
            detail: "silent for 45s".into(),
            condition: Some(RuleCondition {
                text: "no sample for 45s (3 × the 15s interval); error after 5m".into(),
                comparator: ">=".into(),
                threshold: 45.0,
                unit: "seconds".into(),
                tiers: vec![
                    SeverityTier {
                        severity: Severity::Warning as i32,
                        above: 45.0,
                    },
                    SeverityTier {
                        severity: Severity::Error as i32,
                        above: 300.0,
                    },
                ],
                tier_threshold: 45.0,
            }),
            window: Some(EvidenceWindow {
                open_for_ms: 45_000,
                close_for_ms: 0,
                from_unix_ms: T0,
                to_unix_ms: T0 + 45_000,
                clock: "aggregator".into(),
            }),
            silence: Some(SilenceEvidence {
                silent_since_unix_ms: T0,
                silent_for_ms: 45_000,
                interval_ms: 15_000,
                missed_intervals: 3,
                allowance_ms: 45_000,
                escalate_after_ms: 300_000,
            }),
            ..Default::default()
        }),
        closed: None,
    };
    insta::assert_snapshot!(block(&explanation));
}

#[test]
fn cluster_consensus_shows_each_nodes_view_or_failure() {
    let member = |id: &str, state: &str| NormalizedMember {
        id: id.into(),
        state: state.into(),
        alive: true,
    };
    let explanation = Explanation {
        opened: Some(Evidence {
            rule: "cluster_consensus".into(),
            decided_unix_ms: T0 + 60_000,
            severity: Severity::Error as i32,
            measured: "the gossip views of the nodes of acme/e2e".into(),
            detail: "the nodes disagree (for 1m): node c: gossip query failed: connection refused"
                .into(),
            condition: Some(RuleCondition {
                text: "a node's gossip query failed, or the normalized views differ for 1m".into(),
                unit: "nodes".into(),
                ..Default::default()
            }),
            window: Some(EvidenceWindow {
                open_for_ms: 60_000,
                close_for_ms: 0,
                from_unix_ms: T0,
                to_unix_ms: T0 + 60_000,
                clock: "aggregator".into(),
            }),
            nodes: vec![
                NodeEvidence {
                    node: "a".into(),
                    outcome: "view".into(),
                    members: vec![member("a", "Leader"), member("b", "Follower")],
                    leaders: vec!["a".into()],
                    ..Default::default()
                },
                NodeEvidence {
                    node: "c".into(),
                    outcome: "failed".into(),
                    error: "connection refused".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        closed: None,
    };
    insta::assert_snapshot!(block(&explanation));
    let value = json(&explanation);
    assert_eq!(value["opened"]["nodes"][1]["error"], "connection refused");
    assert_eq!(value["opened"]["nodes"][0]["members"][0]["state"], "Leader");
    assert_eq!(value["closed"], serde_json::Value::Null);
}

#[test]
fn json_has_the_samples_with_times_in_both_forms() {
    let value = json(&disk_explanation());
    let opened = &value["opened"];
    assert_eq!(opened["rule"], "disk_usage");
    assert_eq!(opened["severity"], "warning");
    assert_eq!(opened["condition"]["comparator"], ">");
    assert_eq!(opened["condition"]["threshold"], 80.0);
    assert_eq!(opened["condition"]["tiers"][1]["severity"], "error");
    assert_eq!(opened["window"]["open_for_ms"], 60_000);
    assert_eq!(opened["window"]["from"], "2023-11-14T22:13:20.000Z");
    assert_eq!(opened["samples"].as_array().unwrap().len(), 60);
    assert_eq!(opened["samples"][0]["time_unix_ms"], T0);
    assert_eq!(opened["samples"][0]["value"], 81.0);
    assert_eq!(opened["samples_elided"], 15);
    assert_eq!(value["closed"], serde_json::Value::Null);
}
