//! The agent ships the lines appended to tailed files through its outbox, across a
//! rotation and a truncation, each line once and in order; the probe is in Hello.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use agent::config::LogConfig;
use common::{Action, Seen, config, start_agent, start_server};
use proto::v1::sample;
use tokio::net::TcpListener;

async fn wait_for(server: &mut common::TestServer, lines: &mut Vec<String>, count: usize) {
    while lines.len() < count {
        if let Seen::Batch { batch, .. } = server.next().await {
            for sample in batch.samples {
                if let Some(sample::Kind::Log(record)) = sample.kind {
                    assert!(record.path.ends_with(".json"), "{}", record.path);
                    lines.push(record.line);
                }
            }
        }
    }
}

fn append(path: &std::path::Path, from: usize, to: usize) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for n in from..to {
        writeln!(file, "{{\"n\":{n}}}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_arrive_once_in_order_across_rotation_and_truncation() {
    let logs_dir = tempfile::tempdir().unwrap();
    let path = logs_dir.path().join("eventstore.json");
    std::fs::write(&path, "{\"n\":-1}\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::Ack)).await;
    let state_dir = tempfile::tempdir().unwrap();
    let mut agent_config = config(state_dir.path(), server.addr);
    agent_config.logs = vec![LogConfig {
        path: logs_dir.path().join("*.json").display().to_string(),
        poll_interval: Duration::from_millis(100),
        ..LogConfig::default()
    }];
    let running = start_agent(agent_config);
    let hello = server.expect_hello(1).await;
    assert!(
        hello
            .probes
            .iter()
            .any(|p| p.name == "logs" && p.interval_ms == 0)
    );

    let mut lines: Vec<String> = Vec::new();
    // Give the tailer a poll to pick up the starting point.
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&path, 0, 50);
    wait_for(&mut server, &mut lines, 50).await;
    // Rotation: rename away, a late line to the old file, then a new file.
    let rotated = logs_dir.path().join("eventstore.json.1");
    std::fs::rename(&path, &rotated).unwrap();
    append(&rotated, 50, 52);
    append(&path, 52, 80);
    wait_for(&mut server, &mut lines, 80).await;
    // Truncation in place.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&path, 80, 90);
    wait_for(&mut server, &mut lines, 90).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    while let Ok(seen) = server.seen.try_recv() {
        if let Seen::Batch { batch, .. } = seen {
            for sample in batch.samples {
                if let Some(sample::Kind::Log(record)) = sample.kind {
                    lines.push(record.line);
                }
            }
        }
    }
    let expected: Vec<String> = (0..90).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(
        lines, expected,
        "history skipped, nothing lost, nothing twice"
    );
}
