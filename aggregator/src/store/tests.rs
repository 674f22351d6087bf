use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::*;
use crate::issue::{Condition, Finding, IssueBook};
use crate::rules::RuleId;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(1_800_000_000_000 + secs * 1000)
}

fn node_key(node: &str) -> NodeKey {
    NodeKey {
        tenant: "acme".into(),
        cluster: "db".into(),
        node: node.into(),
    }
}

fn node_state(node: &str, applied_seq: u64) -> NodeState {
    NodeState {
        key: node_key(node),
        identity: NodeIdentity {
            service_instance_id: "4f6c…".into(),
            labels: [("az".to_owned(), "a".to_owned())].into(),
            ..NodeIdentity::default()
        },
        agent_version: "0.1.0".into(),
        probes: vec![Probe {
            name: "host".into(),
            interval: Duration::from_secs(15),
        }],
        seq_epoch: "epoch".into(),
        applied_seq,
        first_seen: at(0),
        last_seen: Some(at(5)),
        connections: 1,
        latest_host: None,
        latest_gossip: None,
        latest_es: [None; EsCheck::COUNT],
        audit_partial: false,
        dropped_batches_total: 3,
        rejected_samples_total: 2,
        batches_applied_total: applied_seq - 1,
        duplicate_batches_total: 4,
        skipped_seqs_total: 1,
    }
}

fn breach(value: f64, severity: Severity) -> Condition {
    Condition::Breach(Finding {
        severity,
        value,
        threshold: 80.0,
        message: format!("at {value}"),
        remedy: "clean up".into(),
    })
}

fn clear(value: f64) -> Condition {
    Condition::Clear(Finding {
        severity: Severity::Warning,
        value,
        threshold: 80.0,
        message: format!("back at {value}"),
        remedy: "clean up".into(),
    })
}

fn disk_key(node: &str) -> IssueKey {
    IssueKey {
        rule: RuleId::DiskUsage.into(),
        subject: Subject::mount(&node_key(node), "/"),
    }
}

fn open(dir: &Path) -> (Store, StoreWriter, Restored) {
    let dispatch = Dispatch::start(&[], &TaskTracker::new());
    Store::open(dir, dispatch).unwrap()
}

async fn write(store: &Store, nodes: Vec<NodeState>, events: Vec<Event>) {
    let (done, committed) = oneshot::channel();
    let write = Write {
        nodes: nodes.into_iter().map(NodeRow::from).collect(),
        events,
        done: Some(Box::new(move |result| {
            let _ = done.send(result.map_err(ToString::to_string));
        })),
    };
    store.write(write).await.unwrap();
    committed.await.unwrap().unwrap();
}

fn close(store: Store, writer: StoreWriter) {
    drop(store);
    writer.join();
}

async fn write_rows(store: &Store, nodes: Vec<NodeRow>) {
    let (done, committed) = oneshot::channel();
    let write = Write {
        nodes,
        events: Vec::new(),
        done: Some(Box::new(move |result| {
            let _ = done.send(result.map_err(ToString::to_string));
        })),
    };
    store.write(write).await.unwrap();
    committed.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_batch_writes_its_progress_and_keeps_what_the_hello_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, _) = open(dir.path());
    write(&store, vec![node_state("a", 3)], Vec::new()).await;
    let later = NodeState {
        last_seen: Some(at(60)),
        batches_applied_total: 8,
        duplicate_batches_total: 5,
        ..node_state("a", 9)
    };
    // A Hello with a new seq epoch after a batch of the old one, in one transaction: the
    // Hello's row wins. A batch after a Hello moves the seq on.
    let renewed = NodeState {
        seq_epoch: "epoch-2".into(),
        ..node_state("b", 1)
    };
    write(&store, vec![node_state("b", 30)], Vec::new()).await;
    write_rows(
        &store,
        vec![
            NodeRow::Progress(NodeProgress::of(&later, 1)),
            NodeRow::Progress(NodeProgress::of(&node_state("b", 31), 1)),
            NodeRow::from(NodeState {
                applied_seq: 0,
                ..renewed.clone()
            }),
        ],
    )
    .await;
    write_rows(
        &store,
        vec![
            NodeRow::from(NodeState {
                applied_seq: 0,
                ..node_state("c", 1)
            }),
            NodeRow::Progress(NodeProgress::of(&node_state("c", 2), 1)),
        ],
    )
    .await;
    close(store, writer);

    let (store, writer, restored) = open(dir.path());
    let mut nodes = restored.nodes;
    nodes.sort_by(|x, y| x.key.cmp(&y.key));
    let live = |node: NodeState| NodeState {
        connections: 0,
        rejected_samples_total: 0,
        ..node
    };
    assert_eq!(
        nodes[0],
        live(later),
        "identity and probes kept, counters moved"
    );
    assert_eq!(
        nodes[1],
        live(NodeState {
            applied_seq: 0,
            ..renewed
        }),
        "the later Hello wins over an earlier batch"
    );
    assert_eq!(
        nodes[2].applied_seq, 2,
        "a batch after a Hello moves the seq"
    );
    close(store, writer);
}

