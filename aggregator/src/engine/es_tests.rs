//! The Elasticsearch rules (seed 001) as timelines: checks' results from one or two agents
//! of one cluster at explicit times in, issue events out.

use std::time::Duration;

use super::*;
use crate::model::{
    EsAudit, EsCheck, EsDataNode, EsDocs, EsReading, EsResult, EsShardDocs, EsStorage, ResourceKind,
};

const INTERVAL: Duration = Duration::from_secs(30);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(secs * 1000)
}

/// (kind, rule, severity) of each issue event.
fn seen(events: &[Event]) -> Vec<(&'static str, &'static str, Severity)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Issue(event) => Some((
                event.kind.as_str(),
                event.issue.key.rule.known().map_or("unknown", RuleId::name),
                event.issue.severity,
            )),
            Event::Notification(_) => None,
        })
        .collect()
}

fn issue(events: &[Event]) -> &Issue {
    match events {
        [Event::Issue(event)] => &event.issue,
        other => panic!("expected one issue event, got {other:?}"),
    }
}

/// The agents of one Elasticsearch cluster, `acme/es`.
struct Cluster {
    engine: Engine,
    seqs: BTreeMap<String, u64>,
}

impl Cluster {
    fn new(agents: &[&str]) -> Self {
        let mut rules = RulesConfig::default();
        rules.node_silent.enabled = false;
        let mut engine = Engine::new(rules, at(0), [], []);
        for agent in agents {
            let probes = [
                EsCheck::Health,
                EsCheck::Storage,
                EsCheck::Shards,
                EsCheck::Docs,
                EsCheck::Audit,
            ]
            .map(|check| Probe {
                name: check.probe_name().into(),
                interval: INTERVAL,
            });
            let hello = Hello {
                identity: NodeIdentity::default(),
                agent_version: "test".into(),
                probes: probes.into(),
                seq_epoch: "epoch-1".into(),
            };
            engine.hello(&node(agent), hello, at(0));
        }
        Self {
            engine,
            seqs: BTreeMap::new(),
        }
    }

    /// One check's result from `agent`, taken at `secs` and arriving at once.
    fn report(&mut self, agent: &str, secs: i64, check: EsCheck, result: EsResult) -> Vec<Event> {
        let seq = self.seqs.entry(agent.to_owned()).or_default();
        *seq += 1;
        let reading = Reading::Elasticsearch(EsReading {
            check,
            url: "http://127.0.0.1:9200".into(),
            outcome: Ok(result),
        });
        let batch = Batch {
            seq: *seq,
            samples: vec![Sample {
                time: at(secs),
                reading,
            }],
            n_rejected: 0,
            dropped_batches_total: 0,
        };
        self.engine
            .apply_batch(&node(agent), batch, at(secs))
            .unwrap()
            .events
    }

    fn storage(&mut self, agent: &str, secs: i64, used_percent: f64) -> Vec<Event> {
        self.report(agent, secs, EsCheck::Storage, storage(used_percent))
    }

    fn open(&self, rule: RuleId, kind: ResourceKind, name: &str) -> Option<&Issue> {
        self.engine.open_issue(&IssueKey {
            rule: rule.into(),
            subject: Subject::cluster("acme", "es", Some(crate::model::ResourceRef { kind, name })),
        })
    }
}

fn node(name: &str) -> NodeKey {
    NodeKey {
        tenant: "acme".into(),
        cluster: "es".into(),
        node: name.into(),
    }
}

fn storage(used_percent: f64) -> EsResult {
    let total_bytes = 1_000_000;
    EsResult::Storage(EsStorage {
        nodes: vec![EsDataNode {
            id: "byoDEtBRSRGZyMKaIpmhCQ".into(),
            name: "es-data-1".into(),
            host: "10.0.0.1".into(),
            path: "/var/lib/elasticsearch".into(),
            total_bytes,
            available_bytes: total_bytes - (used_percent * 10_000.0) as u64,
            used_percent,
        }],
        watermark_low: "85%".into(),
        watermark_high: "90%".into(),
        watermark_flood_stage: "95%".into(),
    })
}

