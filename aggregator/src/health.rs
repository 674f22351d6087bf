//! Per-node health events (DESIGN §7, seed 004) for `health` integrations: a node is
//! ERROR while it has an open issue of severity error or critical, WARNING while it has
//! one of severity warning, OK otherwise; `health_description` lists the open issues.
//! A cluster-wide issue (no node) counts for every node of its cluster.
//!
//! `HealthTracker` is the pure part: open issues per node in, statuses and events out.
//! `HealthPublisher` is one task per health integration: it follows the committed events
//! (dispatch's broadcast), sends a node's event at once when its status changes, and
//! every node's event again every interval.
//!
//! Health events do not go through the persistent outbox: they are snapshots of state,
//! not a log, and the next periodic send repeats whatever was lost. A slow broker holds
//! back only its own integration's task; if that task falls behind the broadcast, it
//! re-reads the state from the database (nothing is queued without bound).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Filter;
use crate::events::Event;
use crate::issue::{IssueEventKind, IssueState};
use crate::model::{NodeKey, Severity, Timestamp};
use crate::sink::{Sink, SinkConfig};
use crate::store::StoreError;

/// How often the publisher looks for nodes it has not reported yet.
const DISCOVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthStatus {
    Ok,
    Warning,
    Error,
}

impl HealthStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "OK",
            HealthStatus::Warning => "WARNING",
            HealthStatus::Error => "ERROR",
        }
    }

    fn of(severity: Severity) -> Self {
        match severity {
            Severity::Critical | Severity::Error => HealthStatus::Error,
            Severity::Warning => HealthStatus::Warning,
            Severity::Info => HealthStatus::Ok,
        }
    }
}

/// What the health event says about a node besides its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDescription {
    pub service_instance_id: String,
    pub business_group: String,
    pub cloud_service_name: String,
    pub instance_class: String,
}

/// An open issue, as far as health is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenIssue {
    pub id: String,
    pub tenant: String,
    pub cluster: String,
    /// Empty for a cluster-wide issue.
    pub node: String,
    pub rule: String,
    pub severity: Severity,
    pub message: String,
}

/// Nodes, open issues, and the status last sent per node.
#[derive(Debug, Default)]
pub struct HealthTracker {
    nodes: BTreeMap<NodeKey, NodeDescription>,
    open: HashMap<String, OpenIssue>,
    sent: HashMap<NodeKey, HealthStatus>,
}

impl HealthTracker {
    /// Replaces nodes and open issues with what the database holds.
    pub fn reset(&mut self, nodes: Vec<(NodeKey, NodeDescription)>, open: Vec<OpenIssue>) {
        self.nodes = nodes.into_iter().collect();
        self.open = open
            .into_iter()
            .map(|issue| (issue.id.clone(), issue))
            .collect();
    }

    pub fn knows(&self, node: &NodeKey) -> bool {
        self.nodes.contains_key(node)
    }

    /// Applies a committed event; true when it concerns issues.
    pub fn apply(&mut self, event: &Event) -> bool {
        let Event::Issue(event) = event else {
            return false;
        };
        let issue = &event.issue;
        if event.kind == IssueEventKind::Closed || issue.state == IssueState::Closed {
            self.open.remove(&issue.id);
        } else {
            let subject = &issue.key.subject;
            self.open.insert(
                issue.id.clone(),
                OpenIssue {
                    id: issue.id.clone(),
                    tenant: subject.tenant.clone(),
                    cluster: subject.cluster.clone(),
                    node: subject.node.clone(),
                    rule: issue.key.rule.to_string(),
                    severity: issue.severity,
                    message: issue.message.clone(),
                },
            );
        }
        true
    }