#[tokio::test]
async fn nodes_and_open_issues_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, restored) = open(dir.path());
    assert!(restored.nodes.is_empty() && restored.open_issues.is_empty());

    let mut book = IssueBook::default();
    let opened_a = book
        .apply(&disk_key("a"), breach(85.0, Severity::Warning), at(1))
        .unwrap();
    let opened_b = book
        .apply(&disk_key("b"), breach(90.0, Severity::Warning), at(2))
        .unwrap();
    let closed_b = book.apply(&disk_key("b"), clear(10.0), at(3)).unwrap();
    let events = [opened_a.clone(), opened_b, closed_b]
        .into_iter()
        .map(Event::Issue)
        .collect();
    write(
        &store,
        vec![node_state("a", 41), node_state("b", 7)],
        events,
    )
    .await;
    close(store, writer);

    let (store, writer, restored) = open(dir.path());
    let mut nodes = restored.nodes;
    nodes.sort_by(|x, y| x.key.cmp(&y.key));
    let expected_a = NodeState {
        connections: 0,
        rejected_samples_total: 0,
        ..node_state("a", 41)
    };
    assert_eq!(
        nodes[0], expected_a,
        "everything but live counters survives"
    );
    assert_eq!(nodes[1].applied_seq, 7);
    assert_eq!(
        restored.open_issues,
        vec![opened_a.issue],
        "only the open issue is restored"
    );
    close(store, writer);
}

#[tokio::test]
async fn an_issue_keeps_all_its_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, _) = open(dir.path());
    let mut book = IssueBook::default();
    let key = disk_key("a");
    let events: Vec<Event> = [
        book.apply(&key, breach(85.0, Severity::Warning), at(1)),
        book.apply(&key, breach(95.0, Severity::Error), at(2)),
        book.apply(&key, clear(5.0), at(3)),
    ]
    .into_iter()
    .flatten()
    .map(Event::Issue)
    .collect();
    let Event::Issue(first) = &events[0] else {
        unreachable!()
    };
    let id = first.issue.id.clone();
    write(&store, vec![], events).await;

    let (issue, stored) = store.get_issue(id.clone()).await.unwrap().unwrap();
    assert_eq!(issue.state, IssueState::Closed);
    assert_eq!(issue.closed_at, Some(at(3)));
    assert_eq!(issue.severity, Severity::Error);
    let kinds: Vec<_> = stored
        .iter()
        .map(|event| (event.kind, event.severity, event.value))
        .collect();
    assert_eq!(
        kinds,
        [
            (IssueEventKind::Opened, Severity::Warning, 85.0),
            (
                IssueEventKind::Updated(UpdateReason::Severity),
                Severity::Error,
                95.0
            ),
            (IssueEventKind::Closed, Severity::Error, 5.0),
        ]
    );
    assert_eq!(store.get_issue("no-such-id".into()).await.unwrap(), None);
    close(store, writer);
}

