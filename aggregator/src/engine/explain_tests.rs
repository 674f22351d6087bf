//! Explanations as timelines: samples and ticks at explicit times in, and the evidence
//! each opening, severity change and close carries out: exactly the deciding samples,
//! bounded to the earliest and latest of a long run.

use std::time::Duration;

use super::tests::host;
use super::*;
use crate::explain::{DecidingSample, Evidence, Explanation, HEAD_SAMPLES, TAIL_SAMPLES};
use crate::issue::{IssueEvent, IssueEventKind, UpdateReason};
use crate::model::GossipMember;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(secs * 1000)
}

fn key(node: &str) -> NodeKey {
    NodeKey {
        tenant: "acme".into(),
        cluster: "db".into(),
        node: node.into(),
    }
}

/// An engine with nodes that said hello at 0, and their seqs.
struct Timeline {
    engine: Engine,
    seqs: HashMap<String, u64>,
}

impl Timeline {
    fn new(rules: RulesConfig, nodes: &[&str]) -> Self {
        let mut engine = Engine::new(rules, at(0), [], []);
        for node in nodes {
            let hello = Hello {
                identity: NodeIdentity::default(),
                agent_version: "test".into(),
                probes: vec![
                    Probe {
                        name: "host".into(),
                        interval: Duration::from_secs(15),
                    },
                    Probe {
                        name: "gossip".into(),
                        interval: Duration::from_secs(30),
                    },
                ],
                seq_epoch: "epoch".into(),
            };
            engine.hello(&key(node), hello, at(0));
        }
        let seqs = nodes.iter().map(|node| ((*node).to_owned(), 0)).collect();
        Self { engine, seqs }
    }

    fn send(&mut self, node: &str, secs: i64, reading: Reading) -> Vec<IssueEvent> {
        let seq = self.seqs.entry(node.to_owned()).or_default();
        *seq += 1;
        let batch = Batch {
            seq: *seq,
            samples: vec![Sample {
                time: at(secs),
                reading,
            }],
            n_rejected: 0,
            dropped_batches_total: 0,
        };
        let outcome = self
            .engine
            .apply_batch(&key(node), batch, at(secs))
            .unwrap();
        issue_events(outcome.events)
    }

    fn host(&mut self, secs: i64, reading: HostReading) -> Vec<IssueEvent> {
        self.send("n1", secs, Reading::Host(reading))
    }

    fn tick(&mut self, secs: i64) -> Vec<IssueEvent> {
        issue_events(self.engine.tick(at(secs)))
    }
}

fn issue_events(events: Vec<Event>) -> Vec<IssueEvent> {
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Issue(event) => Some(event),
            Event::Notification(_) => None,
        })
        .collect()
}

fn quiet_rules() -> RulesConfig {
    let mut rules = RulesConfig::default();
    rules.node_silent.enabled = false;
    rules
}

fn the_one(events: Vec<IssueEvent>, kind: &str) -> IssueEvent {
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = events.into_iter().next().unwrap();
    assert_eq!(event.kind.as_str(), kind);
    event
}

fn opened(event: &IssueEvent) -> &Evidence {
    event
        .issue
        .explanation
        .as_ref()
        .and_then(|explanation| explanation.opened.as_ref())
        .expect("an explanation of why it is open")
}

fn samples(pairs: &[(i64, f64)]) -> Vec<DecidingSample> {
    pairs
        .iter()
        .map(|(secs, value)| DecidingSample {
            time_ms: secs * 1000,
            value: *value,
        })
        .collect()
}

