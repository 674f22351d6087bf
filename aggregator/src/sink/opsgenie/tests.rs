//! The opsgenie sink against a real HTTP server on 127.0.0.1: create, note and close by
//! alias, priorities, payload snapshots.

use serde_json::json;

use super::*;
use crate::sink::testing::{Receiver, Reply};

fn issue_event(kind: &str, severity: &str, reason: &str) -> Value {
    json!({
        "id": format!("0190a6c8-0000-7000-8000-00000000000{}", kind.len()),
        "time": "2024-07-01T12:00:00.000Z",
        "source": "issues",
        "tenant": "acme",
        "cluster": "orders-db",
        "node": "node-1",
        "severity": severity,
        "kind": kind,
        "reason": reason,
        "issue_id": "0190a6c8-0000-7000-8000-0000000000aa",
        "rule": "disk_usage",
        "mount": "/var/lib/eventstore",
        "state": if kind == "closed" { "closed" } else { "open" },
        "opened": "2024-07-01T12:00:00.000Z",
        "value": 91.5,
        "threshold": 80.0,
        "message": "disk /var/lib/eventstore is 91.5 % full (over 80 %)",
        "remedy": "removing data, running scavenge or increasing the disk size",
    })
}

fn sink(receiver: &Receiver) -> OpsgenieSink {
    OpsgenieConfig {
        api_key: Some(Secret::new("genie-key-123")),
        api_key_file: None,
        base_url: receiver.url(""),
        tags: vec!["team:dba".into()],
    }
    .build(Duration::from_secs(5))
    .unwrap()
}

#[tokio::test]
async fn create_then_note_then_close_by_alias() {
    let receiver = Receiver::start_with(|_, _| {
        Reply::json(json!({"result": "Request will be processed", "requestId": "r1"}))
    })
    .await;
    let mut sink = sink(&receiver);
    sink.deliver(&issue_event("opened", "warning", ""))
        .await
        .unwrap();
    sink.deliver(&issue_event("updated", "error", "severity"))
        .await
        .unwrap();
    sink.deliver(&issue_event("closed", "error", ""))
        .await
        .unwrap();

    let requests = receiver.requests();
    let calls: Vec<(String, String, String)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.query.clone()))
        .collect();
    let alias = "0190a6c8-0000-7000-8000-0000000000aa";
    assert_eq!(
        calls,
        [
            ("POST".into(), "/v2/alerts".into(), String::new()),
            (
                "PUT".into(),
                format!("/v2/alerts/{alias}/priority"),
                "identifierType=alias".into()
            ),
            (
                "POST".into(),
                format!("/v2/alerts/{alias}/notes"),
                "identifierType=alias".into()
            ),
            (
                "POST".into(),
                format!("/v2/alerts/{alias}/close"),
                "identifierType=alias".into()
            ),
        ]
    );
    for request in &requests {
        assert_eq!(request.headers["authorization"], "GenieKey genie-key-123");
        assert_eq!(request.headers["content-type"], "application/json");
    }
    let create = requests[0].json();
    assert_eq!(create["alias"], alias);
    assert_eq!(create["priority"], "P3");
    insta::assert_json_snapshot!("opsgenie_create", create);
    assert_eq!(
        requests[1].json(),
        json!({"priority": "P2"}),
        "the tier went from warning to error"
    );
    insta::assert_json_snapshot!("opsgenie_note", requests[2].json());
    insta::assert_json_snapshot!("opsgenie_close", requests[3].json());
}

#[tokio::test]
async fn a_reminder_adds_a_note_and_leaves_the_priority_alone() {
    let receiver = Receiver::start().await;
    let mut sink = sink(&receiver);
    sink.deliver(&issue_event("updated", "warning", "reminder"))
        .await
        .unwrap();
    let paths: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        ["POST /v2/alerts/0190a6c8-0000-7000-8000-0000000000aa/notes"]
    );
}

#[tokio::test]
async fn a_failed_priority_change_is_retried_before_any_note_is_added() {
    let receiver = Receiver::start_with(|request, _| {
        if request.path.ends_with("/priority") {
            Reply::status(503)
        } else {
            Reply::json(json!({"result": "Request will be processed"}))
        }
    })
    .await;
    let mut sink = sink(&receiver);
    let err = sink
        .deliver(&issue_event("updated", "error", "severity"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("priority"), "{err}");
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/notes")),
        "no note until the priority is set, so a retry adds it once"
    );
}

#[test]
fn priority_follows_severity() {
    assert_eq!(priority("critical"), "P1");
    assert_eq!(priority("error"), "P2");
    assert_eq!(priority("warning"), "P3");
    assert_eq!(priority("info"), "P5");
}

#[tokio::test]
async fn a_notification_is_an_alert_of_its_own() {
    let receiver = Receiver::start().await;
    let mut sink = sink(&receiver);
    let notification = json!({
        "id": "0190a6c8-0000-7000-8000-0000000000bb",
        "time": "2024-07-01T12:00:00.000Z",
        "source": "notifications",
        "tenant": "acme",
        "cluster": "orders-db",
        "node": "",
        "severity": "critical",
        "title": "Cluster volumes failed to provision",
        "text": "3 volumes in eu-west-1 failed",
        "origin": "provisioner",
    });
    sink.deliver(&notification).await.unwrap();
    let create = receiver.requests()[0].json();
    assert_eq!(create["alias"], "0190a6c8-0000-7000-8000-0000000000bb");
    assert_eq!(create["priority"], "P1");
    insta::assert_json_snapshot!("opsgenie_notification", create);
}

#[test]
fn the_key_is_never_shown() {
    let config = OpsgenieConfig {
        api_key: Some(Secret::new("genie-key-123")),
        api_key_file: None,
        base_url: default_base_url(),
        tags: Vec::new(),
    };
    assert!(!format!("{config:?}").contains("genie-key-123"));
    let sink = config.build(Duration::from_secs(1)).unwrap();
    assert!(!format!("{sink:?}").contains("genie-key-123"));
}
