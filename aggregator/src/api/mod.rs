//! The `Operator` gRPC service: nodes and clusters from the monitor's live state, issues
//! and their events from the store, and a live feed of events from dispatch.
//!
//! Wire types stop here: this module converts domain values to `proto::v1` and back,
//! and owns no state of its own.
//!
//! Every call starts from its `auth::Caller` (attached by the `auth::OperatorAuth`
//! interceptor): a tenant's token is answered from its tenant only, whatever the request
//! asks, and only admins publish.
//!
//! Lists are paged (`page_size`, `page_token`): an answer holds at most `MAX_PAGE` items
//! and about `PAGE_BYTES`, so none reaches the gRPC message limit however large the
//! items (a node's labels) or their number. Page tokens are opaque to clients: the hex
//! of the last item's sort key.

pub mod integrations;

use std::collections::BTreeMap;
use std::pin::Pin;

use proto::v1 as wire;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller};
use crate::dispatch::Dispatch;
use crate::engine::{Engine, NodeState};
use crate::events::{Event, EventSource, Notification};
use crate::explain::{Evidence, Explanation};
use crate::issue::{Issue, IssueEventKind, IssueState};
use crate::model::{GossipReading, HostReading, NodeKey, Severity, Timestamp};
use crate::monitor::{Monitor, MonitorError};
use crate::store::{IssueFilter, Store, StoreError, StoredIssueEvent, Write};

#[derive(Debug, Clone)]
pub struct OperatorService {
    monitor: Monitor,
    store: Store,
    dispatch: Dispatch,
    stop: CancellationToken,
}

impl OperatorService {
    pub fn new(
        monitor: Monitor,
        store: Store,
        dispatch: Dispatch,
        stop: CancellationToken,
    ) -> Self {
        Self {
            monitor,
            store,
            dispatch,
            stop,
        }
    }
}

/// Events buffered towards one watcher.
const WATCHER_BUFFER: usize = 256;

/// Items per page at most, and when the request does not say.
const MAX_PAGE: u32 = 1000;
/// An answer's encoded size at most (beyond its first item): half of the 4 MiB that
/// gRPC clients accept by default.
const PAGE_BYTES: usize = 2 * 1024 * 1024;

/// The page size a request asks for: `page_size`, else the older `limit`, else the
/// default; never above `MAX_PAGE`.
fn page_size(page_size: u32, limit: u32) -> u32 {
    match (page_size, limit) {
        (0, 0) => MAX_PAGE,
        (0, limit) => limit.min(MAX_PAGE),
        (page_size, _) => page_size.min(MAX_PAGE),
    }
}

/// The longest prefix of `items` whose encoding stays within `PAGE_BYTES` (at least one
/// item), and whether any were left out.
pub(crate) fn page_by_bytes<T: prost::Message>(mut items: Vec<T>) -> (Vec<T>, bool) {
    let mut used = 0_usize;
    for (index, item) in items.iter().enumerate() {
        // The field's tag and length prefix: a few bytes more per item.
        used = used.saturating_add(item.encoded_len() + 8);
        if index > 0 && used > PAGE_BYTES {
            items.truncate(index);
            return (items, true);
        }
    }
    (items, false)
}

/// A page token: the hex of the last item's sort key as JSON.
fn page_token<T: serde::Serialize>(key: &T) -> String {
    hex::encode(serde_json::to_vec(key).unwrap_or_default())
}

/// The sort key a page token names; `None` for the first page.
fn from_page_token<T: serde::de::DeserializeOwned>(token: &str) -> Result<Option<T>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    hex::decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("page_token: not one this server gave"))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<wire::Event, Status>> + Send>>;

