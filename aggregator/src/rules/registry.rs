//! Every rule this build knows, one line each: `name: module::Rule`. The `registry!`
//! macro turns the list into `RuleId`, the `[rules]` config (`RulesConfig`, each rule's
//! table parsed by the rule into its own config over its own defaults) and the dispatch
//! from a `RuleId` to its rule, as exhaustive matches: a rule added here is dispatched
//! everywhere, and a rule left out is nowhere.

use std::time::Duration;

use serde::Deserialize;

use super::threshold::ThresholdRuleConfig;
use super::{Describe, Metric, Rule, Unlisted};
use crate::model::Reading;

macro_rules! registry {
    ($($field:ident : $module:ident :: $rule:ident),+ $(,)?) => {
        /// A rule of this build.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RuleId {
            $($rule),+
        }

        impl RuleId {
            /// Every rule, in registry order.
            pub const ALL: &'static [RuleId] = &[$(RuleId::$rule),+];

            pub fn name(self) -> &'static str {
                match self {
                    $(RuleId::$rule => <super::$module::$rule as Rule>::NAME),+
                }
            }

            /// The rule of this build named `name`.
            pub fn parse(name: &str) -> Option<RuleId> {
                Self::ALL.iter().copied().find(|rule| rule.name() == name)
            }

            /// What to do about an issue of this rule.
            pub fn remedy(self) -> &'static str {
                match self {
                    $(RuleId::$rule => <super::$module::$rule as Rule>::REMEDY),+
                }
            }
        }

        /// Per-rule settings: each rule's own config. A rule left out of the file keeps
        /// all its defaults; a field left out keeps that rule's default for it.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(from = "RulesFile")]
        pub struct RulesConfig {
            $(pub $field: <super::$module::$rule as Rule>::Config),+
        }

        impl Default for RulesConfig {
            fn default() -> Self {
                Self {
                    $($field: <super::$module::$rule as Rule>::defaults()),+
                }
            }
        }

        /// `[rules]` as written.
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct RulesFile {
            $($field: <super::$module::$rule as Rule>::File),+
        }

        impl From<RulesFile> for RulesConfig {
            fn from(file: RulesFile) -> Self {
                Self {
                    $($field: <super::$module::$rule as Rule>::config(file.$field)),+
                }
            }
        }

        impl RulesConfig {
            /// Every problem of every rule's settings.
            pub fn validate(&self, errors: &mut Vec<String>) {
                $(<super::$module::$rule as Rule>::validate(&self.$field, errors);)+
            }

            pub fn enabled(&self, rule: RuleId) -> bool {
                match rule {
                    $(RuleId::$rule => <super::$module::$rule as Rule>::enabled(&self.$field)),+
                }
            }

            /// How long after an issue's latest event its rule sends a reminder.
            pub fn renotify(&self, rule: RuleId) -> Duration {
                match rule {
                    $(RuleId::$rule => <super::$module::$rule as Rule>::renotify(&self.$field)),+
                }
            }

            /// The threshold, windows and tiers of a rule decided by samples.
            pub fn threshold(&self, rule: RuleId) -> Option<&ThresholdRuleConfig> {
                match rule {
                    $(RuleId::$rule => <super::$module::$rule as Rule>::threshold(&self.$field)),+
                }
            }

            /// Calls `each` with every value every enabled rule watches in `reading`.
            /// Allocates nothing.
            pub fn measure<'a>(
                &self,
                reading: &'a Reading,
                each: &mut dyn FnMut(RuleId, Metric<'a>, Describe<'_>),
            ) {
                $(
                    if <super::$module::$rule as Rule>::enabled(&self.$field) {
                        <super::$module::$rule as Rule>::measure(
                            &self.$field,
                            reading,
                            &mut |metric, describe| each(RuleId::$rule, metric, describe),
                        );
                    }
                )+
            }

            /// Calls `each` with what `reading` says of the resources it leaves out, for
            /// every enabled rule whose samples list only some (`Rule::unlisted`).
            pub fn unlisted(&self, reading: &Reading, each: &mut dyn FnMut(RuleId, Unlisted)) {
                $(
                    if <super::$module::$rule as Rule>::enabled(&self.$field)
                        && let Some(unlisted) =
                            <super::$module::$rule as Rule>::unlisted(&self.$field, reading)
                    {
                        each(RuleId::$rule, unlisted);
                    }
                )+
            }
        }
    };
}

// The rules of this build: one line each.
registry! {
    core_load: core_load::CoreLoad,
    memory_usage: memory_usage::MemoryUsage,
    disk_usage: disk_usage::DiskUsage,
    node_silent: node_silent::NodeSilent,
    cluster_consensus: cluster_consensus::ClusterConsensus,
    es_cluster_health: es_cluster_health::EsClusterHealth,
    es_node_storage: es_node_storage::EsNodeStorage,
    es_shard_headroom: es_shard_headroom::EsShardHeadroom,
    es_docs_per_shard: es_docs_per_shard::EsDocsPerShard,
    http_5xx_ratio: http_5xx_ratio::Http5xxRatio,
    es_unreachable: es_unreachable::EsUnreachable,
}

impl RulesConfig {
    /// How far apart two samples of a node may be before they no longer count as
    /// consecutive: the same silence after which `node_silent` opens.
    pub fn max_gap(&self, interval: Duration) -> Duration {
        interval.saturating_mul(self.node_silent.missed_intervals)
    }
}
