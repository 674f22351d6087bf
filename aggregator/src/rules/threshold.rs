//! What the threshold rules share: their config (`[rules.<name>]` with `threshold`,
//! `open_for`, `close_for`, `severity`, `renotify`, `tiers`), how a value compares with
//! the threshold, the severity tiers, and the words of what a window concludes.
//!
//! A threshold rule opens when every sample over `open_for` was over the threshold and
//! closes when every sample over `close_for` was under it (`window`). No I/O, no clock.

use std::time::Duration;

use serde::Deserialize;

use super::{Each, Rule, Unlisted};
use crate::issue::{Condition, Finding, IssueKey};
use crate::model::{Reading, Severity};
use crate::window::{ConditionWindow, Verdict};

/// A rule that compares one value per subject with a threshold (`ThresholdRuleConfig`):
/// what is its own (name, remedy, defaults, the highest threshold that makes sense, what
/// it measures, what an incomplete listing says). Everything else a `Rule` needs follows
/// from its `ThresholdRuleConfig`, in the one `impl Rule` below, so a threshold rule's
/// module holds only what differs.
pub trait ThresholdRule {
    /// `Rule::NAME`.
    const NAME: &'static str;
    /// `Rule::REMEDY`.
    const REMEDY: &'static str;
    /// The highest threshold `validate` accepts (100 for a percentage); `None` for none.
    const MAX_THRESHOLD: Option<f64>;

    /// `Rule::defaults`: the seed's values.
    fn defaults() -> ThresholdRuleConfig;
    /// `Rule::measure`.
    fn measure<'a>(config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>);
    /// `Rule::unlisted`.
    fn unlisted(config: &ThresholdRuleConfig, reading: &Reading) -> Option<Unlisted>;
}

impl<T: ThresholdRule> Rule for T {
    const NAME: &'static str = <T as ThresholdRule>::NAME;
    const REMEDY: &'static str = <T as ThresholdRule>::REMEDY;
    type Config = ThresholdRuleConfig;
    type File = ThresholdRuleOverrides;

    fn defaults() -> ThresholdRuleConfig {
        <T as ThresholdRule>::defaults()
    }

    fn config(file: ThresholdRuleOverrides) -> ThresholdRuleConfig {
        file.over(<T as ThresholdRule>::defaults())
    }

    fn validate(config: &ThresholdRuleConfig, errors: &mut Vec<String>) {
        config.validate(<T as ThresholdRule>::NAME, T::MAX_THRESHOLD, errors);
    }

    fn enabled(config: &ThresholdRuleConfig) -> bool {
        config.enabled
    }

    fn renotify(config: &ThresholdRuleConfig) -> Duration {
        config.renotify
    }

    fn measure<'a>(config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        <T as ThresholdRule>::measure(config, reading, each);
    }

    fn threshold(config: &ThresholdRuleConfig) -> Option<&ThresholdRuleConfig> {
        Some(config)
    }

    fn unlisted(config: &ThresholdRuleConfig, reading: &Reading) -> Option<Unlisted> {
        <T as ThresholdRule>::unlisted(config, reading)
    }
}

/// A rule that compares one value with a threshold: open when over it for `open_for`,
/// close when under it for `close_for`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRuleConfig {
    pub enabled: bool,
    pub threshold: f64,
    pub open_for: Duration,
    pub close_for: Duration,
    pub severity: Severity,
    /// A reminder (`updated`) this long after the issue's last event; zero for none.
    pub renotify: Duration,
    /// Severity tiers, lowest first; empty: one tier, `severity` over `threshold`.
    /// See `tier_severity` for how an open issue moves between them.
    pub tiers: Vec<SeverityTier>,
    /// The condition is the value *under* the threshold (a headroom running out), and
    /// over it clears; no tiers then.
    pub below: bool,
    /// A cadence: judge a sample only once this long has passed since the last judged one
    /// (the others are ignored); zero judges every sample.
    pub evaluate_every: Duration,
    /// The cadence while the subject has an issue open (to see the recovery sooner);
    /// zero judges every sample.
    pub evaluate_every_while_open: Duration,
}