fn docs(shards: &[(&str, u64)], shards_omitted: u32) -> EsResult {
    EsResult::Docs(EsDocs {
        floor: 1_000_000_000,
        shards: shards
            .iter()
            .map(|(name, docs)| EsShardDocs {
                name: (*name).into(),
                docs: *docs,
                docs_count: docs - docs / 10,
                docs_deleted: docs / 10,
            })
            .collect(),
        primaries_counted: 12,
        shards_omitted,
        max_docs: shards.iter().map(|(_, docs)| *docs).max().unwrap_or(0),
    })
}

fn audit(requests: u64, errors_5xx: u64) -> EsResult {
    EsResult::Audit(EsAudit {
        index_pattern: "audit-*".into(),
        window_seconds: 900,
        requests,
        errors_5xx,
        shards_failed: 0,
        timed_out: false,
    })
}

// ---- es_node_storage -----------------------------------------------------------------

#[test]
fn es_node_storage_moves_one_issue_through_its_tiers_and_closes_under_85() {
    use Severity::{Error, Info, Warning};
    let mut cluster = Cluster::new(&["a"]);
    let mut timeline = Vec::new();
    for (step, percent) in [84.0, 86.0, 89.0, 91.0, 87.0, 80.0].into_iter().enumerate() {
        let secs = 30 * step as i64;
        timeline.push(seen(&cluster.storage("a", secs, percent)));
    }
    assert_eq!(
        timeline,
        [
            vec![],
            vec![("opened", "es_node_storage", Info)],
            vec![("updated", "es_node_storage", Warning)],
            vec![("updated", "es_node_storage", Error)],
            // A tier holds while the value stays over the tier beneath (threshold rules'
            // hysteresis): 87 % after error is warning.
            vec![("updated", "es_node_storage", Warning)],
            vec![("closed", "es_node_storage", Warning)],
        ]
    );
}

#[test]
fn es_node_storage_names_the_node_and_the_clusters_watermarks() {
    let mut cluster = Cluster::new(&["a"]);
    let opened = cluster.storage("a", 0, 86.0);
    let issue = issue(&opened);
    assert_eq!(
        issue.key.subject,
        Subject::cluster(
            "acme",
            "es",
            Some(crate::model::ResourceRef {
                kind: ResourceKind::EsNode,
                name: "es-data-1"
            })
        )
    );
    assert!(
        issue.message.contains("Elasticsearch node es-data-1")
            && issue
                .message
                .contains("watermarks: low 85%, high 90%, flood stage 95%"),
        "{}",
        issue.message
    );
    assert!(issue.remedy.contains("watermarks"), "{}", issue.remedy);
}

#[test]
fn two_agents_of_one_cluster_open_one_issue() {
    let mut cluster = Cluster::new(&["a", "b"]);
    assert_eq!(
        seen(&cluster.storage("a", 0, 91.0)),
        [("opened", "es_node_storage", Severity::Error)]
    );
    // b reports the same ES node at the same tier: the same subject, nothing new.
    assert_eq!(seen(&cluster.storage("b", 10, 91.0)), []);
    assert_eq!(seen(&cluster.storage("a", 30, 91.5)), []);
    assert_eq!(cluster.engine.open_issues().count(), 1);
    // Either agent's clear closes it, once.
    assert_eq!(
        seen(&cluster.storage("b", 40, 70.0)),
        [("closed", "es_node_storage", Severity::Error)]
    );
    assert_eq!(seen(&cluster.storage("a", 60, 70.0)), []);
}

