//! The core slice end to end: two real agents stream to a real aggregator, which opens,
//! closes and persists issues; an operator client watches it through the Operator API.
//!
//! One scenario in order, because each step builds on the state the previous left:
//! nodes appear → disk issues open → a silent node opens an issue → it closes when the
//! node comes back → the aggregator is killed and restarted without reopening anything,
//! and every issue still says why it opened (and why it closed) exactly as before.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use proto::v1::operator_client::OperatorClient;
use proto::v1::{
    Explanation, GetIssueRequest, Issue, IssueEventKind, IssueState, ListIssuesRequest,
    ListNodesRequest, Node,
};
use tests::{Process, binary, eventually, free_addr, operator_client, wait_for_port, write_file};
use tonic::transport::Channel;

const TENANT: &str = "acme";
const CLUSTER: &str = "e2e";
const NODE_A: &str = "node-a";
const NODE_B: &str = "node-b";
/// How long an agent may take to shut down cleanly after SIGTERM.
const AGENT_GRACE: Duration = Duration::from_secs(15);

fn aggregator_config(addr: SocketAddr, data_dir: &Path) -> String {
    format!(
        r#"listen = "{addr}"
data_dir = "{data_dir}"

[rules.disk_usage]
# Percent: low enough to trip on any real root filesystem.
threshold = 1.0
open_for = "2s"
close_for = "0s"

[rules.node_silent]
missed_intervals = 3

[[integrations]]
source = "issues"
sink = {{ type = "log" }}
"#,
        data_dir = data_dir.display()
    )
}

fn agent_config(node: &str, state_dir: &Path, aggregator: SocketAddr) -> String {
    format!(
        r#"state_dir = "{state_dir}"

[identity]
tenant = "{TENANT}"
cluster = "{CLUSTER}"
node = "{node}"

[aggregator]
url = "http://{aggregator}"

[host]
interval = "1s"
"#,
        state_dir = state_dir.display()
    )
}

