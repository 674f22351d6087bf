//! The uplink's security against a real tonic Ingest server: https with a CA file, mutual
//! TLS with a client certificate, the bearer token (metadata and Hello), and the token kept
//! out of the agent's logs even at trace level.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{Action, Seen, config, start_agent, start_server, start_server_with, tls};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

const TOKEN: &str = "hw-agent-7f3c9a1d2e4b6f80-do-not-log";

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::pki(dir.path());
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server =
        start_server_with(listener, Arc::new(|_, _| Action::Ack), Some(server_tls)).await;

    let state_dir = tempfile::tempdir().unwrap();
    let mut agent_config = config(state_dir.path(), server.addr);
    agent_config.aggregator.url = format!("https://{}", server.addr);
    agent_config.aggregator.ca_file = Some(pki.ca_file.clone());
    agent_config.aggregator.client_cert_file = Some(pki.client_cert_file.clone());
    agent_config.aggregator.client_key_file = Some(pki.client_key_file.clone());
    agent_config.aggregator.token_file = Some(write(&dir, "token", &format!("  {TOKEN}\n")));
    agent_config.validate().unwrap();
    let running = start_agent(agent_config);

    let hello = server.expect_hello(1).await;
    assert_eq!(hello.token, TOKEN, "the token travels in Hello, trimmed");
    let batch = server.expect_batch(1).await;
    assert_eq!(batch.seq, 1);
    assert_eq!(
        server.authorizations.lock().unwrap().as_slice(),
        [format!("Bearer {TOKEN}")]
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_the_server_lets_nothing_through() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::pki(dir.path());
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server =
        start_server_with(listener, Arc::new(|_, _| Action::Ack), Some(server_tls)).await;

    let state_dir = tempfile::tempdir().unwrap();
    let mut agent_config = config(state_dir.path(), server.addr);
    agent_config.aggregator.url = format!("https://{}", server.addr);
    agent_config.aggregator.ca_file = Some(pki.ca_file.clone());
    let running = start_agent(agent_config);
    let seen = tokio::time::timeout(Duration::from_secs(3), server.seen.recv()).await;
    assert!(
        seen.is_err(),
        "no stream without a client certificate: {seen:?}"
    );
    // The batches wait in the spool for a connection that works.
    assert!(agent::outbox::spooled_batches(state_dir.path()).unwrap() >= 5);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_aggregator_certificate_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls::self_signed();
    let server_tls = ServerTlsConfig::new().identity(Identity::from_pem(&cert, &key));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server =
        start_server_with(listener, Arc::new(|_, _| Action::Ack), Some(server_tls)).await;
    let other = tls::pki(dir.path());

    let state_dir = tempfile::tempdir().unwrap();
    let mut agent_config = config(state_dir.path(), server.addr);
    agent_config.aggregator.url = format!("https://{}", server.addr);
    agent_config.aggregator.ca_file = Some(other.ca_file.clone());
    agent_config.aggregator.token_file = Some(write(&dir, "token", TOKEN));
    let running = start_agent(agent_config);
    let seen = tokio::time::timeout(Duration::from_secs(3), server.seen.recv()).await;
    assert!(
        seen.is_err(),
        "the token must not reach an untrusted server: {seen:?}"
    );
    assert!(server.authorizations.lock().unwrap().is_empty());
    running.stop().await;
}

/// The binary at trace level, with the token on the wire in clear (http), so that any
/// layer logging headers or Hello would show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_the_logs_even_at_trace_level() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::Ack)).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(&dir, "token", TOKEN);
    let config_file = write(
        &dir,
        "agent.toml",
        &format!(
            "state_dir = \"{}\"\n[identity]\ntenant = \"acme\"\ncluster = \"orders-db\"\n\
             node = \"db-1\"\n[aggregator]\nurl = \"http://{}\"\ntoken_file = \"{}\"\n\
             [host]\ninterval = \"200ms\"\n",
            dir.path().join("state").display(),
            server.addr,
            token_file.display()
        ),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hostwatch-agent"))
        .args(["run", "--config"])
        .arg(&config_file)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        stderr.read_to_string(&mut text).await.unwrap();
        text
    });

    let hello = server.expect_hello(1).await;
    assert_eq!(hello.token, TOKEN);
    for _ in 0..3 {
        while !matches!(server.next().await, Seen::Batch { .. }) {}
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let logs = reader.await.unwrap();
    assert!(logs.contains("TRACE"), "trace logging was on: {logs:.2000}");
    assert!(
        logs.len() > 10_000,
        "plenty was logged: {} bytes",
        logs.len()
    );
    assert!(!logs.contains(TOKEN), "the token leaked into the logs");
    assert!(
        !logs.contains(&TOKEN[..16]),
        "part of the token leaked into the logs"
    );
    assert_eq!(
        server
            .authorizations
            .lock()
            .unwrap()
            .first()
            .map(String::as_str),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}
