//! The aggregator's state and decisions, without I/O: what it knows of every node, the
//! rules' windows, and the open issues. Samples and the passing of time go in; events
//! come out.
//!
//! `Engine` is driven by `monitor`, which owns it on one task, persists what it returns
//! and acknowledges batches. Keeping the whole decision path pure means the rule engine
//! is tested as timelines with a fake clock (see `engine/tests.rs`): every rule, every
//! edge of "consistently", restarts included.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::events::{Event, Notification};
use crate::explain::{self, RunTrail};
use crate::issue::{Condition, Finding, Issue, IssueBook, IssueEvent, IssueEventKind, IssueKey};
use crate::model::{
    EsCheck, EsResult, GossipReading, HostReading, NodeIdentity, NodeKey, Probe, Reading,
    ResourceRef, Sample, Severity, Subject, Timestamp,
};
use crate::rules::cluster_consensus::{self, ConsensusWindow, NodeView, Observed};
use crate::rules::threshold::{self, Measurement};
use crate::rules::{Describe, Metric, RuleId, RulesConfig, Scope, Unlisted};
use crate::rules::{http_5xx_ratio, node_silent};
use crate::window::ConditionWindow;

/// The host interval assumed for a node whose Hello named none (the agent's default).
pub const DEFAULT_HOST_INTERVAL: Duration = Duration::from_secs(15);
/// The gossip interval assumed for a node whose Hello named none (DESIGN §4).
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_secs(30);

/// Everything the aggregator knows of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub key: NodeKey,
    pub identity: NodeIdentity,
    pub agent_version: String,
    pub probes: Vec<Probe>,
    /// The agent's seq counter identity; dedup restarts when it changes.
    pub seq_epoch: String,
    pub applied_seq: u64,
    pub first_seen: Timestamp,
    /// When a batch last arrived (aggregator clock).
    pub last_seen: Option<Timestamp>,
    /// Streams open from this node right now.
    pub connections: u32,
    /// The newest host sample and gossip view, with the agent's time.
    pub latest_host: Option<(Timestamp, HostReading)>,
    pub latest_gossip: Option<(Timestamp, GossipReading)>,
    /// The agent's time of the newest result of each Elasticsearch check
    /// (by `EsCheck::index`).
    pub latest_es: [Option<Timestamp>; EsCheck::COUNT],
    /// Whether the node's latest audit count was partial (`http_5xx_ratio::partial_count`),
    /// so that a partial count is reported once, when it starts.
    pub audit_partial: bool,
    pub dropped_batches_total: u64,
    /// Samples rejected since the aggregator started.
    pub rejected_samples_total: u64,
    /// Batches applied (each seq once), replays ignored, and seqs jumped over.
    pub batches_applied_total: u64,
    pub duplicate_batches_total: u64,
    pub skipped_seqs_total: u64,
}

impl NodeState {
    fn new(key: NodeKey, now: Timestamp) -> Self {
        Self {
            key,
            identity: NodeIdentity::default(),
            agent_version: String::new(),
            probes: Vec::new(),
            seq_epoch: String::new(),
            applied_seq: 0,
            first_seen: now,
            last_seen: None,
            connections: 0,
            latest_host: None,
            latest_gossip: None,
            latest_es: [None; EsCheck::COUNT],
            audit_partial: false,
            dropped_batches_total: 0,
            rejected_samples_total: 0,
            batches_applied_total: 0,
            duplicate_batches_total: 0,
            skipped_seqs_total: 0,
        }
    }

    /// How often the node's agent samples the host.
    pub fn host_interval(&self) -> Duration {
        self.probes
            .iter()
            .find(|probe| probe.name == "host" && !probe.interval.is_zero())
            .map_or(DEFAULT_HOST_INTERVAL, |probe| probe.interval)
    }

    /// How often the node's agent takes samples like `reading`: the interval of the
    /// probe that makes them, which sets how far apart two of them may be in a run.
    fn interval_of(&self, reading: &Reading) -> Duration {
        match reading {
            Reading::Host(_) | Reading::Log { .. } => self.host_interval(),
            Reading::Gossip(_) => self.gossip_interval(),
            Reading::Elasticsearch(es) => self.probe_interval(es.check.probe_name()),
        }
    }

