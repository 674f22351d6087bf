//! `cargo xtask dist`: the release packages in `target/dist/`.
//!
//! Builds the agent statically (the musl target when installed, else glibc with
//! `+crt-static`) and the aggregator with `hostwatchctl` (glibc), each release tree once,
//! then packs each twice: a .deb with cargo-deb and an .rpm with cargo-generate-rpm,
//! from the `[package.metadata.deb]` and `[package.metadata.generate-rpm]` sections of
//! `agent/Cargo.toml` and `aggregator/Cargo.toml`. The units, maintainer scripts and
//! scriptlets live in `packaging/`; this file only drives the tools. It does not install
//! them: `.ci/run` does (`cargo install cargo-deb cargo-generate-rpm --locked`).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where the agent's static binary comes from.
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The agent's size-optimised profile (root Cargo.toml); the aggregator uses `release`.
const AGENT_PROFILE: &str = "release-agent";
const GNU_TARGET: &str = "x86_64-unknown-linux-gnu";

/// `cargo xtask dist [--skip-without-tools]`. With the flag, and outside CI (`CI=true`),
/// a missing cargo-deb or cargo-generate-rpm skips the packages instead of failing, so
/// `cargo xtask ci` works on a machine without them (the packaging tests skip too).
pub(crate) fn task(skip_without_tools: bool) -> Result<()> {
    let root = crate::workspace_root()?;
    let target_dir = crate::target_dir(&root)?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let dist_dir = target_dir.join("dist");
    if dist_dir.exists() {
        fs::remove_dir_all(&dist_dir)
            .with_context(|| format!("cannot empty {}", dist_dir.display()))?;
    }
    if let Err(missing) = ensure_packagers(&root, &cargo) {
        let in_ci = env::var("CI").is_ok_and(|ci| ci == "true");
        if skip_without_tools && !in_ci {
            println!("==> skipping the packages: {missing:#}");
            return Ok(());
        }
        return Err(missing);
    }
    dist(&root, &target_dir, &cargo)
}

/// Builds the release binaries and the four packages into `<target_dir>/dist/`, which
/// holds exactly this build's packages afterwards.
fn dist(root: &Path, target_dir: &Path, cargo: &OsString) -> Result<()> {
    let dist_dir = target_dir.join("dist");
    fs::create_dir_all(&dist_dir)
        .with_context(|| format!("cannot create {}", dist_dir.display()))?;

    let agent_target = agent_target()?;
    let mut agent_build = cargo_command(root, target_dir, cargo);
    agent_build.args([
        "build",
        "--profile",
        AGENT_PROFILE,
        "--locked",
        "--package",
        "agent",
        "--bin",
        "hostwatch-agent",
        "--target",
        agent_target.triple,
    ]);
    if let Some(rustflags) = agent_target.rustflags {
        // With an explicit --target, RUSTFLAGS reach only the target's artifacts, not the
        // build scripts and proc macros, which must stay dynamic.
        agent_build.env("RUSTFLAGS", rustflags);
    }
    run(
        &format!("agent release build ({})", agent_target.triple),
        agent_build,
    )?;
    let agent_binary = target_dir
        .join(agent_target.triple)
        .join(AGENT_PROFILE)
        .join("hostwatch-agent");
    ensure_static(&agent_binary)?;

    let mut aggregator_build = cargo_command(root, target_dir, cargo);
    aggregator_build.args([
        "build",
        "--release",
        "--locked",
        "--package",
        "aggregator",
        "--bins",
    ]);
    run("aggregator release build", aggregator_build)?;

    let agent_target_args = ["--target", agent_target.triple, "--profile", AGENT_PROFILE];
    let aggregator_target_args = ["--profile", "release"];
    for (package, target_args) in [
        ("agent", &agent_target_args[..]),
        ("aggregator", &aggregator_target_args[..]),
    ] {
        let mut deb = cargo_command(root, target_dir, cargo);
        deb.args(["deb", "--no-build", "--package", package])
            .args(target_args)
            .arg("--output")
            .arg(&dist_dir);
        run(&format!("{package} .deb (cargo deb)"), deb)?;

        let mut rpm = cargo_command(root, target_dir, cargo);
        rpm.args(["generate-rpm", "--package", package])
            .args(target_args)
            .arg("--output")
            .arg(&dist_dir);
        run(&format!("{package} .rpm (cargo generate-rpm)"), rpm)?;
    }

    let mut files: Vec<PathBuf> = fs::read_dir(&dist_dir)
        .with_context(|| format!("cannot list {}", dist_dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dist_dir.display()))?;
    files.sort();
    let n_debs = files
        .iter()
        .filter(|path| has_extension(path, "deb"))
        .count();
    let n_rpms = files
        .iter()
        .filter(|path| has_extension(path, "rpm"))
        .count();
    if (n_debs, n_rpms) != (2, 2) {
        bail!(
            "{} holds {n_debs} .deb and {n_rpms} .rpm files, expected 2 of each: {files:?}",
            dist_dir.display()
        );
    }
    println!("\n==> packages in {}:", dist_dir.display());
    for file in &files {
        let size = fs::metadata(file)
            .with_context(|| format!("cannot stat {}", file.display()))?
            .len();
        println!("    {} ({} KiB)", file.display(), size / 1024);
    }
    Ok(())
}

