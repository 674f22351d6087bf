//! Harness for the end-to-end tests in `tests/`: they start the real `hostwatch-*`
//! binaries from the target directory and talk to them over 127.0.0.1.
//!
//! It owns processes (spawned with output captured to files, signalled, killed on drop,
//! their output printed so a failing test shows it), free ports, temporary directories,
//! an Operator client and polling with a deadline. It deliberately knows nothing about
//! hostwatch's behaviour: the scenarios and their configs live in the test files.
//!
//! `cargo test` does not build other packages' binaries, so [`binary`] runs `cargo build
//! --bins` once per test process, for the profile and target directory the test itself was
//! built for: a test never runs a binary older than the source (a no-op when `cargo xtask
//! ci` has just built them).

use std::fmt;
use std::fs::{self, File};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use proto::v1::operator_client::OperatorClient;
use rustix::process::{Pid, Signal, kill_process};
use tonic::transport::Channel;

pub use tempfile::TempDir;

pub mod es_stand_in;

/// How long a test waits for anything to happen: generous, since CI machines are slow and
/// busy; a passing test never waits this long.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(200);

/// The path of one of the workspace's binaries, next to the running test's `deps`
/// directory (`target/debug/deps/e2e-… → target/debug/<name>`), built from the current
/// source first.
pub fn binary(name: &str) -> Result<PathBuf> {
    let test_exe = std::env::current_exe().context("cannot find the running test binary")?;
    let profile_dir = test_exe.parent().and_then(Path::parent).with_context(|| {
        format!(
            "test binary {} is not in a target directory",
            test_exe.display()
        )
    })?;
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_binaries(profile_dir).map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} does not exist after `cargo build --workspace --bins`: is {name} a binary \
             of the workspace?",
            path.display()
        );
    }
    Ok(path)
}

