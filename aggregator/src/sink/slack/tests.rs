//! The slack sink against a real HTTP server on 127.0.0.1: bot mode's one message per
//! issue edited at most every 5 minutes (with an injected clock), colours, webhook mode,
//! Slack's error answers, payload snapshots.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::sink::testing::{Receiver, Recorded, Reply};

fn issue_event(kind: &str, severity: &str, value: f64) -> Value {
    json!({
        "id": format!("event-{kind}-{value}"),
        "time": "2024-07-01T12:00:00.000Z",
        "source": "issues",
        "tenant": "acme",
        "cluster": "orders-db",
        "node": "node-1",
        "severity": severity,
        "kind": kind,
        "reason": if kind == "updated" { "severity" } else { "" },
        "issue_id": "issue-1",
        "rule": "core_load",
        "mount": "",
        "state": if kind == "closed" { "closed" } else { "open" },
        "opened": "2024-07-01T12:00:00.000Z",
        "value": value,
        "threshold": 2.0,
        "message": format!("core load {value} is over 2"),
        "remedy": "consider increasing the size of the instance type",
    })
}

fn notification() -> Value {
    json!({
        "id": "event-notification",
        "time": "2024-07-01T12:00:00.000Z",
        "source": "notifications",
        "tenant": "acme",
        "cluster": "orders-db",
        "node": "",
        "severity": "error",
        "title": "Cluster instances failed to provision",
        "text": "2 of 3 instances did not start",
        "origin": "provisioner",
    })
}

fn slack_api() -> impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static {
    |request, index| {
        if request.path.ends_with("chat.postMessage") {
            Reply::json(
                json!({"ok": true, "channel": "C123", "ts": format!("1700000000.{index:06}")}),
            )
        } else {
            Reply::json(json!({"ok": true, "channel": "C123", "ts": request.json()["ts"]}))
        }
    }
}

fn bot(receiver: &Receiver) -> SlackSink {
    SlackConfig {
        webhook_url: None,
        webhook_url_file: None,
        token: Some(Secret::new("xoxb-secret")),
        token_file: None,
        channel: Some("#db-alerts".into()),
        api_url: receiver.url("/api"),
        update_interval: default_update_interval(),
    }
    .build(Duration::from_secs(5))
    .unwrap()
}

#[tokio::test]
async fn bot_mode_edits_one_message_per_issue_at_most_every_five_minutes() {
    let receiver = Receiver::start_with(slack_api()).await;
    let start = Instant::now();
    let offset = Arc::new(Mutex::new(Duration::ZERO));
    let clock_offset = Arc::clone(&offset);
    let mut sink = bot(&receiver).with_clock(move || start + *clock_offset.lock().unwrap());
    let at = |minutes: u64| *offset.lock().unwrap() = Duration::from_secs(60 * minutes);

    sink.deliver(&issue_event("opened", "warning", 2.5))
        .await
        .unwrap();
    at(1);
    sink.deliver(&issue_event("updated", "error", 4.0))
        .await
        .unwrap(); // throttled
    at(6);
    sink.deliver(&issue_event("updated", "error", 5.0))
        .await
        .unwrap(); // edited
    at(7);
    sink.deliver(&issue_event("updated", "error", 6.0))
        .await
        .unwrap(); // throttled
    at(8);
    sink.deliver(&issue_event("closed", "error", 1.0))
        .await
        .unwrap(); // always edited

    let requests = receiver.requests();
    let calls: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        calls,
        [
            "/api/chat.postMessage",
            "/api/chat.update",
            "/api/chat.update"
        ]
    );
    for request in &requests {
        assert_eq!(request.headers["authorization"], "Bearer xoxb-secret");
    }
    let (posted, edited, closed) = (requests[0].json(), requests[1].json(), requests[2].json());
    assert_eq!(posted["channel"], "#db-alerts");
    assert_eq!(posted["attachments"][0]["color"], AMBER);
    assert_eq!(edited["channel"], "C123");
    assert_eq!(edited["ts"], "1700000000.000000");
    assert_eq!(edited["attachments"][0]["color"], RED);
    assert_eq!(closed["ts"], "1700000000.000000");
    assert_eq!(closed["attachments"][0]["color"], GREEN);
    insta::assert_json_snapshot!("slack_post", posted);
    insta::assert_json_snapshot!("slack_update", edited);
    insta::assert_json_snapshot!("slack_close", closed);
}

#[tokio::test]
async fn bot_mode_posts_each_notification() {
    let receiver = Receiver::start_with(slack_api()).await;
    let mut sink = bot(&receiver);
    sink.deliver(&notification()).await.unwrap();
    sink.deliver(&notification()).await.unwrap();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.path == "/api/chat.postMessage"));
    insta::assert_json_snapshot!("slack_notification", requests[0].json());
}

#[tokio::test]
async fn bot_mode_classifies_slack_errors() {
    let receiver = Receiver::start_with(|_, index| match index {
        0 => Reply::json(json!({"ok": false, "error": "ratelimited"})),
        1 => Reply::json(json!({"ok": false, "error": "channel_not_found"})),
        _ => Reply::json(json!({"ok": false, "error": "internal_error"})),
    })
    .await;
    let mut sink = bot(&receiver);
    let event = issue_event("opened", "warning", 2.5);
    assert!(matches!(
        sink.deliver(&event).await,
        Err(DeliveryError::Throttled { .. })
    ));
    assert!(matches!(
        sink.deliver(&event).await,
        Err(DeliveryError::Permanent(_))
    ));
    assert!(matches!(
        sink.deliver(&event).await,
        Err(DeliveryError::Transient(_))
    ));
}

#[tokio::test]
async fn webhook_mode_sends_one_message_per_event() {
    let receiver = Receiver::start_with(|_, _| Reply::Status {
        status: 200,
        headers: Vec::new(),
        body: "ok".into(),
    })
    .await;
    let mut sink = SlackConfig {
        webhook_url: Some(Secret::new(receiver.url("/services/T000/B000/XXXX"))),
        webhook_url_file: None,
        token: None,
        token_file: None,
        channel: None,
        api_url: default_api_url(),
        update_interval: default_update_interval(),
    }
    .build(Duration::from_secs(5))
    .unwrap();
    sink.deliver(&issue_event("opened", "error", 2.5))
        .await
        .unwrap();
    sink.deliver(&issue_event("updated", "error", 3.0))
        .await
        .unwrap();
    sink.deliver(&issue_event("closed", "error", 1.0))
        .await
        .unwrap();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.path == "/services/T000/B000/XXXX")
    );
    let colours: Vec<Value> = requests
        .iter()
        .map(|r| r.json()["attachments"][0]["color"].clone())
        .collect();
    assert_eq!(colours, [RED, RED, GREEN]);
    insta::assert_json_snapshot!("slack_webhook_opened", requests[0].json());
    assert!(!format!("{sink:?}").contains("XXXX"));
}

#[test]
fn one_mode_only() {
    let config = SlackConfig {
        webhook_url: Some(Secret::new("https://hooks.slack.com/services/x")),
        webhook_url_file: None,
        token: Some(Secret::new("xoxb")),
        token_file: None,
        channel: Some("#c".into()),
        api_url: default_api_url(),
        update_interval: default_update_interval(),
    };
    let error = config.build(Duration::from_secs(1)).unwrap_err();
    assert!(
        error.to_string().starts_with("slack: set either"),
        "{error}"
    );
    assert!(!format!("{config:?}").contains("xoxb"));
}
