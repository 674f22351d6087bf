//! `node_silent`: no sample from a node for `missed_intervals` × its host interval, on
//! the aggregator's clock (a node is not blamed for the aggregator's own downtime);
//! warning, error after `escalate_after`; closes as soon as a sample arrives. Driven by
//! the engine's ticks and batches, not by what samples say.

use std::time::Duration;

use serde::Deserialize;

use super::threshold::ThresholdRuleConfig;
use super::{Each, Rule, Unlisted};
use crate::explain::{self, Evidence, RuleCondition, SilenceEvidence, TierEvidence, WindowSpan};
use crate::issue::{Condition, Finding};
use crate::model::{NodeKey, Reading, Severity, Timestamp};

#[derive(Debug)]
pub struct NodeSilent;

/// `[rules.node_silent]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSilentConfig {
    pub enabled: bool,
    pub missed_intervals: u32,
    pub severity: Severity,
    /// After this much silence the issue is raised to `escalated_severity`.
    #[serde(with = "humantime_serde")]
    pub escalate_after: Duration,
    pub escalated_severity: Severity,
    #[serde(with = "humantime_serde")]
    pub renotify: Duration,
}

impl Default for NodeSilentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            missed_intervals: 3,
            severity: Severity::Warning,
            escalate_after: Duration::from_secs(300),
            escalated_severity: Severity::Error,
            renotify: Duration::from_secs(3600),
        }
    }
}

impl Rule for NodeSilent {
    const NAME: &'static str = "node_silent";
    const REMEDY: &'static str = "check that the node is up, that hostwatch-agent runs on it \
         (journalctl -u hostwatch-agent) and that it can reach the aggregator";
    type Config = NodeSilentConfig;
    type File = NodeSilentConfig;

    fn defaults() -> NodeSilentConfig {
        NodeSilentConfig::default()
    }

    fn config(file: NodeSilentConfig) -> NodeSilentConfig {
        file
    }

    fn validate(config: &NodeSilentConfig, errors: &mut Vec<String>) {
        if config.missed_intervals == 0 {
            errors.push("config: rules.node_silent.missed_intervals: must be at least 1".into());
        }
    }

    fn enabled(config: &NodeSilentConfig) -> bool {
        config.enabled
    }

    fn renotify(config: &NodeSilentConfig) -> Duration {
        config.renotify
    }

    /// Decided by the passing of time on the aggregator's clock (`engine::tick`), not by
    /// a sample's values.
    fn measure<'a>(_config: &NodeSilentConfig, _reading: &'a Reading, _each: &mut Each<'a, '_>) {}

    fn threshold(_config: &NodeSilentConfig) -> Option<&ThresholdRuleConfig> {
        None
    }

    fn unlisted(_config: &Self::Config, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}

/// What the silence of a node concludes at `now`. `silent_since` is when it last sent a
/// sample, or when the aggregator started if that is later.
pub fn silence(
    node: &NodeKey,
    silent_since: Timestamp,
    interval: Duration,
    now: Timestamp,
    config: &NodeSilentConfig,
) -> Option<Condition> {
    let allowed = interval.saturating_mul(config.missed_intervals);
    let silent_for = now.since(silent_since);
    if silent_for < allowed || silent_for.is_zero() {
        return None;
    }
    let severity = if silent_for >= config.escalate_after {
        config.escalated_severity
    } else {
        config.severity
    };
    let message = format!(
        "no sample from {node} for {} (expected one every {})",
        humantime::format_duration(whole_seconds(silent_for)),
        humantime::format_duration(interval),
    );
    Some(Condition::Breach(Finding {
        severity,
        value: silent_for.as_secs_f64(),
        threshold: allowed.as_secs_f64(),
        message,
        remedy: NodeSilent::REMEDY.to_owned(),
    }))
}

