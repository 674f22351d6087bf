//! Why an issue is open, and why it closed: the rule, what it measured, the condition
//! (comparator, threshold, every tier and the one that holds), the window (how long the
//! condition had to hold, and from when to when it did), and the evidence that decided
//! it: the run of samples for a threshold rule, the silence for `node_silent`, every
//! node's normalized view or failed query for `cluster_consensus`.
//!
//! `engine` captures an explanation when an issue opens and at each severity change
//! (replacing why it is open), and adds why it closed when it closes. The samples of the
//! current runs are kept beside each rule's `ConditionWindow` in a `RunTrail`, bounded:
//! at most `MAX_SAMPLES` per run (the earliest `HEAD_SAMPLES` and the latest
//! `TAIL_SAMPLES`, with the number left out in between), so a trail costs constant memory
//! and an issue's stored explanation stays a few kilobytes whatever the run's length. A
//! clear run is recorded only while its rule has an issue open on the subject: that is
//! the only time it can close one, so healthy subjects keep no samples at all.
//!
//! The evidence of the silence and of the views is made by their rules (`rules::node_silent`,
//! `rules::cluster_consensus`); this module makes a threshold rule's.
//!
//! No I/O, no clock: times come in with the samples and the decisions.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::issue::{IssueBook, IssueEvent, IssueEventKind, IssueKey, UpdateReason};
use crate::model::{Severity, Timestamp};
use crate::rules::threshold::{Measurement, ThresholdRuleConfig};
use crate::window::{ConditionWindow, Verdict};

/// The earliest samples of a run kept in an explanation.
pub const HEAD_SAMPLES: usize = 10;
/// The latest samples of a run kept in an explanation.
pub const TAIL_SAMPLES: usize = 50;
/// At most this many samples per explanation; the rest are counted as elided.
pub const MAX_SAMPLES: usize = HEAD_SAMPLES + TAIL_SAMPLES;
/// At most this many nodes' views in a `cluster_consensus` explanation.
pub const MAX_NODES: usize = 64;

/// Why an issue is (or was last) open, and why it closed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Why it is open: captured when it opened, replaced at each severity change. For a
    /// closed issue, its last open state. `None` for issues opened before explanations
    /// existed.
    pub opened: Option<Evidence>,
    /// Why it closed; `None` while open.
    pub closed: Option<Evidence>,
}

/// One decision of a rule, with what decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub rule: String,
    /// When the aggregator decided (its clock).
    pub decided_at_ms: i64,
    /// The severity the decision gave (for a close: the severity the issue had).
    pub severity: Severity,
    /// What was measured, e.g. "core load on acme/db/node-1".
    pub measured: String,
    /// How the deciding value was computed, or what the views said; may be empty.
    pub detail: String,
    pub condition: RuleCondition,
    pub window: WindowSpan,
    /// The run of samples that decided it, oldest first: the earliest `HEAD_SAMPLES` and
    /// the latest `TAIL_SAMPLES` when the run was longer (`samples_elided` in between).
    pub samples: Vec<DecidingSample>,
    pub samples_elided: u64,
    /// `node_silent` only.
    pub silence: Option<SilenceEvidence>,
    /// `cluster_consensus` only: each node's part, in node order.
    pub nodes: Vec<NodeEvidence>,
    pub nodes_elided: u64,
}

/// The condition a decision checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleCondition {
    /// In words, e.g. "over 80 % for 1m".
    pub text: String,
    /// ">" (open: over), "<" (close: under), ">=" (silence at least); empty when the
    /// condition is not a comparison (consensus).
    pub comparator: String,
    /// The rule's threshold.
    pub threshold: f64,
    /// How values read: "ratio", "percent", "seconds", "nodes".
    pub unit: String,
    /// Every severity tier, lowest first (empty: the rule has one severity).
    pub tiers: Vec<TierEvidence>,
    /// The threshold of the tier that holds (the rule's threshold without tiers).
    pub tier_threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierEvidence {
    pub severity: Severity,
    pub above: f64,
}