/// One severity tier: the issue has `severity` once the value is over `above`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityTier {
    pub above: f64,
    pub severity: Severity,
    /// How long the value must stay over `above` before the issue opens at this tier or
    /// escalates to it; `None`: the rule's `open_for` decides, as for any tier. A tier
    /// with its own `open_for` is a state, not a level: an open issue is at the highest
    /// such tier the value is over now (no hysteresis), so a cluster back from red to
    /// yellow steps down at once (see `conclude`).
    #[serde(default, with = "humantime_serde")]
    pub open_for: Option<Duration>,
}

impl Default for ThresholdRuleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 0.0,
            open_for: Duration::ZERO,
            close_for: Duration::ZERO,
            severity: Severity::Warning,
            renotify: Duration::from_secs(3600),
            tiers: Vec::new(),
            below: false,
            evaluate_every: Duration::ZERO,
            evaluate_every_while_open: Duration::ZERO,
        }
    }
}

impl ThresholdRuleConfig {
    /// Problems of `[rules.<rule>]`; `max` bounds the threshold (100 for a percentage).
    pub fn validate(&self, rule: &str, max: Option<f64>, errors: &mut Vec<String>) {
        let field = format!("config: rules.{rule}.threshold");
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            errors.push(format!("{field}: must be a non-negative number"));
        } else if let Some(max) = max.filter(|max| self.threshold > *max) {
            errors.push(format!("{field}: {} is over {max}", self.threshold));
        }
        if self.below && !self.tiers.is_empty() {
            errors.push(format!(
                "config: rules.{rule}.tiers: a rule that opens below its threshold has no tiers"
            ));
        }
        if let Some(first) = self.tiers.first()
            && first.above != self.threshold
        {
            errors.push(format!(
                "{field}: {} differs from the lowest tier's `above` ({}); leave it out",
                self.threshold, first.above
            ));
        }
        for (index, pair) in self.tiers.windows(2).enumerate() {
            let (lower, upper) = (pair[0], pair[1]);
            if upper.above <= lower.above || upper.severity <= lower.severity {
                errors.push(format!(
                    "config: rules.{rule}.tiers[{}]: tiers must rise in both `above` and \
                     `severity` ({} {} follows {} {})",
                    index + 1,
                    upper.above,
                    upper.severity,
                    lower.above,
                    lower.severity
                ));
            }
        }
    }
}

/// `[rules.<name>]` of a threshold rule as written: each field left out keeps that rule's
/// own default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRuleOverrides {
    enabled: Option<bool>,
    threshold: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    open_for: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    close_for: Option<Duration>,
    severity: Option<Severity>,
    #[serde(default, with = "humantime_serde")]
    renotify: Option<Duration>,
    tiers: Option<Vec<SeverityTier>>,
    below: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    evaluate_every: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    evaluate_every_while_open: Option<Duration>,
}

impl ThresholdRuleOverrides {
    /// The rule's settings: these overrides over its `defaults`.
    pub fn over(self, defaults: ThresholdRuleConfig) -> ThresholdRuleConfig {
        let tiers = self.tiers.unwrap_or(defaults.tiers);
        // With tiers, the lowest tier is where the rule opens, unless a threshold is
        // written too (then `validate` checks that they agree).
        let tier_threshold = tiers.first().map(|tier| tier.above);
        ThresholdRuleConfig {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            threshold: self
                .threshold
                .or(tier_threshold)
                .unwrap_or(defaults.threshold),
            tiers,
            open_for: self.open_for.unwrap_or(defaults.open_for),
            close_for: self.close_for.unwrap_or(defaults.close_for),
            severity: self.severity.unwrap_or(defaults.severity),
            renotify: self.renotify.unwrap_or(defaults.renotify),
            below: self.below.unwrap_or(defaults.below),
            evaluate_every: self.evaluate_every.unwrap_or(defaults.evaluate_every),
            evaluate_every_while_open: self
                .evaluate_every_while_open
                .unwrap_or(defaults.evaluate_every_while_open),
        }
    }
}

