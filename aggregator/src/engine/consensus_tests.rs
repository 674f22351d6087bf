//! `cluster_consensus` as timelines: gossip views and ticks at explicit times in, events
//! out (a fake clock: the engine never reads one).

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::model::GossipMember;

const GOSSIP_INTERVAL: Duration = Duration::from_secs(30);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(secs * 1000)
}

fn member(id: &str, state: &str, alive: bool) -> GossipMember {
    GossipMember {
        instance_id: id.into(),
        state: state.into(),
        alive,
        endpoint: endpoint(id),
        epoch_number: 7,
    }
}

/// Where member `id` serves: a → 10.0.0.1:2113, b → 10.0.0.2:2113, …
fn endpoint(id: &str) -> String {
    let n = id
        .bytes()
        .next()
        .map_or(0, |first| first.saturating_sub(b'a') + 1);
    format!("10.0.0.{n}:2113")
}

/// The healthy three-node view: a leads, b and c follow.
fn healthy() -> Vec<GossipMember> {
    vec![
        member("a", "Leader", true),
        member("b", "Follower", true),
        member("c", "Follower", true),
    ]
}

fn view(members: Vec<GossipMember>) -> GossipReading {
    GossipReading {
        adapter: "eventstoredb".into(),
        outcome: Ok(members),
        cluster_status: String::new(),
        leader_id: String::new(),
    }
}

fn failed(error: &str) -> GossipReading {
    GossipReading {
        adapter: "eventstoredb".into(),
        outcome: Err(error.into()),
        cluster_status: String::new(),
        leader_id: String::new(),
    }
}

/// One cluster of nodes reporting gossip to one engine.
struct Cluster {
    engine: Engine,
    seqs: HashMap<String, u64>,
}

impl Cluster {
    fn new(nodes: &[&str]) -> Self {
        let mut engine = Engine::new(RulesConfig::default(), at(0), [], []);
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
                        interval: GOSSIP_INTERVAL,
                    },
                ],
                seq_epoch: "epoch".into(),
            };
            engine.hello(&key(node), hello, at(0));
        }
        Self {
            engine,
            seqs: nodes.iter().map(|node| ((*node).to_owned(), 0)).collect(),
        }
    }

    /// `node` reports `reading` at `secs` (agent and aggregator clocks agree here).
    fn gossip(&mut self, node: &str, secs: i64, reading: GossipReading) -> Vec<Event> {
        let seq = self.seqs.entry(node.to_owned()).or_default();
        *seq += 1;
        let batch = Batch {
            seq: *seq,
            samples: vec![Sample {
                time: at(secs),
                reading: Reading::Gossip(reading),
            }],
            n_rejected: 0,
            dropped_batches_total: 0,
        };
        self.engine
            .apply_batch(&key(node), batch, at(secs))
            .unwrap()
            .events
    }

    /// `node` reports a host sample at `secs`: its agent is alive.
    fn host(&mut self, node: &str, secs: i64) -> Vec<Event> {
        let seq = self.seqs.entry(node.to_owned()).or_default();
        *seq += 1;
        let batch = Batch {
            seq: *seq,
            samples: vec![Sample {
                time: at(secs),
                reading: Reading::Host(super::tests::host(0.1, 10.0, 10.0)),
            }],
            n_rejected: 0,
            dropped_batches_total: 0,
        };
        self.engine
            .apply_batch(&key(node), batch, at(secs))
            .unwrap()
            .events
    }

    /// Every node reports at `secs`: the view `views_of` gives it.
    fn round(&mut self, secs: i64, views_of: impl Fn(&str) -> GossipReading) -> Vec<Event> {
        let mut nodes: Vec<String> = self.seqs.keys().cloned().collect();
        nodes.sort();
        let mut events = Vec::new();
        for node in nodes {
            events.extend(self.gossip(&node, secs, views_of(&node)));
        }
        events.extend(self.engine.tick(at(secs)));
        events
    }

    fn open(&self) -> Option<&Issue> {
        self.engine.open_issue(&IssueKey {
            rule: RuleId::ClusterConsensus.into(),
            subject: Subject::cluster("acme", "db", None),
        })
    }
}

fn key(node: &str) -> NodeKey {
    NodeKey {
        tenant: "acme".into(),
        cluster: "db".into(),
        node: node.into(),
    }
}