    /// The interval the node's agent announced for the probe `name`; the host interval
    /// when it announced none.
    fn probe_interval(&self, name: &str) -> Duration {
        self.probes
            .iter()
            .find(|probe| probe.name == name && !probe.interval.is_zero())
            .map_or_else(|| self.host_interval(), |probe| probe.interval)
    }

    /// Whether the node reports gossip views, so takes part in its cluster's consensus.
    pub fn reports_gossip(&self) -> bool {
        self.latest_gossip.is_some() || self.probes.iter().any(|probe| probe.name == "gossip")
    }

    /// How often the node's agent queries its database node's gossip.
    pub fn gossip_interval(&self) -> Duration {
        self.probes
            .iter()
            .find(|probe| probe.name == "gossip" && !probe.interval.is_zero())
            .map_or(DEFAULT_GOSSIP_INTERVAL, |probe| probe.interval)
    }
}

/// What the rules keep per node, with the issue keys built once.
#[derive(Debug)]
struct NodeWindows {
    /// The node's `node_silent` issue key.
    silent_key: IssueKey,
    /// One per rule decided by samples and subject (the node, each resource), in
    /// first-seen order.
    rules: Vec<RuleWindow>,
}

impl NodeWindows {
    fn new(key: &NodeKey) -> Self {
        Self {
            silent_key: IssueKey {
                rule: RuleId::NodeSilent.into(),
                subject: Subject::node(key),
            },
            rules: Vec::new(),
        }
    }
}

/// One rule's window on one subject of a node, with the subject's issue key built once.
#[derive(Debug)]
struct RuleWindow {
    rule: RuleId,
    key: IssueKey,
    window: ConditionWindow,
    /// The samples of the window's current runs, for explanations (`explain`); only
    /// while the subject breaches or has an issue open.
    trail: Option<Box<RunTrail>>,
    /// One window per tier, for a rule whose tiers have their own `open_for`
    /// (`threshold::timed_tiers`); empty otherwise.
    tiers: Vec<ConditionWindow>,
    /// When the last sample judged was taken, for a rule with a cadence
    /// (`threshold::due`).
    evaluated: Option<Timestamp>,
}

/// `tenant / cluster`: the subject of cluster-wide rules.
type ClusterKey = (String, String);

/// What an agent says about itself when it connects.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub identity: NodeIdentity,
    pub agent_version: String,
    pub probes: Vec<Probe>,
    pub seq_epoch: String,
}

/// A validated batch: the samples that passed, and how many did not.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub seq: u64,
    pub samples: Vec<Sample>,
    pub n_rejected: u32,
    pub dropped_batches_total: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// The seq had already been applied; nothing but liveness was taken from the batch.
    pub duplicate: bool,
    pub events: Vec<Event>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("node {0} sent a batch before its hello")]
    UnknownNode(NodeKey),
}

/// The aggregator's state and rules.
#[derive(Debug)]
pub struct Engine {
    rules: RulesConfig,
    /// Silence is not counted from before this: the aggregator's own downtime is not the
    /// nodes' fault.
    started_at: Timestamp,
    nodes: BTreeMap<NodeKey, NodeState>,
    /// The threshold rules' windows, per node: found once per batch, then by rule and
    /// mount among a handful, so a sample costs no allocation and no key hashing.
    windows: HashMap<NodeKey, NodeWindows>,
    /// The windows of cluster-level values (`Scope::Cluster`), per cluster, whichever
    /// agent reported them.
    cluster_windows: HashMap<ClusterKey, Vec<RuleWindow>>,
    /// When each node's latest gossip view arrived (aggregator clock).
    gossip_arrived: HashMap<NodeKey, Timestamp>,
    consensus: HashMap<ClusterKey, ConsensusWindow>,
    issues: IssueBook,
}

impl Engine {
    /// An engine resuming from persisted nodes and open issues.
    pub fn new(
        rules: RulesConfig,
        started_at: Timestamp,
        nodes: impl IntoIterator<Item = NodeState>,
        open_issues: impl IntoIterator<Item = Issue>,
    ) -> Self {
        Self {
            rules,
            started_at,
            nodes: nodes
                .into_iter()
                .map(|node| (node.key.clone(), node))
                .collect(),
            windows: HashMap::new(),
            cluster_windows: HashMap::new(),
            gossip_arrived: HashMap::new(),
            consensus: HashMap::new(),
            issues: IssueBook::restore(open_issues),
        }
    }

