//! `cargo xtask bench-agent [--seconds N]`: the agent's footprint, measured, not asserted.
//!
//! Builds the static release agent (`x86_64-unknown-linux-musl`, or glibc with
//! `+crt-static` when that target is not installed) and the release aggregator, runs the
//! agent against that aggregator at a 1 s host interval for a warm-up and then N seconds
//! (default 60), and prints: steady RSS (VmRSS sampled every second), CPU per sample+send
//! (the process's CPU time over the window ÷ batches the aggregator acknowledged, from
//! `/proc/PID/stat` utime+stime and, finer, from the threads' `schedstat`), the stripped
//! binary size, and `cargo bench -p agent --bench sampling` (the host probe against bare
//! reads of the same files). With `prometheus-node-exporter` on the PATH it runs node_exporter
//! with the same three collectors, scrapes it every second, and prints both side by side.
//!
//! It owns nothing else: no thresholds (the README states the targets), no installs.

use std::env;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const MUSL: &str = "x86_64-unknown-linux-musl";

/// The agent's size-optimised profile (`[profile.release-agent]` in the root
/// Cargo.toml), the same build `cargo xtask dist` packages.
const AGENT_PROFILE: &[&str] = &["--profile", "release-agent"];
const WARM_UP: Duration = Duration::from_secs(10);

/// Runs the benchmark; `args` are the task's arguments after `bench-agent`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let root = crate::workspace_root()?;
    let target_dir = crate::target_dir(&root)?;
    let (root, target_dir) = (root.as_path(), target_dir.as_path());
    let seconds = match args {
        [] => 60,
        ["--seconds", n] => n
            .parse()
            .with_context(|| format!("--seconds {n}: not a number"))?,
        _ => bail!("usage: cargo xtask bench-agent [--seconds N]"),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let (agent_binary, linkage) = build_agent(&cargo, root, target_dir)?;
    println!("==> building the release aggregator");
    run_cargo(
        &cargo,
        root,
        target_dir,
        &[
            "build",
            "--release",
            "-p",
            "aggregator",
            "--bin",
            "hostwatch-aggregator",
            "--bin",
            "hostwatchctl",
        ],
        &[],
    )?;
    let aggregator_binary = target_dir.join("release/hostwatch-aggregator");

    let work = env::temp_dir().join(format!("hostwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = measure(&agent_binary, &linkage, &aggregator_binary, &work, seconds);
    let _ = std::fs::remove_dir_all(&work);
    let report = result?;

    println!("\n==> sampling cost: cargo bench -p agent --bench sampling");
    run_cargo(
        &cargo,
        root,
        target_dir,
        &["bench", "-p", "agent", "--bench", "sampling"],
        &[],
    )?;
    println!("\n{report}");
    Ok(())
}

/// Builds the static agent for size, returning its path and how it is linked.
fn build_agent(
    cargo: &std::ffi::OsStr,
    root: &Path,
    target_dir: &Path,
) -> Result<(PathBuf, String)> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|line| line == MUSL)
        })
        .unwrap_or(false);
    let (triple, envs, linkage): (&str, &[(&str, &str)], String) = if installed {
        println!("==> building the agent for {MUSL} (static, optimised for size)");
        (MUSL, &[], format!("{MUSL}, static"))
    } else {
        let host = "x86_64-unknown-linux-gnu";
        println!("==> {MUSL} is not installed; building the agent for {host} with +crt-static");
        (
            host,
            &[("RUSTFLAGS", "-C target-feature=+crt-static")],
            format!("{host} +crt-static"),
        )
    };
    let mut args = vec!["build", "-p", "agent", "--target", triple];
    args.extend_from_slice(AGENT_PROFILE);
    run_cargo(cargo, root, target_dir, &args, envs)?;
    Ok((
        target_dir
            .join(triple)
            .join("release-agent/hostwatch-agent"),
        format!("{linkage}, opt-level s, fat LTO"),
    ))
}

fn run_cargo(
    cargo: &std::ffi::OsStr,
    root: &Path,
    target_dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<()> {
    let status = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .envs(envs.iter().copied())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// A child process killed when dropped.
struct Running {
    name: &'static str,
    child: Child,
}

impl Running {
    fn spawn(name: &'static str, command: &mut Command) -> Result<Running> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Running { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU and memory of one process, read from /proc.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// utime + stime, in clock ticks.
    ticks: u64,
    /// Sum of the threads' time on a CPU, in ns (`/proc/PID/task/*/schedstat`).
    cpu_ns: u64,
}

fn usage(pid: u32) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields resume after its closing parenthesis.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), i.e. 12 and 13 after the name.
    let ticks = fields.get(11).zip(fields.get(12)).context("short stat")?;
    let ticks = ticks.0.parse::<u64>()? + ticks.1.parse::<u64>()?;
    let mut cpu_ns = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        cpu_ns += schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Usage { ticks, cpu_ns })
}