/// The consensus issue events among `events`: (kind, message).
fn consensus_events(events: &[Event]) -> Vec<(&'static str, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Issue(event) if event.issue.key.rule == RuleId::ClusterConsensus => {
                Some((event.kind.as_str(), event.issue.message.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Runs rounds every 30 s from `from` to `to` inclusive; returns the consensus events.
fn rounds(
    cluster: &mut Cluster,
    from: i64,
    to: i64,
    views_of: impl Fn(&str) -> GossipReading,
) -> Vec<(i64, &'static str, String)> {
    let mut seen = Vec::new();
    for secs in (from..=to).step_by(30) {
        for (kind, message) in consensus_events(&cluster.round(secs, &views_of)) {
            seen.push((secs, kind, message));
        }
    }
    seen
}

#[test]
fn identical_views_never_open_an_issue() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    // Endpoints and epochs may differ between views: only (id, state, alive) counts.
    let seen = rounds(&mut cluster, 0, 600, |node| {
        let mut members = healthy();
        members[0].epoch_number = if node == "b" { 8 } else { 7 };
        view(members)
    });
    assert_eq!(seen, []);
    assert!(cluster.open().is_none());
}

#[test]
fn one_node_seeing_a_different_leader_opens_after_open_for_and_names_it() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    let seen = rounds(&mut cluster, 0, 120, |node| {
        if node == "b" {
            view(vec![
                member("a", "Follower", true),
                member("b", "Follower", true),
                member("c", "Leader", true),
            ])
        } else {
            view(healthy())
        }
    });
    // Disagreeing from 0 s; open_for is 60 s: opened at 60 s, once.
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let (secs, kind, message) = &seen[0];
    assert_eq!((*secs, *kind), (60, "opened"));
    assert_eq!(
        message,
        "the nodes disagree (for 1m): node b sees 10.0.0.1:2113 (a) as Follower, nodes a and c \
         see 10.0.0.1:2113 (a) as Leader; node b sees 10.0.0.3:2113 (c) as Leader, nodes a and \
         c see 10.0.0.3:2113 (c) as Follower"
    );
    let issue = cluster.open().unwrap();
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(issue.value, 1.0, "one node is at fault");
}

#[test]
fn a_view_lacking_a_member_is_a_disagreement() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    let seen = rounds(&mut cluster, 0, 60, |node| {
        if node == "c" {
            view(healthy()[..2].to_vec())
        } else {
            view(healthy())
        }
    });
    assert_eq!(
        seen,
        [(
            60,
            "opened",
            "the nodes disagree (for 1m): node c does not list 10.0.0.3:2113 (c), nodes a and b \
             see 10.0.0.3:2113 (c) as Follower"
                .to_owned()
        )]
    );
}

#[test]
fn a_member_dead_in_one_view_is_a_disagreement() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    let seen = rounds(&mut cluster, 0, 60, |node| {
        let mut members = healthy();
        if node == "a" {
            members[1].alive = false;
        }
        view(members)
    });
    assert_eq!(
        seen,
        [(
            60,
            "opened",
            "the nodes disagree (for 1m): node a sees 10.0.0.2:2113 (b) as Follower (dead), \
             nodes b and c see 10.0.0.2:2113 (b) as Follower"
                .to_owned()
        )]
    );
}

#[test]
fn one_failing_query_opens_and_names_the_error() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    let seen = rounds(&mut cluster, 0, 90, |node| {
        if node == "c" {
            failed("connection refused")
        } else {
            view(healthy())
        }
    });
    assert_eq!(
        seen,
        [(
            60,
            "opened",
            "the nodes disagree (for 1m): node c: gossip query failed: connection refused"
                .to_owned()
        )]
    );
}

#[test]
fn a_disagreement_shorter_than_open_for_opens_nothing() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    let mut seen = rounds(&mut cluster, 0, 30, |node| {
        if node == "c" {
            failed("timeout after 5s")
        } else {
            view(healthy())
        }
    });
    // At 45 s c's latest view (from 30 s) still fails, 45 s after the first: not enough.
    seen.extend(rounds(&mut cluster, 45, 315, |_| view(healthy())));
    assert_eq!(seen, []);
}