#[test]
fn a_failed_check_moves_no_window() {
    let mut cluster = Cluster::new(&["a"]);
    cluster.storage("a", 0, 91.0);
    let failed = Reading::Elasticsearch(EsReading {
        check: EsCheck::Storage,
        url: String::new(),
        outcome: Err(crate::model::EsError {
            kind: "timeout",
            path: "/_nodes/stats/fs".into(),
            http_status: 0,
            es_error_type: String::new(),
            detail: "timeout after 10s".into(),
        }),
    });
    let batch = Batch {
        seq: 2,
        samples: vec![Sample {
            time: at(30),
            reading: failed,
        }],
        n_rejected: 0,
        dropped_batches_total: 0,
    };
    let outcome = cluster
        .engine
        .apply_batch(&node("a"), batch, at(30))
        .unwrap();
    assert_eq!(
        seen(&outcome.events),
        [("opened", "es_unreachable", Severity::Error)],
        "only es_unreachable hears of the failure"
    );
    assert!(
        cluster
            .open(RuleId::EsNodeStorage, ResourceKind::EsNode, "es-data-1")
            .is_some(),
        "the storage issue keeps its last verdict"
    );
}

// ---- es_docs_per_shard ---------------------------------------------------------------

#[test]
fn es_docs_per_shard_warns_over_1_8_billion_and_errors_over_2_billion() {
    use Severity::{Error, Warning};
    let mut cluster = Cluster::new(&["a"]);
    let mut report = |secs, shards: &[(&str, u64)]| {
        seen(&cluster.report("a", secs, EsCheck::Docs, docs(shards, 0)))
    };
    assert_eq!(report(0, &[("logs/0", 1_700_000_000)]), []);
    assert_eq!(
        report(30, &[("logs/0", 1_800_000_000)]),
        [],
        "1.8 B is not over 1.8 B"
    );
    assert_eq!(
        report(60, &[("logs/0", 1_800_000_001)]),
        [("opened", "es_docs_per_shard", Warning)]
    );
    assert_eq!(
        report(90, &[("logs/0", 2_000_000_000)]),
        [],
        "2.0 B is not over 2.0 B"
    );
    assert_eq!(
        report(120, &[("logs/0", 2_100_000_000), ("logs/1", 1_900_000_000)]),
        [
            ("updated", "es_docs_per_shard", Error),
            ("opened", "es_docs_per_shard", Warning)
        ]
    );
    let shard = cluster
        .open(RuleId::EsDocsPerShard, ResourceKind::Shard, "logs/0")
        .unwrap();
    assert!(
        shard.message.contains(
            "documents in primary shard logs/0 of acme/es is 2100000000, over 1800000000"
        ),
        "{}",
        shard.message
    );
}

#[test]
fn a_shard_left_out_of_a_complete_listing_closes_and_a_cut_listing_closes_nothing() {
    let mut cluster = Cluster::new(&["a"]);
    let mut report = |secs, shards: &[(&str, u64)], omitted| {
        seen(&cluster.report("a", secs, EsCheck::Docs, docs(shards, omitted)))
    };
    assert_eq!(report(0, &[("logs/0", 1_900_000_000)], 0).len(), 1);
    // The listing was cut short: logs/0 may be among the omitted.
    assert_eq!(report(30, &[("other/0", 1_500_000_000)], 3), []);
    // Complete and without logs/0: it holds at most the floor.
    let closed = report(60, &[("other/0", 1_500_000_000)], 0);
    assert_eq!(closed, [("closed", "es_docs_per_shard", Severity::Warning)]);
    assert_eq!(cluster.engine.open_issues().count(), 0);
}

#[test]
fn a_closed_shard_issue_says_the_shard_was_not_listed() {
    let mut cluster = Cluster::new(&["a"]);
    cluster.report("a", 0, EsCheck::Docs, docs(&[("logs/0", 1_900_000_000)], 0));
    let closed = cluster.report("a", 30, EsCheck::Docs, docs(&[], 0));
    let issue = issue(&closed);
    assert_eq!(issue.state, crate::issue::IssueState::Closed);
    assert!(
        issue.message.contains("logs/0") && issue.message.contains("back under 1800000000"),
        "{}",
        issue.message
    );
}

// ---- http_5xx_ratio ------------------------------------------------------------------

#[test]
fn http_5xx_ratio_opens_over_5_percent_and_announces_the_close() {
    let mut cluster = Cluster::new(&["a"]);
    let mut report = |secs, result| seen(&cluster.report("a", secs, EsCheck::Audit, result));
    assert_eq!(report(0, audit(1000, 50)), [], "5 % is not over 5 %");
    assert_eq!(
        report(300, audit(1000, 51)),
        [("opened", "http_5xx_ratio", Severity::Error)]
    );
    assert_eq!(report(600, audit(1000, 80)), [], "still over: no news");
    assert_eq!(
        report(900, audit(1000, 10)),
        [("closed", "http_5xx_ratio", Severity::Error)]
    );
}