/// The silence clears as soon as a sample arrives.
pub fn heard_from(node: &NodeKey, silent_for: Duration, config: &NodeSilentConfig) -> Condition {
    Condition::Clear(Finding {
        severity: config.severity,
        value: silent_for.as_secs_f64(),
        threshold: 0.0,
        message: format!(
            "{node} is sending samples again after {} of silence",
            humantime::format_duration(whole_seconds(silent_for))
        ),
        remedy: String::new(),
    })
}

fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

/// Why a silence issue opened, escalated (`closing` false) or closed (a batch arrived at
/// `now`).
pub fn evidence(
    node: &NodeKey,
    silent_since: Timestamp,
    interval: Duration,
    config: &NodeSilentConfig,
    closing: bool,
    severity: Severity,
    now: Timestamp,
) -> Evidence {
    let allowance = interval.saturating_mul(config.missed_intervals);
    let silent_for = now.since(silent_since);
    let (comparator, text, detail) = if closing {
        (
            "",
            "a sample arrives".to_owned(),
            format!(
                "a batch arrived after {} of silence",
                humantime::format_duration(whole_seconds(silent_for))
            ),
        )
    } else {
        (
            ">=",
            format!(
                "no sample for {} ({} × the {} interval); {} after {}",
                humantime::format_duration(allowance),
                config.missed_intervals,
                humantime::format_duration(interval),
                config.escalated_severity,
                humantime::format_duration(config.escalate_after),
            ),
            format!(
                "silent for {}",
                humantime::format_duration(whole_seconds(silent_for))
            ),
        )
    };
    Evidence {
        rule: NodeSilent::NAME.to_owned(),
        decided_at_ms: now.as_unix_ms(),
        severity,
        measured: format!("samples from {node}"),
        detail,
        condition: RuleCondition {
            text,
            comparator: comparator.to_owned(),
            threshold: allowance.as_secs_f64(),
            unit: "seconds".to_owned(),
            tiers: vec![
                TierEvidence {
                    severity: config.severity,
                    above: allowance.as_secs_f64(),
                },
                TierEvidence {
                    severity: config.escalated_severity,
                    above: config.escalate_after.as_secs_f64(),
                },
            ],
            tier_threshold: if !closing && silent_for >= config.escalate_after {
                config.escalate_after.as_secs_f64()
            } else {
                allowance.as_secs_f64()
            },
        },
        window: WindowSpan {
            open_for_ms: explain::millis(allowance),
            close_for_ms: 0,
            from_ms: silent_since.as_unix_ms(),
            to_ms: now.as_unix_ms(),
            clock: "aggregator".to_owned(),
        },
        samples: Vec::new(),
        samples_elided: 0,
        silence: Some(SilenceEvidence {
            silent_since_ms: silent_since.as_unix_ms(),
            silent_for_ms: explain::millis(silent_for),
            interval_ms: explain::millis(interval),
            missed_intervals: config.missed_intervals,
            allowance_ms: explain::millis(allowance),
            escalate_after_ms: explain::millis(config.escalate_after),
        }),
        nodes: Vec::new(),
        nodes_elided: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeKey {
        NodeKey {
            tenant: "acme".into(),
            cluster: "db".into(),
            node: "n1".into(),
        }
    }

    #[test]
    fn silence_escalates_after_five_minutes() {
        let config = NodeSilentConfig::default();
        let interval = Duration::from_secs(15);
        let since = Timestamp::from_unix_ms(0);
        let at = |secs: i64| Timestamp::from_unix_ms(secs * 1000);
        assert_eq!(silence(&node(), since, interval, at(44), &config), None);
        let Some(Condition::Breach(warning)) = silence(&node(), since, interval, at(45), &config)
        else {
            panic!("silent for 3 intervals");
        };
        assert_eq!(warning.severity, Severity::Warning);
        assert_eq!(
            warning.message,
            "no sample from acme/db/n1 for 45s (expected one every 15s)"
        );
        let Some(Condition::Breach(error)) = silence(&node(), since, interval, at(300), &config)
        else {
            panic!("silent for 5 minutes");
        };
        assert_eq!(error.severity, Severity::Error);
    }
}
