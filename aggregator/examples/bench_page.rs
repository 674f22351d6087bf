//! Time to page, measured (run through `cargo xtask bench-page`, which builds the release
//! aggregator first): from the moment a simulated agent sends the sample that trips
//! `core_load` (`open_for = 0`) to the moment a webhook receiver on loopback has the
//! `opened` event. Each trip is followed by a sample that clears the rule (`close_for =
//! 0`), so the next trip opens a new issue. Prints p50, p99 and max; asserts nothing.
//!
//! usage: bench_page --aggregator PATH [--trips N]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use proto::v1 as wire;
use proto::v1::ingest_client::IngestClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

fn host(load1: f64) -> wire::Sample {
    wire::Sample {
        time_unix_ms: now_ms(),
        kind: Some(wire::sample::Kind::Host(wire::HostSample {
            load1,
            physical_cores: 2,
            logical_cores: 2,
            memory_total_bytes: 1 << 30,
            memory_available_bytes: 1 << 29,
            memory_used_percent: 50.0,
            ..Default::default()
        })),
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut aggregator = None;
    let mut trips = 200usize;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--aggregator" => aggregator = rest.next().cloned(),
            "--trips" => trips = rest.next().context("--trips N")?.parse()?,
            other => {
                bail!("unknown argument {other}; usage: bench_page --aggregator PATH [--trips N]")
            }
        }
    }
    let aggregator = aggregator.context("usage: bench_page --aggregator PATH [--trips N]")?;

    // The webhook receiver: reports each issue event's kind and arrival time.
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_addr = receiver.local_addr()?;
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let at = Instant::now();
        let arrivals = arrivals.clone();
        async move {
            if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) {
                let kind = event["kind"].as_str().unwrap_or_default().to_owned();
                let _ = arrivals.send((kind, at));
            }
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(receiver, app).await });

    let data = tempfile::tempdir()?;
    let addr = free_addr()?;
    let config = data.path().join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\n\n[rules.core_load]\nclose_for = \"0s\"\n\n\
             [[integrations]]\nname = \"pager\"\nsource = \"issues\"\n\
             sink = {{ type = \"webhook\", url = \"http://{receiver_addr}/page\" }}\n",
            data.path().join("data").display()
        ),
    )?;
    let _aggregator = Killed(
        Command::new(&aggregator)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {aggregator}"))?,
    );
    let channel = loop {
        let endpoint = tonic::transport::Channel::from_shared(format!("http://{addr}"))?;
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };

    let (sender, outbound) = mpsc::channel(4);
    sender
        .send(wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
                identity: Some(wire::NodeIdentity {
                    tenant: "bench".into(),
                    cluster: "db".into(),
                    node: "n1".into(),
                    ..Default::default()
                }),
                agent_version: "bench".into(),
                probes: vec![wire::ProbeInfo {
                    name: "host".into(),
                    interval_ms: 60_000,
                }],
                seq_epoch: "bench".into(),
                ..Default::default()
            })),
        })
        .await?;
    let mut inbound = IngestClient::new(channel)
        .stream(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let mut seq = 0;
    let mut send = async |load1: f64| -> Result<Instant> {
        seq += 1;
        let sent = Instant::now();
        sender
            .send(wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
                    seq,
                    samples: vec![host(load1)],
                    dropped_batches_total: 0,
                })),
            })
            .await?;
        inbound.message().await?.context("the stream ended")?;
        Ok(sent)
    };
    let mut wait_for = async |kind: &str| -> Result<Instant> {
        loop {
            let (got, at) = tokio::time::timeout(Duration::from_secs(30), arrived.recv())
                .await
                .context("no event within 30 s")?
                .context("the receiver stopped")?;
            if got == kind {
                return Ok(at);
            }
        }
    };

    println!("==> {trips} trips: core_load opens (open_for = 0) and closes (close_for = 0)");
    let mut latencies = Vec::with_capacity(trips);
    for trip in 0..trips + 5 {
        let sent = send(9.0).await?;
        let paged = wait_for("opened").await?;
        send(0.1).await?;
        wait_for("closed").await?;
        // The first few warm up connections and caches.
        if trip >= 5 {
            latencies.push(paged.duration_since(sent));
        }
    }
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "time to page (sample sent -> webhook has `opened`), {} trips: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0,
        mean.as_secs_f64() * 1000.0,
    );
    Ok(())
}
