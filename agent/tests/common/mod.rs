//! A real tonic `Ingest` server on 127.0.0.1 that records what agents send and answers as
//! a test's policy says, and helpers to run an agent (the library) against it.

// Each test binary uses a different part of this module, and `pub` here means "for the tests".
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod tls;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent::Agent;
use agent::config::AgentConfig;
use proto::v1::agent_message::Kind as AgentKind;
use proto::v1::aggregator_message::Kind as AggregatorKind;
use proto::v1::ingest_server::{Ingest, IngestServer};
use proto::v1::{
    Ack, AgentMessage, AggregatorMessage, Hello, SampleBatch, SampleRejection, sample,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(15);

/// What the server does with a batch it received on connection `conn` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ack,
    /// Acknowledge it, rejecting its first sample with reason `test_reason`.
    AckRejecting,
    /// Keep it unacknowledged.
    Ignore,
    /// End the stream with an error, without acknowledging it.
    HangUp,
}

pub type Policy = Arc<dyn Fn(usize, u64) -> Action + Send + Sync>;

#[derive(Debug)]
pub enum Seen {
    Hello { conn: usize, hello: Box<Hello> },
    Batch { conn: usize, batch: SampleBatch },
}

struct TestIngest {
    connections: Arc<AtomicUsize>,
    seen: mpsc::UnboundedSender<Seen>,
    policy: Policy,
    authorizations: Arc<std::sync::Mutex<Vec<String>>>,
    stream_ends: StreamEnds,
}

/// How each agent stream the server read to its end ended: the connection and `None` for
/// a clean end of stream, or the error the server saw.
pub type StreamEnds = Arc<std::sync::Mutex<Vec<(usize, Option<String>)>>>;

#[tonic::async_trait]
impl Ingest for TestIngest {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<AggregatorMessage, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let conn = self.connections.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(value) = request.metadata().get("authorization") {
            self.authorizations
                .lock()
                .unwrap()
                .push(value.to_str().unwrap_or("<not ascii>").to_owned());
        }
        let mut inbound = request.into_inner();
        let (replies, replies_rx) = mpsc::channel(64);
        let seen = self.seen.clone();
        let policy = Arc::clone(&self.policy);
        let stream_ends = Arc::clone(&self.stream_ends);
        tokio::spawn(async move {
            let end = loop {
                let message = match inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => break None,
                    Err(status) => break Some(status.to_string()),
                };
                match message.kind {
                    Some(AgentKind::Hello(hello)) => {
                        let _ = seen.send(Seen::Hello {
                            conn,
                            hello: Box::new(hello),
                        });
                    }
                    Some(AgentKind::Batch(batch)) => {
                        let seq = batch.seq;
                        let _ = seen.send(Seen::Batch { conn, batch });
                        match policy(conn, seq) {
                            Action::Ack => {
                                let ack = Ack {
                                    seq,
                                    accepted: 1,
                                    ..Ack::default()
                                };
                                let reply = AggregatorMessage {
                                    kind: Some(AggregatorKind::Ack(ack)),
                                };
                                let _ = replies.send(Ok(reply)).await;
                            }
                            Action::AckRejecting => {
                                let rejection = SampleRejection {
                                    index: 0,
                                    reason: "test_reason".to_owned(),
                                    detail: "host.load1: rejected by the test".to_owned(),
                                    count: 1,
                                    indices: vec![0],
                                };
                                let ack = Ack {
                                    seq,
                                    rejected: vec![rejection],
                                    ..Ack::default()
                                };
                                let reply = AggregatorMessage {
                                    kind: Some(AggregatorKind::Ack(ack)),
                                };
                                let _ = replies.send(Ok(reply)).await;
                            }
                            Action::Ignore => {}
                            Action::HangUp => {
                                let _ = replies
                                    .send(Err(Status::unavailable("test server hangs up")))
                                    .await;
                                return;
                            }
                        }
                    }
                    None => {}
                }
            };
            stream_ends.lock().unwrap().push((conn, end));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(replies_rx))))
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    /// The `authorization` metadata of every stream call, in order.
    pub authorizations: Arc<std::sync::Mutex<Vec<String>>>,
    pub stream_ends: StreamEnds,
    _task: JoinHandle<()>,
}

pub async fn start_server(listener: TcpListener, policy: Policy) -> TestServer {
    start_server_with(listener, policy, None).await
}

/// Like [`start_server`], over TLS when `tls` is given.
pub async fn start_server_with(
    listener: TcpListener,
    policy: Policy,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> TestServer {
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let authorizations = Arc::default();
    let stream_ends = StreamEnds::default();
    let service = TestIngest {
        connections: Arc::default(),
        seen: seen_tx,
        policy,
        authorizations: Arc::clone(&authorizations),
        stream_ends: Arc::clone(&stream_ends),
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    let task = tokio::spawn(async move {
        builder
            .add_service(IngestServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    TestServer {
        addr,
        seen,
        authorizations,
        stream_ends,
        _task: task,
    }
}

impl TestServer {
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("the agent sent nothing in time")
            .expect("server gone")
    }

    pub async fn expect_hello(&mut self, conn: usize) -> Hello {
        match self.next().await {
            Seen::Hello { conn: got, hello } if got == conn => *hello,
            other => panic!("expected Hello first on connection {conn}, got {other:?}"),
        }
    }

    pub async fn expect_batch(&mut self, conn: usize) -> SampleBatch {
        match self.next().await {
            Seen::Batch { conn: got, batch } if got == conn => batch,
            other => panic!("expected a batch on connection {conn}, got {other:?}"),
        }
    }
}

pub fn config(state_dir: &std::path::Path, addr: SocketAddr) -> AgentConfig {
    let text = format!(
        r#"
        state_dir = "{}"
        shutdown_grace = "5s"
        [identity]
        tenant = "acme"
        cluster = "orders-db"
        node = "db-1"
        business_group = "payments"
        labels = {{ az = "a" }}
        [aggregator]
        url = "http://{addr}"
        connect_timeout = "2s"
        [host]
        interval = "200ms"
        "#,
        state_dir.display()
    );
    let config = AgentConfig::parse(&text, "test").unwrap();
    config.validate().unwrap();
    config
}

pub struct RunningAgent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), agent::AgentError>>,
}

pub fn start_agent(config: AgentConfig) -> RunningAgent {
    let agent = Agent::new(config).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    RunningAgent { stop, task }
}

impl RunningAgent {
    /// Signals shutdown and returns how long the agent took to stop.
    pub async fn stop(self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("agent did not stop in time")
            .expect("agent task panicked")
            .expect("agent run failed");
        started.elapsed()
    }
}

pub fn assert_host_batch(batch: &SampleBatch) {
    assert_eq!(batch.samples.len(), 1, "one host sample per batch");
    let sample = &batch.samples[0];
    assert!(
        sample.time_unix_ms > 1_600_000_000_000,
        "{}",
        sample.time_unix_ms
    );
    match &sample.kind {
        Some(sample::Kind::Host(host)) => {
            assert!(host.logical_cores >= 1);
            assert!(host.memory_total_bytes > 0);
            assert!(host.disks.iter().any(|disk| disk.mount == "/"));
        }
        other => panic!("expected a host sample, got {other:?}"),
    }
}
