//! `cluster_consensus`: whether the nodes of one cluster agree on who is in it (DESIGN §6);
//! its config, its judgement, its window and its evidence.
//!
//! Each node's latest gossip view is normalized to the set of (member id, state, alive),
//! without endpoints, epochs, timestamps or checkpoints, which change on every sample, and
//! with states in one vocabulary (EventStoreDB 5.x's Master/Slave/PreMaster are 20.x's
//! Leader/Follower/PreLeader: a rolling upgrade is no disagreement). The cluster agrees
//! when every node's query succeeded, all normalized views are equal, and they name
//! exactly one alive leader, the same one (a Leader that is not alive leads nothing). A
//! node without a view for too long counts as a failed query: "no gossip view" while its
//! agent reports, "agent silent" when nothing at all came from it. A single-node cluster
//! only needs its query to succeed. When they disagree, the message says which nodes
//! disagree and how, naming members by endpoint and instance id.
//!
//! `judge` compares views; `ConsensusWindow` times a cluster's disagreement on the
//! aggregator's clock (views come from different agents, so no single agent's clock can
//! say how long they have disagreed) and says when an open disagreement changed (the
//! issue is then updated). Gathering the views is `engine`'s business; opening and
//! closing the issue is `issue`'s. No I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::threshold::ThresholdRuleConfig;
use super::{Each, Rule, Unlisted};
use crate::explain::{self, Evidence, MemberEvidence, NodeEvidence, RuleCondition, WindowSpan};
use crate::issue::{Condition, Finding};
use crate::model::{GossipMember, GossipReading, Reading, Severity, Timestamp};

#[derive(Debug)]
pub struct ClusterConsensus;

/// `[rules.cluster_consensus]`: every node of a cluster must see the same members (id,
/// state, alive) and the same single leader, and every node's gossip query must succeed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConsensusConfig {
    pub enabled: bool,
    /// How long a disagreement must last before the issue opens (aggregator clock).
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// How long agreement must last before it closes.
    #[serde(with = "humantime_serde")]
    pub close_for: Duration,
    pub severity: Severity,
    #[serde(with = "humantime_serde")]
    pub renotify: Duration,
    /// A node that sent no gossip view for this many × its gossip interval counts as a
    /// failed query.
    pub missed_intervals: u32,
}

impl Default for ClusterConsensusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            open_for: Duration::from_secs(60),
            close_for: Duration::ZERO,
            severity: Severity::Error,
            renotify: Duration::from_secs(3600),
            missed_intervals: 3,
        }
    }
}

impl Rule for ClusterConsensus {
    const NAME: &'static str = "cluster_consensus";
    const REMEDY: &'static str = "check the named nodes: that the database runs on each, its \
         logs, and the network between them (a node that sees another leader, or misses a \
         member, is often cut off from the others); a failed query means the agent cannot \
         reach its local node";
    type Config = ClusterConsensusConfig;
    type File = ClusterConsensusConfig;

    fn defaults() -> ClusterConsensusConfig {
        ClusterConsensusConfig::default()
    }

    fn config(file: ClusterConsensusConfig) -> ClusterConsensusConfig {
        file
    }

    fn validate(config: &ClusterConsensusConfig, errors: &mut Vec<String>) {
        if config.missed_intervals == 0 {
            errors.push(
                "config: rules.cluster_consensus.missed_intervals: must be at least 1".into(),
            );
        }
    }

    fn enabled(config: &ClusterConsensusConfig) -> bool {
        config.enabled
    }

    fn renotify(config: &ClusterConsensusConfig) -> Duration {
        config.renotify
    }

    /// Decided by the gossip views of a cluster's nodes (`engine`), not by a sample's values.
    fn measure<'a>(
        _config: &ClusterConsensusConfig,
        _reading: &'a Reading,
        _each: &mut Each<'a, '_>,
    ) {
    }

    fn threshold(_config: &ClusterConsensusConfig) -> Option<&ThresholdRuleConfig> {
        None
    }

    fn unlisted(_config: &Self::Config, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}

/// What the aggregator has of one node of the cluster.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    /// Its latest gossip view, fresh enough to count.
    View(&'a GossipReading),
    /// Its agent reports, but no gossip view for this long: counted as a failed query.
    NoView(Duration),
    /// Its agent sent nothing at all for this long: counted as a failed query.
    AgentSilent(Duration),
    /// It has not sent a view yet but is not late either (e.g. just after a restart):
    /// nothing can be decided until it does.
    Pending,
}

