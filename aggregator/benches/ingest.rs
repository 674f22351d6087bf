//! Ingest benchmark: the real `hostwatch-aggregator` binary, driven over loopback gRPC by
//! simulated agents from this process. It measures; it asserts nothing.
//!
//! `cargo bench -p aggregator --bench ingest` (add `-- --quick` for a short run). Prints:
//! - bulk samples/s on one stream and on 100 streams (batches of 500 samples, 8 in flight
//!   per stream, each acknowledged only after its durable commit);
//! - server CPU µs per sample at one sample per wake-up (1000 agents, one sample per
//!   batch, paced);
//! - server CPU (share of one core) and RSS with 10 k and 100 k simulated nodes, each
//!   sending one sample every 5 s over its own stream.
//!
//! CPU and RSS are the server process's own, read from /proc/PID/stat and
//! /proc/PID/status, so the simulated agents' cost is not counted.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::v1 as wire;
use proto::v1::ingest_client::IngestClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Streams multiplexed on one HTTP/2 connection (the server's default limit is 200).
const STREAMS_PER_CONNECTION: usize = 100;
/// Linux's USER_HZ: /proc reports CPU time in these ticks.
const TICKS_PER_SECOND: f64 = 100.0;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Server {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> BenchResult<Self> {
        let data = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = data.path().join("aggregator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n",
                data.path().display()
            ),
        )?;
        let child = Command::new(env!("CARGO_BIN_EXE_hostwatch-aggregator"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let addr = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("the aggregator did not start listening within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child,
            addr,
            _data: data,
        })
    }

    /// (user + system CPU seconds, RSS bytes) of the server process so far.
    fn usage(&self) -> BenchResult<(f64, u64)> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let after_name = stat.rsplit_once(')').ok_or("odd /proc stat")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let utime: f64 = fields.get(11).ok_or("no utime")?.parse()?;
        let stime: f64 = fields.get(12).ok_or("no stime")?.parse()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kb: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or("no VmRSS")?
            .parse()?;
        Ok(((utime + stime) / TICKS_PER_SECOND, rss_kb * 1024))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn hello(node: &str) -> wire::AgentMessage {
    wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
            identity: Some(wire::NodeIdentity {
                tenant: "bench".into(),
                cluster: format!("c{}", node.len() % 7),
                node: node.into(),
                ..Default::default()
            }),
            agent_version: "bench".into(),
            probes: vec![wire::ProbeInfo {
                name: "host".into(),
                interval_ms: 5000,
            }],
            seq_epoch: "bench".into(),
            ..Default::default()
        })),
    }
}

/// A realistic host sample: load, memory and two disks, all healthy.
fn sample(time_unix_ms: i64) -> wire::Sample {
    let disk = |mount: &str| wire::DiskUsage {
        mount: mount.into(),
        device: "/dev/vda".into(),
        fs_type: "ext4".into(),
        total_bytes: 100 << 30,
        available_bytes: 60 << 30,
        used_percent: 40.0,
        inodes_total: 1 << 20,
        inodes_free: 1 << 19,
    };
    wire::Sample {
        time_unix_ms,
        kind: Some(wire::sample::Kind::Host(wire::HostSample {
            load1: 0.5,
            load5: 0.4,
            load15: 0.3,
            physical_cores: 4,
            logical_cores: 8,
            physical_cores_estimated: false,
            memory_total_bytes: 16 << 30,
            memory_available_bytes: 8 << 30,
            memory_used_percent: 50.0,
            disks: vec![disk("/"), disk("/var/lib/db")],
        })),
    }
}

fn batch(seq: u64, samples: Vec<wire::Sample>) -> wire::AgentMessage {
    wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
            seq,
            samples,
            dropped_batches_total: 0,
        })),
    }
}

async fn connect(addr: &str) -> BenchResult<Channel> {
    Ok(Endpoint::from_shared(addr.to_owned())?
        .http2_adaptive_window(true)
        .connect()
        .await?)
}

/// One agent stream: its sender and its acks.
struct Agent {
    sender: mpsc::Sender<wire::AgentMessage>,
    acks: tonic::Streaming<wire::AggregatorMessage>,
}