#[tonic::async_trait]
impl wire::operator_server::Operator for OperatorService {
    async fn list_clusters(
        &self,
        request: Request<wire::ListClustersRequest>,
    ) -> Result<Response<wire::ListClustersResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        check_name("tenant", &request.tenant)?;
        let tenant = tenant_filter(&caller, &request.tenant)?;
        let clusters = self
            .monitor
            .query(move |engine| clusters(engine, &tenant))
            .await
            .map_err(monitor_status)?;
        Ok(Response::new(wire::ListClustersResponse { clusters }))
    }

    async fn list_nodes(
        &self,
        request: Request<wire::ListNodesRequest>,
    ) -> Result<Response<wire::ListNodesResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut filter = request.into_inner();
        check_name("tenant", &filter.tenant)?;
        check_name("cluster", &filter.cluster)?;
        filter.tenant = tenant_filter(&caller, &filter.tenant)?;
        let after = from_page_token::<(String, String, String)>(&filter.page_token)?.map(
            |(tenant, cluster, node)| NodeKey {
                tenant,
                cluster,
                node,
            },
        );
        let page_size = page_size(filter.page_size, 0) as usize;
        let (nodes, last) = self
            .monitor
            .query(move |engine| {
                let health = node_health(engine);
                let mut page = Vec::new();
                let mut used = 0_usize;
                let mut last = None;
                let remaining = engine
                    .nodes()
                    .filter(|node| after.as_ref().is_none_or(|after| node.key > *after))
                    .filter(|node| matches(&filter.tenant, &node.key.tenant))
                    .filter(|node| matches(&filter.cluster, &node.key.cluster));
                // Returning the last key sent says there is more, and where it starts.
                for node in remaining {
                    if page.len() == page_size {
                        return (page, last);
                    }
                    let wire_node = node_to_wire(node, health.get(&node.key));
                    used = used.saturating_add(prost::Message::encoded_len(&wire_node) + 8);
                    if !page.is_empty() && used > PAGE_BYTES {
                        return (page, last);
                    }
                    last = Some(node.key.clone());
                    page.push(wire_node);
                }
                (page, None)
            })
            .await
            .map_err(monitor_status)?;
        let next_page_token = last.map_or_else(String::new, |key| {
            page_token(&(key.tenant, key.cluster, key.node))
        });
        Ok(Response::new(wire::ListNodesResponse {
            nodes,
            next_page_token,
        }))
    }

    async fn get_node(
        &self,
        request: Request<wire::GetNodeRequest>,
    ) -> Result<Response<wire::Node>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        check_name("tenant", &request.tenant)?;
        check_name("cluster", &request.cluster)?;
        check_name("node", &request.node)?;
        tenant_filter(&caller, &request.tenant)?;
        let key = NodeKey {
            tenant: request.tenant,
            cluster: request.cluster,
            node: request.node,
        };
        let wanted = key.clone();
        let node = self
            .monitor
            .query(move |engine| {
                let health = node_health(engine);
                engine
                    .node(&wanted)
                    .map(|node| node_to_wire(node, health.get(&node.key)))
            })
            .await
            .map_err(monitor_status)?;
        node.map(Response::new)
            .ok_or_else(|| Status::not_found(format!("node {key}: not known")))
    }

    async fn list_issues(
        &self,
        request: Request<wire::ListIssuesRequest>,
    ) -> Result<Response<wire::ListIssuesResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        check_name("tenant", &request.tenant)?;
        check_name("cluster", &request.cluster)?;
        check_name("node", &request.node)?;
        let tenant = tenant_filter(&caller, &request.tenant)?;
        let state = match request.state() {
            wire::IssueState::Unspecified => None,
            wire::IssueState::Open => Some(IssueState::Open),
            wire::IssueState::Closed => Some(IssueState::Closed),
        };
        let page_size = page_size(request.page_size, request.limit);
        let filter = IssueFilter {
            state,
            min_severity: severity_from_wire(request.min_severity()),
            tenant,
            cluster: request.cluster,
            node: request.node,
            rule: request.rule,
            limit: page_size,
            before: from_page_token::<(i64, String)>(&request.page_token)?,
        };
        let issues = self.store.list_issues(filter).await.map_err(store_status)?;
        let full = issues.len() == page_size as usize;
        let (issues, cut) = page_by_bytes(issues.iter().map(issue_to_wire).collect());
        let next_page_token = if full || cut {
            issues.last().map_or_else(String::new, |issue| {
                page_token(&(issue.opened_unix_ms, &issue.id))
            })
        } else {
            String::new()
        };
        Ok(Response::new(wire::ListIssuesResponse {
            issues,
            next_page_token,
        }))
    }

    async fn get_issue(
        &self,
        request: Request<wire::GetIssueRequest>,
    ) -> Result<Response<wire::GetIssueResponse>, Status> {
        let caller = auth::caller(&request)?;
        let id = request.into_inner().id;
        let found = self
            .store
            .get_issue(id.clone())
            .await
            .map_err(store_status)?;
        // Another tenant's issue is as unknown as one that does not exist.
        let (issue, events) = found
            .filter(|(issue, _)| caller.sees(&issue.key.subject.tenant))
            .ok_or_else(|| Status::not_found(format!("issue {id}: not known")))?;
        let events = events
            .iter()
            .map(|event| stored_event_to_wire(&issue, event))
            .collect();
        Ok(Response::new(wire::GetIssueResponse {
            issue: Some(issue_to_wire(&issue)),
            events,
            explanation: issue.explanation.as_deref().map(explanation_to_wire),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<wire::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = auth::caller(&request)?;
        let mut filter = request.into_inner();
        check_name("tenant", &filter.tenant)?;
        check_name("cluster", &filter.cluster)?;
        filter.tenant = tenant_filter(&caller, &filter.tenant)?;
        let sources: Vec<EventSource> = filter
            .sources()
            .filter_map(|source| match source {
                wire::EventSource::Issues => Some(EventSource::Issues),
                wire::EventSource::Notifications => Some(EventSource::Notifications),
                _ => None,
            })
            .collect();
        let min_severity = severity_from_wire(filter.min_severity());
        let admits = move |event: &Event| {
            matches(&filter.tenant, event.tenant())
                && matches(&filter.cluster, event.cluster())
                && (sources.is_empty() || sources.contains(&event.source()))
                && min_severity.is_none_or(|min| event.severity() >= min)
        };
        let mut feed = self.dispatch.subscribe();
        let (watcher, stream) = mpsc::channel(WATCHER_BUFFER);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    () = stop.cancelled() => break,
                    () = watcher.closed() => break,
                    received = feed.recv() => received,
                };
                let sent = match received {
                    Ok(event) if admits(&event) => watcher.send(Ok(event_to_wire(&event))).await,
                    Ok(_) => Ok(()),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let lost = Status::data_loss(format!(
                            "this watcher fell behind and missed {missed} events; watch again"
                        ));
                        let _ = watcher.send(Err(lost)).await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        let stream = ReceiverStream::new(stream);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn close_issue(
        &self,
        request: Request<wire::CloseIssueRequest>,
    ) -> Result<Response<wire::CloseIssueResponse>, Status> {
        let caller = auth::caller(&request)?;
        self.close(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn publish_notification(
        &self,
        request: Request<wire::PublishNotificationRequest>,
    ) -> Result<Response<wire::PublishNotificationResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_admin()?;
        let request = request.into_inner();
        check_name("tenant", &request.tenant)?;
        check_name("cluster", &request.cluster)?;
        check_name("node", &request.node)?;
        caller.require_tenant(&request.tenant)?;
        let mut missing = Vec::new();
        for (field, value) in [
            ("tenant", &request.tenant),
            ("cluster", &request.cluster),
            ("title", &request.title),
        ] {
            if value.trim().is_empty() {
                missing.push(field);
            }
        }
        if !missing.is_empty() {
            return Err(Status::invalid_argument(format!(
                "notification: {} must not be empty",
                missing.join(", ")
            )));
        }
        let severity = severity_from_wire(request.severity()).unwrap_or(Severity::Info);
        let now = Timestamp::now();
        let notification = Notification {
            id: crate::issue::new_id(now),
            time: now,
            tenant: request.tenant,
            cluster: request.cluster,
            node: request.node,
            severity,
            title: request.title,
            text: request.text,
            origin: format!("operator {}", caller.name),
        };
        let event = Event::Notification(notification.clone());
        let wire_event = event_to_wire(&event);
        // Persisted first; the store hands it to dispatch after the commit.
        let (done, committed) = tokio::sync::oneshot::channel();
        self.store
            .write(Write {
                nodes: Vec::new(),
                events: vec![event],
                done: Some(Box::new(move |result| {
                    let _ = done.send(result.map_err(|error| error.to_string()));
                })),
            })
            .await
            .map_err(store_status)?;
        committed
            .await
            .map_err(|_| Status::unavailable("the store stopped before the commit"))?
            .map_err(|error| Status::internal(format!("not persisted: {error}")))?;
        tracing::info!(notification = %notification.id, origin = %notification.origin, "notification published");
        let Some(wire::event::Payload::Notification(notification)) = wire_event.payload else {
            return Err(Status::internal(
                "a notification became another kind of event",
            ));
        };
        Ok(Response::new(wire::PublishNotificationResponse {
            notification: Some(notification),
        }))
    }
}

impl OperatorService {
    /// `CloseIssue`: admins only; another tenant's issue is as unknown as a missing one.
    async fn close(
        &self,
        caller: &Caller,
        request: wire::CloseIssueRequest,
    ) -> Result<wire::CloseIssueResponse, Status> {
        caller.require_admin()?;
        let wire::CloseIssueRequest { id, reason } = request;
        let reason = reason.trim().to_owned();
        if reason.is_empty() {
            return Err(Status::invalid_argument(
                "close issue: reason must not be empty",
            ));
        }
        let found = self
            .store
            .get_issue(id.clone())
            .await
            .map_err(store_status)?;
        let (issue, _) = found
            .filter(|(issue, _)| caller.sees(&issue.key.subject.tenant))
            .ok_or_else(|| Status::not_found(format!("issue {id}: not known")))?;
        if issue.state == IssueState::Closed {
            return Err(Status::failed_precondition(format!(
                "issue {id}: already closed"
            )));
        }
        let closed = self
            .monitor
            .close_issue(id, caller.name.clone(), reason)
            .await
            .map_err(|error| match error {
                MonitorError::IssueNotOpen(_) => Status::failed_precondition(error.to_string()),
                MonitorError::Stopped | MonitorError::Engine(_) | MonitorError::Store(_) => {
                    monitor_status(error)
                }
            })?;
        tracing::info!(issue = %closed.id, rule = %closed.key.rule, operator = %caller.name, "issue closed by an operator");
        Ok(wire::CloseIssueResponse {
            issue: Some(issue_to_wire(&closed)),
        })
    }
}

/// The tenant a request is answered from: the caller's own when its token is bound to one
/// (an empty filter means "mine"); naming another tenant is refused.
fn tenant_filter(caller: &Caller, requested: &str) -> Result<String, Status> {
    caller.tenant_filter(requested).ok_or_else(|| {
        Status::permission_denied(format!(
            "token {:?} may not see tenant {requested:?}",
            caller.name
        ))
    })
}

/// INVALID_ARGUMENT when `value` is not a name the protocol allows (`proto::names`), as
/// `tenant: ".." starts with '.'; …`. Empty passes: in a filter it means "any", and where
/// a name is required the caller says so. Checked before anything else, so a name that
/// cannot exist is refused as such rather than answered as "nothing found".
fn check_name(field: &str, value: &str) -> Result<(), Status> {
    match proto::names::check(value) {
        Some(problem) if !value.is_empty() => {
            Err(Status::invalid_argument(format!("{field}: {problem}")))
        }
        _ => Ok(()),
    }
}

fn matches(filter: &str, value: &str) -> bool {
    filter.is_empty() || filter == value
}

/// Per node: how many issues are open on it (its own and its mounts') and the worst
/// severity among them.
fn node_health(engine: &Engine) -> BTreeMap<NodeKey, (u32, Option<Severity>)> {
    let mut health: BTreeMap<NodeKey, (u32, Option<Severity>)> = BTreeMap::new();
    for issue in engine.open_issues() {
        if let Some(key) = issue.key.subject.node_key() {
            let entry = health.entry(key).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(Some(issue.severity));
        }
    }
    health
}

fn health_to_wire(worst: Option<Severity>) -> wire::HealthStatus {
    match worst {
        None | Some(Severity::Info) => wire::HealthStatus::Ok,
        Some(Severity::Warning) => wire::HealthStatus::Warning,
        Some(Severity::Error | Severity::Critical) => wire::HealthStatus::Error,
    }
}

fn clusters(engine: &Engine, tenant: &str) -> Vec<wire::Cluster> {
    let health = node_health(engine);
    let mut clusters: BTreeMap<(String, String), wire::Cluster> = BTreeMap::new();
    let mut worst: BTreeMap<(String, String), Option<Severity>> = BTreeMap::new();
    let now = Timestamp::now();
    for node in engine
        .nodes()
        .filter(|node| matches(tenant, &node.key.tenant))
    {
        let id = (node.key.tenant.clone(), node.key.cluster.clone());
        let cluster = clusters.entry(id.clone()).or_insert_with(|| wire::Cluster {
            tenant: id.0.clone(),
            cluster: id.1.clone(),
            ..Default::default()
        });
        cluster.node_count += 1;
        let reporting = node
            .last_seen
            .is_some_and(|seen| now.since(seen) < node.host_interval() * 3);
        cluster.nodes_reporting += u32::from(reporting);
        if let Some((open, severity)) = health.get(&node.key) {
            cluster.open_issues += open;
            let entry = worst.entry(id).or_default();
            *entry = (*entry).max(*severity);
        }
    }
    for issue in engine
        .open_issues()
        .filter(|issue| issue.key.subject.node.is_empty())
    {
        let id = (
            issue.key.subject.tenant.clone(),
            issue.key.subject.cluster.clone(),
        );
        if let Some(cluster) = clusters.get_mut(&id) {
            cluster.open_issues += 1;
            let entry = worst.entry(id).or_default();
            *entry = (*entry).max(Some(issue.severity));
        }
    }
    clusters
        .into_iter()
        .map(|(id, mut cluster)| {
            cluster.health = health_to_wire(worst.get(&id).copied().flatten()) as i32;
            cluster
        })
        .collect()
}

fn node_to_wire(node: &NodeState, health: Option<&(u32, Option<Severity>)>) -> wire::Node {
    let (open_issues, worst) = health.copied().unwrap_or_default();
    wire::Node {
        identity: Some(wire::NodeIdentity {
            tenant: node.key.tenant.clone(),
            cluster: node.key.cluster.clone(),
            node: node.key.node.clone(),
            service_instance_id: node.identity.service_instance_id.clone(),
            business_group: node.identity.business_group.clone(),
            cloud_service_name: node.identity.cloud_service_name.clone(),
            instance_class: node.identity.instance_class.clone(),
            labels: node.identity.labels.clone().into_iter().collect(),
        }),
        agent_version: node.agent_version.clone(),
        last_seen_unix_ms: node.last_seen.map_or(0, Timestamp::as_unix_ms),
        connected: node.connections > 0,
        latest_host: node
            .latest_host
            .as_ref()
            .map(|(_, host)| host_to_wire(host)),
        latest_host_unix_ms: node
            .latest_host
            .as_ref()
            .map_or(0, |(time, _)| time.as_unix_ms()),
        latest_gossip: node
            .latest_gossip
            .as_ref()
            .map(|(_, gossip)| gossip_to_wire(gossip)),
        probes: node
            .probes
            .iter()
            .map(|probe| wire::ProbeInfo {
                name: probe.name.clone(),
                interval_ms: u64::try_from(probe.interval.as_millis()).unwrap_or(u64::MAX),
            })
            .collect(),
        dropped_batches_total: node.dropped_batches_total,
        rejected_samples_total: node.rejected_samples_total,
        applied_seq: node.applied_seq,
        open_issues,
        health: health_to_wire(worst) as i32,
        batches_applied_total: node.batches_applied_total,
        duplicate_batches_total: node.duplicate_batches_total,
        skipped_seqs_total: node.skipped_seqs_total,
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn host_to_wire(host: &HostReading) -> wire::HostSample {
    wire::HostSample {
        load1: host.load1,
        load5: host.load5,
        load15: host.load15,
        physical_cores: host.physical_cores,
        logical_cores: host.logical_cores,
        physical_cores_estimated: host.physical_cores_estimated,
        memory_total_bytes: signed(host.memory_total_bytes),
        memory_available_bytes: signed(host.memory_available_bytes),
        memory_used_percent: host.memory_used_percent,
        disks: host
            .disks
            .iter()
            .map(|disk| wire::DiskUsage {
                mount: disk.mount.clone(),
                device: disk.device.clone(),
                fs_type: disk.fs_type.clone(),
                total_bytes: signed(disk.total_bytes),
                available_bytes: signed(disk.available_bytes),
                used_percent: disk.used_percent,
                inodes_total: signed(disk.inodes_total),
                inodes_free: signed(disk.inodes_free),
            })
            .collect(),
    }
}

fn gossip_to_wire(gossip: &GossipReading) -> wire::GossipSample {
    let (ok, error, members) = match &gossip.outcome {
        Ok(members) => (true, String::new(), members.clone()),
        Err(error) => (false, error.clone(), Vec::new()),
    };
    wire::GossipSample {
        adapter: gossip.adapter.clone(),
        ok,
        error,
        members: members
            .into_iter()
            .map(|member| wire::GossipMember {
                instance_id: member.instance_id,
                state: member.state,
                alive: member.alive,
                endpoint: member.endpoint,
                epoch_number: member.epoch_number,
            })
            .collect(),
        cluster_status: gossip.cluster_status.clone(),
        leader_id: gossip.leader_id.clone(),
    }
}

fn severity_to_wire(severity: Severity) -> wire::Severity {
    match severity {
        Severity::Info => wire::Severity::Info,
        Severity::Warning => wire::Severity::Warning,
        Severity::Error => wire::Severity::Error,
        Severity::Critical => wire::Severity::Critical,
    }
}

fn severity_from_wire(severity: wire::Severity) -> Option<Severity> {
    match severity {
        wire::Severity::Unspecified => None,
        wire::Severity::Info => Some(Severity::Info),
        wire::Severity::Warning => Some(Severity::Warning),
        wire::Severity::Error => Some(Severity::Error),
        wire::Severity::Critical => Some(Severity::Critical),
    }
}

fn kind_to_wire(kind: IssueEventKind) -> (wire::IssueEventKind, String) {
    match kind {
        IssueEventKind::Opened => (wire::IssueEventKind::Opened, String::new()),
        IssueEventKind::Updated(reason) => {
            (wire::IssueEventKind::Updated, reason.as_str().to_owned())
        }
        IssueEventKind::Closed => (wire::IssueEventKind::Closed, String::new()),
    }
}

fn issue_to_wire(issue: &Issue) -> wire::Issue {
    let subject = &issue.key.subject;
    wire::Issue {
        id: issue.id.clone(),
        rule: issue.key.rule.as_str().to_owned(),
        tenant: subject.tenant.clone(),
        cluster: subject.cluster.clone(),
        node: subject.node.clone(),
        mount: subject.mount_name().unwrap_or_default().to_owned(),
        resource_kind: subject
            .resource
            .as_ref()
            .map_or("", |resource| resource.kind.as_str())
            .to_owned(),
        resource: subject
            .resource
            .as_ref()
            .map_or(String::new(), |resource| resource.name.clone()),
        severity: severity_to_wire(issue.severity) as i32,
        state: match issue.state {
            IssueState::Open => wire::IssueState::Open,
            IssueState::Closed => wire::IssueState::Closed,
        } as i32,
        opened_unix_ms: issue.opened_at.as_unix_ms(),
        closed_unix_ms: issue.closed_at.map_or(0, Timestamp::as_unix_ms),
        value: issue.value,
        threshold: issue.threshold,
        message: issue.message.clone(),
        remedy: issue.remedy.clone(),
        updated_unix_ms: issue.updated_at.as_unix_ms(),
    }
}

fn explanation_to_wire(explanation: &Explanation) -> wire::Explanation {
    wire::Explanation {
        opened: explanation.opened.as_ref().map(evidence_to_wire),
        closed: explanation.closed.as_ref().map(evidence_to_wire),
    }
}

fn evidence_to_wire(evidence: &Evidence) -> wire::Evidence {
    let condition = &evidence.condition;
    let window = &evidence.window;
    wire::Evidence {
        rule: evidence.rule.clone(),
        decided_unix_ms: evidence.decided_at_ms,
        severity: severity_to_wire(evidence.severity) as i32,
        measured: evidence.measured.clone(),
        detail: evidence.detail.clone(),
        condition: Some(wire::RuleCondition {
            text: condition.text.clone(),
            comparator: condition.comparator.clone(),
            threshold: condition.threshold,
            unit: condition.unit.clone(),
            tiers: condition
                .tiers
                .iter()
                .map(|tier| wire::SeverityTier {
                    severity: severity_to_wire(tier.severity) as i32,
                    above: tier.above,
                })
                .collect(),
            tier_threshold: condition.tier_threshold,
        }),
        window: Some(wire::EvidenceWindow {
            open_for_ms: window.open_for_ms,
            close_for_ms: window.close_for_ms,
            from_unix_ms: window.from_ms,
            to_unix_ms: window.to_ms,
            clock: window.clock.clone(),
        }),
        samples: evidence
            .samples
            .iter()
            .map(|sample| wire::DecidingSample {
                time_unix_ms: sample.time_ms,
                value: sample.value,
            })
            .collect(),
        samples_elided: evidence.samples_elided,
        silence: evidence
            .silence
            .as_ref()
            .map(|silence| wire::SilenceEvidence {
                silent_since_unix_ms: silence.silent_since_ms,
                silent_for_ms: silence.silent_for_ms,
                interval_ms: silence.interval_ms,
                missed_intervals: silence.missed_intervals,
                allowance_ms: silence.allowance_ms,
                escalate_after_ms: silence.escalate_after_ms,
            }),
        nodes: evidence
            .nodes
            .iter()
            .map(|node| wire::NodeEvidence {
                node: node.node.clone(),
                outcome: node.outcome.clone(),
                error: node.error.clone(),
                members: node
                    .members
                    .iter()
                    .map(|member| wire::NormalizedMember {
                        id: member.id.clone(),
                        state: member.state.clone(),
                        alive: member.alive,
                    })
                    .collect(),
                leaders: node.leaders.clone(),
            })
            .collect(),
        nodes_elided: evidence.nodes_elided,
    }
}

fn stored_event_to_wire(issue: &Issue, event: &StoredIssueEvent) -> wire::IssueEvent {
    let (kind, reason) = kind_to_wire(event.kind);
    wire::IssueEvent {
        id: event.id.clone(),
        issue_id: issue.id.clone(),
        kind: kind as i32,
        time_unix_ms: event.time.as_unix_ms(),
        rule: issue.key.rule.as_str().to_owned(),
        severity: severity_to_wire(event.severity) as i32,
        value: event.value,
        threshold: event.threshold,
        message: event.message.clone(),
        remedy: event.remedy.clone(),
        reason,
    }
}

fn event_to_wire(event: &Event) -> wire::Event {
    let (source, payload) = match event {
        Event::Issue(issue_event) => {
            let issue = &issue_event.issue;
            let (kind, reason) = kind_to_wire(issue_event.kind);
            let wire_event = wire::IssueEvent {
                id: issue_event.id.clone(),
                issue_id: issue.id.clone(),
                kind: kind as i32,
                time_unix_ms: issue_event.time.as_unix_ms(),
                rule: issue.key.rule.as_str().to_owned(),
                severity: severity_to_wire(issue.severity) as i32,
                value: issue.value,
                threshold: issue.threshold,
                message: issue.message.clone(),
                remedy: issue.remedy.clone(),
                reason,
            };
            (
                wire::EventSource::Issues,
                wire::event::Payload::Issue(wire::IssueEventPayload {
                    event: Some(wire_event),
                    issue: Some(issue_to_wire(issue)),
                }),
            )
        }
        Event::Notification(notification) => (
            wire::EventSource::Notifications,
            wire::event::Payload::Notification(wire::Notification {
                id: notification.id.clone(),
                tenant: notification.tenant.clone(),
                cluster: notification.cluster.clone(),
                node: notification.node.clone(),
                severity: severity_to_wire(notification.severity) as i32,
                title: notification.title.clone(),
                text: notification.text.clone(),
                time_unix_ms: notification.time.as_unix_ms(),
                origin: notification.origin.clone(),
            }),
        ),
    };
    wire::Event {
        id: event.id().to_owned(),
        time_unix_ms: event.time().as_unix_ms(),
        tenant: event.tenant().to_owned(),
        cluster: event.cluster().to_owned(),
        node: event.node().to_owned(),
        source: source as i32,
        payload: Some(payload),
    }
}

fn monitor_status(error: MonitorError) -> Status {
    Status::unavailable(error.to_string())
}

fn store_status(error: StoreError) -> Status {
    Status::internal(error.to_string())
}
