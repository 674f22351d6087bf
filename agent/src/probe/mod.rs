//! Probes: each one samples one thing and returns it as the proto's sample kinds. One
//! module per probe: `host` (load, memory, disks), `gossip` (the local database node's view
//! of its cluster) and `logs` (lines appended to log files); [`registry`] lists them.
//!
//! A probe is a [`Probe`]: a name, an interval and a `collect`. [`drive`] is the one loop
//! that runs every probe: it waits for the probe's tick (a `timerfd`, see `ticker`), calls
//! `collect`, stamps the samples with the time of the tick and queues them as one batch.
//!
//! Probes do not know about batches, seqs, the outbox or the network to the aggregator:
//! queueing what they return is the caller's job ([`Sink`]). `host` and `logs` only read
//! local files; `gossip` asks the local database over HTTP ([`http`]), bounded by its
//! timeout.

pub mod elasticsearch;
pub mod gossip;
pub mod host;
mod http;
pub mod logs;
mod registry;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::v1::{Sample, sample};

pub use gossip::GossipProbe;
pub use host::HostProbe;
pub use logs::LogTailer;
pub(crate) use registry::probes;

use crate::ticker::Ticker;

/// Why a probe could not take a sample.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe: cannot read {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("probe: {path}: {message}")]
    Parse { path: &'static str, message: String },
}

/// What one `collect` returned.
#[derive(Debug, Default)]
pub struct Collected {
    /// The sample kinds, queued as one batch (nothing is queued when empty).
    pub samples: Vec<sample::Kind>,
    /// True when there is more to collect right now (a long log backlog): the loop queues
    /// this batch, lets the other probes run, and collects again without waiting a tick.
    pub more: bool,
}

/// The future `collect` returns: boxed so that probes can be kept in one list.
pub type Collecting<'a> = Pin<Box<dyn Future<Output = Collected> + Send + 'a>>;

/// One probe: something sampled every `interval`.
///
/// A probe reports its own failures: as samples when the aggregator must hear of them
/// (a failed gossip query), as log lines otherwise (an unreadable `/proc` file), so
/// `collect` has no error to return.
pub trait Probe: Debug + Send {
    /// The name announced in `Hello.probes`, e.g. "host".
    fn name(&self) -> &str;

    /// How often `collect` is called.
    fn interval(&self) -> Duration;

    /// The interval announced in `Hello.probes`, from which the aggregator derives silence:
    /// the sampling interval, or zero for a probe whose silence says nothing (logs).
    fn announced_interval(&self) -> Duration {
        self.interval()
    }

    /// Takes one sample (or a few).
    fn collect(&mut self) -> Collecting<'_>;
}

/// Where [`drive`] puts each batch of samples.
pub(crate) trait Sink: Sync {
    fn push(&self, samples: Vec<Sample>);
}

/// The loop that runs a probe: on every tick, collect and queue. Never returns.
async fn drive(mut probe: Box<dyn Probe>, sink: &impl Sink) {
    let mut ticker = Ticker::new(probe.interval());
    loop {
        ticker.tick().await;
        loop {
            let time_unix_ms = unix_ms(SystemTime::now());
            let collected = probe.collect().await;
            if !collected.samples.is_empty() {
                let samples = collected
                    .samples
                    .into_iter()
                    .map(|kind| Sample {
                        time_unix_ms,
                        kind: Some(kind),
                    })
                    .collect();
                sink.push(samples);
            }
            if !collected.more {
                break;
            }
            // Let the uplink and the other probes run between batches of a long backlog.
            tokio::task::yield_now().await;
        }
    }
}

/// Runs every probe's [`drive`] loop on the calling task. Never returns.
///
/// Polls them all on each wake-up, as `select!` does, rather than spawning a task per
/// probe: the agent runs on one thread and its `run` spawns nothing.
pub(crate) async fn drive_all(probes: Vec<Box<dyn Probe>>, sink: &impl Sink) {
    let mut loops: Vec<_> = probes
        .into_iter()
        .map(|probe| Box::pin(drive(probe, sink)))
        .collect();
    std::future::poll_fn(|cx| {
        for probe_loop in &mut loops {
            // A drive loop never completes.
            let _ = probe_loop.as_mut().poll(cx);
        }
        std::task::Poll::<()>::Pending
    })
    .await;
}

pub(crate) fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}
