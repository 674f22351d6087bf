//! What the sink and delivery tests share: an in-process aggregator configured by TOML,
//! and a fake agent that trips rules over real gRPC.
#![allow(dead_code, unreachable_pub)]

#[path = "../../src/sink/testing.rs"]
pub mod receiver;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aggregator::config::AggregatorConfig;
use aggregator::server::Aggregator;
use proto::v1 as wire;
use proto::v1::ingest_client::IngestClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub struct Running {
    pub addr: std::net::SocketAddr,
    pub data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// An aggregator on 127.0.0.1 with `extra` appended to its config (integrations).
    pub async fn start(extra: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), extra).await
    }

    pub async fn start_in(data: tempfile::TempDir, extra: &str) -> Self {
        let text = format!("listen = \"127.0.0.1:0\"\n{extra}");
        let mut config = AggregatorConfig::parse(&text).unwrap();
        config.validate().unwrap();
        config.data_dir = data.path().to_owned();
        let aggregator = Aggregator::bind(config).await.unwrap();
        let addr = aggregator.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            aggregator
                .run(async { stopped.await.unwrap_or(()) })
                .await
                .unwrap();
        });
        Self {
            addr,
            data,
            stop: Some(stop),
            task,
        }
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        self.data.path().join("hostwatch.db")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Stops it and returns its data directory, for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .unwrap()
            .unwrap();
        self.data
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A host sample; `load1` over 4 on these 2 cores trips `core_load` (open_for 0).
pub fn host(load1: f64) -> wire::Sample {
    wire::Sample {
        time_unix_ms: now_ms(),
        kind: Some(wire::sample::Kind::Host(wire::HostSample {
            load1,
            load5: 0.1,
            load15: 0.1,
            physical_cores: 2,
            logical_cores: 2,
            physical_cores_estimated: false,
            memory_total_bytes: 1 << 30,
            memory_available_bytes: 1 << 29,
            memory_used_percent: 50.0,
            disks: vec![wire::DiskUsage {
                mount: "/".into(),
                device: "/dev/vda".into(),
                fs_type: "ext4".into(),
                total_bytes: 1 << 30,
                available_bytes: 1 << 29,
                used_percent: 50.0,
                inodes_total: 10,
                inodes_free: 5,
            }],
        })),
    }
}

/// One agent's stream.
pub struct FakeAgent {
    sender: mpsc::Sender<wire::AgentMessage>,
    inbound: tonic::Streaming<wire::AggregatorMessage>,
    seq: u64,
}

impl FakeAgent {
    pub async fn connect(channel: Channel, tenant: &str, cluster: &str, node: &str) -> Self {
        let hello = wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
                identity: Some(wire::NodeIdentity {
                    tenant: tenant.into(),
                    cluster: cluster.into(),
                    node: node.into(),
                    service_instance_id: format!("00000000-0000-4000-8000-{:012}", node.len()),
                    ..Default::default()
                }),
                agent_version: "test".into(),
                // An hour: `node_silent` fires after 3 intervals without a sample, and a
                // test's fake agent sends only when told. With 1 s, a test slowed past 3 s
                // by a busy machine got `node_silent` events it did not expect (a second
                // dead letter in sink_integrations, which made it flaky).
                probes: vec![wire::ProbeInfo {
                    name: "host".into(),
                    interval_ms: 3_600_000,
                }],
                seq_epoch: "e1".into(),
                ..Default::default()
            })),
        };
        let (sender, outbound) = mpsc::channel(16);
        sender.send(hello).await.unwrap();
        let inbound = IngestClient::new(channel)
            .stream(ReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        Self {
            sender,
            inbound,
            seq: 0,
        }
    }

    /// Sends one batch and waits for its ack (so what it caused is committed).
    pub async fn send(&mut self, samples: Vec<wire::Sample>) -> wire::Ack {
        self.seq += 1;
        self.sender
            .send(wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
                    seq: self.seq,
                    samples,
                    dropped_batches_total: 0,
                })),
            })
            .await
            .unwrap();
        let message = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("an ack within 10 s")
            .expect("a healthy stream")
            .expect("the stream is still open");
        match message.kind {
            Some(wire::aggregator_message::Kind::Ack(ack)) => ack,
            None => panic!("empty aggregator message"),
        }
    }
}

/// Trips `core_load` on `node` (one `opened` event), after an ack.
pub async fn trip(running: &Running, node: &str) {
    let mut agent = FakeAgent::connect(running.channel().await, "acme", "db", node).await;
    let ack = agent.send(vec![host(9.0)]).await;
    assert_eq!(ack.accepted, 1, "{ack:?}");
}

/// A webhook integration's TOML with fast retries.
pub fn webhook(name: &str, url: &str, timeout: &str) -> String {
    format!(
        "[[integrations]]\nname = \"{name}\"\nsource = \"issues\"\ntimeout = \"{timeout}\"\n\
         backoff_min = \"100ms\"\nbackoff_max = \"400ms\"\n\
         sink = {{ type = \"webhook\", url = \"{url}\" }}\n"
    )
}