/// The target the agent is built for, and the flags that make its binary static.
struct AgentTarget {
    triple: &'static str,
    rustflags: Option<&'static str>,
}

/// musl when the toolchain has its standard library (rustup target add), else glibc
/// linked statically.
fn agent_target() -> Result<AgentTarget> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run `rustc --print sysroot`")?;
    if !output.status.success() {
        bail!("`rustc --print sysroot` failed ({})", output.status);
    }
    let sysroot = String::from_utf8(output.stdout).context("rustc's sysroot is not UTF-8")?;
    let musl_std = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(MUSL_TARGET);
    if musl_std.is_dir() {
        return Ok(AgentTarget {
            triple: MUSL_TARGET,
            rustflags: None,
        });
    }
    println!(
        "==> {MUSL_TARGET} is not installed (`rustup target add {MUSL_TARGET}`): building the \
         agent for {GNU_TARGET} with +crt-static"
    );
    Ok(AgentTarget {
        triple: GNU_TARGET,
        rustflags: Some("-C target-feature=+crt-static"),
    })
}

/// Fails, saying how to install them, unless `cargo deb` and `cargo generate-rpm` run.
fn ensure_packagers(root: &Path, cargo: &OsString) -> Result<()> {
    for (subcommand, krate) in [("deb", "cargo-deb"), ("generate-rpm", "cargo-generate-rpm")] {
        let works = Command::new(cargo)
            .args([subcommand, "--version"])
            .current_dir(root)
            .output()
            .is_ok_and(|output| output.status.success());
        if !works {
            bail!(
                "`cargo {subcommand}` is not installed: `cargo install {krate} --locked` \
                 (.ci/run does)"
            );
        }
    }
    Ok(())
}

/// A dynamically linked executable has a PT_INTERP program header naming its loader;
/// a static (or static-pie) one has none.
fn ensure_static(binary: &Path) -> Result<()> {
    const PT_INTERP: u32 = 3;
    let bytes = fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let read_u16 = |offset: usize| -> Option<usize> {
        Some(u16::from_le_bytes(bytes.get(offset..offset + 2)?.try_into().ok()?).into())
    };
    let read_u32 = |offset: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bytes.get(offset..offset + 4)?.try_into().ok()?,
        ))
    };
    let read_u64 = |offset: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(
            bytes.get(offset..offset + 8)?.try_into().ok()?,
        ))
        .ok()
    };
    // ELF64 little-endian header: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    let is_elf64_le = bytes.get(..6) == Some(b"\x7fELF\x02\x01");
    let header = (|| Some((read_u64(0x20)?, read_u16(0x36)?, read_u16(0x38)?)))();
    let Some((ph_offset, ph_size, n_ph)) = header.filter(|_| is_elf64_le) else {
        bail!(
            "{} is not a 64-bit little-endian ELF file",
            binary.display()
        );
    };
    for ph_idx in 0..n_ph {
        let p_type = read_u32(ph_offset + ph_idx * ph_size)
            .with_context(|| format!("{}: truncated program headers", binary.display()))?;
        if p_type == PT_INTERP {
            bail!(
                "{} is dynamically linked (it has a PT_INTERP header); the agent must be static",
                binary.display()
            );
        }
    }
    Ok(())
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().is_some_and(|ext| ext == extension)
}

fn cargo_command(root: &Path, target_dir: &Path, cargo: &OsString) -> Command {
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir);
    command
}

fn run(title: &str, mut command: Command) -> Result<()> {
    println!("\n==> {title}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {title}"))?;
    if !status.success() {
        bail!("{title} failed ({status})");
    }
    Ok(())
}