/// How long the condition had to hold, and from when to when it did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSpan {
    pub open_for_ms: u64,
    pub close_for_ms: u64,
    /// The run (or silence, or disagreement) began at `from_ms` and was decided at `to_ms`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Whose clock: "agent" (sample times) or "aggregator" (arrival, consensus).
    pub clock: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecidingSample {
    /// When the agent took it.
    pub time_ms: i64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceEvidence {
    /// Since when nothing arrived: the last batch, or the aggregator's start if later.
    pub silent_since_ms: i64,
    pub silent_for_ms: u64,
    /// The node's host interval, and how many of them may be missed.
    pub interval_ms: u64,
    pub missed_intervals: u32,
    /// interval × missed intervals: the silence that opens the issue.
    pub allowance_ms: u64,
    /// The silence after which the issue escalates.
    pub escalate_after_ms: u64,
}

/// One node's part in a `cluster_consensus` decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEvidence {
    pub node: String,
    /// "view" (a successful query), "failed" (the query failed), "silent" (no view for
    /// too long: counted as failed), "pending" (no view yet).
    pub outcome: String,
    /// Why the query failed or how long it has been silent; empty for a view.
    pub error: String,
    /// The normalized view: (member, state, alive), in member order.
    pub members: Vec<MemberEvidence>,
    /// The members the view names as leader.
    pub leaders: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberEvidence {
    pub id: String,
    pub state: String,
    pub alive: bool,
}

/// A bounded record of one uninterrupted run of samples.
#[derive(Debug, Clone, Default, PartialEq)]
struct SampleRun {
    since: Option<Timestamp>,
    head: Vec<DecidingSample>,
    tail: VecDeque<DecidingSample>,
    n_samples: u64,
}

impl SampleRun {
    /// Adds a sample to the run that began at `since`; a different `since` starts over.
    fn push(&mut self, since: Timestamp, time: Timestamp, value: f64) {
        if self.since != Some(since) {
            self.clear();
            self.since = Some(since);
        }
        let sample = DecidingSample {
            time_ms: time.as_unix_ms(),
            value,
        };
        self.n_samples += 1;
        if self.head.len() < HEAD_SAMPLES {
            self.head.push(sample);
            return;
        }
        if self.tail.len() == TAIL_SAMPLES {
            self.tail.pop_front();
        }
        self.tail.push_back(sample);
    }

    fn clear(&mut self) {
        self.since = None;
        self.head.clear();
        self.tail.clear();
        self.n_samples = 0;
    }

    fn is_empty(&self) -> bool {
        self.n_samples == 0
    }

    /// The kept samples, oldest first, and how many were left out.
    fn samples(&self) -> (Vec<DecidingSample>, u64) {
        let kept: Vec<DecidingSample> = self.head.iter().chain(&self.tail).copied().collect();
        let elided = self.n_samples - kept.len() as u64;
        (kept, elided)
    }
}

/// The samples of one rule's current runs on one subject, following its window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTrail {
    breach: SampleRun,
    clear: SampleRun,
}

impl RunTrail {
    /// Records a sample `window` has just observed with `verdict`: it extends (or starts)
    /// the run of its verdict, and any other run is over, as in the window. The clear run
    /// is recorded only when `keep_clear` (an issue is open).
    fn follow(
        &mut self,
        window: &ConditionWindow,
        verdict: Verdict,
        time: Timestamp,
        value: f64,
        keep_clear: bool,
    ) {
        match (verdict, window.breach_since()) {
            (Verdict::Breach, Some(since)) => self.breach.push(since, time, value),
            _ => self.breach.clear(),
        }
        match (verdict, window.clear_since()) {
            (Verdict::Clear, Some(since)) if keep_clear => self.clear.push(since, time, value),
            _ => self.clear.clear(),
        }
    }

    fn is_empty(&self) -> bool {
        self.breach.is_empty() && self.clear.is_empty()
    }
}

/// Records a sample the window of `trail`'s rule and subject has just observed with
/// `verdict`; `current` is the severity of the issue open on the subject, if any. Call it
/// for every sample the window observed, before deciding whether the sample may conclude
/// anything: the trail must see every sample of a run. A trail exists only while its
/// subject is breaching or has an issue open (to explain the close); a healthy subject
/// keeps none and costs one comparison.
pub fn follow(
    trail: &mut Option<Box<RunTrail>>,
    value: f64,
    window: &ConditionWindow,
    verdict: Verdict,
    time: Timestamp,
    current: Option<Severity>,
) {
    let issue_open = current.is_some();
    match trail {
        Some(kept) => {
            kept.follow(window, verdict, time, value, issue_open);
            if kept.is_empty() {
                *trail = None;
            }
        }
        None if verdict == Verdict::Breach || (verdict == Verdict::Clear && issue_open) => {
            let mut kept = Box::<RunTrail>::default();
            kept.follow(window, verdict, time, value, issue_open);
            *trail = Some(kept);
        }
        None => {}
    }
}

/// Puts what `evidence` builds into `event`'s issue: an opening, a severity change or a
/// changed finding replaces why it is open (in the book too, so later events carry it); a close adds why
/// it closed to the last open explanation. Reminders change nothing.
pub fn attach(book: &mut IssueBook, event: &mut IssueEvent, evidence: impl FnOnce() -> Evidence) {
    match event.kind {
        IssueEventKind::Opened
        | IssueEventKind::Updated(UpdateReason::Severity | UpdateReason::Changed) => {
            let explanation = Box::new(Explanation {
                opened: Some(evidence()),
                closed: None,
            });
            book.set_explanation(&event.issue.key, explanation.clone());
            event.issue.explanation = Some(explanation);
        }
        IssueEventKind::Closed => {
            event
                .issue
                .explanation
                .get_or_insert_with(Box::default)
                .closed = Some(evidence());
        }
        IssueEventKind::Updated(UpdateReason::Reminder) => {}
    }
}