    /// An agent connected. A node seen for the first time raises a notification.
    pub fn hello(&mut self, key: &NodeKey, hello: Hello, now: Timestamp) -> Vec<Event> {
        let mut events = Vec::new();
        let node = self.nodes.entry(key.clone()).or_insert_with(|| {
            events.push(Event::Notification(Notification::about_node(
                key,
                Severity::Info,
                "New node",
                format!("node {key} appeared (agent {})", hello.agent_version),
                now,
            )));
            NodeState::new(key.clone(), now)
        });
        if node.seq_epoch != hello.seq_epoch {
            // A new seq counter (the agent lost its state directory): seqs start over.
            node.seq_epoch = hello.seq_epoch;
            node.applied_seq = 0;
        }
        node.identity = hello.identity;
        node.agent_version = hello.agent_version;
        node.probes = hello.probes;
        node.connections += 1;
        events
    }

    /// An agent's stream ended.
    pub fn disconnected(&mut self, key: &NodeKey) {
        if let Some(node) = self.nodes.get_mut(key) {
            node.connections = node.connections.saturating_sub(1);
        }
    }

    /// Applies one batch. Any batch, even a replay, proves the node alive; only a new seq
    /// moves the windows.
    pub fn apply_batch(
        &mut self,
        key: &NodeKey,
        batch: Batch,
        now: Timestamp,
    ) -> Result<BatchOutcome, EngineError> {
        let node = self
            .nodes
            .get_mut(key)
            .ok_or_else(|| EngineError::UnknownNode(key.clone()))?;
        let mut outcome = BatchOutcome::default();

        if !self.windows.contains_key(key) {
            self.windows.insert(key.clone(), NodeWindows::new(key));
        }
        let Some(windows) = self.windows.get_mut(key) else {
            return Ok(outcome);
        };
        // Any batch ends the node's silence; the words of that are made only when there
        // is a silence issue to close.
        if self.issues.get(&windows.silent_key).is_some() {
            let silent_since = node
                .last_seen
                .unwrap_or(node.first_seen)
                .max(self.started_at);
            let heard =
                node_silent::heard_from(key, now.since(silent_since), &self.rules.node_silent);
            if let Some(mut event) = self.issues.apply(&windows.silent_key, heard, now) {
                let (interval, severity) = (node.host_interval(), event.issue.severity);
                explain::attach(&mut self.issues, &mut event, || {
                    let config = &self.rules.node_silent;
                    node_silent::evidence(key, silent_since, interval, config, true, severity, now)
                });
                outcome.events.push(Event::Issue(event));
            }
        }
        node.last_seen = Some(now);

        if batch.dropped_batches_total > node.dropped_batches_total {
            let newly_dropped = batch.dropped_batches_total - node.dropped_batches_total;
            outcome
                .events
                .push(Event::Notification(Notification::about_node(
                    key,
                    Severity::Warning,
                    "Samples dropped",
                    format!(
                        "the agent on {key} dropped {newly_dropped} batches of samples because its \
                     outbox was full ({} in all)",
                        batch.dropped_batches_total
                    ),
                    now,
                )));
        }
        node.dropped_batches_total = node.dropped_batches_total.max(batch.dropped_batches_total);

        if batch.seq <= node.applied_seq {
            node.duplicate_batches_total += 1;
            outcome.duplicate = true;
            return Ok(outcome);
        }
        node.skipped_seqs_total += batch.seq - node.applied_seq - 1;
        node.batches_applied_total += 1;
        node.applied_seq = batch.seq;
        node.rejected_samples_total += u64::from(batch.n_rejected);
        let mut new_gossip = false;

        let windows = &mut windows.rules;
        for sample in batch.samples {
            {
                let moment = Moment {
                    time: sample.time,
                    now,
                    max_gap: self.rules.max_gap(node.interval_of(&sample.reading)),
                };
                let (rules, issues) = (&self.rules, &mut self.issues);
                let cluster_windows = &mut self.cluster_windows;
                let events = &mut outcome.events;
                rules.measure(&sample.reading, &mut |rule, metric, describe| {
                    let measured = Measured {
                        rule,
                        metric,
                        describe,
                    };
                    let windows = windows_of(windows, cluster_windows, key, metric.scope);
                    events.extend(observe(rules, issues, windows, key, measured, moment));
                });
                rules.unlisted(&sample.reading, &mut |rule, unlisted| {
                    let windows = windows_of(windows, cluster_windows, key, unlisted.scope);
                    events.extend(observe_unlisted(
                        rules, issues, windows, key, rule, unlisted, moment,
                    ));
                });
            }
            match sample.reading {
                Reading::Host(host) => {
                    if node
                        .latest_host
                        .as_ref()
                        .is_none_or(|(time, _)| *time < sample.time)
                    {
                        node.latest_host = Some((sample.time, host));
                    }
                }
                Reading::Gossip(gossip) => {
                    if node
                        .latest_gossip
                        .as_ref()
                        .is_none_or(|(time, _)| *time < sample.time)
                    {
                        node.latest_gossip = Some((sample.time, gossip));
                        new_gossip = true;
                    }
                }
                // An Elasticsearch check's result is judged above, by the rules that
                // measure it; only its time is kept, for `monitor`'s order check.
                Reading::Elasticsearch(es) => {
                    let latest = &mut node.latest_es[es.check.index()];
                    if latest.is_none_or(|time| time < sample.time) {
                        *latest = Some(sample.time);
                    }
                    if let Ok(EsResult::Audit(audit)) = &es.outcome
                        && self.rules.http_5xx_ratio.enabled
                    {
                        let partial = http_5xx_ratio::partial_count(audit);
                        if let (Some(text), false) = (&partial, node.audit_partial) {
                            outcome
                                .events
                                .push(Event::Notification(Notification::about_node(
                                    key,
                                    Severity::Warning,
                                    "Partial audit count",
                                    text.clone(),
                                    now,
                                )));
                        }
                        node.audit_partial = partial.is_some();
                    }
                }
                // Log lines are routed to sinks, not judged by rules.
                Reading::Log { .. } => {}
            }
        }
        if new_gossip {
            self.gossip_arrived.insert(key.clone(), now);
            let cluster = (key.tenant.clone(), key.cluster.clone());
            outcome.events.extend(self.judge_cluster(&cluster, now));
        }
        Ok(outcome)
    }