#[tokio::test]
async fn list_issues_filters_and_orders_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, _) = open(dir.path());
    let mut book = IssueBook::default();
    let silent = IssueKey {
        rule: RuleId::NodeSilent.into(),
        subject: Subject::node(&node_key("b")),
    };
    let events = [
        book.apply(&disk_key("a"), breach(85.0, Severity::Warning), at(1)),
        book.apply(&silent, breach(60.0, Severity::Error), at(2)),
        book.apply(&disk_key("c"), breach(85.0, Severity::Info), at(3)),
        book.apply(&disk_key("c"), clear(1.0), at(4)),
    ]
    .into_iter()
    .flatten()
    .map(Event::Issue)
    .collect();
    write(&store, vec![], events).await;

    let list = |filter: IssueFilter| {
        let store = store.clone();
        async move {
            store
                .list_issues(filter)
                .await
                .unwrap()
                .into_iter()
                .map(|issue| format!("{}@{}", issue.key.rule, issue.key.subject.node))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(IssueFilter::default()).await,
        ["disk_usage@c", "node_silent@b", "disk_usage@a"]
    );
    let open = IssueFilter {
        state: Some(IssueState::Open),
        ..IssueFilter::default()
    };
    assert_eq!(list(open.clone()).await, ["node_silent@b", "disk_usage@a"]);
    let errors = IssueFilter {
        min_severity: Some(Severity::Error),
        ..IssueFilter::default()
    };
    assert_eq!(list(errors).await, ["node_silent@b"]);
    let by_rule = IssueFilter {
        rule: "disk_usage".into(),
        ..open
    };
    assert_eq!(list(by_rule).await, ["disk_usage@a"]);
    let by_node = IssueFilter {
        node: "c".into(),
        ..IssueFilter::default()
    };
    assert_eq!(list(by_node).await, ["disk_usage@c"]);
    let limited = IssueFilter {
        limit: 1,
        ..IssueFilter::default()
    };
    assert_eq!(list(limited).await, ["disk_usage@c"]);
    close(store, writer);
}

#[tokio::test]
async fn the_database_refuses_a_second_open_issue_for_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, _) = open(dir.path());
    let first = IssueBook::default().apply(&disk_key("a"), breach(85.0, Severity::Warning), at(1));
    let second = IssueBook::default().apply(&disk_key("a"), breach(86.0, Severity::Warning), at(2));
    write(&store, vec![], vec![Event::Issue(first.unwrap())]).await;

    let (done, outcome) = oneshot::channel();
    let write = Write {
        nodes: vec![],
        events: vec![Event::Issue(second.unwrap())],
        done: Some(Box::new(move |result| {
            let _ = done.send(result.map_err(ToString::to_string));
        })),
    };
    store.write(write).await.unwrap();
    let error = outcome.await.unwrap().unwrap_err();
    assert!(error.contains("UNIQUE constraint failed"), "{error}");
    let open = IssueFilter {
        state: Some(IssueState::Open),
        ..IssueFilter::default()
    };
    assert_eq!(store.list_issues(open).await.unwrap().len(), 1);
    close(store, writer);
}

#[tokio::test]
async fn events_reach_dispatch_only_after_their_commit_in_write_order() {
    let dir = tempfile::tempdir().unwrap();
    let dispatch = Dispatch::start(&[], &TaskTracker::new());
    let mut feed = dispatch.subscribe();
    let (store, writer, _) = Store::open(dir.path(), dispatch).unwrap();
    let seen_at_commit = Arc::new(Mutex::new(Vec::new()));
    let mut book = IssueBook::default();
    for (index, node) in ["a", "b", "c"].into_iter().enumerate() {
        let event = book.apply(
            &disk_key(node),
            breach(85.0, Severity::Warning),
            at(index as i64),
        );
        let seen = Arc::clone(&seen_at_commit);
        store
            .write(Write {
                nodes: vec![],
                events: vec![Event::Issue(event.unwrap())],
                done: Some(Box::new(move |result| {
                    assert!(result.is_ok());
                    seen.lock().unwrap().push(node);
                })),
            })
            .await
            .unwrap();
    }
    let mut published = Vec::new();
    for _ in 0..3 {
        let event = feed.recv().await.unwrap();
        published.push(event.node().to_owned());
        // Each event is published after the write that holds it completed.
        assert!(seen_at_commit.lock().unwrap().contains(&event.node()));
    }
    assert_eq!(published, ["a", "b", "c"]);
    close(store, writer);
}

#[tokio::test]
async fn a_database_from_a_newer_aggregator_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, _) = open(dir.path());
    close(store, writer);
    let connection = Connection::open(dir.path().join("hostwatch.db")).unwrap();
    connection
        .pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
        .unwrap();
    drop(connection);
    let dispatch = Dispatch::start(&[], &TaskTracker::new());
    let error = Store::open(dir.path(), dispatch).unwrap_err().to_string();
    assert!(error.contains("newer than this aggregator"), "{error}");
}

#[tokio::test]
async fn a_database_with_tables_but_no_schema_version_is_refused_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, _) = open(dir.path());
    close(store, writer);
    let connection = Connection::open(dir.path().join("hostwatch.db")).unwrap();
    connection.pragma_update(None, "user_version", 0).unwrap();
    drop(connection);
    let dispatch = Dispatch::start(&[], &TaskTracker::new());
    let error = Store::open(dir.path(), dispatch).unwrap_err().to_string();
    assert!(
        error.contains("no schema version") && error.contains("move it away"),
        "{error}"
    );
}

