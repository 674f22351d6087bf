//! The delivery outbox survives a SIGKILL: the real aggregator binary, a webhook receiver
//! on 127.0.0.1 that refuses everything at first, a fake agent that trips `core_load` on
//! three nodes; the aggregator is killed with the deliveries pending, the receiver starts
//! accepting, and the restarted aggregator delivers all three, in order.

#[path = "../../aggregator/src/sink/testing.rs"]
mod receiver;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use proto::v1 as wire;
use proto::v1::ingest_client::IngestClient;
use receiver::{Receiver, Reply};
use tests::{Process, binary, eventually, free_addr, temp_dir, wait_for_port, write_file};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn now_ms() -> Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

fn start_aggregator(name: &str, config: &Path, log_dir: &Path) -> Result<Process> {
    let args = [
        OsStr::new("run"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    Process::spawn(name, &binary("hostwatch-aggregator")?, args, log_dir)
}

/// Says hello as `node` and sends one sample whose core load (9 / 2 cores) trips
/// `core_load`; returns once the batch is acknowledged, i.e. its event is committed.
async fn trip(addr: SocketAddr, node: &str) -> Result<()> {
    let (sender, outbound) = mpsc::channel(4);
    sender
        .send(wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
                identity: Some(wire::NodeIdentity {
                    tenant: "acme".into(),
                    cluster: "db".into(),
                    node: node.into(),
                    ..Default::default()
                }),
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
    sender
        .send(wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
                seq: 1,
                samples: vec![wire::Sample {
                    time_unix_ms: now_ms()?,
                    kind: Some(wire::sample::Kind::Host(wire::HostSample {
                        load1: 9.0,
                        physical_cores: 2,
                        logical_cores: 2,
                        memory_total_bytes: 1 << 30,
                        memory_available_bytes: 1 << 29,
                        memory_used_percent: 50.0,
                        ..Default::default()
                    })),
                }],
                dropped_batches_total: 0,
            })),
        })
        .await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut inbound = IngestClient::new(channel)
        .stream(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let message = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .context("no ack within 10 s")??
        .context("the stream ended without an ack")?;
    match message.kind {
        Some(wire::aggregator_message::Kind::Ack(ack)) if ack.accepted == 1 => Ok(()),
        other => bail!("unexpected answer to the batch: {other:?}"),
    }
}

#[tokio::test]
async fn pending_deliveries_survive_a_sigkill() -> Result<()> {
    let receiver = Receiver::start_with(|_, _| Reply::status(503)).await;
    let root = temp_dir("hostwatch-sinks-restart")?;
    let addr = free_addr()?;
    let config = write_file(
        root.path().join("aggregator.toml"),
        &format!(
            r#"listen = "{addr}"
data_dir = "{data_dir}"

[[integrations]]
name = "pager"
source = "issues"
backoff_min = "100ms"
backoff_max = "300ms"
sink = {{ type = "webhook", url = "{url}" }}
"#,
            data_dir = root.path().join("data").display(),
            url = receiver.url("/hook"),
        ),
    )?;

    let mut first = start_aggregator("aggregator-1", &config, root.path())?;
    wait_for_port(addr, tests::TIMEOUT).await?;
    let nodes = ["n1", "n2", "n3"];
    for node in nodes {
        trip(addr, node).await?;
    }
    // The receiver has refused attempts: the deliveries are pending, not lost.
    eventually("refused delivery attempts", || async {
        Ok((receiver.requests().len() >= 3).then_some(()))
    })
    .await?;
    first.kill()?;
    let refused = receiver.requests().len();

    receiver.respond_with(|_, _| Reply::status(200));
    let mut second = start_aggregator("aggregator-2", &config, root.path())?;
    let accepted = eventually("all three events delivered after the restart", || async {
        let requests = receiver.requests();
        let accepted: Vec<serde_json::Value> = requests[refused..]
            .iter()
            .map(receiver::Recorded::json)
            .filter(|event| event["rule"] == "core_load" && event["kind"] == "opened")
            .collect();
        Ok((accepted.len() >= nodes.len()).then_some(accepted))
    })
    .await?;
    let delivered: Vec<&str> = accepted
        .iter()
        .map(|event| event["node"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(delivered, nodes, "in commit order, each once");
    second.terminate(Duration::from_secs(15)).await?;
    Ok(())
}