/// Milliseconds of `duration`, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// " for 1m", or nothing for a zero span.
pub fn for_phrase(span: Duration) -> String {
    if span.is_zero() {
        String::new()
    } else {
        format!(" for {}", humantime::format_duration(span))
    }
}

fn unit_suffix(unit: &str) -> &'static str {
    if unit == "percent" { " %" } else { "" }
}

/// Where and when a threshold rule decided: its window after the deciding sample, that
/// sample's time (agent clock) and the aggregator's `now`.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub window: &'a ConditionWindow,
    pub sample_time: Timestamp,
    pub now: Timestamp,
}

/// `attach` for a threshold rule's event (`core_load`, `memory_usage`, `disk_usage`): the
/// evidence is the run in `trails` of the condition that decided it.
pub fn attach_threshold(
    book: &mut IssueBook,
    event: &mut IssueEvent,
    trail: Option<&RunTrail>,
    measurement: &Measurement,
    config: &ThresholdRuleConfig,
    decided: Decided<'_>,
) {
    let closing = event.kind == IssueEventKind::Closed;
    let (severity, tier_threshold) = (event.issue.severity, event.issue.threshold);
    attach(book, event, || {
        threshold(
            measurement,
            config,
            trail,
            closing,
            (severity, tier_threshold),
            decided,
        )
    });
}

/// A threshold rule's decision: `closing` says whether it was the clear condition;
/// `(severity, tier_threshold)` are the issue's after the decision.
fn threshold(
    measurement: &Measurement,
    config: &ThresholdRuleConfig,
    trail: Option<&RunTrail>,
    closing: bool,
    (severity, tier_threshold): (Severity, f64),
    decided: Decided<'_>,
) -> Evidence {
    let Decided {
        window,
        sample_time,
        now,
    } = decided;
    let unit = measurement.unit();
    let suffix = unit_suffix(unit);
    // A rule that opens below its threshold (a headroom) reads the other way round.
    let (opens, clears) = if config.below { ("<", ">") } else { (">", "<") };
    // A tier with its own `open_for` (red held 1 min) was decided by that span.
    let open_for = config
        .tiers
        .iter()
        .find(|tier| tier.severity == severity)
        .and_then(|tier| tier.open_for)
        .unwrap_or(config.open_for);
    let (comparator, since, run, span) = if closing {
        (
            clears,
            window.clear_since(),
            trail.map(|trail| &trail.clear),
            config.close_for,
        )
    } else {
        (
            opens,
            window.breach_since(),
            trail.map(|trail| &trail.breach),
            open_for,
        )
    };
    let (samples, samples_elided) = run.map(SampleRun::samples).unwrap_or_default();
    let word = if closing == config.below {
        "over"
    } else {
        "under"
    };
    Evidence {
        rule: measurement.key.rule.as_str().to_owned(),
        decided_at_ms: now.as_unix_ms(),
        severity,
        measured: measurement.what().to_owned(),
        detail: measurement.how().to_owned(),
        condition: RuleCondition {
            text: format!("{word} {}{suffix}{}", config.threshold, for_phrase(span)),
            comparator: comparator.to_owned(),
            threshold: config.threshold,
            unit: unit.to_owned(),
            tiers: config
                .tiers
                .iter()
                .map(|tier| TierEvidence {
                    severity: tier.severity,
                    above: tier.above,
                })
                .collect(),
            tier_threshold,
        },
        window: WindowSpan {
            open_for_ms: millis(open_for),
            close_for_ms: millis(config.close_for),
            from_ms: since.unwrap_or(sample_time).as_unix_ms(),
            to_ms: sample_time.as_unix_ms(),
            clock: "agent".to_owned(),
        },
        samples,
        samples_elided,
        silence: None,
        nodes: Vec::new(),
        nodes_elided: 0,
    }
}

/// An operator closed the issue of `key` at `now`; `detail` says who and why.
pub fn closed_by_operator(
    key: &IssueKey,
    severity: Severity,
    detail: String,
    now: Timestamp,
) -> Evidence {
    Evidence {
        rule: key.rule.as_str().to_owned(),
        decided_at_ms: now.as_unix_ms(),
        severity,
        measured: format!("an operator's request about {}", key.subject),
        detail,
        condition: RuleCondition {
            text: "an operator closes it".to_owned(),
            ..RuleCondition::default()
        },
        window: WindowSpan {
            from_ms: now.as_unix_ms(),
            to_ms: now.as_unix_ms(),
            clock: "aggregator".to_owned(),
            ..WindowSpan::default()
        },
        samples: Vec::new(),
        samples_elided: 0,
        silence: None,
        nodes: Vec::new(),
        nodes_elided: 0,
    }
}

#[cfg(test)]
mod tests;