fn status_kb(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100)
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_for_port(addr: SocketAddr, process: &mut Running) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        process.ensure_running()?;
        if Instant::now() > deadline {
            bail!("{} does not listen on {addr}", process.name);
        }
        sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The batches the aggregator has applied from the bench's agent, asked with
/// `hostwatchctl` (built next to the aggregator) rather than read from the agent's spool.
fn batches_applied(aggregator: &Path, addr: SocketAddr) -> Result<u64> {
    let hostwatchctl = aggregator.with_file_name("hostwatchctl");
    let output = Command::new(&hostwatchctl)
        .args(["node", "bench/bench/bench-1", "-o", "json", "--addr"])
        .arg(format!("http://{addr}"))
        .output()
        .with_context(|| format!("cannot run {}", hostwatchctl.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "hostwatchctl node failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let field = "\"batches_applied_total\":";
    let at = text
        .find(field)
        .with_context(|| format!("no batches_applied_total in {text}"))?;
    let digits: String = text[at + field.len()..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .with_context(|| format!("batches_applied_total is not a number in {text}"))
}

/// One scrape of node_exporter's /metrics; the body is read and dropped.
fn scrape(addr: SocketAddr) -> Result<usize> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body)?;
    Ok(body.len())
}

/// What one process did over the window.
struct Figures {
    rss_median_kb: u64,
    rss_max_kb: u64,
    hwm_kb: u64,
    cpu_us_per_op_ticks: f64,
    cpu_us_per_op_ns: f64,
    ops: u64,
}

fn measure(
    agent: &Path,
    linkage: &str,
    aggregator: &Path,
    work: &Path,
    seconds: u64,
) -> Result<String> {
    let binary_bytes = std::fs::metadata(agent)
        .with_context(|| format!("cannot stat {}", agent.display()))?
        .len();
    let aggregator_addr = free_addr()?;
    let aggregator_toml = work.join("aggregator.toml");
    std::fs::write(
        &aggregator_toml,
        format!(
            "listen = \"{aggregator_addr}\"\ndata_dir = \"{}\"\n",
            work.join("data").display()
        ),
    )?;
    let state_dir = work.join("agent-state");
    let agent_toml = work.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "state_dir = \"{}\"\n[identity]\ntenant = \"bench\"\ncluster = \"bench\"\nnode = \"bench-1\"\n\
             [aggregator]\nurl = \"http://{aggregator_addr}\"\n[host]\ninterval = \"1s\"\n",
            state_dir.display()
        ),
    )?;

    println!("==> starting the aggregator on {aggregator_addr} and the agent (1 s interval)");
    let mut aggregator_process = Running::spawn(
        "hostwatch-aggregator",
        Command::new(aggregator)
            .arg("run")
            .arg("--config")
            .arg(&aggregator_toml)
            .env("RUST_LOG", "warn"),
    )?;
    wait_for_port(aggregator_addr, &mut aggregator_process)?;
    let mut agent_process = Running::spawn(
        "hostwatch-agent",
        Command::new(agent)
            .arg("run")
            .arg("--config")
            .arg(&agent_toml)
            .env("RUST_LOG", "warn"),
    )?;

    let node_exporter =
        find_on_path("prometheus-node-exporter").or_else(|| find_on_path("node_exporter"));
    let mut exporter = match &node_exporter {
        Some(path) => {
            let addr = free_addr()?;
            let mut process = Running::spawn(
                "node_exporter",
                Command::new(path).args([
                    "--collector.disable-defaults",
                    "--collector.loadavg",
                    "--collector.meminfo",
                    "--collector.filesystem",
                    &format!("--web.listen-address={addr}"),
                ]),
            )?;
            wait_for_port(addr, &mut process)?;
            println!(
                "==> node_exporter ({}) on {addr}, scraped every second",
                path.display()
            );
            Some((process, addr))
        }
        None => {
            println!("==> prometheus-node-exporter is not installed: measuring the agent alone");
            None
        }
    };

    println!(
        "==> warming up for {}s, then measuring for {seconds}s",
        WARM_UP.as_secs()
    );
    let warm_up_end = Instant::now() + WARM_UP;
    while Instant::now() < warm_up_end {
        if let Some((_, addr)) = &exporter {
            scrape(*addr)?;
        }
        sleep(Duration::from_secs(1));
    }

    let agent_pid = agent_process.pid();
    let agent_start = usage(agent_pid)?;
    let applied_start = batches_applied(aggregator, aggregator_addr)?;
    let exporter_start = match &exporter {
        Some((process, _)) => Some(usage(process.pid())?),
        None => None,
    };
    let mut agent_rss = Vec::new();
    let mut exporter_rss = Vec::new();
    let mut scrapes = 0u64;
    let started = Instant::now();
    for tick in 1..=seconds {
        if let Some((process, addr)) = &mut exporter {
            process.ensure_running()?;
            scrape(*addr)?;
            scrapes += 1;
            exporter_rss.push(status_kb(process.pid(), "VmRSS:")?);
        }
        agent_process.ensure_running()?;
        agent_rss.push(status_kb(agent_pid, "VmRSS:")?);
        let next = started + Duration::from_secs(tick);
        sleep(next.saturating_duration_since(Instant::now()));
    }
    let agent_end = usage(agent_pid)?;
    // Batches applied (so acknowledged) in the window, as the aggregator counts them.
    let batches = batches_applied(aggregator, aggregator_addr)?.saturating_sub(applied_start);
    let ticks_per_second = clock_ticks_per_second() as f64;
    let figures = |start: Usage, end: Usage, rss: &mut Vec<u64>, hwm_kb: u64, ops: u64| {
        rss.sort_unstable();
        let ops_f = ops.max(1) as f64;
        Figures {
            rss_median_kb: rss.get(rss.len() / 2).copied().unwrap_or(0),
            rss_max_kb: rss.last().copied().unwrap_or(0),
            hwm_kb,
            cpu_us_per_op_ticks: (end.ticks - start.ticks) as f64 / ticks_per_second * 1e6 / ops_f,
            cpu_us_per_op_ns: (end.cpu_ns - start.cpu_ns) as f64 / 1e3 / ops_f,
            ops,
        }
    };
    let agent_figures = figures(
        agent_start,
        agent_end,
        &mut agent_rss,
        status_kb(agent_pid, "VmHWM:")?,
        batches,
    );
    let exporter_figures = match (&exporter, exporter_start) {
        (Some((process, _)), Some(start)) => {
            let end = usage(process.pid())?;
            Some(figures(
                start,
                end,
                &mut exporter_rss,
                status_kb(process.pid(), "VmHWM:")?,
                scrapes,
            ))
        }
        _ => None,
    };
    drop(agent_process);
    drop(exporter.take());
    drop(aggregator_process);

    let mut report = String::new();
    writeln!(
        report,
        "==> footprint over {seconds}s at a 1 s interval (after {}s warm-up)",
        WARM_UP.as_secs()
    )?;
    writeln!(
        report,
        "agent binary: {} ({linkage}, stripped): {:.2} MB ({binary_bytes} bytes)",
        agent.display(),
        binary_bytes as f64 / 1e6
    )?;
    writeln!(
        report,
        "{:<34} {:>16} {:>22}",
        "", "hostwatch-agent", "node_exporter (3 coll.)"
    )?;
    let row =
        |report: &mut String, label: &str, agent_value: String, exporter_value: Option<String>| {
            let _ = writeln!(
                report,
                "{label:<34} {agent_value:>16} {:>22}",
                exporter_value.unwrap_or_else(|| "-".to_owned())
            );
        };
    let mb = |kb: u64| format!("{:.2} MB", kb as f64 / 1024.0);
    let ex = exporter_figures.as_ref();
    row(
        &mut report,
        "steady RSS (median VmRSS)",
        mb(agent_figures.rss_median_kb),
        ex.map(|f| mb(f.rss_median_kb)),
    );
    row(
        &mut report,
        "max VmRSS in the window",
        mb(agent_figures.rss_max_kb),
        ex.map(|f| mb(f.rss_max_kb)),
    );
    row(
        &mut report,
        "peak RSS (VmHWM)",
        mb(agent_figures.hwm_kb),
        ex.map(|f| mb(f.hwm_kb)),
    );
    row(
        &mut report,
        "samples sent+acked / scrapes",
        agent_figures.ops.to_string(),
        ex.map(|f| f.ops.to_string()),
    );
    row(
        &mut report,
        "CPU per sample+send / scrape (ns)",
        format!("{:.0} µs", agent_figures.cpu_us_per_op_ns),
        ex.map(|f| format!("{:.0} µs", f.cpu_us_per_op_ns)),
    );
    row(
        &mut report,
        "  same from utime+stime (ticks)",
        format!("{:.0} µs", agent_figures.cpu_us_per_op_ticks),
        ex.map(|f| format!("{:.0} µs", f.cpu_us_per_op_ticks)),
    );
    writeln!(
        report,
        "targets: RSS <= 4 MB, <= 130 µs CPU per sample+send, binary <= 5 MB, sampling <= 1.5x direct reads (above)"
    )?;
    Ok(report)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}