    /// `cluster_consensus` for one cluster at `now`: gathers every gossip-reporting
    /// node's view (or its silence) and hands the judgement to the cluster's window.
    fn judge_cluster(&mut self, cluster: &ClusterKey, now: Timestamp) -> Option<Event> {
        if !self.rules.cluster_consensus.enabled {
            return None;
        }
        let judgement = {
            let views = self.gossip_views(cluster, now);
            if views.is_empty() {
                return None;
            }
            cluster_consensus::judge(&views)
        };
        let window = self.consensus.entry(cluster.clone()).or_default();
        let condition = window.observe(&judgement, now, &self.rules.cluster_consensus)?;
        let key = IssueKey {
            rule: RuleId::ClusterConsensus.into(),
            subject: Subject::cluster(&cluster.0, &cluster.1, None),
        };
        // An open issue whose disagreement changed (another node fails, say) is told so;
        // the same disagreement again is not news.
        let changed = window.disagreement_changed(&judgement);
        let mut event = match condition {
            Condition::Breach(finding)
                if changed
                    && self
                        .issues
                        .get(&key)
                        .is_some_and(|open| open.severity == finding.severity) =>
            {
                self.issues.change(&key, finding, now)?
            }
            condition => self.issues.apply(&key, condition, now)?,
        };
        let closing = event.kind == IssueEventKind::Closed;
        let since = self.consensus.get(cluster).and_then(|window| {
            if closing {
                window.agree_since()
            } else {
                window.disagree_since()
            }
        });
        let evidence = cluster_consensus::evidence(
            &format!("{}/{}", cluster.0, cluster.1),
            &self.gossip_views(cluster, now),
            &self.rules.cluster_consensus,
            since,
            closing,
            event.issue.severity,
            &event.issue.message,
            now,
        );
        explain::attach(&mut self.issues, &mut event, || evidence);
        Some(Event::Issue(event))
    }