#[test]
fn disk_usage_is_explained_by_exactly_the_run_that_held_for_a_minute() {
    let mut timeline = Timeline::new(quiet_rules(), &["n1"]);
    // Over at 0, under at 15 (the run breaks), over again from 30: the issue opens at 90,
    // decided by the five samples from 30 to 90 only.
    assert!(timeline.host(0, host(0.1, 10.0, 85.0)).is_empty());
    assert!(timeline.host(15, host(0.1, 10.0, 70.0)).is_empty());
    for (secs, percent) in [(30, 81.0), (45, 82.0), (60, 83.0), (75, 84.0)] {
        assert!(timeline.host(secs, host(0.1, 10.0, percent)).is_empty());
    }
    let event = the_one(timeline.host(90, host(0.1, 10.0, 85.5)), "opened");
    let evidence = opened(&event);
    assert_eq!(evidence.rule, "disk_usage");
    assert_eq!(evidence.measured, "disk / on acme/db/n1");
    assert_eq!(evidence.severity, Severity::Warning);
    assert_eq!(evidence.decided_at_ms, 90_000);
    assert_eq!(evidence.condition.comparator, ">");
    assert_eq!(evidence.condition.threshold, 80.0);
    assert_eq!(evidence.condition.unit, "percent");
    assert_eq!(evidence.condition.text, "over 80 % for 1m");
    assert_eq!(evidence.window.open_for_ms, 60_000);
    assert_eq!(evidence.window.close_for_ms, 0);
    assert_eq!(
        (evidence.window.from_ms, evidence.window.to_ms),
        (30_000, 90_000)
    );
    assert_eq!(evidence.window.clock, "agent");
    assert_eq!(
        evidence.samples,
        samples(&[(30, 81.0), (45, 82.0), (60, 83.0), (75, 84.0), (90, 85.5)])
    );
    assert_eq!(evidence.samples_elided, 0);
    // The open issue in the book carries the same explanation, for later events.
    let subject = Subject::mount(&key("n1"), "/");
    let open = timeline.engine.open_issue(&IssueKey {
        rule: RuleId::DiskUsage.into(),
        subject,
    });
    assert_eq!(open.unwrap().explanation, event.issue.explanation);
}

#[test]
fn a_long_run_keeps_its_earliest_and_latest_samples_and_counts_the_rest() {
    let text = r#"
        [rules.memory_usage]
        tiers = [{above = 85, severity = "warning"}, {above = 95, severity = "error"}]
        open_for = "0s"
        close_for = "0s"
        renotify = "0s"
    "#;
    let mut rules = crate::config::AggregatorConfig::parse(text).unwrap().rules;
    rules.node_silent.enabled = false;
    let mut timeline = Timeline::new(rules, &["n1"]);
    let first = the_one(timeline.host(0, host(0.1, 86.0, 10.0)), "opened");
    assert_eq!(opened(&first).samples, samples(&[(0, 86.0)]));
    // 99 more samples at the same tier: no news, but the run goes on.
    for index in 1..100 {
        let percent = 86.0 + index as f64 / 100.0;
        assert!(
            timeline
                .host(index * 15, host(0.1, percent, 10.0))
                .is_empty()
        );
    }
    // The 101st sample of the run crosses into the error tier.
    let event = the_one(timeline.host(1500, host(0.1, 96.0, 10.0)), "updated");
    assert_eq!(event.kind, IssueEventKind::Updated(UpdateReason::Severity));
    let evidence = opened(&event);
    assert_eq!(evidence.severity, Severity::Error);
    assert_eq!(evidence.condition.tier_threshold, 95.0);
    assert_eq!(evidence.condition.tiers.len(), 2);
    assert_eq!(evidence.samples.len(), HEAD_SAMPLES + TAIL_SAMPLES);
    assert_eq!(evidence.samples_elided, 101 - 60);
    assert_eq!(evidence.window.from_ms, 0);
    assert_eq!(evidence.window.to_ms, 1_500_000);
    let times: Vec<i64> = evidence
        .samples
        .iter()
        .map(|sample| sample.time_ms / 1000)
        .collect();
    let expected: Vec<i64> = (0..10).chain(51..101).map(|index| index * 15).collect();
    assert_eq!(times, expected);
    assert_eq!(evidence.samples.last().unwrap().value, 96.0);
    assert_eq!(evidence.samples[9].value, 86.09);
}