#[test]
fn a_node_going_silent_counts_as_a_failed_query() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    assert_eq!(rounds(&mut cluster, 0, 60, |_| view(healthy())), []);
    // From 90 s on, c sends nothing. Its allowance is 3 × 30 s after its last view (60 s):
    // it counts as failed from 150 s, and the issue opens 60 s later, on a tick.
    let mut seen = Vec::new();
    for secs in 61..=240 {
        let mut events = Vec::new();
        if secs % 30 == 0 {
            events.extend(cluster.gossip("a", secs, view(healthy())));
            events.extend(cluster.gossip("b", secs, view(healthy())));
        }
        events.extend(cluster.engine.tick(at(secs)));
        for (kind, message) in consensus_events(&events) {
            seen.push((secs, kind, message));
        }
    }
    assert_eq!(
        seen,
        [(
            210,
            "opened",
            "the nodes disagree (for 1m): node c: agent silent for 2m 30s".to_owned()
        )]
    );
    // c is back with the same view: agreement, closed at once.
    let back = consensus_events(&cluster.gossip("c", 241, view(healthy())));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, "closed");
}

#[test]
fn a_single_node_cluster_only_needs_its_query_to_succeed() {
    let mut cluster = Cluster::new(&["solo"]);
    // Its own view names no leader and lists members that are dead: not a disagreement.
    let lonely = || {
        view(vec![
            member("solo", "Follower", true),
            member("gone", "Unknown", false),
        ])
    };
    assert_eq!(rounds(&mut cluster, 0, 300, |_| lonely()), []);
    let seen = rounds(&mut cluster, 330, 420, |_| failed("HTTP 503"));
    assert_eq!(
        seen,
        [(
            390,
            "opened",
            "the nodes disagree (for 1m): node solo: gossip query failed: HTTP 503".to_owned()
        )]
    );
}

#[test]
fn agreement_restored_closes_at_once() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    let disagreeing = |node: &str| {
        if node == "b" {
            view(vec![
                member("a", "Leader", true),
                member("b", "Leader", true),
                member("c", "Follower", true),
            ])
        } else {
            view(healthy())
        }
    };
    let opened = rounds(&mut cluster, 0, 60, disagreeing);
    assert_eq!(opened.len(), 1);
    assert!(
        opened[0]
            .2
            .contains("node b names 2 leaders: 10.0.0.1:2113 (a), 10.0.0.2:2113 (b)"),
        "{}",
        opened[0].2
    );
    // Only b has reported the healthy view so far: b agrees now, the others always did.
    let closed = consensus_events(&cluster.gossip("b", 75, view(healthy())));
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0].0, "closed");
    assert!(cluster.open().is_none());
    // And it stays closed.
    assert_eq!(rounds(&mut cluster, 90, 300, |_| view(healthy())), []);
}

#[test]
fn a_node_that_has_not_reported_yet_decides_nothing() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    // c is connected but has sent no view yet (not late: 3 × 30 s allowance).
    let mut seen = Vec::new();
    for secs in [0, 30, 60] {
        let mut events = cluster.gossip("a", secs, view(healthy()));
        events.extend(cluster.gossip("b", secs, failed("connection refused")));
        events.extend(cluster.engine.tick(at(secs)));
        seen.extend(consensus_events(&events));
    }
    assert_eq!(seen, []);
}

#[test]
fn the_rule_can_be_disabled() {
    let mut rules = RulesConfig::default();
    rules.cluster_consensus.enabled = false;
    let mut cluster = Cluster::new(&["a", "b"]);
    cluster.engine.rules = rules;
    assert_eq!(rounds(&mut cluster, 0, 300, |_| failed("nope")), []);
}

// ---- defects found by trying it ---------------------------------------------------------

/// During a rolling upgrade from EventStoreDB 5.x, an upgraded node says Leader/Follower
/// where a 5.x node says Master/Slave: the same view in two vocabularies.
#[test]
fn a_5x_node_saying_master_and_slave_agrees_with_20x_nodes() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    let seen = rounds(&mut cluster, 0, 300, |node| {
        if node == "a" {
            view(vec![
                member("a", "Master", true),
                member("b", "Slave", true),
                member("c", "Slave", true),
            ])
        } else {
            view(healthy())
        }
    });
    assert_eq!(seen, []);
    // Explanations show the one vocabulary too.
    let reading = view(vec![
        member("a", "PreMaster", true),
        member("b", "Master", true),
        member("c", "Slave", true),
    ]);
    let Ok(members) = &reading.outcome else {
        unreachable!("a view")
    };
    let (normalized, leaders) = cluster_consensus::normalized_view(&reading, members);
    let states: Vec<&str> = normalized
        .iter()
        .map(|(_, state, _)| state.as_str())
        .collect();
    assert_eq!(states, ["PreLeader", "Leader", "Follower"]);
    assert_eq!(leaders.into_iter().collect::<Vec<_>>(), ["b"]);
}

