//! The rules, one module each, and the registry that lists them (DESIGN §6, §6a).
//!
//! A rule is a `Rule`: its name, its config with its own defaults and how `[rules.<name>]`
//! overrides them, its remedy, and, for a rule decided by samples, what it measures in a
//! sample (`measure`) and the thresholds, windows and tiers it is judged by (`threshold`).
//! `registry` lists every rule on one line each and dispatches to them with exhaustive
//! matches, so a rule's behaviour is always its own module's, never a default.
//!
//! Rules decide; they do not open or close issues (`issue`), keep windows (`engine`) or
//! do I/O. `threshold` holds what the threshold rules share: verdicts, severity tiers and
//! the words of a conclusion. `node_silent` is driven by the passing of time and
//! `cluster_consensus` by the nodes' gossip views: the engine calls them by name.

pub mod cluster_consensus;
pub mod core_load;
pub mod disk_usage;
pub mod es_cluster_health;
pub mod es_docs_per_shard;
pub mod es_node_storage;
pub mod es_shard_headroom;
pub mod es_unreachable;
pub mod http_5xx_ratio;
pub mod memory_usage;
pub mod node_silent;
pub mod registry;
pub mod threshold;

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use registry::{RuleId, RulesConfig};
pub use threshold::{SeverityTier, ThresholdRuleConfig};

use crate::model::{NodeKey, Reading, ResourceKind, ResourceRef};

/// One rule. Implemented by a unit struct in the rule's module and listed once in
/// `registry`.
pub trait Rule {
    /// Its name in config files, issues and the API, e.g. `disk_usage`.
    const NAME: &'static str;
    /// What to do about it, carried in every event of its issues.
    const REMEDY: &'static str;
    /// The settings it runs with.
    type Config: Clone + fmt::Debug + PartialEq;
    /// `[rules.<NAME>]` as written: what it overrides of `defaults()`.
    type File: DeserializeOwned + Default;

    /// Its settings when the file says nothing (the seeds' values).
    fn defaults() -> Self::Config;
    /// Its settings from what the file wrote over the defaults.
    fn config(file: Self::File) -> Self::Config;
    /// Pushes one message per problem, each naming its field (`config: rules.<NAME>.…`).
    fn validate(config: &Self::Config, errors: &mut Vec<String>);
    fn enabled(config: &Self::Config) -> bool;
    /// How long after an issue's latest event a reminder is sent; zero for none.
    fn renotify(config: &Self::Config) -> Duration;

    /// A rule decided by samples calls `each` once per value it watches in `reading`,
    /// with the words of that value (made only when a window decides something). It must
    /// not allocate: it runs for every sample. A rule driven otherwise (time, views)
    /// measures nothing. No default: every rule says which it is.
    fn measure<'a>(config: &Self::Config, reading: &'a Reading, each: &mut Each<'a, '_>);

    /// The threshold, windows (`open_for`, `close_for`) and tiers its measurements are
    /// judged by; `None` for a rule that measures nothing.
    fn threshold(config: &Self::Config) -> Option<&ThresholdRuleConfig>;

    /// For a rule whose samples list only the resources over a floor (documents per
    /// shard): what such a sample says of the resources it leaves out, so that their
    /// windows move too (an open issue on a shard that fell under the floor closes).
    /// `None` for every other rule and sample, and when the listing was cut short.
    fn unlisted(config: &Self::Config, reading: &Reading) -> Option<Unlisted>;
}

/// The resources of one kind a sample leaves out of its listing: each has at most
/// `value`.
#[derive(Debug, Clone, Copy)]
pub struct Unlisted {
    pub scope: Scope,
    pub kind: ResourceKind,
    pub value: f64,
    /// The words of that value on a resource (its name) reported by a node.
    pub describe: fn(&str, &NodeKey, f64) -> Description,
}

/// One value a rule watches in a sample: whose it is, on which resource (none: the node
/// or cluster itself), and how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric<'a> {
    pub scope: Scope,
    pub resource: Option<ResourceRef<'a>>,
    pub value: f64,
}

/// Whose a measured value is, so which subject (and window) it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The reporting node's (a host's load, one of its mounts).
    Node,
    /// The reporting node's cluster's, whichever of its agents reported it (a database
    /// cluster's health, one of its shards): one subject and one window per cluster, so
    /// two agents reporting one condition never open two issues.
    Cluster,
}

/// The words of a measured value, for messages and explanations.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// What was measured, e.g. "disk /data on acme/db/node-1".
    pub what: String,
    /// How the value was computed, e.g. "100 of 1000 bytes available on /dev/vdb".
    pub how: String,
    pub unit: threshold::Unit,
}

/// Makes the words of one measured value on `node`.
pub type Describe<'s> = &'s dyn Fn(&NodeKey) -> Description;

/// What `Rule::measure` calls per value: the metric and how to describe it.
pub type Each<'a, 'e> = dyn FnMut(Metric<'a>, Describe<'_>) + 'e;

/// A rule's name as an issue carries it: a rule of this build, or one it does not know
/// (an issue stored by another build). An issue of an unknown rule still loads, lists
/// and can be closed by an operator; nothing evaluates it and it gets no reminders.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleName(Known);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Known {
    Yes(RuleId),
    No(Box<str>),
}

impl RuleName {
    /// The rule named `name`, known to this build or not.
    pub fn parse(name: &str) -> Self {
        match RuleId::parse(name) {
            Some(rule) => Self(Known::Yes(rule)),
            None => Self(Known::No(name.into())),
        }
    }

    /// The rule, when this build knows it.
    pub fn known(&self) -> Option<RuleId> {
        match &self.0 {
            Known::Yes(rule) => Some(*rule),
            Known::No(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Known::Yes(rule) => rule.name(),
            Known::No(name) => name,
        }
    }
}

impl From<RuleId> for RuleName {
    fn from(rule: RuleId) -> Self {
        Self(Known::Yes(rule))
    }
}

impl PartialEq<RuleId> for RuleName {
    fn eq(&self, other: &RuleId) -> bool {
        self.known() == Some(*other)
    }
}

// Ordered by name, as issues are listed.
impl Ord for RuleName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for RuleName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
