//! The webhook sink against a real HTTP server on 127.0.0.1: the body and its signature,
//! custom headers, how answers are classified, and secrets kept out of errors.

use serde_json::json;

use super::*;
use crate::sink::testing::{Receiver, Reply};

fn envelope() -> Value {
    json!({
        "id": "0190a6c8-0000-7000-8000-000000000001",
        "time": "2024-07-01T12:00:00.000Z",
        "source": "issues",
        "tenant": "acme",
        "cluster": "orders-db",
        "node": "node-1",
        "severity": "warning",
        "kind": "opened",
        "reason": "",
        "issue_id": "0190a6c8-0000-7000-8000-0000000000aa",
        "rule": "core_load",
        "mount": "",
        "state": "open",
        "opened": "2024-07-01T12:00:00.000Z",
        "value": 2.5,
        "threshold": 2.0,
        "message": "core load 2.50 is over 2.00",
        "remedy": "consider increasing the size of the instance type",
    })
}

fn config(url: String) -> WebhookConfig {
    WebhookConfig {
        url: Some(Secret::new(url)),
        url_file: None,
        secret: Some(Secret::new("shared-secret")),
        secret_file: None,
        headers: [("X-Team".to_owned(), Secret::new("dba"))].into(),
    }
}

#[tokio::test]
async fn posts_the_envelope_signed_with_custom_headers() {
    let receiver = Receiver::start().await;
    let mut sink = config(receiver.url("/hooks/hostwatch"))
        .build(Duration::from_secs(5))
        .unwrap();
    sink.deliver(&envelope()).await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/hostwatch");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["x-team"], "dba");
    // The receiver's check: the signature is the HMAC of the exact bytes received.
    assert_eq!(
        request.headers[SIGNATURE_HEADER],
        signature(&Secret::new("shared-secret"), request.body.as_bytes())
    );
    assert_ne!(
        request.headers[SIGNATURE_HEADER],
        signature(&Secret::new("another-secret"), request.body.as_bytes())
    );
    insta::assert_json_snapshot!("webhook_body", request.json());
}

#[tokio::test]
async fn answers_are_classified() {
    let receiver = Receiver::start_with(|_, index| match index {
        0 => Reply::status(500),
        1 => Reply::Status {
            status: 429,
            headers: vec![("retry-after".into(), "7".into())],
            body: String::new(),
        },
        2 => Reply::Status {
            status: 400,
            headers: Vec::new(),
            body: "bad payload".into(),
        },
        _ => Reply::status(204),
    })
    .await;
    let mut sink = config(receiver.url("/"))
        .build(Duration::from_secs(5))
        .unwrap();
    assert!(matches!(
        sink.deliver(&envelope()).await,
        Err(DeliveryError::Transient(_))
    ));
    match sink.deliver(&envelope()).await {
        Err(DeliveryError::Throttled { retry_after, .. }) => {
            assert_eq!(retry_after, Duration::from_secs(7));
        }
        other => panic!("expected throttled, got {other:?}"),
    }
    match sink.deliver(&envelope()).await {
        Err(DeliveryError::Permanent(reason)) => {
            assert!(
                reason.contains("400") && reason.contains("bad payload"),
                "{reason}"
            );
        }
        other => panic!("expected permanent, got {other:?}"),
    }
    sink.deliver(&envelope()).await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_hides_the_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut sink = config(format!("http://127.0.0.1:{port}/secret-token-path"))
        .build(Duration::from_secs(5))
        .unwrap();
    match sink.deliver(&envelope()).await {
        Err(DeliveryError::Transient(reason)) => {
            assert!(!reason.contains("secret-token-path"), "{reason}");
        }
        other => panic!("expected transient, got {other:?}"),
    }
    assert!(!format!("{sink:?}").contains("secret-token-path"));
}

#[test]
fn config_debug_hides_secrets() {
    let config = config("https://hooks.example.com/T000/B000/XXXX".into());
    let debug = format!("{config:?}");
    assert!(!debug.contains("XXXX"), "{debug}");
    assert!(!debug.contains("shared-secret"), "{debug}");
    assert!(!debug.contains("dba"), "{debug}");
}