#[test]
fn a_close_keeps_why_it_was_open_and_adds_the_clear_run() {
    let mut timeline = Timeline::new(quiet_rules(), &["n1"]);
    let opening = the_one(timeline.host(0, host(3.0, 10.0, 10.0)), "opened");
    assert_eq!(opened(&opening).samples, samples(&[(0, 3.0)]));
    assert_eq!(opened(&opening).detail, "load1 3.00 over 1 physical cores");
    // Under 2.0 from 15 on: core_load closes once that has held for 2 minutes (at 135).
    for secs in (15..135).step_by(15) {
        assert!(timeline.host(secs, host(1.0, 10.0, 10.0)).is_empty());
    }
    let closing = the_one(timeline.host(135, host(0.5, 10.0, 10.0)), "closed");
    let explanation = closing.issue.explanation.as_ref().unwrap();
    assert_eq!(
        explanation.opened,
        opening.issue.explanation.unwrap().opened
    );
    let closed = explanation.closed.as_ref().unwrap();
    assert_eq!(closed.condition.comparator, "<");
    assert_eq!(closed.condition.text, "under 2 for 2m");
    assert_eq!(closed.window.close_for_ms, 120_000);
    assert_eq!(
        (closed.window.from_ms, closed.window.to_ms),
        (15_000, 135_000)
    );
    let mut expected: Vec<(i64, f64)> = (1..9).map(|step| (step * 15, 1.0)).collect();
    expected.push((135, 0.5));
    assert_eq!(closed.samples, samples(&expected));
    // Nothing is kept for the subject once its issue closed and it stays healthy.
    assert!(timeline.host(150, host(0.5, 10.0, 10.0)).is_empty());
    assert_eq!(timeline.engine.kept_trails(), 0);
}

#[test]
fn healthy_subjects_keep_no_samples() {
    let mut timeline = Timeline::new(quiet_rules(), &["n1"]);
    for secs in (0..600).step_by(15) {
        timeline.host(secs, host(0.5, 20.0, 30.0));
    }
    assert_eq!(timeline.engine.kept_trails(), 0);
}

#[test]
fn node_silent_is_explained_by_the_silence_and_closed_by_a_sample() {
    let mut timeline = Timeline::new(RulesConfig::default(), &["n1"]);
    timeline.host(0, host(0.1, 10.0, 10.0));
    let event = the_one(timeline.tick(45), "opened");
    let evidence = opened(&event);
    assert_eq!(evidence.rule, "node_silent");
    assert_eq!(evidence.measured, "samples from acme/db/n1");
    let silence = evidence.silence.as_ref().unwrap();
    assert_eq!(silence.silent_since_ms, 0);
    assert_eq!(silence.silent_for_ms, 45_000);
    assert_eq!(silence.interval_ms, 15_000);
    assert_eq!(silence.missed_intervals, 3);
    assert_eq!(silence.allowance_ms, 45_000);
    assert_eq!(silence.escalate_after_ms, 300_000);
    assert_eq!(evidence.window.clock, "aggregator");
    assert!(evidence.samples.is_empty());

    let escalated = the_one(timeline.tick(300), "updated");
    assert_eq!(opened(&escalated).severity, Severity::Error);
    assert_eq!(opened(&escalated).condition.tier_threshold, 300.0);

    let events = timeline.host(310, host(0.1, 10.0, 10.0));
    let closing = the_one(events, "closed");
    let explanation = closing.issue.explanation.as_ref().unwrap();
    assert_eq!(
        explanation.opened,
        escalated.issue.explanation.unwrap().opened
    );
    let closed = explanation.closed.as_ref().unwrap();
    assert_eq!(closed.silence.as_ref().unwrap().silent_for_ms, 310_000);
    assert_eq!((closed.window.from_ms, closed.window.to_ms), (0, 310_000));
    assert_eq!(closed.detail, "a batch arrived after 5m 10s of silence");
}

fn gossip(members: &[(&str, &str)]) -> Reading {
    Reading::Gossip(GossipReading {
        adapter: "eventstoredb".into(),
        outcome: Ok(members
            .iter()
            .map(|(id, state)| GossipMember {
                instance_id: (*id).into(),
                state: (*state).into(),
                alive: true,
                endpoint: format!("{id}:2113"),
                epoch_number: 1,
            })
            .collect()),
        cluster_status: String::new(),
        leader_id: String::new(),
    })
}

fn failed(error: &str) -> Reading {
    Reading::Gossip(GossipReading {
        adapter: "eventstoredb".into(),
        outcome: Err(error.into()),
        cluster_status: String::new(),
        leader_id: String::new(),
    })
}