/// How a rule's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain ratio, e.g. core load 2.35.
    Ratio,
    /// A percentage, e.g. 83.2 %.
    Percent,
    /// A whole number of things, e.g. 1800000000 documents.
    Count,
    /// A health status measured as 0 green, 1 yellow, 2 red.
    Status,
    /// Whether a service answered: 0 reachable, 1 unreachable.
    Reachability,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::Ratio => format!("{value:.2}"),
            Unit::Percent => format!("{value:.1} %"),
            Unit::Count => format!("{value:.0}"),
            Unit::Status if value <= 0.5 => "green".to_owned(),
            Unit::Status if value <= 1.5 => "yellow".to_owned(),
            Unit::Status => "red".to_owned(),
            Unit::Reachability if value <= 0.5 => "reachable".to_owned(),
            Unit::Reachability => "unreachable".to_owned(),
        }
    }

    /// "ratio" or "percent", as explanations name it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Ratio => "ratio",
            Unit::Percent => "percent",
            Unit::Count => "count",
            Unit::Status => "status",
            Unit::Reachability => "reachability",
        }
    }

    /// Whether its values are states (a status, reachability) rather than amounts: their
    /// messages name the state, not a comparison with a number.
    const fn is_state(self) -> bool {
        matches!(self, Unit::Status | Unit::Reachability)
    }
}

/// One value a threshold rule watches, with the words its messages need.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub key: IssueKey,
    pub value: f64,
    /// What was measured, e.g. "disk / on acme/db/node-1".
    what: String,
    /// How it was computed, when that helps, e.g. "load1 4.20 over 2 physical cores".
    how: String,
    unit: Unit,
}

impl Measurement {
    pub fn new(key: IssueKey, value: f64, description: super::Description) -> Self {
        Self {
            key,
            value,
            what: description.what,
            how: description.how,
            unit: description.unit,
        }
    }

    /// What was measured, e.g. "disk / on acme/db/node-1".
    pub fn what(&self) -> &str {
        &self.what
    }

    /// How the value was computed, e.g. "load1 4.20 over 2 physical cores".
    pub fn how(&self) -> &str {
        &self.how
    }

    /// How its values read: "ratio" or "percent".
    pub fn unit(&self) -> &'static str {
        self.unit.as_str()
    }
}

/// Whether a tier of `config` has its own `open_for`: then the engine keeps one window
/// per tier (`observe_tiers`) and `conclude` times each tier with its own.
pub fn timed_tiers(config: &ThresholdRuleConfig) -> bool {
    config.tiers.iter().any(|tier| tier.open_for.is_some())
}

/// Moves the per-tier windows of a rule with timed tiers (one per tier, made on first
/// use) with a value taken at `time`.
pub fn observe_tiers(
    windows: &mut Vec<ConditionWindow>,
    config: &ThresholdRuleConfig,
    time: crate::model::Timestamp,
    value: f64,
    max_gap: Duration,
) {
    windows.resize_with(config.tiers.len(), ConditionWindow::default);
    for (window, tier) in windows.iter_mut().zip(&config.tiers) {
        window.observe(time, verdict(value, tier.above), max_gap);
    }
}

/// Whether `conclude` could change the issue book for a window that has just moved:
/// the open condition held (opens, or may change the tier of, an issue), or the clear
/// condition held while an issue is open (closes it). A clear with nothing open, or
/// neither condition held, changes nothing, so no message need be made for it.
pub fn may_decide(
    window: &ConditionWindow,
    tier_windows: &[ConditionWindow],
    config: &ThresholdRuleConfig,
    issue_open: bool,
) -> bool {
    if !tier_windows.is_empty() {
        // Timed tiers: an open issue may change tier on any breaching sample.
        return (issue_open && window.breach_held_for(Duration::ZERO))
            || timed_tier(config, tier_windows).is_some()
            || (issue_open && window.clear_held_for(config.close_for));
    }
    window.breach_held_for(config.open_for)
        || (issue_open && window.clear_held_for(config.close_for))
}