#[test]
fn http_5xx_ratio_takes_no_verdict_from_no_traffic_or_a_partial_count() {
    let mut cluster = Cluster::new(&["a"]);
    let mut report = |secs, result| seen(&cluster.report("a", secs, EsCheck::Audit, result));
    assert_eq!(report(0, audit(0, 0)), [], "no requests: nothing opens");
    let opened = cluster.report("a", 300, EsCheck::Audit, audit(200, 100));
    let message = issue(&opened).message.clone();
    assert!(
        message.contains("is 50.0 %, over 5.0 %")
            && message.contains("100 of 200 requests in the last 15m"),
        "{message}"
    );
    let mut report = |secs, result| seen(&cluster.report("a", secs, EsCheck::Audit, result));
    assert_eq!(
        report(600, audit(0, 0)),
        [],
        "no requests: the issue stays open"
    );
    let EsResult::Audit(mut partial) = audit(1000, 0) else {
        unreachable!()
    };
    partial.shards_failed = 2;
    assert_eq!(
        report(900, EsResult::Audit(partial.clone())),
        [],
        "a partial count does not close it"
    );
    partial.shards_failed = 0;
    partial.timed_out = true;
    assert_eq!(report(1200, EsResult::Audit(partial)), []);
    assert!(
        cluster
            .open(RuleId::Http5xxRatio, ResourceKind::Service, "audit-*")
            .is_some()
    );
}

// ---- es_cluster_health ---------------------------------------------------------------

fn health(status: &str) -> EsResult {
    EsResult::Health(crate::model::EsHealth {
        cluster_name: "logs".into(),
        status: status.into(),
        timed_out: false,
        number_of_nodes: 3,
        number_of_data_nodes: 3,
        unassigned_shards: 2,
    })
}

impl Cluster {
    fn health(&mut self, secs: i64, status: &str) -> Vec<(&'static str, &'static str, Severity)> {
        seen(&self.report("a", secs, EsCheck::Health, health(status)))
    }
}

#[test]
fn yellow_for_4_min_59_s_then_green_opens_nothing() {
    let mut cluster = Cluster::new(&["a"]);
    for secs in (0..=270).step_by(30).chain([299]) {
        assert_eq!(cluster.health(secs, "yellow"), [], "yellow for {secs}s");
    }
    assert_eq!(cluster.health(300, "green"), []);
    assert_eq!(cluster.engine.open_issues().count(), 0);
}

#[test]
fn yellow_held_5_min_opens_a_warning_and_green_closes_it() {
    let mut cluster = Cluster::new(&["a"]);
    for secs in (0..300).step_by(30) {
        assert_eq!(cluster.health(secs, "yellow"), []);
    }
    assert_eq!(
        cluster.health(300, "yellow"),
        [("opened", "es_cluster_health", Severity::Warning)]
    );
    let issue = cluster
        .engine
        .open_issues()
        .next()
        .expect("the health issue")
        .clone();
    assert_eq!(issue.key.subject, Subject::cluster("acme", "es", None));
    assert!(
        issue.message.starts_with(
            "health of Elasticsearch cluster logs (acme/es) is yellow for 5m (status yellow"
        ),
        "{}",
        issue.message
    );
    assert_eq!(
        cluster.health(330, "green"),
        [("closed", "es_cluster_health", Severity::Warning)]
    );
}