/// One node's part in a cluster's consensus.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub node: &'a str,
    pub observed: Observed<'a>,
}

/// What the views say together.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    Agree,
    /// The message says which nodes disagree and how; `n_nodes` is how many nodes are
    /// at fault (failed, or outside the largest group of identical views).
    Disagree {
        message: String,
        n_nodes: usize,
        /// The disagreement without how long anything has lasted: when it differs from
        /// the one an open issue stated, the issue is updated.
        signature: String,
    },
    /// A node has not reported yet: neither agreement nor disagreement can be shown.
    Undecided,
}

/// A view reduced to what must agree: (member id, state, alive).
type Normalized = BTreeSet<(String, String, bool)>;

/// A node state in one vocabulary, EventStoreDB 20.x's: during a rolling upgrade from
/// 5.x, a 5.x node says Master where the others say Leader for the same member.
fn canonical_state(state: &str) -> &str {
    match state {
        "Master" => "Leader",
        "Slave" => "Follower",
        "PreMaster" => "PreLeader",
        "ReadOnlyMasterless" => "ReadOnlyLeaderless",
        // Every other state has the same name in both (Initializing, Unknown,
        // PreReplica, CatchingUp, Clone, Manager, ShuttingDown, Shutdown, ...), and other
        // databases' states are their own.
        same => same,
    }
}

fn normalize(members: &[GossipMember]) -> Normalized {
    members
        .iter()
        .map(|member| {
            (
                member.instance_id.clone(),
                canonical_state(&member.state).to_owned(),
                member.alive,
            )
        })
        .collect()
}

fn is_leader(member: &GossipMember) -> bool {
    canonical_state(&member.state).eq_ignore_ascii_case("leader")
}

/// The members a view names as leader: its `leader_id`, and any member whose state is
/// Leader, when alive: a dead leader leads nothing.
fn leaders(view: &GossipReading, members: &[GossipMember]) -> BTreeSet<String> {
    let mut leaders: BTreeSet<String> = members
        .iter()
        .filter(|member| member.alive && is_leader(member))
        .map(|member| member.instance_id.clone())
        .collect();
    let leader_listed_dead = members
        .iter()
        .any(|member| member.instance_id == view.leader_id && !member.alive);
    if !view.leader_id.is_empty() && !leader_listed_dead {
        leaders.insert(view.leader_id.clone());
    }
    leaders
}

/// The members a view calls Leader although they are not alive.
fn dead_leaders(members: &[GossipMember]) -> BTreeSet<String> {
    members
        .iter()
        .filter(|member| !member.alive && is_leader(member))
        .map(|member| member.instance_id.clone())
        .collect()
}

/// A successful view as consensus compares it: the normalized (member id, state, alive)
/// set and the members it names as leader. For explanations.
pub fn normalized_view(
    view: &GossipReading,
    members: &[GossipMember],
) -> (BTreeSet<(String, String, bool)>, BTreeSet<String>) {
    (normalize(members), leaders(view, members))
}

/// One node's successful view, as compared.
struct Compared {
    normalized: Normalized,
    leaders: BTreeSet<String>,
    dead_leaders: BTreeSet<String>,
}

/// How messages name a member: by endpoint and instance id, `10.0.0.3:2113 (4f6c…)`;
/// by id alone when no view gave its endpoint.
struct Names<'a>(BTreeMap<&'a str, &'a str>);

impl<'a> Names<'a> {
    fn of(views: &[NodeView<'a>]) -> Self {
        let mut endpoints = BTreeMap::new();
        for view in views {
            if let Observed::View(GossipReading {
                outcome: Ok(members),
                ..
            }) = view.observed
            {
                for member in members.iter().filter(|member| !member.endpoint.is_empty()) {
                    endpoints
                        .entry(member.instance_id.as_str())
                        .or_insert(member.endpoint.as_str());
                }
            }
        }
        Self(endpoints)
    }

    fn member(&self, id: &str) -> String {
        match self.0.get(id) {
            Some(endpoint) => format!("{endpoint} ({id})"),
            None => id.to_owned(),
        }
    }

    fn members<'i>(&self, ids: impl IntoIterator<Item = &'i String>) -> String {
        let names: Vec<String> = ids.into_iter().map(|id| self.member(id)).collect();
        names.join(", ")
    }
}

