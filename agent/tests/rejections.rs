//! Samples the aggregator rejects (listed in `Ack.rejected`) are logged at warn level with
//! their reason and detail, and the batch still counts as acknowledged.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Action, config, start_agent, start_server};
use tokio::net::TcpListener;

/// Log output captured in memory; this test binary has only this test, so the global
/// subscriber sees nothing else.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_samples_are_logged_at_warn() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let state_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::AckRejecting)).await;
    let running = start_agent(config(state_dir.path(), server.addr));
    server.expect_hello(1).await;
    let batch = server.expect_batch(1).await;
    server.expect_batch(1).await;
    // Stopping is immediate only if the rejecting acks emptied the outbox.
    let took = running.stop().await;
    assert!(
        took < std::time::Duration::from_secs(2),
        "acks with rejections must still ack"
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("aggregator rejected a sample"))
        .unwrap_or_else(|| panic!("no rejection logged in:\n{logs}"));
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains(&format!("seq={}", batch.seq)), "{line}");
    assert!(line.contains("reason=test_reason"), "{line}");
    assert!(
        line.contains("detail=host.load1: rejected by the test"),
        "{line}"
    );
}