/// Evidence as the engine would capture it, with values that must round-trip exactly
/// (0.1 + 0.2 is not 0.3) and a full run of samples.
fn evidence(rule: &str, first_ms: i64, n_samples: i64) -> crate::explain::Evidence {
    use crate::explain::{DecidingSample, Evidence, RuleCondition, TierEvidence, WindowSpan};
    Evidence {
        rule: rule.into(),
        decided_at_ms: at(n_samples).as_unix_ms(),
        severity: Severity::Error,
        measured: "disk / on acme/db/a".into(),
        detail: "100 of 1000 bytes available on /dev/vda".into(),
        condition: RuleCondition {
            text: "over 80 % for 1m".into(),
            comparator: ">".into(),
            threshold: 80.0,
            unit: "percent".into(),
            tiers: vec![TierEvidence {
                severity: Severity::Error,
                above: 80.0,
            }],
            tier_threshold: 80.0,
        },
        window: WindowSpan {
            open_for_ms: 60_000,
            close_for_ms: 0,
            from_ms: first_ms,
            to_ms: first_ms + (n_samples - 1) * 15_000,
            clock: "agent".into(),
        },
        samples: (0..n_samples)
            .map(|index| DecidingSample {
                time_ms: first_ms + index * 15_000,
                value: 80.0 + 0.1 + 0.2 + index as f64 / 3.0,
            })
            .collect(),
        samples_elided: 41,
        silence: None,
        nodes: Vec::new(),
        nodes_elided: 0,
    }
}

#[tokio::test]
async fn an_explanation_survives_a_reopen_exactly_and_a_close_keeps_why_it_was_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, _) = open(dir.path());
    let mut book = IssueBook::default();
    let key = disk_key("a");
    let mut opened = book
        .apply(&key, breach(85.0, Severity::Error), at(1))
        .unwrap();
    let why_open = evidence("disk_usage", at(0).as_unix_ms(), 60);
    crate::explain::attach(&mut book, &mut opened, || why_open.clone());
    let id = opened.issue.id.clone();
    write(&store, vec![], vec![Event::Issue(opened.clone())]).await;
    close(store, writer);

    let (store, writer, restored) = open(dir.path());
    assert_eq!(restored.open_issues.len(), 1);
    let explanation = restored.open_issues[0].explanation.clone().unwrap();
    assert_eq!(explanation.opened.as_ref(), Some(&why_open));
    assert_eq!(explanation.closed, None);
    assert_eq!(restored.open_issues[0], opened.issue, "restored exactly");
    let (issue, _) = store.get_issue(id.clone()).await.unwrap().unwrap();
    assert_eq!(issue.explanation, opened.issue.explanation);

    // The restored book closes it: the close adds why, and keeps why it was open.
    let mut book = IssueBook::restore(restored.open_issues);
    let mut closed = book.apply(&key, clear(10.0), at(70)).unwrap();
    let why_closed = evidence("disk_usage", at(70).as_unix_ms(), 1);
    crate::explain::attach(&mut book, &mut closed, || why_closed.clone());
    write(&store, vec![], vec![Event::Issue(closed)]).await;
    close(store, writer);

    let (store, writer, restored) = open(dir.path());
    assert!(restored.open_issues.is_empty());
    let (issue, events) = store.get_issue(id).await.unwrap().unwrap();
    assert_eq!(events.len(), 2);
    let explanation = issue.explanation.unwrap();
    assert_eq!(explanation.opened, Some(why_open));
    assert_eq!(explanation.closed, Some(why_closed));
    close(store, writer);
}

