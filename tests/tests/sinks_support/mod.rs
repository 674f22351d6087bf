//! What the sink end-to-end tests share: a fake agent that speaks Ingest over gRPC to the
//! real aggregator binary and sends host samples that trip (or clear) `core_load`.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use proto::v1 as wire;
use proto::v1::ingest_client::IngestClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub fn now_ms() -> Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

/// A host sample on 2 physical cores: `load1` over 4 trips `core_load`.
pub fn host(load1: f64) -> Result<wire::Sample> {
    Ok(wire::Sample {
        time_unix_ms: now_ms()?,
        kind: Some(wire::sample::Kind::Host(wire::HostSample {
            load1,
            physical_cores: 2,
            logical_cores: 2,
            memory_total_bytes: 1 << 30,
            memory_available_bytes: 1 << 29,
            memory_used_percent: 50.0,
            ..Default::default()
        })),
    })
}

/// A node of tenant `acme`, cluster `db`.
pub fn identity(node: &str) -> wire::NodeIdentity {
    wire::NodeIdentity {
        tenant: "acme".into(),
        cluster: "db".into(),
        node: node.into(),
        ..Default::default()
    }
}

/// One agent's stream: hello first, then one acknowledged batch per `send`.
pub struct Agent {
    sender: mpsc::Sender<wire::AgentMessage>,
    inbound: tonic::Streaming<wire::AggregatorMessage>,
    seq: u64,
}

impl Agent {
    pub async fn connect(addr: SocketAddr, identity: wire::NodeIdentity) -> Result<Self> {
        let (sender, outbound) = mpsc::channel(4);
        sender
            .send(wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
                    identity: Some(identity),
                    agent_version: "test".into(),
                    probes: vec![wire::ProbeInfo {
                        name: "host".into(),
                        interval_ms: 60_000,
                    }],
                    seq_epoch: "e1".into(),
                    ..Default::default()
                })),
            })
            .await?;
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let inbound = IngestClient::new(channel)
            .stream(ReceiverStream::new(outbound))
            .await?
            .into_inner();
        Ok(Self {
            sender,
            inbound,
            seq: 0,
        })
    }

    /// Sends one sample; returns once it is acknowledged (what it caused is committed).
    pub async fn send(&mut self, sample: wire::Sample) -> Result<()> {
        self.seq += 1;
        self.sender
            .send(wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
                    seq: self.seq,
                    samples: vec![sample],
                    dropped_batches_total: 0,
                })),
            })
            .await?;
        let message = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .context("no ack within 10 s")??
            .context("the stream ended without an ack")?;
        match message.kind {
            Some(wire::aggregator_message::Kind::Ack(ack)) if ack.accepted == 1 => Ok(()),
            other => bail!("unexpected answer to the batch: {other:?}"),
        }
    }
}