    /// Every gossip-reporting node's view of one cluster (or its silence), in node order.
    fn gossip_views(&self, cluster: &ClusterKey, now: Timestamp) -> Vec<NodeView<'_>> {
        self.cluster_nodes(cluster)
            .filter(|node| node.reports_gossip())
            .map(|node| NodeView {
                node: &node.key.node,
                observed: self.observed(node, now),
            })
            .collect()
    }

    /// The nodes of one cluster, in name order.
    fn cluster_nodes<'a>(&'a self, cluster: &ClusterKey) -> impl Iterator<Item = &'a NodeState> {
        let first = NodeKey {
            tenant: cluster.0.clone(),
            cluster: cluster.1.clone(),
            node: String::new(),
        };
        let (tenant, name) = (cluster.0.clone(), cluster.1.clone());
        self.nodes
            .range(first..)
            .map(|(_, node)| node)
            .take_while(move |node| node.key.tenant == tenant && node.key.cluster == name)
    }

    /// A node's gossip as the consensus rule counts it: its latest view while fresh, a
    /// failed query once it is late by the rule's allowance (its agent silent, when
    /// nothing at all came from it for as long), pending before its first.
    fn observed<'a>(&self, node: &'a NodeState, now: Timestamp) -> Observed<'a> {
        let allowed = node
            .gossip_interval()
            .saturating_mul(self.rules.cluster_consensus.missed_intervals);
        let arrived = self.gossip_arrived.get(&node.key).copied();
        let since = arrived.unwrap_or(node.first_seen).max(self.started_at);
        let silent_for = now.since(since);
        let agent_silent_for = now.since(
            node.last_seen
                .unwrap_or(node.first_seen)
                .max(self.started_at),
        );
        match (&node.latest_gossip, arrived) {
            _ if silent_for >= allowed && !allowed.is_zero() => {
                if agent_silent_for >= allowed {
                    Observed::AgentSilent(agent_silent_for)
                } else {
                    Observed::NoView(silent_for)
                }
            }
            (Some((_, view)), Some(_)) => Observed::View(view),
            _ => Observed::Pending,
        }
    }

    /// Clusters whose consensus the clock alone may change: a disagreement being timed,
    /// an open issue, or a gossip-reporting node gone quiet.
    fn clusters_to_judge(&self, now: Timestamp) -> Vec<ClusterKey> {
        let mut clusters: Vec<ClusterKey> = Vec::new();
        for node in self.nodes.values().filter(|node| node.reports_gossip()) {
            let cluster = (node.key.tenant.clone(), node.key.cluster.clone());
            if clusters.last() == Some(&cluster) {
                continue;
            }
            let timed = self
                .consensus
                .get(&cluster)
                .is_some_and(ConsensusWindow::disagreeing);
            let late = matches!(
                self.observed(node, now),
                Observed::NoView(_) | Observed::AgentSilent(_)
            );
            if timed || late {
                clusters.push(cluster);
            }
        }
        for issue in self.issues.open_issues() {
            if issue.key.rule == RuleId::ClusterConsensus {
                let cluster = (
                    issue.key.subject.tenant.clone(),
                    issue.key.subject.cluster.clone(),
                );
                if !clusters.contains(&cluster) {
                    clusters.push(cluster);
                }
            }
        }
        clusters
    }

    /// The passing of time: silent nodes, and reminders for issues still open.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Event> {
        let mut events = Vec::new();
        if self.rules.node_silent.enabled {
            for node in self.nodes.values() {
                let silent_since = node
                    .last_seen
                    .unwrap_or(node.first_seen)
                    .max(self.started_at);
                let condition = node_silent::silence(
                    &node.key,
                    silent_since,
                    node.host_interval(),
                    now,
                    &self.rules.node_silent,
                );
                if let Some(condition) = condition {
                    let key = IssueKey {
                        rule: RuleId::NodeSilent.into(),
                        subject: Subject::node(&node.key),
                    };
                    if let Some(mut event) = self.issues.apply(&key, condition, now) {
                        let severity = event.issue.severity;
                        explain::attach(&mut self.issues, &mut event, || {
                            let (interval, config) =
                                (node.host_interval(), &self.rules.node_silent);
                            node_silent::evidence(
                                &node.key,
                                silent_since,
                                interval,
                                config,
                                false,
                                severity,
                                now,
                            )
                        });
                        events.push(Event::Issue(event));
                    }
                }
            }
        }
        if self.rules.cluster_consensus.enabled {
            for cluster in self.clusters_to_judge(now) {
                events.extend(self.judge_cluster(&cluster, now));
            }
        }
        let rules = &self.rules;
        // A rule this build does not know sends no reminders: nothing evaluates it.
        let reminders = self
            .issues
            .remind(now, |rule| rule.known().map(|rule| rules.renotify(rule)));
        events.extend(reminders.into_iter().map(Event::Issue));
        events
    }

    /// An operator closes the open issue `id`: its `closed` event says who and why. Any
    /// issue may be closed so, also one of a rule this build does not know (nothing else
    /// could close it); a rule that still finds its condition opens a new issue. `None`
    /// when no issue `id` is open.
    pub fn close_issue(
        &mut self,
        id: &str,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Option<IssueEvent> {
        let issue = self.issues.open_issues().find(|issue| issue.id == id)?;
        let key = issue.key.clone();
        let severity = issue.severity;
        let detail = format!("closed by operator {operator}: {reason}");
        let finding = Finding {
            severity,
            value: issue.value,
            threshold: issue.threshold,
            message: detail.clone(),
            remedy: String::new(),
        };
        let mut event = self.issues.apply(&key, Condition::Clear(finding), now)?;
        explain::attach(&mut self.issues, &mut event, || {
            explain::closed_by_operator(&key, severity, detail, now)
        });
        Some(event)
    }

    pub fn node(&self, key: &NodeKey) -> Option<&NodeState> {
        self.nodes.get(key)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.values()
    }

    pub fn open_issues(&self) -> impl Iterator<Item = &Issue> {
        self.issues.open_issues()
    }

    pub fn open_issue(&self, key: &IssueKey) -> Option<&Issue> {
        self.issues.get(key)
    }

    /// The window of a rule decided by samples on one subject, if a sample has moved it.
    pub fn window(&self, key: &IssueKey) -> Option<&ConditionWindow> {
        let windows = match key.subject.node_key() {
            Some(node) => &self.windows.get(&node)?.rules,
            None => {
                let cluster = (key.subject.tenant.clone(), key.subject.cluster.clone());
                self.cluster_windows.get(&cluster)?
            }
        };
        windows
            .iter()
            .find(|rule_window| rule_window.key == *key)
            .map(|rule_window| &rule_window.window)
    }

    /// How many rule windows keep samples for explanations.
    #[cfg(test)]
    fn kept_trails(&self) -> usize {
        self.windows
            .values()
            .flat_map(|node| &node.rules)
            .filter(|rule_window| rule_window.trail.is_some())
            .count()
    }
}