#[test]
fn red_for_59_s_opens_nothing_and_60_s_opens_an_error() {
    let mut cluster = Cluster::new(&["a"]);
    assert_eq!(cluster.health(0, "red"), []);
    assert_eq!(cluster.health(30, "red"), []);
    assert_eq!(cluster.health(59, "red"), [], "red for 59 s");
    assert_eq!(
        cluster.health(60, "red"),
        [("opened", "es_cluster_health", Severity::Error)]
    );
    let issue = cluster
        .engine
        .open_issues()
        .next()
        .expect("the health issue");
    let explanation = issue.explanation.as_ref().expect("explained");
    let opened = explanation.opened.as_ref().expect("why it opened");
    assert_eq!(
        (
            opened.window.open_for_ms,
            opened.window.from_ms,
            opened.window.to_ms
        ),
        (60_000, 0, 60_000),
        "decided by red's own 1 min over the run of red samples"
    );
}

#[test]
fn yellow_turning_red_escalates_one_issue_and_red_back_to_yellow_steps_down() {
    use Severity::{Error, Warning};
    let mut cluster = Cluster::new(&["a"]);
    for secs in (0..300).step_by(30) {
        cluster.health(secs, "yellow");
    }
    assert_eq!(
        cluster.health(300, "yellow"),
        [("opened", "es_cluster_health", Warning)]
    );
    assert_eq!(
        cluster.health(330, "red"),
        [],
        "red for 0 s: still a warning"
    );
    assert_eq!(cluster.health(360, "red"), [], "red for 30 s");
    assert_eq!(
        cluster.health(390, "red"),
        [("updated", "es_cluster_health", Error)],
        "red held 1 min escalates the open issue"
    );
    assert_eq!(
        cluster.health(420, "yellow"),
        [("updated", "es_cluster_health", Warning)],
        "back to yellow steps down at once"
    );
    assert_eq!(
        cluster.health(450, "green"),
        [("closed", "es_cluster_health", Warning)]
    );
    assert_eq!(cluster.engine.open_issues().count(), 0);
}

#[test]
fn a_timed_out_health_answer_still_counts() {
    let mut cluster = Cluster::new(&["a"]);
    let EsResult::Health(mut timed_out) = health("red") else {
        unreachable!()
    };
    timed_out.timed_out = true;
    cluster.report("a", 0, EsCheck::Health, EsResult::Health(timed_out.clone()));
    let opened = cluster.report("a", 60, EsCheck::Health, EsResult::Health(timed_out));
    assert!(
        issue(&opened)
            .message
            .contains("timed out waiting: HTTP 408"),
        "{}",
        issue(&opened).message
    );
}

#[test]
fn two_agents_reporting_red_open_one_health_issue() {
    let mut cluster = Cluster::new(&["a", "b"]);
    let mut report =
        |agent, secs| seen(&cluster.report(agent, secs, EsCheck::Health, health("red")));
    assert_eq!(report("a", 0), []);
    assert_eq!(report("b", 30), []);
    assert_eq!(
        report("a", 60),
        [("opened", "es_cluster_health", Severity::Error)]
    );
    assert_eq!(report("b", 61), []);
    assert_eq!(cluster.engine.open_issues().count(), 1);
}

// ---- es_shard_headroom ---------------------------------------------------------------

/// 1000 per node × `nodes` non-frozen data nodes − `open_shards`.
fn shards(nodes: u32, open_shards: u64) -> EsResult {
    EsResult::Shards(crate::model::EsShards {
        max_shards_per_node: 1000,
        non_frozen_data_nodes: nodes,
        open_shards,
        open_indices: 40,
    })
}

const HALF_HOUR: i64 = 30 * 60;

#[test]
fn es_shard_headroom_is_evaluated_every_12_h_and_every_30_min_while_open() {
    let mut cluster = Cluster::new(&["a"]);
    let mut report = |secs, result| seen(&cluster.report("a", secs, EsCheck::Shards, result));
    // Judged at 0 (plenty of headroom), then not before 12 h: the agent's samples every
    // 30 min in between, under 500 already, are not judged.
    assert_eq!(report(0, shards(3, 1000)), []);
    for step in 1..24 {
        assert_eq!(
            report(step * HALF_HOUR, shards(3, 2600)),
            [],
            "at {}h{}m: not judged before 12 h",
            step / 2,
            (step % 2) * 30
        );
    }
    assert_eq!(
        report(24 * HALF_HOUR, shards(3, 2600)),
        [("opened", "es_shard_headroom", Severity::Warning)],
        "judged at 12 h: 400 available, under 500"
    );
    // While open: judged every 30 min, so the recovery is seen at the next half hour, not
    // 12 h later; a sample in between is not judged.
    assert_eq!(report(24 * HALF_HOUR + 600, shards(4, 2600)), []);
    assert_eq!(
        report(25 * HALF_HOUR, shards(4, 2600)),
        [("closed", "es_shard_headroom", Severity::Warning)]
    );
}