/// A member the views call Leader but not alive leads nothing: a cluster whose only
/// leader is dead disagrees, though every view is the same.
#[test]
fn a_cluster_whose_only_leader_is_dead_disagrees() {
    let mut cluster = Cluster::new(&["b", "c"]);
    let dead_leader = || {
        view(vec![
            member("a", "Leader", false),
            member("b", "Follower", true),
            member("c", "Follower", true),
        ])
    };
    let seen = rounds(&mut cluster, 0, 90, |_| dead_leader());
    assert_eq!(
        seen,
        [(
            60,
            "opened",
            "the nodes disagree (for 1m): node b names no live leader (10.0.0.1:2113 (a) is \
             Leader but dead); node c names no live leader (10.0.0.1:2113 (a) is Leader but \
             dead)"
                .to_owned()
        )]
    );
    assert_eq!(
        cluster.open().unwrap().value,
        2.0,
        "both nodes are at fault"
    );
}

/// An open issue follows its disagreement: another node failing is an `updated` event
/// with the new message, value and explanation; the same disagreement again is not.
#[test]
fn an_open_disagreement_that_changes_is_updated() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    let opened = rounds(&mut cluster, 0, 60, |node| {
        if node == "c" {
            failed("connection refused")
        } else {
            view(healthy())
        }
    });
    assert_eq!(opened.len(), 1);
    let b_fails_too = |node: &str| {
        if node == "a" {
            view(healthy())
        } else {
            failed("connection refused")
        }
    };
    let events = cluster.round(90, b_fails_too);
    let updates: Vec<&crate::issue::IssueEvent> = events
        .iter()
        .filter_map(|event| match event {
            Event::Issue(event) if event.issue.key.rule == RuleId::ClusterConsensus => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    let update = updates[0];
    assert_eq!(
        update.kind,
        IssueEventKind::Updated(crate::issue::UpdateReason::Changed)
    );
    assert_eq!(
        update.issue.message,
        "the nodes disagree (for 1m 30s): node b: gossip query failed: connection refused; \
         node c: gossip query failed: connection refused"
    );
    assert_eq!(update.issue.value, 2.0);
    let why = update
        .issue
        .explanation
        .as_ref()
        .and_then(|explanation| explanation.opened.as_ref())
        .unwrap();
    let outcomes: Vec<(&str, &str)> = why
        .nodes
        .iter()
        .map(|node| (node.node.as_str(), node.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, [("a", "view"), ("b", "failed"), ("c", "failed")]);
    assert_eq!(why.detail, update.issue.message);
    assert_eq!(cluster.open().unwrap().message, update.issue.message);
    // Nothing new: no event, however long it lasts.
    assert_eq!(rounds(&mut cluster, 120, 600, b_fails_too), []);
}

/// A node whose agent still reports but sends no gossip view has no view; one whose
/// agent stopped altogether is an agent gone silent, not a failed query.
#[test]
fn a_node_without_views_is_told_from_a_silent_agent() {
    let mut cluster = Cluster::new(&["a", "b", "c"]);
    assert_eq!(rounds(&mut cluster, 0, 60, |_| view(healthy())), []);
    let mut seen = Vec::new();
    for secs in 61..=240 {
        let mut events = Vec::new();
        if secs % 30 == 0 {
            events.extend(cluster.gossip("a", secs, view(healthy())));
            events.extend(cluster.gossip("b", secs, view(healthy())));
        }
        if secs % 15 == 0 {
            // c's agent is alive: host samples, but no gossip view after 60 s.
            events.extend(cluster.host("c", secs));
        }
        events.extend(cluster.engine.tick(at(secs)));
        seen.extend(
            consensus_events(&events)
                .into_iter()
                .map(|(kind, message)| (secs, kind, message)),
        );
    }
    assert_eq!(
        seen,
        [(
            210,
            "opened",
            "the nodes disagree (for 1m): node c: no gossip view for 2m 30s".to_owned()
        )]
    );
}