/// The highest tier whose value has been over its `above` for its own `open_for` (the
/// rule's when it has none).
fn timed_tier(config: &ThresholdRuleConfig, tier_windows: &[ConditionWindow]) -> Option<usize> {
    config
        .tiers
        .iter()
        .zip(tier_windows)
        .rposition(|(tier, window)| {
            window.breach_held_for(tier.open_for.unwrap_or(config.open_for))
        })
}

/// Whether the rule judges samples on a cadence rather than each one.
pub fn has_cadence(config: &ThresholdRuleConfig) -> bool {
    !config.evaluate_every.is_zero() || !config.evaluate_every_while_open.is_zero()
}

/// Whether a sample taken at `time` is judged, given when the last judged one was taken
/// (`evaluate_every`, `evaluate_every_while_open`).
pub fn due(
    config: &ThresholdRuleConfig,
    evaluated: Option<crate::model::Timestamp>,
    time: crate::model::Timestamp,
    issue_open: bool,
) -> bool {
    let every = if issue_open {
        config.evaluate_every_while_open
    } else {
        config.evaluate_every
    };
    evaluated.is_none_or(|evaluated| time.since(evaluated) >= every)
}

/// What `value` says about the rule's condition: over the threshold opens (under it, for
/// a rule that opens `below`).
pub fn judge(config: &ThresholdRuleConfig, value: f64) -> Verdict {
    if config.below {
        verdict(-value, -config.threshold)
    } else {
        verdict(value, config.threshold)
    }
}

/// Over the threshold opens, under it clears, exactly at it does neither.
pub fn verdict(value: f64, threshold: f64) -> Verdict {
    if value > threshold {
        Verdict::Breach
    } else if value < threshold {
        Verdict::Clear
    } else {
        Verdict::Neither
    }
}

/// The severity tier an issue is at after a breaching `value`, given the tier it was at
/// (`current`, `None` when it is just opening), and the threshold of that tier.
///
/// Escalation is immediate: a value over a higher tier's `above` takes that tier at once.
/// De-escalation has one tier of hysteresis: a tier, once reached, holds while the value
/// stays over the `above` of the tier beneath it; falling under that, the issue goes to
/// the highest tier that still holds (at most one above the tier the value is in). In
/// numbers, with tiers 85/88/90 % (info/warning/error): 91 % is error; 89 % keeps error
/// (still over warning's 88 %); 87 % gives warning (under 88 %, but warning holds while
/// over info's 85 %); 86 % then stays warning. This keeps a value wobbling around one
/// tier boundary from sending an update on every sample, and it is decided by values,
/// not by how many samples arrived (a one-tier-per-sample rule would make the severity
/// depend on the agent's interval). Without tiers: the rule's one severity and threshold.
pub fn tier_severity(
    config: &ThresholdRuleConfig,
    value: f64,
    current: Option<Severity>,
) -> (Severity, f64) {
    let tiers = &config.tiers;
    if tiers.is_empty() {
        return (config.severity, config.threshold);
    }
    // The highest tier the value is over (0 when under all: the lowest tier).
    let reached = tiers.iter().rposition(|tier| value > tier.above);
    let held = current
        .and_then(|severity| tiers.iter().position(|tier| tier.severity == severity))
        .map(|current_index| current_index.min(reached.map_or(0, |index| index + 1)));
    let index = match (reached, held) {
        (Some(reached), Some(held)) => reached.max(held),
        (Some(reached), None) => reached,
        (None, Some(held)) => held,
        (None, None) => 0,
    };
    (tiers[index].severity, tiers[index].above)
}

