//! The Integrations service over real gRPC: create (persisted across a restart), list,
//! test, delete, and ListDeliveries with a dead letter; secrets in a sink's settings are
//! never returned nor logged.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::v1 as wire;
use proto::v1::integrations_client::IntegrationsClient;
use support::receiver::{Receiver, Reply};
use support::{Running, trip};
use tonic::Code;

const URL_SECRET: &str = "T0SECRET/B0SECRET/url-token-xyz";
const SIGNING_SECRET: &str = "hmac-shared-secret-abc";

/// Everything the aggregator logs, kept for the test to search.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("aggregator=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    captured
}

async fn client(running: &Running) -> IntegrationsClient<tonic::transport::Channel> {
    IntegrationsClient::new(running.channel().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrations_are_created_tested_listed_persisted_and_deleted_without_showing_secrets() {
    let logs = capture_logs();
    let receiver = Receiver::start_with(|request, _| {
        if request.json()["node"] == "refused" {
            Reply::Status {
                status: 400,
                headers: Vec::new(),
                body: "no such channel".into(),
            }
        } else {
            Reply::status(200)
        }
    })
    .await;
    // The receiver is on 127.0.0.1, which API-created sinks may reach only when the
    // operator allows it. node_silent stays off: the fake agents' 1 s interval would
    // let it open (and deliver) between the deliveries this test counts.
    let config = "[api]\nallow_private_sink_addresses = true\n\
                  [rules.node_silent]\nenabled = false\n\
                  [[integrations]]\nname = \"stdout\"\nsink = { type = \"log\" }\n";
    let running = Running::start(config).await;
    let mut api = client(&running).await;

    let sink = serde_json::json!({
        "type": "webhook",
        "url": receiver.url(&format!("/{URL_SECRET}")),
        "secret": SIGNING_SECRET,
        "headers": {"Authorization": "Bearer header-secret-123"},
    });
    let created = api
        .create_integration(wire::CreateIntegrationRequest {
            name: "hook".into(),
            sources: vec!["issues".into()],
            sink_json: sink.to_string(),
            tenant: "acme".into(),
            clusters: Vec::new(),
            min_severity: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.sink_type, "webhook");
    assert_eq!(created.origin, "api");

    // A second one of the same name for the same tenant, and one with bad settings,
    // are refused.
    let again = api
        .create_integration(wire::CreateIntegrationRequest {
            name: "hook".into(),
            sink_json: sink.to_string(),
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let bad = api
        .create_integration(wire::CreateIntegrationRequest {
            name: "bad".into(),
            sink_json: r#"{"type": "webhook", "urll": "x"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("urll"), "{}", bad.message());

    let tested = api
        .test_integration(wire::TestIntegrationRequest {
            name: "hook".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(tested.ok, "{}", tested.error);
    let test_message = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(test_message[0].json()["title"], "hostwatch test message");
    assert_eq!(test_message[0].path, format!("/{URL_SECRET}"));

    trip(&running, "delivered").await;
    trip(&running, "refused").await;
    receiver.wait_for(3, Duration::from_secs(30)).await;
    let dead = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let deliveries = api
                .list_deliveries(wire::ListDeliveriesRequest {
                    integration: "hook".into(),
                    states: vec!["dead".into()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .deliveries;
            if !deliveries.is_empty() {
                return deliveries;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].state, "dead");
    assert_eq!(dead[0].tenant, "acme");
    assert!(
        dead[0].last_error.contains("no such channel"),
        "{}",
        dead[0].last_error
    );

    // Config and API integrations are listed; config ones cannot be deleted here.
    let listed = api
        .list_integrations(wire::ListIntegrationsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(&str, &str)> = listed
        .integrations
        .iter()
        .map(|i| (i.name.as_str(), i.origin.as_str()))
        .collect();
    assert_eq!(names, [("stdout", "config"), ("hook", "api")]);
    let refused = api
        .delete_integration(wire::DeleteIntegrationRequest {
            name: "stdout".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Persisted: after a restart it is still there and still delivers.
    let data = running.stop().await;
    let running = Running::start_in(data, config).await;
    let mut api = client(&running).await;
    let listed_again = api
        .list_integrations(wire::ListIntegrationsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed_again.integrations, listed.integrations);
    trip(&running, "after-restart").await;
    let requests = receiver.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(requests[3].json()["node"], "after-restart");

    api.delete_integration(wire::DeleteIntegrationRequest {
        name: "hook".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let after_delete = api
        .list_integrations(wire::ListIntegrationsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after_delete.integrations.len(), 1);
    let gone = api
        .list_deliveries(wire::ListDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(gone.deliveries.is_empty(), "{gone:?}");
    running.stop().await;

    // Nothing returned and nothing logged holds a secret.
    let answers = format!("{created:?}{listed:?}{listed_again:?}{dead:?}{tested:?}");
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("integration created"),
        "logs were captured: {logged}"
    );
    for secret in [URL_SECRET, SIGNING_SECRET, "header-secret-123"] {
        assert!(!answers.contains(secret), "{secret} returned: {answers}");
        assert!(!logged.contains(secret), "{secret} logged: {logged}");
    }
}