/// When a sample was taken (agent clock), when it is judged (aggregator clock), and how
/// far apart two samples of its kind may be in a run.
#[derive(Debug, Clone, Copy)]
struct Moment {
    time: Timestamp,
    now: Timestamp,
    max_gap: Duration,
}

/// One value a rule measured in a sample, with its words.
struct Measured<'a, 'd> {
    rule: RuleId,
    metric: Metric<'a>,
    describe: Describe<'d>,
}

/// The windows a value of `scope` reported by `node` moves: the node's own, or its
/// cluster's.
fn windows_of<'w>(
    node_windows: &'w mut Vec<RuleWindow>,
    cluster_windows: &'w mut HashMap<ClusterKey, Vec<RuleWindow>>,
    node: &NodeKey,
    scope: Scope,
) -> &'w mut Vec<RuleWindow> {
    match scope {
        Scope::Node => node_windows,
        Scope::Cluster => cluster_windows
            .entry((node.tenant.clone(), node.cluster.clone()))
            .or_default(),
    }
}

/// Moves the window of a measured value's rule and subject (of `node`, or of its cluster)
/// and, when the window decides something, the issue; returns the issue's event. A node's
/// sample that decides nothing (most of a healthy fleet's) allocates nothing: the window
/// is found among the node's handful by rule and resource, and the words are made only
/// for a decision. (A cluster's windows are found by the cluster's key, made per value.)
fn observe(
    rules: &RulesConfig,
    issues: &mut IssueBook,
    windows: &mut Vec<RuleWindow>,
    node: &NodeKey,
    measured: Measured<'_, '_>,
    moment: Moment,
) -> Option<Event> {
    let Measured {
        rule,
        metric,
        describe,
    } = measured;
    let config = rules.threshold(rule)?;
    let index = match windows.iter().position(|rule_window| {
        rule_window.rule == rule && rule_window.key.subject.has_resource(metric.resource)
    }) {
        Some(index) => index,
        None => {
            let subject = match (metric.scope, metric.resource) {
                (Scope::Node, Some(resource)) => Subject::resource_of_node(node, resource),
                (Scope::Node, None) => Subject::node(node),
                (Scope::Cluster, resource) => {
                    Subject::cluster(&node.tenant, &node.cluster, resource)
                }
            };
            windows.push(RuleWindow {
                rule,
                key: IssueKey {
                    rule: rule.into(),
                    subject,
                },
                window: ConditionWindow::default(),
                trail: None,
                tiers: Vec::new(),
                evaluated: None,
            });
            windows.len() - 1
        }
    };
    let RuleWindow {
        key: issue_key,
        window,
        trail,
        tiers,
        evaluated,
        ..
    } = &mut windows[index];
    // Only a rule with a cadence pays for the issue lookup (most samples are judged).
    if threshold::has_cadence(config)
        && !threshold::due(
            config,
            *evaluated,
            moment.time,
            issues.get(issue_key).is_some(),
        )
    {
        return None;
    }
    let verdict = threshold::judge(config, metric.value);
    if !window.observe(moment.time, verdict, moment.max_gap) {
        return None;
    }
    *evaluated = Some(moment.time);
    if threshold::timed_tiers(config) {
        threshold::observe_tiers(tiers, config, moment.time, metric.value, moment.max_gap);
    }
    let current = issues.get(issue_key).map(|issue| issue.severity);
    // Every sample the window took, before the skip below: an explanation shows the
    // whole run.
    explain::follow(trail, metric.value, window, verdict, moment.time, current);
    // Most samples of a healthy fleet conclude nothing new: skip making the words of a
    // conclusion that would be thrown away.
    if !threshold::may_decide(window, tiers, config, current.is_some()) {
        return None;
    }
    let measurement = Measurement::new(issue_key.clone(), metric.value, describe(node));
    let condition =
        threshold::conclude(&measurement, window, tiers, config, current, rule.remedy())?;
    let mut event = issues.apply(&measurement.key, condition, moment.now)?;
    let decided = explain::Decided {
        window,
        sample_time: moment.time,
        now: moment.now,
    };
    explain::attach_threshold(
        issues,
        &mut event,
        trail.as_deref(),
        &measurement,
        config,
        decided,
    );
    Some(Event::Issue(event))
}

