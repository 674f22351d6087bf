//! Logs and metrics sources over real gRPC: an agent's LogRecords reach `logs`
//! integrations as JSON objects whose `message` is the original line, its host samples
//! reach `metrics` integrations as CoreLoad, MemoryUsedPercent and DiskUsedPercent; a
//! replayed batch is not routed twice.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

mod support;

use std::time::Duration;

use proto::v1 as wire;
use support::receiver::Receiver;
use support::{FakeAgent, Running, host, now_ms};

fn log_line(line: &str) -> wire::Sample {
    wire::Sample {
        time_unix_ms: now_ms(),
        kind: Some(wire::sample::Kind::Log(wire::LogRecord {
            path: "/var/log/eventstore/log.json".into(),
            line: line.into(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_and_host_samples_reach_their_integrations() {
    let logs = Receiver::start().await;
    let metrics = Receiver::start().await;
    let other_tenant = Receiver::start().await;
    let config = format!(
        "[[integrations]]\nname = \"logs\"\nsource = \"logs\"\nsink = {{ type = \"webhook\", url = \"{}\" }}\n\
         [[integrations]]\nname = \"metrics\"\nsource = \"metrics\"\nsink = {{ type = \"webhook\", url = \"{}\" }}\n\
         [[integrations]]\nname = \"elsewhere\"\nsource = [\"logs\", \"metrics\"]\ntenant = \"other\"\n\
         sink = {{ type = \"webhook\", url = \"{}\" }}\n",
        logs.url("/logs"),
        metrics.url("/metrics"),
        other_tenant.url("/other"),
    );
    let running = Running::start(&config).await;
    let mut agent = FakeAgent::connect(running.channel().await, "acme", "esdb", "n1").await;
    let line_1 = r#"{"@t":"2024-07-01T12:00:00.1234567Z","@mt":"Started","Level":"Information"}"#;
    let line_2 = "not json at all";
    let ack = agent
        .send(vec![log_line(line_1), host(1.0), log_line(line_2)])
        .await;
    assert_eq!(ack.accepted, 3, "{ack:?}");

    let received = logs.wait_for(2, Duration::from_secs(30)).await;
    let messages: Vec<String> = received
        .iter()
        .map(|request| request.json()["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(messages, [line_1, line_2]);
    let record = received[0].json();
    assert_eq!(record["source"], "logs");
    assert_eq!(record["node"], "n1");
    assert_eq!(record["path"], "/var/log/eventstore/log.json");

    let received = metrics.wait_for(1, Duration::from_secs(30)).await;
    let record = received[0].json();
    let names: Vec<&str> = record["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|metric| metric["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["CoreLoad", "MemoryUsedPercent", "DiskUsedPercent"]);
    assert_eq!(
        record["metrics"][0]["value"], 0.5,
        "load1 1.0 on 2 physical cores"
    );
    assert_eq!(record["metrics"][2]["mount"], "/");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        other_tenant.requests().is_empty(),
        "another tenant's integration"
    );
    assert_eq!(logs.requests().len(), 2);
    assert_eq!(metrics.requests().len(), 1);
    running.stop().await;
}