async fn open_agent(channel: Channel, node: &str) -> BenchResult<Agent> {
    let (sender, outbound) = mpsc::channel(64);
    sender.send(hello(node)).await?;
    let acks = IngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .stream(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    Ok(Agent { sender, acks })
}

/// Streams `n_batches` batches of `batch_size` samples with up to `in_flight`
/// unacknowledged; returns when all are acknowledged.
async fn bulk_stream(
    channel: Channel,
    node: String,
    n_batches: u64,
    batch_size: usize,
    in_flight: u64,
) -> BenchResult<()> {
    let mut agent = open_agent(channel, &node).await?;
    // Sample times: consecutive milliseconds ending now, so none is in the future.
    let total = n_batches * batch_size as u64;
    let mut time = now_ms() - i64::try_from(total)?;
    let mut acked = 0;
    for seq in 1..=n_batches {
        let samples = (0..batch_size)
            .map(|_| {
                time += 1;
                sample(time)
            })
            .collect();
        agent.sender.send(batch(seq, samples)).await?;
        while seq - acked >= in_flight {
            agent.acks.message().await?.ok_or("stream ended")?;
            acked += 1;
        }
    }
    while acked < n_batches {
        agent.acks.message().await?.ok_or("stream ended")?;
        acked += 1;
    }
    Ok(())
}

async fn bulk(server: &Server, n_streams: usize, samples_per_stream: u64) -> BenchResult<()> {
    const BATCH: usize = 500;
    let n_batches = samples_per_stream / BATCH as u64;
    let mut channels = Vec::new();
    for _ in 0..n_streams.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(connect(&server.addr).await?);
    }
    let (cpu_before, _) = server.usage()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for stream in 0..n_streams {
        let channel = channels[stream / STREAMS_PER_CONNECTION].clone();
        tasks.push(tokio::spawn(bulk_stream(
            channel,
            format!("bulk-{n_streams}-{stream}"),
            n_batches,
            BATCH,
            8,
        )));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_after, rss) = server.usage()?;
    let n_samples = n_batches as f64 * BATCH as f64 * n_streams as f64;
    println!(
        "bulk, {n_streams:>3} stream(s): {:>9.0} samples/s ({n_samples:.0} samples in {elapsed:.2} s; server CPU {:.1} µs/sample, RSS {} MiB)",
        n_samples / elapsed,
        (cpu_after - cpu_before) * 1e6 / n_samples,
        rss >> 20,
    );
    Ok(())
}

/// `n_nodes` agents, each on its own stream, each sending one sample per batch every
/// `period`, spread evenly; measured for `measure` after every node said hello and sent
/// its first batch.
async fn paced(
    server: &Server,
    label: &str,
    n_nodes: usize,
    period: Duration,
    measure: Duration,
) -> BenchResult<()> {
    let mut channels = Vec::new();
    for _ in 0..n_nodes.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(connect(&server.addr).await?);
    }
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for node_idx in 0..n_nodes {
        let channel = channels[node_idx / STREAMS_PER_CONNECTION].clone();
        let acked = Arc::clone(&acked);
        let offset = period.mul_f64(node_idx as f64 / n_nodes as f64);
        let node = format!("{label}-{node_idx}");
        tasks.push(tokio::spawn(async move {
            let mut agent = open_agent(channel, &node).await?;
            tokio::time::sleep(offset).await;
            let mut ticker = tokio::time::interval(period);
            for seq in 1.. {
                ticker.tick().await;
                agent
                    .sender
                    .send(batch(seq, vec![sample(now_ms())]))
                    .await?;
                agent.acks.message().await?.ok_or("stream ended")?;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            BenchResult::Ok(())
        }));
    }
    // Warm up: every node connected and through at least one period.
    while acked.load(Ordering::Relaxed) < n_nodes as u64 {
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("{label}: not every node got an ack within 10 min").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warm_up = started.elapsed();
    let (cpu_before, _) = server.usage()?;
    let acked_before = acked.load(Ordering::Relaxed);
    let measuring = Instant::now();
    tokio::time::sleep(measure).await;
    let (cpu_after, rss) = server.usage()?;
    let elapsed = measuring.elapsed().as_secs_f64();
    let n_samples = (acked.load(Ordering::Relaxed) - acked_before) as f64;
    let cpu = cpu_after - cpu_before;
    println!(
        "{label}: {n_nodes} nodes, 1 sample / {:?} each: {:.0} samples/s, server CPU {:.1} % of one core, {:.1} µs/sample, RSS {} MiB (warm-up {:.0} s)",
        period,
        n_samples / elapsed,
        cpu / elapsed * 100.0,
        cpu * 1e6 / n_samples.max(1.0),
        rss >> 20,
        warm_up.as_secs_f64(),
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}

async fn run(quick: bool) -> BenchResult<()> {
    let scale = if quick { 10 } else { 1 };
    {
        let server = Server::start()?;
        bulk(&server, 1, 500_000 / scale).await?;
    }
    {
        let server = Server::start()?;
        bulk(&server, 100, 10_000 / scale).await?;
    }
    {
        let server = Server::start()?;
        // One sample per wake-up: 1000 agents, one sample each per second.
        paced(
            &server,
            "per-wake-up",
            1000,
            Duration::from_secs(1),
            Duration::from_secs(20 / scale),
        )
        .await?;
    }
    for n_nodes in [10_000, 100_000] {
        let server = Server::start()?;
        paced(
            &server,
            &format!("fleet-{}k", n_nodes / 1000),
            n_nodes / scale as usize,
            Duration::from_secs(5),
            Duration::from_secs(30 / scale),
        )
        .await?;
    }
    Ok(())
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ingest bench: cannot start a runtime: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(run(quick)) {
        eprintln!("ingest bench: {error}");
        std::process::exit(1);
    }
}
