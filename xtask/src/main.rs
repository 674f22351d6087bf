//! Project automation, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! Tasks are plain Rust instead of shell scripts so they run the same everywhere cargo
//! does. `ci` is what CI runs (through `.ci/run`) and what a developer runs before
//! pushing. Code generation needs no task: `proto/build.rs` does it on every build.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

mod bench_agent;
mod bench_page;

mod dist;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  bench-agent [--seconds N]  the agent's footprint (RSS, CPU per sample, size) vs node_exporter
  bench-page [--trips N]     time to page: sample sent -> webhook has the `opened` event
  ci    fmt check, clippy (-D warnings), build all binaries, packages, all tests
  dist [--skip-without-tools]  release builds and the .deb and .rpm packages in
        target/dist/ (skipped, outside CI, when cargo-deb or cargo-generate-rpm is missing)";

fn main() -> ExitCode {
    // Printed by hand: anyhow's `Termination` would add a backtrace when RUST_BACKTRACE
    // is set, burying the one line that matters.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["ci"] => ci(),
        ["bench-agent", ref rest @ ..] => bench_agent::run(rest),
        ["bench-page", ref rest @ ..] => bench_page::run(rest),
        ["dist"] => dist::task(false),
        ["dist", "--skip-without-tools"] => dist::task(true),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        [] => bail!("no task given\n\n{USAGE}"),
        _ => bail!("unknown task `{}`\n\n{USAGE}", args.join(" ")),
    }
}

/// One step of a task: a cargo command and what it checks.
struct Step {
    title: &'static str,
    args: &'static [&'static str],
}

const CI_STEPS: &[Step] = &[
    Step {
        title: "formatting",
        args: &["fmt", "--all", "--", "--check"],
    },
    Step {
        title: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    },
    // The end-to-end tests in `tests` start the real binaries from the target directory,
    // and `cargo test` does not build binaries of other packages.
    Step {
        title: "build binaries",
        args: &["build", "--workspace", "--bins", "--locked"],
    },
    // The packaging tests install target/dist's packages (release builds, once).
    Step {
        title: "packages",
        args: &["xtask", "dist", "--skip-without-tools"],
    },
    Step {
        title: "tests",
        args: &["test", "--workspace", "--locked"],
    },
];

fn ci() -> Result<()> {
    let root = workspace_root()?;
    let target_dir = target_dir(&root)?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    for (step_idx, step) in CI_STEPS.iter().enumerate() {
        println!(
            "\n==> [{}/{}] {}: cargo {}",
            step_idx + 1,
            CI_STEPS.len(),
            step.title,
            step.args.join(" ")
        );
        let step_started = Instant::now();
        let status = Command::new(&cargo)
            .args(step.args)
            .current_dir(&root)
            // One target directory for every step, so nothing is built twice, and the
            // e2e tests find the binaries where the build step put them.
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .with_context(|| format!("cannot run cargo for step `{}`", step.title))?;
        if !status.success() {
            bail!(
                "step `{}` failed ({status}): fix it and run `cargo xtask ci` again",
                step.title
            );
        }
        println!(
            "==> {} passed in {:.0?}",
            step.title,
            step_started.elapsed()
        );
    }
    println!("\n==> ci passed in {:.0?}", started.elapsed());
    Ok(())
}

/// The workspace root: the parent of this crate's folder.
fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .context("xtask's manifest directory has no parent")?;
    Ok(root.to_path_buf())
}

/// `CARGO_TARGET_DIR` when set (made absolute against the current directory, as cargo
/// reads it), else `<root>/target`.
fn target_dir(root: &Path) -> Result<PathBuf> {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let current_dir = env::current_dir().context("cannot read the current directory")?;
            Ok(current_dir.join(dir))
        }
        _ => Ok(root.join("target")),
    }
}
