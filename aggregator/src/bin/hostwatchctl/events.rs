//! `hostwatchctl events --watch` (WatchEvents): one line per event, or one JSON object
//! per line with `-o json`.

use proto::v1::{Event, event::Payload};
use serde_json::{Map, Value};

use crate::format::{
    event_source_name, insert_time, issue_event_kind_name, number, rfc3339, severity_name, subject,
};
use crate::issues::{event_json, issue_json, issue_subject};

/// `TIME SOURCE WHAT SUBJECT DETAIL`, e.g.
/// `2023-11-14T22:13:20Z issues opened warning disk_usage acme/e2e/node-a:/ value=13.2
/// threshold=1 issue=… "disk / on node-a is 13.2 % used"`.
pub(crate) fn line(event: &Event) -> String {
    let time = rfc3339(event.time_unix_ms).unwrap_or_else(|| "-".to_owned());
    let source = event_source_name(event.source);
    match &event.payload {
        Some(Payload::Issue(payload)) => {
            let issue = payload.issue.clone().unwrap_or_default();
            let issue_event = payload.event.clone().unwrap_or_default();
            let mut text = format!(
                "{time} {source} {} {} {} {} value={} threshold={} issue={}",
                issue_event_kind_name(issue_event.kind),
                severity_name(issue_event.severity),
                issue_event.rule,
                issue_subject(&issue),
                number(issue_event.value),
                number(issue_event.threshold),
                issue.id,
            );
            if !issue_event.message.is_empty() {
                text.push_str(&format!(" {:?}", issue_event.message));
            }
            text
        }
        Some(Payload::Notification(notification)) => {
            let mut text = format!(
                "{time} {source} {} {} {:?}",
                severity_name(notification.severity),
                subject(
                    &notification.tenant,
                    &notification.cluster,
                    &notification.node,
                    ""
                ),
                notification.title,
            );
            if !notification.text.is_empty() {
                text.push_str(&format!(" {:?}", notification.text));
            }
            if !notification.origin.is_empty() {
                text.push_str(&format!(" origin={}", notification.origin));
            }
            text
        }
        None => format!(
            "{time} {source} {} id={}",
            subject(&event.tenant, &event.cluster, &event.node, ""),
            event.id
        ),
    }
}

pub(crate) fn json(event: &Event) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), event.id.clone().into());
    insert_time(&mut object, "time", event.time_unix_ms);
    object.insert("tenant".into(), event.tenant.clone().into());
    object.insert("cluster".into(), event.cluster.clone().into());
    object.insert("node".into(), event.node.clone().into());
    object.insert("source".into(), event_source_name(event.source).into());
    match &event.payload {
        Some(Payload::Issue(payload)) => {
            let issue_event = payload.event.as_ref().map_or(Value::Null, event_json);
            let issue = payload.issue.as_ref().map_or(Value::Null, issue_json);
            object.insert("event".into(), issue_event);
            object.insert("issue".into(), issue);
        }
        Some(Payload::Notification(notification)) => {
            let mut inner = Map::new();
            inner.insert("id".into(), notification.id.clone().into());
            inner.insert("tenant".into(), notification.tenant.clone().into());
            inner.insert("cluster".into(), notification.cluster.clone().into());
            inner.insert("node".into(), notification.node.clone().into());
            inner.insert(
                "severity".into(),
                severity_name(notification.severity).into(),
            );
            inner.insert("title".into(), notification.title.clone().into());
            inner.insert("text".into(), notification.text.clone().into());
            insert_time(&mut inner, "time", notification.time_unix_ms);
            inner.insert("origin".into(), notification.origin.clone().into());
            object.insert("notification".into(), Value::Object(inner));
        }
        None => {}
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issues::tests::{issue, opened_event};
    use proto::v1::{EventSource, IssueEventPayload, Notification, Severity};

    fn issue_event() -> Event {
        Event {
            id: "0190b1a2-3333-7000-8000-000000000001".into(),
            time_unix_ms: 1_700_000_000_000,
            tenant: "acme".into(),
            cluster: "e2e".into(),
            node: "node-a".into(),
            source: EventSource::Issues as i32,
            payload: Some(Payload::Issue(IssueEventPayload {
                event: Some(opened_event()),
                issue: Some(issue()),
            })),
        }
    }

    fn notification_event() -> Event {
        Event {
            id: "0190b1a2-4444-7000-8000-000000000001".into(),
            time_unix_ms: 1_700_000_000_000,
            tenant: "acme".into(),
            cluster: "e2e".into(),
            node: String::new(),
            source: EventSource::Notifications as i32,
            payload: Some(Payload::Notification(Notification {
                id: "n1".into(),
                tenant: "acme".into(),
                cluster: "e2e".into(),
                node: String::new(),
                severity: Severity::Error as i32,
                title: "Cluster instances failed to provision".into(),
                text: String::new(),
                time_unix_ms: 1_700_000_000_000,
                origin: "provisioner".into(),
            })),
        }
    }

    #[test]
    fn issue_event_line_names_kind_rule_subject_and_issue() {
        assert_eq!(
            line(&issue_event()),
            "2023-11-14T22:13:20Z issues opened warning disk_usage acme/e2e/node-a:/ \
             value=13.2 threshold=1 issue=0190b1a2-1111-7000-8000-000000000001 \
             \"disk / on node-a is 13.2 % used (threshold 1 %)\""
        );
    }

    #[test]
    fn notification_line_quotes_the_title() {
        assert_eq!(
            line(&notification_event()),
            "2023-11-14T22:13:20Z notifications error acme/e2e \
             \"Cluster instances failed to provision\" origin=provisioner"
        );
    }

    #[test]
    fn json_is_one_flat_envelope_with_the_payload() {
        let value = json(&issue_event());
        assert_eq!(value["source"], "issues");
        assert_eq!(value["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(value["time_unix_ms"], 1_700_000_000_000_i64);
        assert_eq!(value["event"]["kind"], "opened");
        assert_eq!(value["issue"]["state"], "open");
        assert!(!serde_json::to_string(&value).unwrap().contains('\n'));

        let value = json(&notification_event());
        assert_eq!(value["source"], "notifications");
        assert_eq!(value["notification"]["severity"], "error");
        assert_eq!(value["notification"]["origin"], "provisioner");
    }
}