/// Compares the views of every node of one cluster.
pub fn judge(views: &[NodeView<'_>]) -> Judgement {
    if views.is_empty()
        || views
            .iter()
            .any(|view| matches!(view.observed, Observed::Pending))
    {
        return Judgement::Undecided;
    }
    let names = Names::of(views);
    let mut problems = Vec::new();
    // The problems without durations, which change on every judgement.
    let mut signature = Vec::new();
    let mut n_failed = 0;
    // The successful views, by node.
    let mut ok: BTreeMap<&str, Compared> = BTreeMap::new();
    for view in views {
        let whole_seconds = |duration: Duration| {
            humantime::format_duration(Duration::from_secs(duration.as_secs()))
        };
        match view.observed {
            Observed::View(reading) => match &reading.outcome {
                Ok(members) => {
                    let compared = Compared {
                        normalized: normalize(members),
                        leaders: leaders(reading, members),
                        dead_leaders: dead_leaders(members),
                    };
                    ok.insert(view.node, compared);
                }
                Err(error) => {
                    n_failed += 1;
                    let problem = format!("node {}: gossip query failed: {error}", view.node);
                    signature.push(problem.clone());
                    problems.push(problem);
                }
            },
            Observed::NoView(for_how_long) => {
                n_failed += 1;
                problems.push(format!(
                    "node {}: no gossip view for {}",
                    view.node,
                    whole_seconds(for_how_long)
                ));
                signature.push(format!("node {}: no gossip view", view.node));
            }
            Observed::AgentSilent(for_how_long) => {
                n_failed += 1;
                problems.push(format!(
                    "node {}: agent silent for {}",
                    view.node,
                    whole_seconds(for_how_long)
                ));
                signature.push(format!("node {}: agent silent", view.node));
            }
            Observed::Pending => {}
        }
    }
    // A single node has no one to disagree with.
    let n_at_fault = if views.len() > 1 {
        let before = problems.len();
        let n_differing = compare(&ok, &names, &mut problems);
        signature.extend(problems[before..].iter().cloned());
        n_failed + n_differing
    } else {
        n_failed
    };
    if problems.is_empty() {
        Judgement::Agree
    } else {
        Judgement::Disagree {
            message: problems.join("; "),
            n_nodes: n_at_fault,
            signature: signature.join("; "),
        }
    }
}

/// Describes how the successful views differ; returns how many nodes are outside the
/// largest group of identical views (or name no single live leader).
fn compare(ok: &BTreeMap<&str, Compared>, names: &Names<'_>, problems: &mut Vec<String>) -> usize {
    let mut leader_faults = BTreeSet::new();
    for (node, view) in ok {
        match view.leaders.len() {
            1 => {}
            0 => {
                leader_faults.insert(*node);
                if view.dead_leaders.is_empty() {
                    problems.push(format!("node {node} names no leader"));
                } else {
                    let verb = if view.dead_leaders.len() == 1 {
                        "is"
                    } else {
                        "are"
                    };
                    problems.push(format!(
                        "node {node} names no live leader ({} {verb} Leader but dead)",
                        names.members(&view.dead_leaders)
                    ));
                }
            }
            _ => {
                leader_faults.insert(*node);
                problems.push(format!(
                    "node {node} names {} leaders: {}",
                    view.leaders.len(),
                    names.members(&view.leaders)
                ));
            }
        }
    }

    // Every member any node lists, and how each node sees it.
    let member_ids: BTreeSet<&str> = ok
        .values()
        .flat_map(|view| view.normalized.iter().map(|(id, _, _)| id.as_str()))
        .collect();
    let mut member_differences = false;
    for member in member_ids {
        let mut seen_as: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (node, view) in ok {
            let how =
                view.normalized
                    .iter()
                    .find(|(id, _, _)| id == member)
                    .map(|(_, state, alive)| {
                        if *alive {
                            state.clone()
                        } else {
                            format!("{state} (dead)")
                        }
                    });
            seen_as
                .entry(how.unwrap_or_default())
                .or_default()
                .push(node);
        }
        if seen_as.len() > 1 {
            member_differences = true;
            problems.push(describe_groups(&names.member(member), seen_as));
        }
    }

    // Same members, states and liveness, but a different leader named.
    if !member_differences {
        let mut named: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (node, view) in ok {
            if let (1, Some(leader)) = (view.leaders.len(), view.leaders.first()) {
                named.entry(names.member(leader)).or_default().push(node);
            }
        }
        if named.len() > 1 {
            let mut groups: Vec<(String, Vec<&str>)> = named.into_iter().collect();
            sort_groups(&mut groups);
            let phrases: Vec<String> = groups
                .iter()
                .map(|(leader, nodes)| {
                    format!(
                        "{} {leader} as leader",
                        nodes_phrase(nodes, "names", "name")
                    )
                })
                .collect();
            problems.push(phrases.join(", "));
        }
    }

    // Faults: nodes outside the largest group of identical views, plus leader faults.
    let mut groups: BTreeMap<(&Normalized, &BTreeSet<String>), usize> = BTreeMap::new();
    for view in ok.values() {
        *groups.entry((&view.normalized, &view.leaders)).or_default() += 1;
    }
    let largest = groups.values().copied().max().unwrap_or(0);
    let outside = ok.len() - largest;
    outside.max(leader_faults.len())
}

/// "node b sees c as Follower, nodes a and c see c as Leader": smaller groups first.
fn describe_groups(member: &str, seen_as: BTreeMap<String, Vec<&str>>) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = seen_as.into_iter().collect();
    sort_groups(&mut groups);
    let phrases: Vec<String> = groups
        .iter()
        .map(|(how, nodes)| {
            if how.is_empty() {
                format!(
                    "{} {member}",
                    nodes_phrase(nodes, "does not list", "do not list")
                )
            } else {
                format!("{} {member} as {how}", nodes_phrase(nodes, "sees", "see"))
            }
        })
        .collect();
    phrases.join(", ")
}

