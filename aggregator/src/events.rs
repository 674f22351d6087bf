//! The event envelope every sink and watcher receives, and its JSON form.
//!
//! An event is an issue event or a notification, addressed to tenant/cluster/node. This
//! module defines them and nothing about where they go (`dispatch`) or how they are kept
//! (`store`).

use serde_json::{Value, json};

use crate::issue::{IssueEvent, IssueState, new_id};
use crate::model::{NodeKey, Severity, Timestamp};

/// Where an event comes from; integrations route sources to sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSource {
    Issues,
    Notifications,
    /// Log lines agents ship (routed, not stored).
    Logs,
    /// Host samples as metrics (routed, not stored).
    Metrics,
    /// Per-node health events (DESIGN §7, seed 004).
    Health,
}

impl EventSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventSource::Issues => "issues",
            EventSource::Notifications => "notifications",
            EventSource::Logs => "logs",
            EventSource::Metrics => "metrics",
            EventSource::Health => "health",
        }
    }
}

/// A one-off event: published by another system or raised by the aggregator itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: String,
    pub time: Timestamp,
    pub tenant: String,
    pub cluster: String,
    /// Empty when it concerns the whole cluster.
    pub node: String,
    pub severity: Severity,
    pub title: String,
    pub text: String,
    /// "aggregator", or who published it.
    pub origin: String,
}

impl Notification {
    /// A notification the aggregator raises about a node.
    pub fn about_node(
        node: &NodeKey,
        severity: Severity,
        title: &str,
        text: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id: new_id(now),
            time: now,
            tenant: node.tenant.clone(),
            cluster: node.cluster.clone(),
            node: node.node.clone(),
            severity,
            title: title.to_owned(),
            text,
            origin: "aggregator".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Issue(IssueEvent),
    Notification(Notification),
}

impl Event {
    pub fn id(&self) -> &str {
        match self {
            Event::Issue(event) => &event.id,
            Event::Notification(notification) => &notification.id,
        }
    }

    pub fn time(&self) -> Timestamp {
        match self {
            Event::Issue(event) => event.time,
            Event::Notification(notification) => notification.time,
        }
    }

    pub fn source(&self) -> EventSource {
        match self {
            Event::Issue(_) => EventSource::Issues,
            Event::Notification(_) => EventSource::Notifications,
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            Event::Issue(event) => event.issue.severity,
            Event::Notification(notification) => notification.severity,
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            Event::Issue(event) => &event.issue.key.subject.tenant,
            Event::Notification(notification) => &notification.tenant,
        }
    }

    pub fn cluster(&self) -> &str {
        match self {
            Event::Issue(event) => &event.issue.key.subject.cluster,
            Event::Notification(notification) => &notification.cluster,
        }
    }

    pub fn node(&self) -> &str {
        match self {
            Event::Issue(event) => &event.issue.key.subject.node,
            Event::Notification(notification) => &notification.node,
        }
    }

    /// The envelope as JSON: the same for every sink that sends JSON.
    pub fn to_json(&self) -> Value {
        let mut envelope = json!({
            "id": self.id(),
            "time": self.time().to_rfc3339(),
            "source": self.source().as_str(),
            "tenant": self.tenant(),
            "cluster": self.cluster(),
            "node": self.node(),
            "severity": self.severity().as_str(),
        });
        let payload = match self {
            Event::Issue(event) => {
                let issue = &event.issue;
                let reason = match event.kind {
                    crate::issue::IssueEventKind::Updated(reason) => reason.as_str(),
                    _ => "",
                };
                json!({
                    "kind": event.kind.as_str(),
                    "reason": reason,
                    "issue_id": issue.id,
                    "rule": issue.key.rule.as_str(),
                    "mount": issue.key.subject.mount_name().unwrap_or_default(),
                    "resource_kind": issue.key.subject.resource.as_ref().map_or("", |resource| resource.kind.as_str()),
                    "resource": issue.key.subject.resource.as_ref().map_or("", |resource| resource.name.as_str()),
                    "state": match issue.state {
                        IssueState::Open => "open",
                        IssueState::Closed => "closed",
                    },
                    "opened": issue.opened_at.to_rfc3339(),
                    "value": issue.value,
                    "threshold": issue.threshold,
                    "message": issue.message,
                    "remedy": issue.remedy,
                })
            }
            Event::Notification(notification) => json!({
                "title": notification.title,
                "text": notification.text,
                "origin": notification.origin,
            }),
        };
        if let (Value::Object(envelope), Value::Object(payload)) = (&mut envelope, payload) {
            envelope.extend(payload);
        }
        envelope
    }
}
