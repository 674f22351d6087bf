//! What one host sample costs against the bare reads it is built from: `/proc/loadavg`,
//! `/proc/meminfo` and `statvfs(2)` of the same mounts. A benchmark, not a test: it prints
//! figures and asserts nothing. Run with `cargo bench -p agent --bench sampling` (or
//! `cargo xtask bench-agent`, which runs it too). The budget is 1.5× the bare reads.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::io::Read;
use std::time::{Duration, Instant};

use agent::HostProbe;
use agent::config::HostConfig;

const ROUNDS: usize = 5;
const MIN_ROUND: Duration = Duration::from_millis(500);

/// The mean time of `op`, in ns: the best of several rounds, each long enough to average
/// out timer resolution (the best round is the one least disturbed by other processes).
fn mean_ns(mut op: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut n_ops = 0u64;
        while started.elapsed() < MIN_ROUND {
            for _ in 0..64 {
                op();
            }
            n_ops += 64;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / n_ops as f64);
    }
    best
}

fn read_into(path: &str, buf: &mut Vec<u8>) {
    buf.clear();
    std::fs::File::open(path).unwrap().read_to_end(buf).unwrap();
}

fn main() {
    let mut probe = HostProbe::new(&HostConfig::default()).unwrap();
    let mounts: Vec<String> = probe
        .sample()
        .unwrap()
        .disks
        .into_iter()
        .map(|d| d.mount)
        .collect();

    let mut buf = Vec::with_capacity(8 * 1024);
    let direct = mean_ns(|| {
        read_into("/proc/loadavg", &mut buf);
        read_into("/proc/meminfo", &mut buf);
        for mount in &mounts {
            black_box(rustix::fs::statvfs(mount.as_str()).unwrap());
        }
    });
    let sample = mean_ns(|| {
        black_box(probe.sample().unwrap());
    });
    println!("mounts reported: {} ({})", mounts.len(), mounts.join(", "));
    println!(
        "direct reads (loadavg + meminfo + statvfs per mount): {:>8.1} µs",
        direct / 1e3
    );
    println!(
        "HostProbe::sample (the same + mountinfo, parsed):     {:>8.1} µs",
        sample / 1e3
    );
    println!("ratio: {:.2}x (budget 1.5x)", sample / direct);
}
