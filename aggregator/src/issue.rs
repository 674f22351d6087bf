//! The issue lifecycle: `opened`, then any number of `updated`, then exactly one
//! `closed`, and never two open issues for one (rule, subject).
//!
//! `IssueBook` holds the open issues and turns what the rules decided (`Condition`) into
//! `IssueEvent`s. It owns no rules and no windows, does no I/O and reads no clock: the
//! caller passes `now` and persists what comes out. After a restart the book is rebuilt
//! from the store's open issues, so an issue stays open across restarts and is neither
//! opened twice nor closed without its `closed` event.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use crate::explain::Explanation;
use crate::model::{Severity, Subject, Timestamp};
use crate::rules::RuleName;

/// Which issue: one rule on one subject. At most one open issue per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssueKey {
    pub rule: RuleName,
    pub subject: Subject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueState {
    Open,
    Closed,
}

/// An issue as it stands after its latest event.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub id: String,
    pub key: IssueKey,
    pub severity: Severity,
    pub state: IssueState,
    pub opened_at: Timestamp,
    pub closed_at: Option<Timestamp>,
    /// When its latest event happened; reminders count from here.
    pub updated_at: Timestamp,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
    pub remedy: String,
    /// Why it is (or was last) open and, once closed, why it closed (`explain`). Boxed:
    /// it is rarely read and would otherwise triple the size of every event.
    pub explanation: Option<Box<Explanation>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateReason {
    /// The severity tier changed.
    Severity,
    /// Still open after `renotify`.
    Reminder,
    /// The same severity, but what was found changed (e.g. which nodes disagree).
    Changed,
}

impl UpdateReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateReason::Severity => "severity",
            UpdateReason::Reminder => "reminder",
            UpdateReason::Changed => "changed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueEventKind {
    Opened,
    Updated(UpdateReason),
    Closed,
}

impl IssueEventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            IssueEventKind::Opened => "opened",
            IssueEventKind::Updated(_) => "updated",
            IssueEventKind::Closed => "closed",
        }
    }
}

/// One step of an issue's life, with the issue as it stands after it.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueEvent {
    pub id: String,
    pub kind: IssueEventKind,
    pub time: Timestamp,
    pub issue: Issue,
}

/// What a rule concluded about one subject from its latest evidence.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The open condition has held long enough.
    Breach(Finding),
    /// The clear condition has held long enough.
    Clear(Finding),
}

/// The facts behind a condition, carried into the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
    pub remedy: String,
}

/// The open issues.
#[derive(Debug, Default)]
pub struct IssueBook {
    open: HashMap<IssueKey, Issue>,
}

impl IssueBook {
    /// Rebuilds the book from persisted open issues.
    pub fn restore(open_issues: impl IntoIterator<Item = Issue>) -> Self {
        let open = open_issues
            .into_iter()
            .filter(|issue| issue.state == IssueState::Open)
            .map(|issue| (issue.key.clone(), issue))
            .collect();
        Self { open }
    }

    /// Applies a rule's conclusion: opens, updates (severity changed) or closes the issue
    /// for `key`, or returns nothing when the conclusion changes nothing.
    pub fn apply(
        &mut self,
        key: &IssueKey,
        condition: Condition,
        now: Timestamp,
    ) -> Option<IssueEvent> {
        match (condition, self.open.get_mut(key)) {
            (Condition::Breach(finding), None) => {
                let issue = Issue {
                    id: new_id(now),
                    key: key.clone(),
                    severity: finding.severity,
                    state: IssueState::Open,
                    opened_at: now,
                    closed_at: None,
                    updated_at: now,
                    value: finding.value,
                    threshold: finding.threshold,
                    message: finding.message,
                    remedy: finding.remedy,
                    explanation: None,
                };
                self.open.insert(key.clone(), issue.clone());
                Some(event(IssueEventKind::Opened, now, issue))
            }
            (Condition::Breach(finding), Some(issue)) => {
                if finding.severity == issue.severity {
                    // Still breaching at the same tier: keep the latest value for the API,
                    // but it is not news.
                    issue.value = finding.value;
                    return None;
                }
                update(issue, finding, now);
                Some(event(
                    IssueEventKind::Updated(UpdateReason::Severity),
                    now,
                    issue.clone(),
                ))
            }
            (Condition::Clear(finding), Some(_)) => {
                let mut issue = self.open.remove(key)?;
                let severity = issue.severity;
                update(&mut issue, finding, now);
                // A close reports the severity the issue had, not the clear finding's.
                issue.severity = severity;
                issue.state = IssueState::Closed;
                issue.closed_at = Some(now);
                Some(event(IssueEventKind::Closed, now, issue))
            }
            (Condition::Clear(_), None) => None,
        }
    }

    /// What was found on the open issue of `key` changed at the same severity (for a rule
    /// that says when that is news): an `updated` event with the new finding.
    pub fn change(
        &mut self,
        key: &IssueKey,
        finding: Finding,
        now: Timestamp,
    ) -> Option<IssueEvent> {
        let issue = self.open.get_mut(key)?;
        update(issue, finding, now);
        Some(event(
            IssueEventKind::Updated(UpdateReason::Changed),
            now,
            issue.clone(),
        ))
    }

    /// Reminders for open issues whose latest event is at least `renotify(rule)` old
    /// (`None` or zero: the rule sends none).
    pub fn remind(
        &mut self,
        now: Timestamp,
        renotify: impl Fn(&RuleName) -> Option<Duration>,
    ) -> Vec<IssueEvent> {
        let mut reminders = Vec::new();
        for issue in self.open.values_mut() {
            let Some(every) = renotify(&issue.key.rule).filter(|every| !every.is_zero()) else {
                continue;
            };
            if now.since(issue.updated_at) >= every {
                issue.updated_at = now;
                reminders.push(event(
                    IssueEventKind::Updated(UpdateReason::Reminder),
                    now,
                    issue.clone(),
                ));
            }
        }
        reminders.sort_by(|a, b| a.issue.key.cmp(&b.issue.key));
        reminders
    }

    /// Records why the open issue for `key` is open (see `explain::attach`).
    pub fn set_explanation(&mut self, key: &IssueKey, explanation: Box<Explanation>) {
        if let Some(issue) = self.open.get_mut(key) {
            issue.explanation = Some(explanation);
        }
    }

    pub fn get(&self, key: &IssueKey) -> Option<&Issue> {
        self.open.get(key)
    }

    pub fn open_issues(&self) -> impl Iterator<Item = &Issue> {
        self.open.values()
    }
}

fn update(issue: &mut Issue, finding: Finding, now: Timestamp) {
    issue.severity = finding.severity;
    issue.value = finding.value;
    issue.threshold = finding.threshold;
    issue.message = finding.message;
    issue.remedy = finding.remedy;
    issue.updated_at = now;
}

fn event(kind: IssueEventKind, now: Timestamp, issue: Issue) -> IssueEvent {
    IssueEvent {
        id: new_id(now),
        kind,
        time: now,
        issue,
    }
}

/// A UUID v7 whose time part is `now` (not the wall clock), so ids sort with the
/// events' own times, also under a fake clock.
pub fn new_id(now: Timestamp) -> String {
    let millis = u64::try_from(now.as_unix_ms()).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1000,
        u32::try_from((millis % 1000) * 1_000_000).unwrap_or(0),
    );
    Uuid::new_v7(ts).to_string()
}

#[cfg(test)]
mod tests;