/// `cargo build --workspace --bins` into `profile_dir` (`<target dir>/<profile>`), with the
/// cargo that built this test.
fn build_binaries(profile_dir: &Path) -> Result<()> {
    let (Some(target_dir), Some(profile)) = (
        profile_dir.parent(),
        profile_dir.file_name().and_then(|name| name.to_str()),
    ) else {
        bail!("{} is not <target dir>/<profile>", profile_dir.display());
    };
    let profile = if profile == "debug" { "dev" } else { profile };
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let output = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !output.status.success() {
        bail!(
            "`cargo build --workspace --bins --profile {profile}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago. The kernel does not hand a port
/// it just gave out to the next `bind(0)`, so collisions between tests are unlikely.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("cannot read the bound address")?
        .port())
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create a temporary directory")
}

/// Writes `contents` to `path`, creating its parent directories, and returns the path.
pub fn write_file(path: impl AsRef<Path>, contents: &str) -> Result<PathBuf> {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// A child process whose stdout and stderr go to files in a log directory. Dropping it
/// kills the process (SIGKILL) and prints both files to stderr, which the test harness
/// shows only for a failing test.
pub struct Process {
    name: String,
    child: Child,
    /// Set once the process has been reaped.
    exit_status: Option<ExitStatus>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("exit_status", &self.exit_status)
            .finish()
    }
}

impl Process {
    /// Starts `program args…` with its output in `log_dir/<name>.stdout` and `.stderr`.
    /// Names must be unique per log directory (e.g. "aggregator-1", "aggregator-2" for a
    /// restart), so a restarted process's output is separate from its predecessor's.
    pub fn spawn<I, S>(name: &str, program: &Path, args: I, log_dir: &Path) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let stdout_path = log_dir.join(format!("{name}.stdout"));
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        if stdout_path.exists() {
            bail!(
                "a process named {name} already ran with log directory {}",
                log_dir.display()
            );
        }
        let stdout = File::create(&stdout_path)
            .with_context(|| format!("cannot create {}", stdout_path.display()))?;
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            exit_status: None,
            stdout_path,
            stderr_path,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit_status.is_none() {
            self.exit_status = self
                .child
                .try_wait()
                .with_context(|| format!("cannot check whether {} exited", self.name))?;
        }
        Ok(self.exit_status)
    }

    /// Fails, naming the exit status, if the process is no longer running.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.try_exit_status()? {
            None => Ok(()),
            Some(status) => bail!("{} exited unexpectedly ({status})", self.name),
        }
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let raw_pid = i32::try_from(self.child.id()).context("pid out of range")?;
        let pid = Pid::from_raw(raw_pid).context("pid 0")?;
        kill_process(pid, signal).with_context(|| format!("cannot signal {}", self.name))
    }

    /// SIGKILL, then reap. A process that already exited is left as it is.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit_status()? {
            return Ok(status);
        }
        self.signal(Signal::KILL)?;
        let status = self
            .child
            .wait()
            .with_context(|| format!("cannot reap {}", self.name))?;
        self.exit_status = Some(status);
        Ok(status)
    }

    /// SIGTERM, then wait up to `grace` for it to exit by itself. Fails (after killing it)
    /// if it does not: a clean shutdown within its grace period is part of the contract.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit_status()? {
            bail!("{} had already exited ({status}) before SIGTERM", self.name);
        }
        self.signal(Signal::TERM)?;
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "{} did not exit within {grace:?} of SIGTERM; killed it",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> Result<String> {
        fs::read_to_string(&self.stdout_path)
            .with_context(|| format!("cannot read {}", self.stdout_path.display()))
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> Result<String> {
        fs::read_to_string(&self.stderr_path)
            .with_context(|| format!("cannot read {}", self.stderr_path.display()))
    }

    /// The complete lines of stdout so far (a line still being written is left out).
    pub fn stdout_lines(&self) -> Result<Vec<String>> {
        let text = self.stdout()?;
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        Ok(complete.lines().map(str::to_owned).collect())
    }

    /// Its status and both outputs, for a failure message.
    pub fn report(&self) -> String {
        let read = |path: &Path| {
            fs::read_to_string(path).unwrap_or_else(|error| format!("<cannot read: {error}>"))
        };
        let status = match self.exit_status {
            Some(status) => format!("exited: {status}"),
            None => "running".to_owned(),
        };
        format!(
            "----- {name} (pid {pid}, {status}) stdout -----\n{stdout}\n\
             ----- {name} stderr -----\n{stderr}\n----- end of {name} -----",
            name = self.name,
            pid = self.child.id(),
            stdout = read(&self.stdout_path),
            stderr = read(&self.stderr_path),
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Before killing, so the report says whether it had died by itself.
        let _ = self.try_exit_status();
        let report = self.report();
        if let Err(error) = self.kill() {
            eprintln!("cannot kill {}: {error:#}", self.name);
        }
        eprintln!("{report}");
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_until(
        timeout,
        POLL,
        &format!("{addr} to accept TCP connections"),
        || async {
            tokio::net::TcpStream::connect(addr).await?;
            Ok(Some(()))
        },
    )
    .await
}

/// An Operator client connected to the aggregator at `addr`. Connect anew after
/// restarting the aggregator.
pub async fn operator_client(addr: SocketAddr) -> Result<OperatorClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the operator API at {addr}"))?;
    Ok(OperatorClient::new(channel))
}

/// Polls `check` every `poll` until it returns `Ok(Some(value))`, and returns the value.
/// `Ok(None)` and errors both mean "not yet" (a server may be restarting); after
/// `timeout` it fails, saying what it was waiting for and the last error or "condition
/// never held".
pub async fn wait_until<T, F, Fut>(
    timeout: Duration,
    poll: Duration,
    what: &str,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        let last_error = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(error) => Some(error),
        };
        if started.elapsed() >= timeout {
            match last_error {
                Some(error) => {
                    bail!("timed out after {timeout:?} waiting for {what}: last error: {error:#}")
                }
                None => {
                    bail!("timed out after {timeout:?} waiting for {what}: condition never held")
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// [`wait_until`] with the default [`TIMEOUT`] and [`POLL`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    wait_until(TIMEOUT, POLL, what, check).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_names_what_it_waited_for() {
        let error = wait_until(
            Duration::from_millis(50),
            Duration::from_millis(10),
            "the moon",
            || async { Ok(None::<()>) },
        )
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "timed out after 50ms waiting for the moon: condition never held"
        );
    }

    #[tokio::test]
    async fn wait_until_returns_the_value_once_the_condition_holds() {
        let mut n_calls = 0;
        let value = wait_until(TIMEOUT, Duration::from_millis(1), "three calls", || {
            n_calls += 1;
            let n_calls = n_calls;
            async move {
                if n_calls < 3 {
                    bail!("only {n_calls}")
                } else {
                    Ok(Some(n_calls))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn processes_capture_output_and_can_be_terminated() {
        let dir = temp_dir("harness").unwrap();
        let script = "echo out; echo err >&2; trap 'exit 0' TERM; while true; do sleep 0.05; done";
        let mut process =
            Process::spawn("sh", Path::new("/bin/sh"), ["-c", script], dir.path()).unwrap();
        let running = &process;
        eventually("the script's output", || async move {
            Ok(running.stdout()?.contains("out").then_some(()))
        })
        .await
        .unwrap();
        process.ensure_running().unwrap();
        let status = process.terminate(Duration::from_secs(10)).await.unwrap();
        assert!(status.success(), "{status}");
        assert_eq!(process.stdout_lines().unwrap(), ["out"]);
        assert_eq!(process.stderr().unwrap(), "err\n");
        assert!(process.ensure_running().is_err());
    }

    #[tokio::test]
    async fn kill_ends_a_process_that_ignores_sigterm() {
        let dir = temp_dir("harness").unwrap();
        let mut process = Process::spawn(
            "sleep",
            Path::new("/bin/sh"),
            ["-c", "trap '' TERM; exec sleep 60"],
            dir.path(),
        )
        .unwrap();
        let status = process.kill().unwrap();
        assert!(!status.success());
    }

    #[test]
    fn a_missing_binary_names_the_build_that_should_have_made_it() {
        let error = binary("no-such-binary").unwrap_err().to_string();
        assert!(
            error.contains("no-such-binary")
                && error.contains("after `cargo build --workspace --bins`"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn wait_for_port_sees_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        wait_for_port(addr, Duration::from_secs(5)).await.unwrap();
    }
}