#[test]
fn es_shard_headroom_opens_under_500_and_says_how_it_was_counted() {
    let mut cluster = Cluster::new(&["a"]);
    assert_eq!(
        seen(&cluster.report("a", 0, EsCheck::Shards, shards(2, 1500))),
        [],
        "500 available is not under 500"
    );
    let mut cluster = Cluster::new(&["a"]);
    let opened = cluster.report("a", 0, EsCheck::Shards, shards(2, 1501));
    let issue = issue(&opened);
    assert_eq!(issue.key.subject, Subject::cluster("acme", "es", None));
    assert_eq!(issue.value, 499.0);
    assert!(
        issue.message.contains(
            "shard headroom of Elasticsearch cluster acme/es is 499, under 500 \
             (max_shards_per_node 1000 × 2 non-frozen data nodes − 1501 shards of 40 open indices)"
        ),
        "{}",
        issue.message
    );
    let explanation = issue.explanation.as_ref().expect("explained");
    let opened = explanation.opened.as_ref().expect("why it opened");
    assert_eq!(opened.condition.comparator, "<");
}

// ---- es_unreachable ------------------------------------------------------------------

fn failure(kind: &'static str, http_status: u32) -> crate::model::EsError {
    crate::model::EsError {
        kind,
        path: "/_cluster/health".into(),
        http_status,
        es_error_type: String::new(),
        detail: format!("{kind} talking to 127.0.0.1:9200"),
    }
}

impl Cluster {
    /// A check of `agent` that failed with `error`.
    fn fail(
        &mut self,
        agent: &str,
        secs: i64,
        check: EsCheck,
        error: crate::model::EsError,
    ) -> Vec<Event> {
        let seq = self.seqs.entry(agent.to_owned()).or_default();
        *seq += 1;
        let batch = Batch {
            seq: *seq,
            samples: vec![Sample {
                time: at(secs),
                reading: Reading::Elasticsearch(EsReading {
                    check,
                    url: "http://127.0.0.1:9200".into(),
                    outcome: Err(error),
                }),
            }],
            n_rejected: 0,
            dropped_batches_total: 0,
        };
        self.engine
            .apply_batch(&node(agent), batch, at(secs))
            .unwrap()
            .events
    }
}

#[test]
fn es_unreachable_opens_on_each_kind_of_failure_naming_the_cause_and_the_check() {
    for (kind, status) in [
        ("refused", 0),
        ("timeout", 0),
        ("tls", 0),
        ("auth", 401),
        ("auth", 403),
        ("server", 503),
        ("unexpected_body", 200),
    ] {
        let mut cluster = Cluster::new(&["a"]);
        let opened = cluster.fail("a", 0, EsCheck::Storage, failure(kind, status));
        assert_eq!(
            seen(&opened),
            [("opened", "es_unreachable", Severity::Error)],
            "{kind} {status}"
        );
        let issue = issue(&opened);
        let check = ResourceRef {
            kind: ResourceKind::Check,
            name: "elasticsearch.storage",
        };
        assert_eq!(
            issue.key.subject,
            Subject::cluster("acme", "es", Some(check))
        );
        assert!(
            issue
                .message
                .contains(&format!("elasticsearch.storage failed: {kind}"))
                && issue.message.contains("is unreachable"),
            "{}",
            issue.message
        );
        // Another check's answer leaves it open; its own check's next answer closes it.
        assert_eq!(cluster.health(30, "green"), []);
        assert_eq!(
            seen(&cluster.storage("a", 60, 50.0)),
            [("closed", "es_unreachable", Severity::Error)]
        );
    }
}

