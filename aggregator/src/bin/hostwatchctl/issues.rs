//! `hostwatchctl issues` (ListIssues) and `hostwatchctl issue ID` (GetIssue): the issue
//! table, one issue with its events, and their JSON.

use proto::v1::{GetIssueResponse, Issue, IssueEvent};
use serde_json::{Map, Value, json};

use crate::explanation;
use crate::format::{
    Rows, cell_name, insert_time, issue_event_kind_name, issue_state_name, json_number, number,
    render_fields, severity_name, subject, time_cell,
};

/// `tenant/cluster/node:mount`, or with another resource `tenant/cluster shard logs/0`.
pub(crate) fn issue_subject(issue: &Issue) -> String {
    let mut text = subject(&issue.tenant, &issue.cluster, &issue.node, &issue.mount);
    if !issue.resource_kind.is_empty() && issue.resource_kind != "mount" {
        text.push_str(&format!(" {} {}", issue.resource_kind, issue.resource));
    }
    text
}

/// `mount:/data`, `es_node:es-1`; "-" when the issue is about a whole node or cluster.
fn issue_resource(issue: &Issue) -> String {
    if issue.resource_kind.is_empty() {
        "-".to_owned()
    } else {
        format!("{}:{}", issue.resource_kind, issue.resource)
    }
}

pub(crate) fn table(issues: &[Issue]) -> Rows {
    let mut rows = Rows::new(vec![
        "ID",
        "SEVERITY",
        "RULE",
        "SUBJECT",
        "RESOURCE",
        "VALUE",
        "THRESHOLD",
        "OPENED",
        "STATE",
    ]);
    for issue in issues {
        rows.rows.push(vec![
            issue.id.clone(),
            cell_name(severity_name(issue.severity)),
            issue.rule.clone(),
            issue_subject(issue),
            issue_resource(issue),
            number(issue.value),
            number(issue.threshold),
            time_cell(issue.opened_unix_ms),
            cell_name(issue_state_name(issue.state)),
        ]);
    }
    rows
}

pub(crate) fn issue_json(issue: &Issue) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), issue.id.clone().into());
    object.insert("rule".into(), issue.rule.clone().into());
    object.insert("tenant".into(), issue.tenant.clone().into());
    object.insert("cluster".into(), issue.cluster.clone().into());
    object.insert("node".into(), issue.node.clone().into());
    object.insert("mount".into(), issue.mount.clone().into());
    object.insert("resource_kind".into(), issue.resource_kind.clone().into());
    object.insert("resource".into(), issue.resource.clone().into());
    object.insert("subject".into(), issue_subject(issue).into());
    object.insert("severity".into(), severity_name(issue.severity).into());
    object.insert("state".into(), issue_state_name(issue.state).into());
    insert_time(&mut object, "opened", issue.opened_unix_ms);
    insert_time(&mut object, "closed", issue.closed_unix_ms);
    insert_time(&mut object, "updated", issue.updated_unix_ms);
    object.insert("value".into(), json_number(issue.value));
    object.insert("threshold".into(), json_number(issue.threshold));
    object.insert("message".into(), issue.message.clone().into());
    object.insert("remedy".into(), issue.remedy.clone().into());
    Value::Object(object)
}

pub(crate) fn event_json(event: &IssueEvent) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), event.id.clone().into());
    object.insert("issue_id".into(), event.issue_id.clone().into());
    object.insert("kind".into(), issue_event_kind_name(event.kind).into());
    insert_time(&mut object, "time", event.time_unix_ms);
    object.insert("rule".into(), event.rule.clone().into());
    object.insert("severity".into(), severity_name(event.severity).into());
    object.insert("value".into(), json_number(event.value));
    object.insert("threshold".into(), json_number(event.threshold));
    object.insert("message".into(), event.message.clone().into());
    object.insert("remedy".into(), event.remedy.clone().into());
    object.insert("reason".into(), event.reason.clone().into());
    Value::Object(object)
}

pub(crate) fn list_json(issues: &[Issue]) -> Value {
    Value::Array(issues.iter().map(issue_json).collect())
}

/// `{"issue": {...}, "events": [...], "explanation": {...}}`, events oldest first as
/// the API sends them; `explanation` is null when the aggregator sent none.
pub(crate) fn detail_json(response: &GetIssueResponse) -> Value {
    json!({
        "issue": response.issue.as_ref().map_or(Value::Null, issue_json),
        "events": response.events.iter().map(event_json).collect::<Vec<_>>(),
        "explanation": response.explanation.as_ref().map_or(Value::Null, explanation::json),
    })
}

pub(crate) fn events_table(events: &[IssueEvent]) -> Rows {
    let mut rows = Rows::new(vec!["KIND", "TIME", "SEVERITY", "VALUE", "MESSAGE"]);
    for event in events {
        let mut kind = cell_name(issue_event_kind_name(event.kind));
        if !event.reason.is_empty() {
            kind = format!("{kind} ({})", event.reason);
        }
        rows.rows.push(vec![
            kind,
            time_cell(event.time_unix_ms),
            cell_name(severity_name(event.severity)),
            number(event.value),
            event.message.clone(),
        ]);
    }
    rows
}