/// Starts `hostwatch-aggregator run --config CONFIG` or `hostwatch-agent run --config CONFIG`.
fn start(name: &str, binary_name: &str, config: &Path, log_dir: &Path) -> Result<Process> {
    let args = [
        OsStr::new("run"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    Process::spawn(name, &binary(binary_name)?, args, log_dir)
}

fn start_aggregator(name: &str, config: &Path, log_dir: &Path) -> Result<Process> {
    start(name, "hostwatch-aggregator", config, log_dir)
}

fn start_agent(name: &str, config: &Path, log_dir: &Path) -> Result<Process> {
    start(name, "hostwatch-agent", config, log_dir)
}

fn now_unix_ms() -> Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

fn node_name(node: &Node) -> &str {
    node.identity
        .as_ref()
        .map_or("", |identity| identity.node.as_str())
}

async fn list_nodes(client: &mut OperatorClient<Channel>) -> Result<Vec<Node>> {
    let request = ListNodesRequest {
        tenant: TENANT.into(),
        cluster: CLUSTER.into(),
    };
    Ok(client.list_nodes(request).await?.into_inner().nodes)
}

async fn list_issues(
    client: &mut OperatorClient<Channel>,
    state: IssueState,
    rule: &str,
) -> Result<Vec<Issue>> {
    let request = ListIssuesRequest {
        state: state as i32,
        tenant: TENANT.into(),
        cluster: CLUSTER.into(),
        rule: rule.into(),
        ..Default::default()
    };
    Ok(client.list_issues(request).await?.into_inner().issues)
}

/// The open disk_usage issues on "/" by node; fails if a node has more than one.
async fn open_root_disk_issues(
    client: &mut OperatorClient<Channel>,
) -> Result<BTreeMap<String, String>> {
    let mut by_node = BTreeMap::new();
    for issue in list_issues(client, IssueState::Open, "disk_usage").await? {
        if issue.mount != "/" {
            continue;
        }
        if let Some(other) = by_node.insert(issue.node.clone(), issue.id.clone()) {
            bail!(
                "two open disk_usage issues on / of {}: {other} and {}",
                issue.node,
                issue.id
            );
        }
    }
    Ok(by_node)
}

/// The kinds of an issue's events, oldest first.
async fn event_kinds(
    client: &mut OperatorClient<Channel>,
    issue_id: &str,
) -> Result<Vec<IssueEventKind>> {
    let response = client
        .get_issue(GetIssueRequest {
            id: issue_id.into(),
        })
        .await?
        .into_inner();
    let issue = response
        .issue
        .context("GetIssue answered without the issue")?;
    ensure!(
        issue.id == issue_id,
        "GetIssue({issue_id}) answered issue {}",
        issue.id
    );
    Ok(response
        .events
        .iter()
        .map(|event| IssueEventKind::try_from(event.kind).unwrap_or(IssueEventKind::Unspecified))
        .collect())
}

/// The explanation GetIssue gives for `issue_id`.
async fn explanation(client: &mut OperatorClient<Channel>, issue_id: &str) -> Result<Explanation> {
    client
        .get_issue(GetIssueRequest {
            id: issue_id.into(),
        })
        .await?
        .into_inner()
        .explanation
        .with_context(|| format!("GetIssue({issue_id}) answered without an explanation"))
}

/// Whether a log-sink line reports the event `kind` ("opened", "closed") of `issue_id`.
/// Deliberately loose about the JSON's shape: the id and the quoted kind on one line.
fn is_event_line(line: &str, issue_id: &str, kind: &str) -> bool {
    line.contains(issue_id) && line.contains(&format!("\"{kind}\""))
}

/// Every complete line the aggregator wrote to stdout (the log sink) must be JSON.
fn json_lines(aggregator: &Process) -> Result<Vec<String>> {
    let lines = aggregator.stdout_lines()?;
    for (line_idx, line) in lines.iter().enumerate() {
        serde_json::from_str::<serde_json::Value>(line).with_context(|| {
            format!(
                "{} stdout line {} is not JSON: {line}",
                aggregator.name(),
                line_idx + 1
            )
        })?;
    }
    Ok(lines)
}

struct Paths {
    log_dir: PathBuf,
    aggregator_config: PathBuf,
    agent_a_config: PathBuf,
    agent_b_config: PathBuf,
}

fn write_configs(root: &Path, addr: SocketAddr) -> Result<Paths> {
    let aggregator_config = write_file(
        root.join("aggregator.toml"),
        &aggregator_config(addr, &root.join("aggregator-data")),
    )?;
    let agent_a_config = write_file(
        root.join("agent-a.toml"),
        &agent_config(NODE_A, &root.join("agent-a-state"), addr),
    )?;
    let agent_b_config = write_file(
        root.join("agent-b.toml"),
        &agent_config(NODE_B, &root.join("agent-b-state"), addr),
    )?;
    let log_dir = root.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    Ok(Paths {
        log_dir,
        aggregator_config,
        agent_a_config,
        agent_b_config,
    })
}

#[tokio::test]
async fn issues_open_close_and_survive_an_aggregator_restart() -> Result<()> {
    let dir = tests::temp_dir("hostwatch-e2e")?;
    let addr = free_addr()?;
    let paths = write_configs(dir.path(), addr)?;

    let mut aggregator =
        start_aggregator("aggregator-1", &paths.aggregator_config, &paths.log_dir)?;
    wait_for_port(addr, tests::TIMEOUT).await?;
    let _agent_a = start_agent("agent-a", &paths.agent_a_config, &paths.log_dir)?;
    let mut agent_b = start_agent("agent-b-1", &paths.agent_b_config, &paths.log_dir)?;
    let client = operator_client(addr).await?;

    // 1. Both nodes appear, with a host sample.
    eventually("node-a and node-b in ListNodes with a host sample", || {
        let mut client = client.clone();
        async move {
            let nodes = list_nodes(&mut client).await?;
            let reporting = |name: &str| {
                nodes
                    .iter()
                    .any(|node| node_name(node) == name && node.latest_host.is_some())
            };
            Ok((reporting(NODE_A) && reporting(NODE_B)).then_some(()))
        }
    })
    .await?;

    // 2. A disk_usage issue opens on / of each node.
    let disk_issues = eventually(
        "an open disk_usage issue on / for node-a and node-b",
        || {
            let mut client = client.clone();
            async move {
                let by_node = open_root_disk_issues(&mut client).await?;
                Ok(
                    (by_node.contains_key(NODE_A) && by_node.contains_key(NODE_B))
                        .then_some(by_node),
                )
            }
        },
    )
    .await?;
    let disk_issue_ids: Vec<String> = disk_issues.values().cloned().collect();
    eventually(
        "the log sink to print the opened event of both disk issues",
        || {
            let aggregator = &aggregator;
            let disk_issue_ids = &disk_issue_ids;
            async move {
                let lines = json_lines(aggregator)?;
                let printed =
                    |id: &String| lines.iter().any(|line| is_event_line(line, id, "opened"));
                Ok(disk_issue_ids.iter().all(printed).then_some(()))
            }
        },
    )
    .await?;

    // 3. node-b's agent stops cleanly; node-b, and only node-b, goes silent.
    let status = agent_b.terminate(AGENT_GRACE).await?;
    ensure!(
        status.success(),
        "agent-b-1 exited with {status} after SIGTERM"
    );
    let silent_issue_id = eventually("an open node_silent issue for node-b", || {
        let mut client = client.clone();
        async move {
            let issues = list_issues(&mut client, IssueState::Open, "node_silent").await?;
            Ok(issues
                .into_iter()
                .find(|issue| issue.node == NODE_B)
                .map(|issue| issue.id))
        }
    })
    .await?;
    let mut client_now = client.clone();
    let silent: Vec<Issue> =
        list_issues(&mut client_now, IssueState::Unspecified, "node_silent").await?;
    let silent_nodes: Vec<&str> = silent.iter().map(|issue| issue.node.as_str()).collect();
    ensure!(
        silent_nodes == [NODE_B],
        "node_silent issues exist for {silent_nodes:?}, expected only node-b"
    );

    // 4. node-b's agent comes back with the same state: the issue closes, once.
    let _agent_b = start_agent("agent-b-2", &paths.agent_b_config, &paths.log_dir)?;
    eventually("the node_silent issue of node-b to close", || {
        let mut client = client.clone();
        let silent_issue_id = silent_issue_id.clone();
        async move {
            let response = client
                .get_issue(GetIssueRequest {
                    id: silent_issue_id,
                })
                .await?
                .into_inner();
            let issue = response
                .issue
                .context("GetIssue answered without the issue")?;
            Ok((issue.state == IssueState::Closed as i32).then_some(()))
        }
    })
    .await?;
    let kinds = event_kinds(&mut client_now, &silent_issue_id).await?;
    ensure!(
        kinds == [IssueEventKind::Opened, IssueEventKind::Closed],
        "node_silent issue {silent_issue_id} has events {kinds:?}, expected [Opened, Closed]"
    );
    eventually(
        "the log sink to print the closed event of the node_silent issue",
        || {
            let aggregator = &aggregator;
            let silent_issue_id = &silent_issue_id;
            async move {
                let lines = json_lines(aggregator)?;
                Ok(lines
                    .iter()
                    .any(|line| is_event_line(line, silent_issue_id, "closed"))
                    .then_some(()))
            }
        },
    )
    .await?;

    // Why each issue opened: the disk issues by the run of samples over 1 % that held for
    // `open_for` (at least two, the first 2 s before the last); node-b's silence by its
    // allowance, and its close by the batch that came back.
    let mut explanations = BTreeMap::new();
    for id in disk_issue_ids.iter().chain([&silent_issue_id]) {
        explanations.insert(id.clone(), explanation(&mut client_now, id).await?);
    }
    for id in &disk_issue_ids {
        let opened = explanations[id].opened.clone().context("why it opened")?;
        let window = opened.window.clone().unwrap_or_default();
        let condition = opened.condition.clone().unwrap_or_default();
        ensure!(
            opened.rule == "disk_usage"
                && condition.comparator == ">"
                && condition.threshold == 1.0
                && window.open_for_ms == 2000
                && window.to_unix_ms - window.from_unix_ms >= 2000
                && opened.samples.len() >= 2
                && opened.samples.first().map(|s| s.time_unix_ms) == Some(window.from_unix_ms)
                && opened.samples.last().map(|s| s.time_unix_ms) == Some(window.to_unix_ms)
                && opened.samples.iter().all(|sample| sample.value > 1.0),
            "disk issue {id} explained as {opened:#?}"
        );
    }
    let silent_explanation = &explanations[&silent_issue_id];
    let opened_silence = silent_explanation
        .opened
        .as_ref()
        .and_then(|opened| opened.silence)
        .context("node_silent explained by its silence")?;
    ensure!(
        opened_silence.missed_intervals == 3
            && opened_silence.silent_for_ms >= opened_silence.allowance_ms,
        "node_silent opened with {opened_silence:#?}"
    );
    ensure!(
        silent_explanation.closed.is_some(),
        "node_silent issue {silent_issue_id} closed without saying why: {silent_explanation:#?}"
    );

    // 5. The aggregator dies without warning and restarts on the same data directory.
    aggregator.kill()?;
    let lines_before_restart = json_lines(&aggregator)?;
    ensure!(
        !lines_before_restart.is_empty(),
        "aggregator-1 printed no event"
    );
    drop(client);
    drop(client_now);
    let restarted_at_ms = now_unix_ms()?;
    let aggregator = start_aggregator("aggregator-2", &paths.aggregator_config, &paths.log_dir)?;
    wait_for_port(addr, tests::TIMEOUT).await?;
    eventually(
        "both agents to reconnect and report to the restarted aggregator",
        || async move {
            let mut client = operator_client(addr).await?;
            let nodes = list_nodes(&mut client).await?;
            let back = |name: &str| {
                nodes.iter().any(|node| {
                    node_name(node) == name
                        && node.connected
                        && node.last_seen_unix_ms >= restarted_at_ms
                })
            };
            Ok((back(NODE_A) && back(NODE_B)).then_some(()))
        },
    )
    .await?;
    let mut client = operator_client(addr).await?;
    let after_restart = open_root_disk_issues(&mut client).await?;
    ensure!(
        after_restart == disk_issues,
        "open disk_usage issues changed over the restart: before {disk_issues:?}, after {after_restart:?}"
    );

    // 6. Give the rules time to see fresh samples, then check nothing was opened twice.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_wait = open_root_disk_issues(&mut client).await?;
    ensure!(
        after_wait == disk_issues,
        "open disk_usage issues changed after the restart: before {disk_issues:?}, now {after_wait:?}"
    );
    for issue in list_issues(&mut client, IssueState::Unspecified, "").await? {
        let kinds = event_kinds(&mut client, &issue.id).await?;
        let n_opened = kinds
            .iter()
            .filter(|kind| **kind == IssueEventKind::Opened)
            .count();
        ensure!(
            n_opened == 1 && kinds.first() == Some(&IssueEventKind::Opened),
            "issue {} ({} on {}) has events {kinds:?}: expected exactly one Opened, first",
            issue.id,
            issue.rule,
            issue.node
        );
    }
    for (id, before) in &explanations {
        let after = explanation(&mut client, id).await?;
        ensure!(
            after == *before,
            "issue {id} explained differently after the restart: before {before:#?}, after {after:#?}"
        );
    }
    let lines_after_restart = json_lines(&aggregator)?;
    for id in &disk_issue_ids {
        if let Some(line) = lines_after_restart
            .iter()
            .find(|line| is_event_line(line, id, "opened"))
        {
            bail!("the restarted aggregator announced disk issue {id} as opened again: {line}");
        }
    }
    Ok(())
}

// ---- seed 001: the Elasticsearch rules, end to end ----------------------------------

const ES_CLUSTER: &str = "es-e2e";
const AUDIT_PATTERN: &str = "audit-e2e";

/// `hostwatchctl --addr … -o json issues --state all --cluster es-e2e`, on the blocking
/// pool so that the stand-in Elasticsearch (on this test's runtime) keeps answering.
async fn hostwatchctl_issues(addr: SocketAddr) -> Result<Vec<serde_json::Value>> {
    let hostwatchctl = binary("hostwatchctl")?;
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(hostwatchctl)
            .args(["--addr", &format!("http://{addr}"), "-o", "json", "issues"])
            .args(["--state", "all", "--cluster", ES_CLUSTER])
            .output()
    })
    .await??;
    ensure!(
        output.status.success(),
        "hostwatchctl issues failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("hostwatchctl -o json issues printed no JSON")?;
    Ok(listed.as_array().cloned().unwrap_or_default())
}

/// The issue of `rule` on (`resource_kind`, `resource`) in state `state`, as hostwatchctl
/// prints it.
async fn es_issue(
    addr: SocketAddr,
    (rule, resource_kind, resource): (&str, &str, &str),
    state: &str,
) -> Result<Option<serde_json::Value>> {
    Ok(hostwatchctl_issues(addr).await?.into_iter().find(|issue| {
        issue["rule"] == rule
            && issue["resource_kind"] == resource_kind
            && issue["resource"] == resource
            && issue["state"] == state
            && issue["node"] == ""
    }))
}

/// A real agent runs the `elasticsearch` probe against the stand-in Elasticsearch and
/// streams to the real aggregator: each Elasticsearch rule's issue opens when the stand-in
/// starts answering the condition and closes when it stops, as `hostwatchctl issues -o
/// json` shows it, once per cluster although two agents of the cluster run the probe.
#[tokio::test]
async fn the_elasticsearch_rules_open_and_close_end_to_end() -> Result<()> {
    use tests::es_stand_in::{Reply, StandInElasticsearch, bodies};

    let audit_path = format!("/{AUDIT_PATTERN}/_search");
    let mut es = StandInElasticsearch::start(&audit_path).await?;
    // Healthy to begin with: 50 % used, small shards, 1 % of requests 5XX.
    let healthy_storage = bodies::nodes_stats(&[("n1", "es-data-1", 1000, 500)]);
    es.set("/_nodes/stats/fs", vec![Reply::ok(healthy_storage.clone())]);
    es.set(
        "/_stats/docs",
        vec![Reply::ok(bodies::shards_stats(&[("logs", 0, 10, 0)]))],
    );
    es.set(&audit_path, vec![Reply::ok(bodies::audit(1000, 10))]);

    let dir = tests::temp_dir("hostwatch-e2e-es")?;
    let root = dir.path();
    let addr = free_addr()?;
    let log_dir = root.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let aggregator_config = write_file(
        root.join("aggregator.toml"),
        &format!(
            r#"listen = "{addr}"
data_dir = "{}"

# Seconds, not minutes: yellow or red held 1 s.
[rules.es_cluster_health]
open_for = "1s"
tiers = [{{above = 0.5, severity = "warning", open_for = "1s"}},
         {{above = 1.5, severity = "error", open_for = "1s"}}]

# Every sample judged, not one per 12 h (30 min while open).
[rules.es_shard_headroom]
evaluate_every = "0s"
evaluate_every_while_open = "0s"
"#,
            root.join("aggregator-data").display()
        ),
    )?;
    let agent_config = |node: &str| {
        format!(
            r#"state_dir = "{state_dir}"

[identity]
tenant = "{TENANT}"
cluster = "{ES_CLUSTER}"
node = "{node}"

[aggregator]
url = "http://{addr}"

[host]
interval = "1s"

[elasticsearch]
url = "{url}"
timeout = "2s"
health = {{ interval = "500ms" }}
storage = {{ interval = "500ms" }}
shards = {{ interval = "500ms" }}
docs = {{ interval = "500ms" }}
audit = {{ index_pattern = "{AUDIT_PATTERN}", interval = "500ms" }}
"#,
            state_dir = root.join(format!("{node}-state")).display(),
            url = es.url(),
        )
    };
    let _aggregator = start_aggregator("aggregator", &aggregator_config, &log_dir)?;
    wait_for_port(addr, tests::TIMEOUT).await?;
    let mut agents = Vec::new();
    for node in [NODE_A, NODE_B] {
        let config = write_file(root.join(format!("{node}.toml")), &agent_config(node))?;
        agents.push(start_agent(node, &config, &log_dir)?);
    }

    let health = ("es_cluster_health", "", "");
    let storage = ("es_node_storage", "es_node", "es-data-1");
    let headroom = ("es_shard_headroom", "", "");
    let docs = ("es_docs_per_shard", "shard", "logs/0");
    let ratio = ("http_5xx_ratio", "service", AUDIT_PATTERN);

    // Breaching: red (as a 408 health answer with `timed_out`, which still carries its
    // status), 91 % used, 2.1 billion documents in logs/0, 10 % of requests 5XX.
    es.set(
        "/_cluster/health",
        vec![Reply::Json(408, bodies::health_timed_out_red())],
    );
    es.set(
        "/_nodes/stats/fs",
        vec![Reply::ok(bodies::nodes_stats(&[(
            "n1",
            "es-data-1",
            1000,
            90,
        )]))],
    );
    es.set(
        "/_stats/docs",
        vec![Reply::ok(bodies::shards_stats(&[(
            "logs",
            0,
            1_900_000_000,
            200_000_000,
        )]))],
    );
    es.set(&audit_path, vec![Reply::ok(bodies::audit(1000, 100))]);
    // One non-frozen data node (of the stand-in's _cat/nodes) holds 1000 shards at most:
    // 600 open leave 400, under 500.
    es.set(
        "/_cat/indices",
        vec![Reply::ok(
            r#"[{"index": "big", "status": "open", "pri": "600", "rep": "0"}]"#,
        )],
    );
    let mut opened = Vec::new();
    for (subject, severity) in [
        (health, "error"),
        (storage, "error"),
        (headroom, "warning"),
        (docs, "error"),
        (ratio, "error"),
    ] {
        let issue = eventually(&format!("an open {} issue", subject.0), || {
            es_issue(addr, subject, "open")
        })
        .await?;
        ensure!(
            issue["severity"] == severity,
            "{} opened as {issue}",
            subject.0
        );
        eprintln!("{} opened: {issue}", subject.0);
        opened.push(issue);
    }

    // Back to healthy: each closes, with the issue it opened.
    es.set("/_cluster/health", vec![Reply::ok(bodies::HEALTH_GREEN)]);
    es.set("/_nodes/stats/fs", vec![Reply::ok(healthy_storage)]);
    es.set(
        "/_stats/docs",
        vec![Reply::ok(bodies::shards_stats(&[("logs", 0, 10, 0)]))],
    );
    es.set(&audit_path, vec![Reply::ok(bodies::audit(1000, 10))]);
    es.set("/_cat/indices", vec![Reply::ok(bodies::CAT_INDICES)]);
    for (subject, opened) in [health, storage, headroom, docs, ratio]
        .into_iter()
        .zip(&opened)
    {
        let issue = eventually(&format!("the {} issue to close", subject.0), || {
            es_issue(addr, subject, "closed")
        })
        .await?;
        ensure!(
            issue["id"] == opened["id"],
            "{} closed another issue: {issue}",
            subject.0
        );
        eprintln!("{} closed: {issue}", subject.0);
    }

    // Elasticsearch stops listening: every check is refused. es_unreachable opens (once
    // for the cluster, whichever agent's check failed first) and closes when it answers
    // again.
    let unreachable = ("es_unreachable", "", "");
    es.stop().await;
    let issue = eventually("an open es_unreachable issue", || {
        es_issue(addr, unreachable, "open")
    })
    .await?;
    let message = issue["message"].as_str().unwrap_or_default();
    ensure!(
        issue["severity"] == "error" && message.contains("failed: refused"),
        "es_unreachable opened as {issue}"
    );
    eprintln!("es_unreachable opened: {issue}");
    es.resume().await?;
    let closed = eventually("the es_unreachable issue to close", || {
        es_issue(addr, unreachable, "closed")
    })
    .await?;
    ensure!(
        closed["id"] == issue["id"],
        "es_unreachable closed another issue: {closed}"
    );
    eprintln!("es_unreachable closed: {closed}");

    // Two agents ran the probe against one cluster: one issue per condition.
    let all = hostwatchctl_issues(addr).await?;
    for subject in [health, storage, headroom, docs, ratio, unreachable] {
        let n_issues = all
            .iter()
            .filter(|issue| issue["rule"] == subject.0)
            .count();
        ensure!(
            n_issues == 1,
            "{n_issues} {} issues for one condition of one cluster: {all:?}",
            subject.0
        );
    }
    Ok(())
}