fn sort_groups(groups: &mut [(String, Vec<&str>)]) {
    groups.sort_by(|(_, a), (_, b)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
}

/// "node b sees" / "nodes a and c see" / "nodes a, b and c see".
fn nodes_phrase(nodes: &[&str], singular_verb: &str, plural_verb: &str) -> String {
    match nodes {
        [one] => format!("node {one} {singular_verb}"),
        [init @ .., last] => format!("nodes {} and {last} {plural_verb}", init.join(", ")),
        [] => String::new(),
    }
}

/// How long a cluster has agreed or disagreed, on the aggregator's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsensusWindow {
    disagree_since: Option<Timestamp>,
    agree_since: Option<Timestamp>,
    /// The signature of the disagreement last concluded while disagreeing.
    reported: Option<String>,
}

impl ConsensusWindow {
    /// Records a judgement made at `now`; returns what the rule concludes, if anything.
    /// Undecided changes nothing: a node not heard from yet neither opens nor closes.
    pub fn observe(
        &mut self,
        judgement: &Judgement,
        now: Timestamp,
        config: &ClusterConsensusConfig,
    ) -> Option<Condition> {
        match judgement {
            Judgement::Undecided => None,
            Judgement::Disagree {
                message, n_nodes, ..
            } => {
                self.agree_since = None;
                let since = *self.disagree_since.get_or_insert(now);
                let held = now.since(since);
                (held >= config.open_for).then(|| {
                    let held_phrase = if config.open_for.is_zero() {
                        String::new()
                    } else {
                        format!(
                            " (for {})",
                            humantime::format_duration(Duration::from_secs(held.as_secs()))
                        )
                    };
                    Condition::Breach(Finding {
                        severity: config.severity,
                        value: *n_nodes as f64,
                        threshold: 0.0,
                        message: format!("the nodes disagree{held_phrase}: {message}"),
                        remedy: ClusterConsensus::REMEDY.to_owned(),
                    })
                })
            }
            Judgement::Agree => {
                self.disagree_since = None;
                self.reported = None;
                let since = *self.agree_since.get_or_insert(now);
                (now.since(since) >= config.close_for).then(|| {
                    Condition::Clear(Finding {
                        severity: config.severity,
                        value: 0.0,
                        threshold: 0.0,
                        message: "every node's gossip query succeeds and all views agree"
                            .to_owned(),
                        remedy: String::new(),
                    })
                })
            }
        }
    }