/// The issue's fields, why it is open (and why it closed), then its events as a table.
pub(crate) fn detail(response: &GetIssueResponse) -> String {
    let mut sections = Vec::new();
    if let Some(issue) = &response.issue {
        let or_dash = |text: &str| {
            if text.is_empty() {
                "-".to_owned()
            } else {
                text.to_owned()
            }
        };
        sections.push(render_fields(&[
            ("Issue", issue.id.clone()),
            ("Rule", issue.rule.clone()),
            ("Subject", issue_subject(issue)),
            ("Severity", severity_name(issue.severity)),
            ("State", issue_state_name(issue.state)),
            ("Opened", time_cell(issue.opened_unix_ms)),
            ("Closed", time_cell(issue.closed_unix_ms)),
            ("Value", number(issue.value)),
            ("Threshold", number(issue.threshold)),
            ("Message", or_dash(&issue.message)),
            ("Remedy", or_dash(&issue.remedy)),
        ]));
    }
    if let Some(explanation) = &response.explanation {
        sections.push(explanation::block(explanation));
    }
    if response.events.is_empty() {
        sections.push("Events: none".to_owned());
    } else {
        sections.push(events_table(&response.events).render());
    }
    sections.join("\n\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::v1::{IssueEventKind, IssueState, Severity};

    pub(crate) fn issue() -> Issue {
        Issue {
            id: "0190b1a2-1111-7000-8000-000000000001".into(),
            rule: "disk_usage".into(),
            tenant: "acme".into(),
            cluster: "e2e".into(),
            node: "node-a".into(),
            mount: "/".into(),
            severity: Severity::Warning as i32,
            state: IssueState::Open as i32,
            opened_unix_ms: 1_700_000_000_000,
            closed_unix_ms: 0,
            value: 13.2,
            threshold: 1.0,
            message: "disk / on node-a is 13.2 % used (threshold 1 %)".into(),
            remedy: "remove data or increase the disk size".into(),
            updated_unix_ms: 1_700_000_000_000,
            resource_kind: "mount".into(),
            resource: "/".into(),
        }
    }

    pub(crate) fn opened_event() -> IssueEvent {
        IssueEvent {
            id: "0190b1a2-2222-7000-8000-000000000001".into(),
            issue_id: issue().id,
            kind: IssueEventKind::Opened as i32,
            time_unix_ms: 1_700_000_000_000,
            rule: "disk_usage".into(),
            severity: Severity::Warning as i32,
            value: 13.2,
            threshold: 1.0,
            message: "disk / on node-a is 13.2 % used (threshold 1 %)".into(),
            remedy: String::new(),
            reason: String::new(),
        }
    }

    #[test]
    fn table_row_names_the_subject_with_its_mount() {
        let rows = table(&[issue()]);
        assert_eq!(
            rows.header,
            [
                "ID",
                "SEVERITY",
                "RULE",
                "SUBJECT",
                "RESOURCE",
                "VALUE",
                "THRESHOLD",
                "OPENED",
                "STATE"
            ]
        );
        assert_eq!(
            rows.rows,
            [[
                "0190b1a2-1111-7000-8000-000000000001",
                "warning",
                "disk_usage",
                "acme/e2e/node-a:/",
                "mount:/",
                "13.2",
                "1",
                "2023-11-14T22:13:20Z",
                "open",
            ]]
        );
    }

    #[test]
    fn a_resource_other_than_a_mount_is_named_in_the_subject_and_its_column() {
        let mut shard = issue();
        shard.node.clear();
        shard.mount.clear();
        shard.resource_kind = "shard".into();
        shard.resource = "logs/0".into();
        let rows = table(&[shard.clone()]);
        assert_eq!(
            rows.rows[0][3..5],
            ["acme/e2e shard logs/0", "shard:logs/0"]
        );
        assert_eq!(issue_json(&shard)["subject"], "acme/e2e shard logs/0");
    }

    #[test]
    fn issue_json_has_lowercase_enums_and_times_in_both_forms() {
        let value = issue_json(&issue());
        assert_eq!(value["state"], "open");
        assert_eq!(value["severity"], "warning");
        assert_eq!(value["subject"], "acme/e2e/node-a:/");
        assert_eq!(value["resource_kind"], "mount");
        assert_eq!(value["resource"], "/");
        assert_eq!(value["opened"], "2023-11-14T22:13:20.000Z");
        assert_eq!(value["opened_unix_ms"], 1_700_000_000_000_i64);
        assert_eq!(value["closed"], Value::Null);
        assert_eq!(value["value"], 13.2);
    }

    #[test]
    fn detail_json_has_the_issue_and_its_events() {
        let response = GetIssueResponse {
            issue: Some(issue()),
            events: vec![opened_event()],
            explanation: None,
        };
        let value = detail_json(&response);
        assert_eq!(value["issue"]["id"], issue().id);
        assert_eq!(value["events"][0]["kind"], "opened");
        assert_eq!(value["events"][0]["time_unix_ms"], 1_700_000_000_000_i64);
    }

    #[test]
    fn events_table_shows_kind_with_reason() {
        let mut updated = opened_event();
        updated.kind = IssueEventKind::Updated as i32;
        updated.reason = "severity".into();
        updated.severity = Severity::Error as i32;
        let rows = events_table(&[opened_event(), updated]);
        assert_eq!(
            rows.header,
            ["KIND", "TIME", "SEVERITY", "VALUE", "MESSAGE"]
        );
        assert_eq!(rows.rows[0][0], "opened");
        assert_eq!(
            rows.rows[1][..3],
            ["updated (severity)", "2023-11-14T22:13:20Z", "error"]
        );
        assert_eq!(
            rows.rows[1][4],
            "disk / on node-a is 13.2 % used (threshold 1 %)"
        );
    }

    #[test]
    fn detail_shows_fields_then_events() {
        let response = GetIssueResponse {
            issue: Some(issue()),
            events: vec![opened_event()],
            explanation: None,
        };
        let text = detail(&response);
        let fields_at = text.find("Subject:").unwrap();
        let events_at = text.find("KIND").unwrap();
        assert!(fields_at < events_at, "{text}");
        assert!(text.contains("Closed:     -"), "{text}");
    }
}