    fn issues_of<'a>(&'a self, node: &'a NodeKey) -> impl Iterator<Item = &'a OpenIssue> + 'a {
        self.open.values().filter(move |issue| {
            issue.tenant == node.tenant
                && issue.cluster == node.cluster
                && (issue.node.is_empty() || issue.node == node.node)
        })
    }

    /// A node's status and description, worst issues first.
    pub fn status(&self, node: &NodeKey) -> (HealthStatus, String) {
        let mut issues: Vec<&OpenIssue> = self.issues_of(node).collect();
        issues.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(&b.rule)));
        let status = issues
            .iter()
            .map(|issue| HealthStatus::of(issue.severity))
            .max()
            .unwrap_or(HealthStatus::Ok);
        let description = if issues.is_empty() {
            "no open issues".to_owned()
        } else {
            issues
                .iter()
                .map(|issue| {
                    format!(
                        "{} ({}): {}",
                        issue.rule,
                        issue.severity.as_str(),
                        issue.message
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        (status, description)
    }

    /// Nodes whose status differs from the one last sent (or never sent).
    pub fn changed(&self) -> Vec<NodeKey> {
        self.nodes
            .keys()
            .filter(|node| self.sent.get(*node) != Some(&self.status(node).0))
            .cloned()
            .collect()
    }

    pub fn nodes(&self) -> Vec<NodeKey> {
        self.nodes.keys().cloned().collect()
    }

    /// The health event for a node (schema `hes-event.schema.json`), recorded as sent.
    pub fn event(&mut self, node: &NodeKey, platform: &str, now: Timestamp) -> Option<Value> {
        let description = self.nodes.get(node)?.clone();
        let (status, text) = self.status(node);
        self.sent.insert(node.clone(), status);
        Some(json!({
            "version": "1.0",
            "timestamp": now.to_rfc3339(),
            "id": uuid::Uuid::new_v4().to_string(),
            "platform": platform,
            "tenant_name": node.tenant,
            "business_group_name": description.business_group,
            "cloud_service_name": description.cloud_service_name,
            "service_instance": {
                "id": description.service_instance_id,
                "name": node.node,
                "instance_class_name": description.instance_class,
            },
            "health_status": status.as_str(),
            "health_description": text,
        }))
    }
}

/// Nodes with what their events say, and the open issues.
pub type Loaded = (Vec<(NodeKey, NodeDescription)>, Vec<OpenIssue>);

/// Nodes and open issues as committed.
pub fn load(connection: &Connection) -> Result<Loaded, StoreError> {
    let mut nodes = Vec::new();
    let mut statement =
        connection.prepare_cached("SELECT tenant, cluster, node, identity FROM nodes")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let identity: String = row.get(3)?;
        let identity: Value = serde_json::from_str(&identity).unwrap_or(Value::Null);
        let field = |name: &str| identity[name].as_str().unwrap_or_default().to_owned();
        nodes.push((
            NodeKey {
                tenant: row.get(0)?,
                cluster: row.get(1)?,
                node: row.get(2)?,
            },
            NodeDescription {
                service_instance_id: field("service_instance_id"),
                business_group: field("business_group"),
                cloud_service_name: field("cloud_service_name"),
                instance_class: field("instance_class"),
            },
        ));
    }
    let mut open = Vec::new();
    let mut statement = connection.prepare_cached(
        "SELECT id, tenant, cluster, node, rule, severity, message FROM issues WHERE state = 'open'",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let severity: String = row.get(5)?;
        open.push(OpenIssue {
            id: row.get(0)?,
            tenant: row.get(1)?,
            cluster: row.get(2)?,
            node: row.get(3)?,
            rule: row.get(4)?,
            severity: Severity::parse(&severity).unwrap_or(Severity::Warning),
            message: row.get(6)?,
        });
    }
    Ok((nodes, open))
}

/// One health integration's task.
#[derive(Debug)]
pub(crate) struct HealthPublisher {
    pub(crate) integration: String,
    pub(crate) filter: Filter,
    pub(crate) sink: SinkConfig,
    pub(crate) timeout: Duration,
    pub(crate) interval: Duration,
    pub(crate) platform: String,
    pub(crate) db_path: PathBuf,
    pub(crate) events: broadcast::Receiver<Arc<Event>>,
    pub(crate) stop: CancellationToken,
}

impl HealthPublisher {
    pub(crate) async fn run(mut self) {
        let mut sink = match self.sink.build(self.timeout) {
            Ok(sink) => sink,
            Err(error) => {
                tracing::error!(integration = %self.integration, %error, "cannot build the sink; no health events");
                return;
            }
        };
        let db_path = self.db_path.clone();
        let connection = match tokio::task::spawn_blocking(move || Connection::open(db_path)).await
        {
            Ok(Ok(connection)) => Arc::new(std::sync::Mutex::new(connection)),
            _ => {
                tracing::error!(integration = %self.integration, "cannot open the database; no health events");
                return;
            }
        };
        let mut tracker = HealthTracker::default();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut discovery = tokio::time::interval(DISCOVERY);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let send: Vec<NodeKey> = tokio::select! {
                () = self.stop.cancelled() => return,
                _ = ticker.tick() => {
                    self.resync(&connection, &mut tracker).await;
                    tracker.nodes()
                }
                _ = discovery.tick() => {
                    // New nodes get their first event now, not at the next interval.
                    self.resync(&connection, &mut tracker).await;
                    tracker.changed()
                }
                received = self.events.recv() => match received {
                    Ok(event) => {
                        let unknown = event.node_key_unknown_to(&tracker);
                        if unknown {
                            self.resync(&connection, &mut tracker).await;
                        }
                        if !tracker.apply(&event) && !unknown {
                            continue;
                        }
                        tracker.changed()
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.resync(&connection, &mut tracker).await;
                        tracker.changed()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            for node in send {
                if !self.filter.admits_place(&node.tenant, &node.cluster) {
                    continue;
                }
                let Some(event) = tracker.event(&node, &self.platform, Timestamp::now()) else {
                    continue;
                };
                let sent = tokio::time::timeout(self.timeout, sink.deliver(&event)).await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(integration = %self.integration, node = %node, %error, "health event not sent; the next interval repeats it");
                    }
                    Err(_) => {
                        tracing::warn!(integration = %self.integration, node = %node, "health event timed out; the next interval repeats it");
                    }
                }
            }
        }
    }

    async fn resync(
        &self,
        connection: &Arc<std::sync::Mutex<Connection>>,
        tracker: &mut HealthTracker,
    ) {
        let connection = Arc::clone(connection);
        let loaded = tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            load(&connection)
        })
        .await;
        match loaded {
            Ok(Ok((nodes, open))) => tracker.reset(nodes, open),
            Ok(Err(error)) => {
                tracing::error!(integration = %self.integration, %error, "cannot read nodes and issues")
            }
            Err(error) => {
                tracing::error!(integration = %self.integration, %error, "cannot read nodes and issues")
            }
        }
    }
}

trait NodeOfEvent {
    fn node_key_unknown_to(&self, tracker: &HealthTracker) -> bool;
}

impl NodeOfEvent for Event {
    /// An issue event about a node the tracker has not seen yet (it joined since the
    /// last read of the database).
    fn node_key_unknown_to(&self, tracker: &HealthTracker) -> bool {
        match self {
            Event::Issue(event) if !event.issue.key.subject.node.is_empty() => {
                let subject = &event.issue.key.subject;
                !tracker.knows(&NodeKey {
                    tenant: subject.tenant.clone(),
                    cluster: subject.cluster.clone(),
                    node: subject.node.clone(),
                })
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