#[test]
fn a_red_cluster_or_a_404_is_not_unreachable() {
    let mut cluster = Cluster::new(&["a"]);
    for secs in [0, 30, 60] {
        for (kind, rule, _) in cluster.health(secs, "red") {
            assert_ne!(rule, "es_unreachable", "{kind} at {secs}s");
        }
    }
    let mut cluster = Cluster::new(&["a"]);
    assert_eq!(
        seen(&cluster.fail("a", 0, EsCheck::Audit, failure("http", 404))),
        []
    );
}

#[test]
fn an_unreachable_cluster_keeps_the_other_rules_last_verdicts() {
    let mut cluster = Cluster::new(&["a", "b"]);
    assert_eq!(seen(&cluster.storage("a", 0, 91.0)).len(), 1);
    // Both agents fail to reach it: one issue for the cluster.
    assert_eq!(
        seen(&cluster.fail("a", 30, EsCheck::Storage, failure("timeout", 0))),
        [("opened", "es_unreachable", Severity::Error)]
    );
    assert_eq!(
        seen(&cluster.fail("b", 31, EsCheck::Storage, failure("refused", 0))),
        []
    );
    assert!(
        cluster
            .open(RuleId::EsNodeStorage, ResourceKind::EsNode, "es-data-1")
            .is_some()
    );
    assert_eq!(cluster.engine.open_issues().count(), 2);
}

/// A check that keeps failing while the others answer (a 403 on the audit index, which the
/// monitor privilege does not cover) is one issue that stays open: the other checks'
/// answers neither close it nor make the next failure open it again.
#[test]
fn a_check_that_keeps_failing_is_one_open_issue_while_the_others_answer() {
    let mut cluster = Cluster::new(&["a"]);
    let forbidden = || failure("auth", 403);
    assert_eq!(
        seen(&cluster.fail("a", 0, EsCheck::Audit, forbidden())),
        [("opened", "es_unreachable", Severity::Error)]
    );
    for minute in 1..=10 {
        let secs = minute * 60;
        assert_eq!(cluster.health(secs, "green"), [], "health at {secs}s");
        assert_eq!(
            seen(&cluster.fail("a", secs + 1, EsCheck::Audit, forbidden())),
            [],
            "audit failing again at {}s",
            secs + 1
        );
    }
    assert_eq!(
        seen(&cluster.report("a", 700, EsCheck::Audit, audit(1000, 0))),
        [("closed", "es_unreachable", Severity::Error)]
    );
}

/// A partial audit count (failed shards, a search that timed out) is no verdict, but it is
/// reported: one notification when a node's counts turn partial, none while they stay so,
/// and one again after a complete count.
#[test]
fn a_partial_audit_count_is_reported_once_when_it_starts() {
    let mut cluster = Cluster::new(&["a"]);
    let notes = |events: Vec<Event>| -> Vec<String> {
        events
            .into_iter()
            .filter_map(|event| match event {
                Event::Notification(note) => Some(format!("{}: {}", note.title, note.text)),
                Event::Issue(_) => None,
            })
            .collect()
    };
    let EsResult::Audit(mut partial) = audit(1000, 20) else {
        unreachable!()
    };
    partial.shards_failed = 2;
    let first = notes(cluster.report("a", 0, EsCheck::Audit, EsResult::Audit(partial.clone())));
    assert_eq!(
        first,
        [
            "Partial audit count: the request count of audit trail audit-* is partial \
          (2 shards failed): 20 of 1000 requests counted answered 5XX; http_5xx_ratio takes \
          no verdict from it"
        ]
    );
    partial.timed_out = true;
    let still = cluster.report("a", 300, EsCheck::Audit, EsResult::Audit(partial.clone()));
    assert_eq!(
        notes(still),
        Vec::<String>::new(),
        "still partial: said already"
    );
    assert_eq!(
        notes(cluster.report("a", 600, EsCheck::Audit, audit(1000, 20))).len(),
        0
    );
    partial.shards_failed = 0;
    let again = notes(cluster.report("a", 900, EsCheck::Audit, EsResult::Audit(partial)));
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].contains("(the search timed out)"), "{again:?}");
}