/// Moves the windows of the resources of `rule` a sample left out of its listing, with
/// the value the listing says they have at most. A window the same sample moved already
/// (a listed resource) ignores it: windows only move forward in time.
fn observe_unlisted(
    rules: &RulesConfig,
    issues: &mut IssueBook,
    windows: &mut Vec<RuleWindow>,
    node: &NodeKey,
    rule: RuleId,
    unlisted: Unlisted,
    moment: Moment,
) -> Vec<Event> {
    // Only resources seen over the floor once have a window: few, and a listing comes
    // seldom (documents per shard, every 30 min), so copying their names costs nothing.
    let names: Vec<String> = windows
        .iter()
        .filter(|rule_window| rule_window.rule == rule)
        .filter_map(|rule_window| rule_window.key.subject.resource.as_ref())
        .filter(|resource| resource.kind == unlisted.kind)
        .map(|resource| resource.name.clone())
        .collect();
    names
        .iter()
        .filter_map(|name| {
            let describe = |reporter: &NodeKey| (unlisted.describe)(name, reporter, unlisted.value);
            let measured = Measured {
                rule,
                metric: Metric {
                    scope: unlisted.scope,
                    resource: Some(ResourceRef {
                        kind: unlisted.kind,
                        name,
                    }),
                    value: unlisted.value,
                },
                describe: &describe,
            };
            observe(rules, issues, windows, node, measured, moment)
        })
        .collect()
}

#[cfg(test)]
mod consensus_tests;
#[cfg(test)]
mod es_tests;
#[cfg(test)]
mod explain_tests;
#[cfg(test)]
mod tests;