    /// Records the disagreement a concluded breach states; true when it differs from the
    /// one concluded before (so an open issue should say so). The first one recorded, also
    /// after a restart, is not a change.
    pub fn disagreement_changed(&mut self, judgement: &Judgement) -> bool {
        let Judgement::Disagree { signature, .. } = judgement else {
            return false;
        };
        self.reported
            .replace(signature.clone())
            .is_some_and(|previous| previous != *signature)
    }

    /// When the current disagreement, or agreement, began (aggregator clock).
    pub fn disagree_since(&self) -> Option<Timestamp> {
        self.disagree_since
    }

    pub fn agree_since(&self) -> Option<Timestamp> {
        self.agree_since
    }

    /// Whether a disagreement is being timed (so the clock alone may open an issue).
    pub fn disagreeing(&self) -> bool {
        self.disagree_since.is_some()
    }
}

/// Why a consensus issue opened (or, `closing`, closed) at `now`, from `views`; `since`
/// is when the disagreement (or the agreement) began; `message` is the finding's.
#[allow(clippy::too_many_arguments)]
pub fn evidence(
    cluster: &str,
    views: &[NodeView<'_>],
    config: &ClusterConsensusConfig,
    since: Option<Timestamp>,
    closing: bool,
    severity: Severity,
    message: &str,
    now: Timestamp,
) -> Evidence {
    let nodes: Vec<NodeEvidence> = views
        .iter()
        .take(explain::MAX_NODES)
        .map(node_evidence)
        .collect();
    let text = if closing {
        format!(
            "every node's gossip query succeeds and all normalized views are equal{}",
            explain::for_phrase(config.close_for)
        )
    } else {
        format!(
            "a node's gossip query failed, or the normalized views differ{}",
            explain::for_phrase(config.open_for)
        )
    };
    Evidence {
        rule: ClusterConsensus::NAME.to_owned(),
        decided_at_ms: now.as_unix_ms(),
        severity,
        measured: format!("the gossip views of the nodes of {cluster}"),
        detail: message.to_owned(),
        condition: RuleCondition {
            text,
            comparator: String::new(),
            threshold: 0.0,
            unit: "nodes".to_owned(),
            tiers: Vec::new(),
            tier_threshold: 0.0,
        },
        window: WindowSpan {
            open_for_ms: explain::millis(config.open_for),
            close_for_ms: explain::millis(config.close_for),
            from_ms: since.unwrap_or(now).as_unix_ms(),
            to_ms: now.as_unix_ms(),
            clock: "aggregator".to_owned(),
        },
        samples: Vec::new(),
        samples_elided: 0,
        silence: None,
        nodes_elided: (views.len() - nodes.len()) as u64,
        nodes,
    }
}

fn node_evidence(view: &NodeView<'_>) -> NodeEvidence {
    let (outcome, error, members, leaders) = match view.observed {
        Observed::View(reading) => match &reading.outcome {
            Ok(members) => {
                let (normalized, leaders) = normalized_view(reading, members);
                let members = normalized
                    .into_iter()
                    .map(|(id, state, alive)| MemberEvidence { id, state, alive })
                    .collect();
                (
                    "view",
                    String::new(),
                    members,
                    leaders.into_iter().collect(),
                )
            }
            Err(error) => ("failed", error.clone(), Vec::new(), Vec::new()),
        },
        Observed::NoView(for_how_long) => (
            "silent",
            format!(
                "no gossip view for {}",
                humantime::format_duration(Duration::from_secs(for_how_long.as_secs()))
            ),
            Vec::new(),
            Vec::new(),
        ),
        Observed::AgentSilent(for_how_long) => (
            "silent",
            format!(
                "agent silent for {}",
                humantime::format_duration(Duration::from_secs(for_how_long.as_secs()))
            ),
            Vec::new(),
            Vec::new(),
        ),
        Observed::Pending => ("pending", String::new(), Vec::new(), Vec::new()),
    };
    NodeEvidence {
        node: view.node.to_owned(),
        outcome: outcome.to_owned(),
        error,
        members,
        leaders,
    }
}

#[cfg(test)]
mod tests;