#[test]
fn cluster_consensus_is_explained_by_each_nodes_view_or_failure() {
    let mut timeline = Timeline::new(quiet_rules(), &["a", "b"]);
    let healthy = [("a", "Leader"), ("b", "Follower")];
    let mut events = Vec::new();
    for secs in [0, 30, 60] {
        events.extend(timeline.send("a", secs, gossip(&healthy)));
        events.extend(timeline.send("b", secs, failed("connection refused")));
        events.extend(timeline.tick(secs));
    }
    let event = the_one(events, "opened");
    let evidence = opened(&event);
    assert_eq!(evidence.rule, "cluster_consensus");
    assert_eq!(
        evidence.measured,
        "the gossip views of the nodes of acme/db"
    );
    assert_eq!(
        (evidence.window.from_ms, evidence.window.to_ms),
        (0, 60_000)
    );
    assert_eq!(evidence.window.open_for_ms, 60_000);
    assert_eq!(evidence.nodes.len(), 2);
    let (a, b) = (&evidence.nodes[0], &evidence.nodes[1]);
    assert_eq!((a.node.as_str(), a.outcome.as_str()), ("a", "view"));
    assert_eq!(a.leaders, ["a"]);
    let members: Vec<(&str, &str, bool)> = a
        .members
        .iter()
        .map(|member| (member.id.as_str(), member.state.as_str(), member.alive))
        .collect();
    assert_eq!(members, [("a", "Leader", true), ("b", "Follower", true)]);
    assert_eq!((b.node.as_str(), b.outcome.as_str()), ("b", "failed"));
    assert_eq!(b.error, "connection refused");
    assert!(evidence.detail.contains("node b: gossip query failed"));

    let mut events = timeline.send("a", 90, gossip(&healthy));
    events.extend(timeline.send("b", 90, gossip(&healthy)));
    let closing = the_one(events, "closed");
    let closed = closing
        .issue
        .explanation
        .as_ref()
        .unwrap()
        .closed
        .as_ref()
        .unwrap();
    assert!(closed.nodes.iter().all(|node| node.outcome == "view"));
    assert_eq!(
        (closed.window.from_ms, closed.window.to_ms),
        (90_000, 90_000)
    );
}

#[test]
fn a_reminder_leaves_the_explanation_alone() {
    let mut rules = quiet_rules();
    rules.core_load.renotify = Duration::from_secs(60);
    let mut timeline = Timeline::new(rules, &["n1"]);
    let opening = the_one(timeline.host(0, host(3.0, 10.0, 10.0)), "opened");
    timeline.host(15, host(5.0, 10.0, 10.0));
    let reminder = the_one(timeline.tick(60), "updated");
    assert_eq!(
        reminder.kind,
        IssueEventKind::Updated(UpdateReason::Reminder)
    );
    assert_eq!(reminder.issue.explanation, opening.issue.explanation);
}

#[test]
fn an_issue_restored_without_an_explanation_still_explains_its_close() {
    let mut timeline = Timeline::new(quiet_rules(), &["n1"]);
    let mut opening = the_one(timeline.host(0, host(3.0, 10.0, 10.0)), "opened");
    // As an aggregator from before explanations would have stored it.
    opening.issue.explanation = None;
    let node = timeline.engine.node(&key("n1")).unwrap().clone();
    let mut engine = Engine::new(quiet_rules(), at(20), [node], [opening.issue]);
    let mut closing = Vec::new();
    for (seq, secs) in (30..=150).step_by(15).enumerate() {
        let batch = Batch {
            seq: 10 + seq as u64,
            samples: vec![Sample {
                time: at(secs),
                reading: Reading::Host(host(1.0, 10.0, 10.0)),
            }],
            n_rejected: 0,
            dropped_batches_total: 0,
        };
        let outcome = engine.apply_batch(&key("n1"), batch, at(secs)).unwrap();
        closing.extend(issue_events(outcome.events));
    }
    let closing = the_one(closing, "closed");
    let explanation: &Explanation = closing.issue.explanation.as_ref().unwrap();
    assert_eq!(explanation.opened, None);
    assert_eq!(explanation.closed.as_ref().unwrap().samples.len(), 9);
}