#[tokio::test]
async fn issues_stored_before_explanations_existed_have_none() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer, _) = open(dir.path());
    let mut book = IssueBook::default();
    let opened = book
        .apply(&disk_key("a"), breach(85.0, Severity::Warning), at(1))
        .unwrap();
    let id = opened.issue.id.clone();
    assert_eq!(opened.issue.explanation, None);
    write(&store, vec![], vec![Event::Issue(opened)]).await;
    close(store, writer);
    // Back to schema version 2, as an aggregator from before migration 3 left it: no
    // explanations, and (before migration 4) a mount column instead of resources.
    let connection = Connection::open(dir.path().join("hostwatch.db")).unwrap();
    connection
        .execute_batch(
            "DROP TABLE issue_explanations;
             DROP INDEX one_open_issue_per_subject;
             ALTER TABLE issues ADD COLUMN mount TEXT NOT NULL DEFAULT '';
             UPDATE issues SET mount = resource WHERE resource_kind = 'mount';
             ALTER TABLE issues DROP COLUMN resource_kind;
             ALTER TABLE issues DROP COLUMN resource;
             CREATE UNIQUE INDEX one_open_issue_per_key
                 ON issues (rule, tenant, cluster, node, mount) WHERE state = 'open';
             PRAGMA user_version = 2;",
        )
        .unwrap();
    drop(connection);

    let (store, writer, restored) = open(dir.path());
    assert_eq!(restored.open_issues.len(), 1);
    assert_eq!(restored.open_issues[0].explanation, None);
    assert_eq!(restored.open_issues[0].key, disk_key("a"));
    let (issue, _) = store.get_issue(id).await.unwrap().unwrap();
    assert_eq!(issue.explanation, None);
    close(store, writer);
}

/// A database of schema 3 (issues with a `mount` column) migrates: a mount row becomes a
/// mount resource, a node row keeps none. An open issue of a rule this build does not
/// know loads (it never stops the aggregator) and an operator's close of it persists,
/// the reason in its `closed` event; a restart then restores only the other issue.
#[tokio::test]
async fn mounts_become_resources_and_an_unknown_rules_issue_loads_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let connection = Connection::open(dir.path().join("hostwatch.db")).unwrap();
        for step in &MIGRATIONS[..3] {
            connection.execute_batch(step).unwrap();
        }
        connection.pragma_update(None, "user_version", 3).unwrap();
        let insert = "INSERT INTO issues (id, rule, tenant, cluster, node, mount, severity,
                 state, opened_ms, updated_ms, value, threshold, message, remedy)
             VALUES (?1, ?2, 'acme', 'db', 'n1', ?3, 'warning', 'open', 1, 1, 85.0, 80.0,
                 'as stored', '')";
        connection
            .execute(insert, params!["i-disk", "disk_usage", "/data"])
            .unwrap();
        connection
            .execute(insert, params!["i-retired", "retired_rule", ""])
            .unwrap();
    }
    let (store, writer, restored) = open(dir.path());
    let mut open_issues = restored.open_issues;
    open_issues.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = open_issues.iter().map(|issue| issue.id.as_str()).collect();
    assert_eq!(ids, ["i-disk", "i-retired"]);
    assert_eq!(open_issues[0].key.rule, RuleId::DiskUsage);
    assert_eq!(
        open_issues[0].key.subject,
        Subject::mount(&node_key("n1"), "/data")
    );
    let retired = &open_issues[1];
    assert_eq!(retired.key.rule.as_str(), "retired_rule");
    assert_eq!(retired.key.rule.known(), None);
    assert_eq!(retired.key.subject, Subject::node(&node_key("n1")));

    let mut engine = crate::engine::Engine::new(
        crate::config::RulesConfig::default(),
        at(10),
        [],
        open_issues,
    );
    // Nothing evaluates it: no reminder even long after its last event.
    assert_eq!(
        engine.tick(at(100_000)).len(),
        1,
        "only the disk issue's reminder"
    );
    let closed = engine
        .close_issue("i-retired", "ops", "the rule was retired", at(20))
        .unwrap();
    assert!(
        engine
            .close_issue("i-retired", "ops", "twice", at(21))
            .is_none()
    );
    write(&store, Vec::new(), vec![Event::Issue(closed)]).await;
    let (issue, events) = store.get_issue("i-retired".into()).await.unwrap().unwrap();
    assert_eq!(issue.state, IssueState::Closed);
    assert_eq!(issue.closed_at, Some(at(20)));
    let last = events.last().unwrap();
    assert_eq!(last.kind, IssueEventKind::Closed);
    assert_eq!(last.message, "closed by operator ops: the rule was retired");
    let why = issue.explanation.unwrap().closed.unwrap();
    assert_eq!(
        (why.rule.as_str(), why.detail.as_str()),
        (
            "retired_rule",
            "closed by operator ops: the rule was retired"
        )
    );
    close(store, writer);

    let (store, writer, restored) = open(dir.path());
    let ids: Vec<&str> = restored
        .open_issues
        .iter()
        .map(|issue| issue.id.as_str())
        .collect();
    assert_eq!(ids, ["i-disk"]);
    close(store, writer);
}
