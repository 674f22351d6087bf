//! `cargo xtask bench-page [--trips N]`: time to page, measured, not asserted.
//!
//! Builds the release aggregator and runs `aggregator/examples/bench_page.rs` (release),
//! which starts it with a webhook integration, plays an agent over gRPC that trips
//! `core_load` (`open_for = 0`) N times (default 200), and prints p50, p99 and max from
//! the sample being sent to the webhook receiver on loopback having the `opened` event.
//! The README states the target (p99 ≤ 50 ms) and the figures measured.

use std::env;
use std::process::Command;

use anyhow::{Context, Result, bail};

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let trips = match args {
        [] => "200".to_owned(),
        ["--trips", n] => {
            n.parse::<usize>()
                .with_context(|| format!("--trips {n}: not a number"))?;
            (*n).to_owned()
        }
        _ => bail!("usage: cargo xtask bench-page [--trips N]"),
    };
    let root = crate::workspace_root()?;
    let target_dir = crate::target_dir(&root)?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("==> building the release aggregator and the benchmark");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "-p",
            "aggregator",
            "--bin",
            "hostwatch-aggregator",
        ])
        .args(["--example", "bench_page"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let status = Command::new(target_dir.join("release/examples/bench_page"))
        .arg("--aggregator")
        .arg(target_dir.join("release/hostwatch-aggregator"))
        .args(["--trips", &trips])
        .status()
        .context("cannot run the benchmark")?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    Ok(())
}