/// What a threshold rule concludes once `measurement` has been observed in `window`.
/// `current` is the severity of the rule's open issue on this subject, if one is open;
/// `remedy` is the rule's.
pub fn conclude(
    measurement: &Measurement,
    window: &ConditionWindow,
    tier_windows: &[ConditionWindow],
    config: &ThresholdRuleConfig,
    current: Option<Severity>,
    remedy: &str,
) -> Option<Condition> {
    if !tier_windows.is_empty()
        && let Some(condition) =
            conclude_timed(measurement, window, tier_windows, config, current, remedy)
    {
        return Some(condition);
    }
    let unit = measurement.unit;
    let value = unit.format(measurement.value);
    let (severity, tier_threshold) = tier_severity(config, measurement.value, current);
    let threshold = unit.format(config.threshold);
    let finding = |message: String| Finding {
        severity,
        value: measurement.value,
        threshold: tier_threshold,
        message,
        remedy: remedy.to_owned(),
    };
    if window.breach_held_for(config.open_for) {
        let held = held_phrase(config.open_for);
        let tier = if config.tiers.is_empty() {
            String::new()
        } else if measurement.value > tier_threshold {
            format!(" ({severity}: over {})", unit.format(tier_threshold))
        } else {
            format!(
                " ({severity}: from {}, held until under {})",
                unit.format(tier_threshold),
                tier_below(config, severity).map_or(threshold.clone(), |above| unit.format(above))
            )
        };
        let over = if config.below { "under" } else { "over" };
        let message = if unit.is_state() {
            format!(
                "{} is {value}{held} ({})",
                measurement.what, measurement.how
            )
        } else {
            format!(
                "{} is {value}, {over} {threshold}{held}{tier} ({})",
                measurement.what, measurement.how
            )
        };
        Some(Condition::Breach(finding(message)))
    } else if window.clear_held_for(config.close_for) {
        let held = held_phrase(config.close_for);
        let back = if config.below { "over" } else { "under" };
        let message = if unit.is_state() {
            format!(
                "{} is {value} again{held} ({})",
                measurement.what, measurement.how
            )
        } else {
            format!(
                "{} is {value}, back {back} {threshold}{held}",
                measurement.what
            )
        };
        Some(Condition::Clear(finding(message)))
    } else {
        None
    }
}

/// `conclude` for a rule with timed tiers, when the value breaches: an issue opens at the
/// highest tier held for its own `open_for`; an open one is at the highest tier held so,
/// or else at the highest tier the value is over now that is not above its current one
/// (it steps down at once, and escalates only once the higher tier has held). `None`
/// when the value does not breach: the clear is judged as for any threshold rule.
fn conclude_timed(
    measurement: &Measurement,
    window: &ConditionWindow,
    tier_windows: &[ConditionWindow],
    config: &ThresholdRuleConfig,
    current: Option<Severity>,
    remedy: &str,
) -> Option<Condition> {
    let tiers = &config.tiers;
    let value = measurement.value;
    let held = timed_tier(config, tier_windows);
    let index = match current {
        None => held?,
        Some(_) if !window.breach_held_for(Duration::ZERO) => return None,
        Some(severity) => {
            let current_index = tiers.iter().position(|tier| tier.severity == severity);
            let now_over = tiers
                .iter()
                .enumerate()
                .rposition(|(index, tier)| {
                    value > tier.above && current_index.is_some_and(|current| index <= current)
                })
                .unwrap_or(0);
            held.map_or(now_over, |held| held.max(now_over))
        }
    };
    let tier = tiers.get(index)?;
    let unit = measurement.unit;
    let span = tier.open_for.unwrap_or(config.open_for);
    let held = if current.is_none() {
        held_phrase(span)
    } else {
        String::new()
    };
    let message = if unit.is_state() {
        format!(
            "{} is {}{held} ({})",
            measurement.what,
            unit.format(value),
            measurement.how
        )
    } else {
        format!(
            "{} is {}, over {}{held} ({}: over {}) ({})",
            measurement.what,
            unit.format(value),
            unit.format(config.threshold),
            tier.severity,
            unit.format(tier.above),
            measurement.how
        )
    };
    Some(Condition::Breach(Finding {
        severity: tier.severity,
        value,
        threshold: tier.above,
        message,
        remedy: remedy.to_owned(),
    }))
}

/// The `above` of the tier beneath the one with `severity`.
fn tier_below(config: &ThresholdRuleConfig, severity: Severity) -> Option<f64> {
    let index = config
        .tiers
        .iter()
        .position(|tier| tier.severity == severity)?;
    index.checked_sub(1).map(|below| config.tiers[below].above)
}

fn held_phrase(span: Duration) -> String {
    if span.is_zero() {
        String::new()
    } else {
        format!(" for {}", humantime::format_duration(span))
    }
}

#[cfg(test)]
mod tests;
