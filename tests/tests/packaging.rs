//! The packages from `cargo xtask dist` (in `target/dist/`), installed for real:
//!
//! - both .debs installed on this host with dpkg, upgraded to a rebuilt package with a
//!   bumped version while an edited config is kept, then purged without a trace;
//! - the agent and aggregator .debs inside a Debian root booted with systemd-nspawn: the
//!   units pass `systemd-analyze verify`, start, the agent reports to an aggregator on the
//!   host (seen with `hostwatchctl nodes`), is restarted after SIGKILL, and flushes and
//!   exits 0 on `systemctl stop`, an upgrade restarts it; removal stops the units and
//!   purge removes user and state;
//! - both .rpms installed with `rpm -i --root --nodeps` into a scratch copy of that Debian
//!   root, so their scriptlets really run (in a chroot, without systemd running).
//!
//! They need root, dpkg, rpm, debootstrap, systemd-nspawn and the packages, and they
//! change this host (packages, a system user): they run under CI (`CI=true`), where a
//! missing prerequisite fails them, or when `HOSTWATCH_PACKAGING_TESTS=1`; elsewhere they
//! say why they skip.
//! The Debian root is made once with debootstrap (about 2 minutes) and kept in
//! `/var/cache/hostwatch-ci/debian-root`; each test mounts an overlay over it, so the
//! cache stays pristine.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use proto::v1::{GetNodeRequest, Node};
use tests::{
    Process, TempDir, binary, eventually, free_addr, operator_client, temp_dir, wait_for_port,
    wait_until, write_file,
};

/// The cached Debian root (outside the clone, shared between runs).
const DEBIAN_ROOT: &str = "/var/cache/hostwatch-ci/debian-root";
const DEBIAN_SUITE: &str = "bookworm";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// What a booted container needs beyond debootstrap's minbase.
const DEBIAN_EXTRA: &str = "systemd,systemd-sysv,dbus";
/// A mount point below a 0700 directory, inside the container.
const PRIVATE_PARENT: &str = "/srv/private";
const PRIVATE_MOUNT: &str = "/srv/private/data";
/// The agent's log line once every batch is acknowledged after SIGTERM (agent/src/lib.rs).
const CLEAN_SHUTDOWN_LINE: &str = "all batches acknowledged; agent stopped";
/// Paths a package may leave while installed; none may hold anything named hostwatch
/// after purge. `/var/cache` is left out: the Debian root cache lives there.
const SEARCHED_FOR_LEFTOVERS: &[&str] = &["/etc", "/usr", "/lib", "/var/lib", "/opt", "/srv"];

// ---------------------------------------------------------------------------------------
// dpkg on this host
// ---------------------------------------------------------------------------------------

#[test]
fn debs_install_upgrade_keep_edited_config_and_purge_without_trace() -> Result<()> {
    let Some(dist) = prerequisites("the dpkg test", &["dpkg", "dpkg-deb", "dpkg-query"])? else {
        return Ok(());
    };
    let agent_deb = dist.package("hostwatch-agent_", ".deb")?;
    let aggregator_deb = dist.package("hostwatch-aggregator_", ".deb")?;
    let work = temp_dir("pkgtest-dpkg")?;

    // Leftovers of an earlier, interrupted run would make "nothing left" meaningless.
    run(Command::new("dpkg").args(["--purge", "hostwatch-agent", "hostwatch-aggregator"]))?;
    let before = leftovers()?;
    ensure!(
        before.is_empty(),
        "this host has hostwatch files or a hostwatch user that no package owns; remove \
         them first: {before:#?}"
    );
    let _purge_on_exit = PurgeOnDrop;

    run(Command::new("dpkg").arg("--install").arg(&agent_deb))?;
    ensure_installed("hostwatch-agent")?;
    for path in [
        "/usr/bin/hostwatch-agent",
        "/etc/hostwatch/agent.toml",
        "/lib/systemd/system/hostwatch-agent.service",
    ] {
        ensure!(Path::new(path).is_file(), "{path} was not installed");
    }
    let conffiles = run(Command::new("dpkg-query").args([
        "--show",
        "--showformat=${Conffiles}",
        "hostwatch-agent",
    ]))?;
    ensure!(
        conffiles.contains("/etc/hostwatch/agent.toml"),
        "/etc/hostwatch/agent.toml is not a conffile: {conffiles:?}"
    );
    // The packaged config passes the unit's ExecStartPre.
    run(Command::new("/usr/bin/hostwatch-agent").args([
        "check-config",
        "--config",
        "/etc/hostwatch/agent.toml",
    ]))?;
    let passwd = run(Command::new("getent").args(["passwd", "hostwatch"]))?;
    ensure!(
        passwd
            .trim_end()
            .ends_with(":/var/lib/hostwatch:/usr/sbin/nologin"),
        "the hostwatch user is not a system user without a shell: {passwd:?}"
    );
    let state_owner = run(Command::new("stat").args(["-c", "%U:%G %a", "/var/lib/hostwatch"]))?;
    ensure!(
        state_owner.trim() == "hostwatch:hostwatch 750",
        "/var/lib/hostwatch: {state_owner:?}, expected hostwatch:hostwatch 750"
    );
    // No systemd runs here: the unit is enabled (the symlink), not started.
    ensure!(
        Path::new("/etc/systemd/system/multi-user.target.wants/hostwatch-agent.service").exists(),
        "hostwatch-agent.service was not enabled"
    );

    // The operator edits the config; the upgrade must keep the edit.
    let config_path = Path::new("/etc/hostwatch/agent.toml");
    let packaged_config = fs::read_to_string(config_path)?;
    let edited_config = packaged_config.replace(r#"tenant = "acme""#, r#"tenant = "edited""#);
    ensure!(
        edited_config != packaged_config,
        "packaging/agent.toml has no `tenant = \"acme\"` line to edit"
    );
    fs::write(config_path, &edited_config)?;
    let version_1 = installed_version("hostwatch-agent")?;
    let upgrade_deb = rebuild_with_bumped_version(&agent_deb, work.path())?;
    run(Command::new("dpkg").arg("--install").arg(&upgrade_deb.path))?;
    let version_2 = installed_version("hostwatch-agent")?;
    ensure!(
        version_2 == upgrade_deb.version && version_2 != version_1,
        "after the upgrade dpkg has hostwatch-agent {version_2}, expected {}",
        upgrade_deb.version
    );
    ensure!(
        fs::read_to_string(config_path)? == edited_config,
        "the upgrade did not keep the edited /etc/hostwatch/agent.toml"
    );

    // The aggregator shares the user and /var/lib/hostwatch with the agent.
    run(Command::new("dpkg").arg("--install").arg(&aggregator_deb))?;
    ensure_installed("hostwatch-aggregator")?;
    for path in [
        "/usr/bin/hostwatch-aggregator",
        "/usr/bin/hostwatchctl",
        "/lib/systemd/system/hostwatch-aggregator.service",
    ] {
        ensure!(Path::new(path).is_file(), "{path} was not installed");
    }
    run(Command::new("/usr/bin/hostwatch-aggregator").args([
        "check-config",
        "--config",
        "/etc/hostwatch/aggregator.toml",
    ]))?;
    run(Command::new("/usr/bin/hostwatchctl").arg("--help"))?;

    // Purging one keeps what the other still uses.
    run(Command::new("dpkg").args(["--purge", "hostwatch-agent"]))?;
    ensure!(
        !Path::new("/usr/bin/hostwatch-agent").exists() && !config_path.exists(),
        "dpkg --purge hostwatch-agent left its binary or config"
    );
    ensure!(
        Path::new("/var/lib/hostwatch").is_dir(),
        "purging the agent removed /var/lib/hostwatch, which the aggregator still uses"
    );
    run(Command::new("getent").args(["passwd", "hostwatch"]))
        .context("purging the agent removed the hostwatch user the aggregator runs as")?;

    run(Command::new("dpkg").args(["--purge", "hostwatch-aggregator"]))?;
    let after = leftovers()?;
    ensure!(after.is_empty(), "dpkg --purge left behind: {after:#?}");
    Ok(())
}

/// Purges both packages when the dpkg test ends early, so a failure leaves the host clean.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "hostwatch-agent", "hostwatch-aggregator"])
            .output();
    }
}

/// Everything named hostwatch under the searched directories, and the user and group.
fn leftovers() -> Result<Vec<String>> {
    let mut found = Vec::new();
    for dir in SEARCHED_FOR_LEFTOVERS {
        if !Path::new(dir).exists() {
            continue;
        }
        let listing = run(Command::new("find").args([dir, "-xdev", "-name", "*hostwatch*"]))?;
        found.extend(listing.lines().map(str::to_owned));
    }
    for database in ["passwd", "group"] {
        let status = Command::new("getent")
            .args([database, "hostwatch"])
            .status()
            .context("cannot run getent")?;
        if status.success() {
            found.push(format!("{database} entry hostwatch"));
        }
    }
    Ok(found)
}

fn ensure_installed(package: &str) -> Result<()> {
    let status = run(Command::new("dpkg-query").args([
        "--show",
        "--showformat=${db:Status-Status}",
        package,
    ]))?;
    ensure!(
        status == "installed",
        "{package} is {status:?} after dpkg --install"
    );
    Ok(())
}

fn installed_version(package: &str) -> Result<String> {
    run(Command::new("dpkg-query").args(["--show", "--showformat=${Version}", package]))
}

struct RebuiltDeb {
    path: PathBuf,
    version: String,
}

/// The same package with `+upgrade1` appended to its version: unpacked and packed again
/// with dpkg-deb, as a new release would be.
fn rebuild_with_bumped_version(deb: &Path, work_dir: &Path) -> Result<RebuiltDeb> {
    let tree = work_dir.join("upgrade-tree");
    run(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(deb)
        .arg(&tree))?;
    let control_path = tree.join("DEBIAN/control");
    let control = fs::read_to_string(&control_path)
        .with_context(|| format!("cannot read {}", control_path.display()))?;
    let version = control
        .lines()
        .find_map(|line| line.strip_prefix("Version: "))
        .with_context(|| format!("{} has no Version field", deb.display()))?
        .to_owned();
    let bumped = format!("{version}+upgrade1");
    fs::write(
        &control_path,
        control.replace(
            &format!("Version: {version}\n"),
            &format!("Version: {bumped}\n"),
        ),
    )?;
    let path = work_dir.join("upgrade.deb");
    run(Command::new("dpkg-deb")
        .arg("--build")
        .arg(&tree)
        .arg(&path))?;
    Ok(RebuiltDeb {
        path,
        version: bumped,
    })
}

// ---------------------------------------------------------------------------------------
// A real systemd: the Debian root booted with systemd-nspawn
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn agent_deb_runs_under_systemd_restarts_and_stops_cleanly() -> Result<()> {
    let Some(dist) = prerequisites(
        "the systemd-nspawn test",
        &[
            "debootstrap",
            "systemd-nspawn",
            "nsenter",
            "mount",
            "umount",
            "mkfs.ext4",
        ],
    )?
    else {
        return Ok(());
    };
    let started = Instant::now();
    let agent_deb = dist.package("hostwatch-agent_", ".deb")?;
    let aggregator_deb = dist.package("hostwatch-aggregator_", ".deb")?;
    let logs = temp_dir("pkgtest-nspawn-logs")?;
    let root = ScratchRoot::mount(&debian_root()?)?;
    for deb in [&agent_deb, &aggregator_deb] {
        copy_into(deb, &root.merged.join("var/tmp"))?;
    }
    // A real filesystem mounted below a directory only root may enter: the agent, running
    // as hostwatch, can statvfs it only with CAP_DAC_READ_SEARCH.
    let private_fs = LoopFilesystem::mount(logs.path())?;
    let private_dir = root.merged.join(PRIVATE_PARENT.trim_start_matches('/'));
    fs::create_dir_all(private_dir.join("data"))?;
    fs::set_permissions(&private_dir, fs::Permissions::from_mode(0o700))?;
    let bind = format!(
        "--bind={}:{PRIVATE_MOUNT}",
        private_fs.mount_point.display()
    );

    // The aggregator runs on the host; the container shares the host's network.
    let aggregator_addr = free_addr()?;
    let aggregator_config = write_file(
        logs.path().join("aggregator.toml"),
        &format!(
            "listen = \"{aggregator_addr}\"\ndata_dir = \"{}\"\n",
            logs.path().join("aggregator-data").display()
        ),
    )?;
    let _aggregator = Process::spawn(
        "aggregator",
        &binary("hostwatch-aggregator")?,
        [
            OsStr::new("run"),
            OsStr::new("--config"),
            aggregator_config.as_os_str(),
        ],
        logs.path(),
    )?;
    wait_for_port(aggregator_addr, tests::TIMEOUT).await?;

    let container = Container::boot(&root.merged, &[&bind], logs.path()).await?;
    let result = agent_scenario(
        &container,
        &root,
        aggregator_addr,
        &agent_deb,
        &aggregator_deb,
    )
    .await;
    if result.is_err() {
        // The journal says why a unit did not start or stop as expected.
        if let Ok(journal) = container.exec(&["journalctl", "--no-pager", "-n", "200"]) {
            eprintln!("----- container journal -----\n{journal}");
        }
    }
    container.shut_down().await?;
    drop(private_fs);
    drop(root);
    println!("systemd-nspawn test took {:.1?}", started.elapsed());
    result
}

async fn agent_scenario(
    container: &Container,
    root: &ScratchRoot,
    aggregator_addr: std::net::SocketAddr,
    agent_deb: &Path,
    aggregator_deb: &Path,
) -> Result<()> {
    let unit = "hostwatch-agent.service";
    container.exec(&["dpkg", "--install", &in_var_tmp(agent_deb)?])?;
    // postinst enabled and started it, with the packaged config.
    ensure!(
        container.exec(&["systemctl", "is-enabled", unit])?.trim() == "enabled",
        "{unit} is not enabled after dpkg --install"
    );
    container.wait_for_unit_state(unit, "active").await?;
    analyze(container, unit)?;

    // Point it at the aggregator on the host, with a short interval.
    let node = "packaged-node";
    fs::write(
        root.merged.join("etc/hostwatch/agent.toml"),
        format!(
            r#"state_dir = "/var/lib/hostwatch"
shutdown_grace = "5s"

[identity]
tenant = "pkgtest"
cluster = "nspawn"
node = "{node}"

[aggregator]
url = "http://{aggregator_addr}"

[host]
interval = "1s"
"#
        ),
    )?;
    container.exec(&["systemctl", "restart", unit])?;
    container.wait_for_unit_state(unit, "active").await?;

    // The node appears through hostwatchctl.
    let hostwatchctl = binary("hostwatchctl")?;
    let addr_arg = format!("http://{aggregator_addr}");
    eventually("the packaged agent's node in `hostwatchctl nodes`", || {
        let hostwatchctl = hostwatchctl.clone();
        let addr_arg = addr_arg.clone();
        async move {
            let listing = run(Command::new(&hostwatchctl).args(["--addr", &addr_arg, "nodes"]))?;
            Ok(listing.contains(node).then_some(()))
        }
    })
    .await?;

    // Every mount, including one below a 0700 directory.
    let disks = eventually("the private mount in the node's latest sample", || async {
        let node = get_node(aggregator_addr, node).await?;
        let disks: Vec<String> = node
            .latest_host
            .map(|host| host.disks.into_iter().map(|disk| disk.mount).collect())
            .unwrap_or_default();
        Ok(disks
            .iter()
            .any(|mount| mount == PRIVATE_MOUNT)
            .then_some(disks))
    })
    .await?;
    println!("the packaged agent reports the mounts {disks:?}");

    // SIGKILL: systemd restarts it, and the node keeps reporting.
    let main_pid = container.unit_property(unit, "MainPID")?;
    ensure!(main_pid != "0", "{unit} has no main process");
    let applied_before_kill = batches_applied(aggregator_addr, node).await?;
    // kill(1) is a shell builtin here: minbase has no procps.
    container.exec(&["sh", "-c", &format!("kill -9 {main_pid}")])?;
    let new_pid = eventually("a new main process after kill -9", || async {
        let pid = container.unit_property(unit, "MainPID")?;
        let state = container.unit_property(unit, "ActiveState")?;
        Ok((pid != "0" && pid != main_pid && state == "active").then_some(pid))
    })
    .await?;
    let n_restarts = container.unit_property(unit, "NRestarts")?;
    ensure!(
        n_restarts.parse::<u32>().is_ok_and(|n| n >= 1),
        "{unit} has a new main process {new_pid} but NRestarts={n_restarts}"
    );
    eventually("batches from the restarted agent", || async {
        let applied = batches_applied(aggregator_addr, node).await?;
        Ok((applied >= applied_before_kill + 2).then_some(()))
    })
    .await?;

    // `systemctl stop`: SIGTERM, the agent flushes and exits 0.
    let invocation = container.unit_property(unit, "InvocationID")?;
    container.exec(&["systemctl", "stop", unit])?;
    let result = container.unit_property(unit, "Result")?;
    let exit_status = container.unit_property(unit, "ExecMainStatus")?;
    ensure!(
        result == "success" && exit_status == "0",
        "systemctl stop: Result={result}, ExecMainStatus={exit_status}, expected success, 0"
    );
    let journal = container.exec(&[
        "journalctl",
        "--no-pager",
        "--output=cat",
        &format!("_SYSTEMD_INVOCATION_ID={invocation}"),
    ])?;
    ensure!(
        journal.contains(CLEAN_SHUTDOWN_LINE),
        "the journal of the stopped agent has no {CLEAN_SHUTDOWN_LINE:?}:\n{journal}"
    );

    // The aggregator package: it starts under its hardened unit and serves.
    let aggregator_unit = "hostwatch-aggregator.service";
    container.exec(&["dpkg", "--install", &in_var_tmp(aggregator_deb)?])?;
    let container_aggregator_addr = free_addr()?;
    let packaged = fs::read_to_string(root.merged.join("etc/hostwatch/aggregator.toml"))?;
    let moved = packaged.replace(
        r#"listen = "127.0.0.1:7170""#,
        &format!(r#"listen = "{container_aggregator_addr}""#),
    );
    ensure!(
        moved != packaged,
        "packaging/aggregator.toml has no `listen = \"127.0.0.1:7170\"` line"
    );
    fs::write(root.merged.join("etc/hostwatch/aggregator.toml"), moved)?;
    container.exec(&["systemctl", "restart", aggregator_unit])?;
    container
        .wait_for_unit_state(aggregator_unit, "active")
        .await?;
    wait_for_port(container_aggregator_addr, tests::TIMEOUT).await?;
    run(Command::new(&hostwatchctl).args([
        "--addr",
        &format!("http://{container_aggregator_addr}"),
        "clusters",
    ]))?;
    analyze(container, aggregator_unit)?;

    // An upgrade restarts the running agent and keeps its edited config.
    container.exec(&["systemctl", "start", unit])?;
    container.wait_for_unit_state(unit, "active").await?;
    let pid_before_upgrade = container.unit_property(unit, "MainPID")?;
    let config_path = root.merged.join("etc/hostwatch/agent.toml");
    let config_before_upgrade = fs::read_to_string(&config_path)?;
    let upgrade = rebuild_with_bumped_version(agent_deb, &root.merged.join("var/tmp"))?;
    container.exec(&["dpkg", "--install", &in_var_tmp(&upgrade.path)?])?;
    let version = container.exec(&[
        "dpkg-query",
        "--show",
        "--showformat=${Version}",
        "hostwatch-agent",
    ])?;
    ensure!(
        version == upgrade.version,
        "after the upgrade dpkg has hostwatch-agent {version}, expected {}",
        upgrade.version
    );
    container.wait_for_unit_state(unit, "active").await?;
    let pid_after_upgrade = container.unit_property(unit, "MainPID")?;
    ensure!(
        pid_after_upgrade != pid_before_upgrade && pid_after_upgrade != "0",
        "the upgrade did not restart {unit}: MainPID {pid_before_upgrade} → {pid_after_upgrade}"
    );
    ensure!(
        fs::read_to_string(&config_path)? == config_before_upgrade,
        "the upgrade did not keep the edited /etc/hostwatch/agent.toml"
    );

    // Removal stops the unit; purging the last package removes user and state.
    container.exec(&["dpkg", "--purge", "hostwatch-agent"])?;
    let state = container.unit_property(unit, "ActiveState")?;
    ensure!(state == "inactive", "{unit} is {state} after dpkg --purge");
    container.exec(&["dpkg", "--purge", "hostwatch-aggregator"])?;
    let state = container.unit_property(aggregator_unit, "ActiveState")?;
    ensure!(
        state == "inactive",
        "{aggregator_unit} is {state} after dpkg --purge"
    );
    ensure!(
        !root.merged.join("var/lib/hostwatch").exists(),
        "/var/lib/hostwatch is still there after purging both packages"
    );
    let user = container.exec_output(&["getent", "passwd", "hostwatch"])?;
    ensure!(
        !user.status.success(),
        "the hostwatch user is still there after purging both packages"
    );
    Ok(())
}

/// `systemd-analyze verify` must print nothing; `security` is printed for the README.
fn analyze(container: &Container, unit: &str) -> Result<()> {
    let verify = container.exec_output(&["systemd-analyze", "verify", unit])?;
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    ensure!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify {unit} ({}):\n{complaints}",
        verify.status
    );
    let security = container.exec_output(&["systemd-analyze", "security", "--no-pager", unit])?;
    let security = String::from_utf8_lossy(&security.stdout);
    let overall = security
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .with_context(|| {
            format!("systemd-analyze security {unit} printed no score:\n{security}")
        })?;
    println!("systemd-analyze security: {}", overall.trim());
    Ok(())
}

async fn batches_applied(aggregator_addr: std::net::SocketAddr, node: &str) -> Result<u64> {
    Ok(get_node(aggregator_addr, node).await?.batches_applied_total)
}

async fn get_node(aggregator_addr: std::net::SocketAddr, node: &str) -> Result<Node> {
    let mut client = operator_client(aggregator_addr).await?;
    let response = client
        .get_node(GetNodeRequest {
            tenant: "pkgtest".to_owned(),
            cluster: "nspawn".to_owned(),
            node: node.to_owned(),
        })
        .await
        .with_context(|| format!("GetNode pkgtest/nspawn/{node}"))?;
    Ok(response.into_inner())
}

/// A small ext4 image loop-mounted on the host, unmounted on drop.
struct LoopFilesystem {
    mount_point: PathBuf,
}

impl LoopFilesystem {
    fn mount(work_dir: &Path) -> Result<LoopFilesystem> {
        let image = work_dir.join("private.ext4");
        let mount_point = work_dir.join("private-mount");
        fs::create_dir(&mount_point)?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .arg("8M"))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount_point))?;
        Ok(LoopFilesystem { mount_point })
    }
}

impl Drop for LoopFilesystem {
    fn drop(&mut self) {
        if let Err(error) = run(Command::new("umount").arg("--lazy").arg(&self.mount_point)) {
            eprintln!("cannot unmount the loop filesystem: {error:#}");
        }
    }
}

/// A booted container: systemd-nspawn and the PID of its init, for nsenter.
struct Container {
    nspawn: Process,
    leader: String,
}

impl Container {
    /// Boots `root` and waits until systemd says the system is up.
    async fn boot(root: &Path, extra_args: &[&str], log_dir: &Path) -> Result<Container> {
        let nspawn = Process::spawn(
            "systemd-nspawn",
            Path::new("systemd-nspawn"),
            [
                OsStr::new("--directory"),
                root.as_os_str(),
                OsStr::new("--boot"),
                OsStr::new("--register=no"),
                OsStr::new("--keep-unit"),
                OsStr::new("--console=passive"),
                OsStr::new("--machine=hostwatch-pkgtest"),
            ]
            .into_iter()
            .chain(extra_args.iter().map(OsStr::new)),
            log_dir,
        )?;
        let children_path = format!("/proc/{0}/task/{0}/children", nspawn.pid());
        let leader = eventually("the container's init process", || {
            let children_path = children_path.clone();
            async move {
                let children = fs::read_to_string(&children_path)
                    .with_context(|| format!("cannot read {children_path}"))?;
                Ok(children.split_whitespace().next().map(str::to_owned))
            }
        })
        .await?;
        let container = Container { nspawn, leader };
        wait_until(
            Duration::from_secs(90),
            tests::POLL,
            "the container's systemd to finish booting",
            || async {
                let output = container.exec_output(&["systemctl", "is-system-running"])?;
                let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                match state.as_str() {
                    "running" => Ok(Some(())),
                    "degraded" => {
                        let failed = container.exec(&["systemctl", "--failed", "--no-legend"])?;
                        bail!("the container booted degraded: {failed}")
                    }
                    _ => Ok(None),
                }
            },
        )
        .await?;
        Ok(container)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &self.leader, "--all", "--"])
            .args(args);
        command
    }

    /// Runs `args` inside the container; fails unless it exits 0.
    fn exec(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command(args))
    }

    fn exec_output(&self, args: &[&str]) -> Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("cannot run nsenter for {args:?}"))
    }

    fn unit_property(&self, unit: &str, property: &str) -> Result<String> {
        Ok(self
            .exec(&["systemctl", "show", "--property", property, "--value", unit])?
            .trim()
            .to_owned())
    }

    async fn wait_for_unit_state(&self, unit: &str, wanted: &str) -> Result<()> {
        eventually(&format!("{unit} to be {wanted}"), || async {
            Ok((self.unit_property(unit, "ActiveState")? == wanted).then_some(()))
        })
        .await
    }

    /// SIGTERM to systemd-nspawn shuts the container down in order.
    async fn shut_down(mut self) -> Result<()> {
        self.nspawn.terminate(Duration::from_secs(60)).await?;
        Ok(())
    }
}

/// The path inside the container of a package copied to its `/var/tmp`.
fn in_var_tmp(package: &Path) -> Result<String> {
    let name = package
        .file_name()
        .and_then(OsStr::to_str)
        .with_context(|| format!("{} has no UTF-8 file name", package.display()))?;
    Ok(format!("/var/tmp/{name}"))
}

// ---------------------------------------------------------------------------------------
// rpm into a scratch root
// ---------------------------------------------------------------------------------------

#[test]
fn rpms_install_into_a_scratch_root_with_their_files_and_scriptlets() -> Result<()> {
    let Some(dist) = prerequisites("the rpm test", &["rpm", "debootstrap", "mount", "umount"])?
    else {
        return Ok(());
    };
    let agent_rpm = dist.package("hostwatch-agent-", ".rpm")?;
    let aggregator_rpm = dist.package("hostwatch-aggregator-", ".rpm")?;
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");

    // What the packages say about themselves.
    for (rpm_path, name, files) in [
        (
            &agent_rpm,
            "agent",
            &[
                "/etc/hostwatch/agent.toml",
                "/usr/bin/hostwatch-agent",
                "/usr/lib/systemd/system/hostwatch-agent.service",
            ][..],
        ),
        (
            &aggregator_rpm,
            "aggregator",
            &[
                "/etc/hostwatch/aggregator.toml",
                "/usr/bin/hostwatch-aggregator",
                "/usr/bin/hostwatchctl",
                "/usr/lib/systemd/system/hostwatch-aggregator.service",
            ][..],
        ),
    ] {
        let listed = run(Command::new("rpm").arg("-qpl").arg(rpm_path))?;
        let mut listed: Vec<&str> = listed.lines().collect();
        listed.sort_unstable();
        ensure!(
            listed == files,
            "rpm -qpl {}: {listed:?}, expected {files:?}",
            rpm_path.display()
        );

        let config_files = run(Command::new("rpm")
            .arg("-qp")
            .arg("--configfiles")
            .arg(rpm_path))?;
        ensure!(
            config_files.trim() == format!("/etc/hostwatch/{name}.toml"),
            "rpm -qp --configfiles {}: {config_files:?}",
            rpm_path.display()
        );
        // %config(noreplace): flags c (config) and n (noreplace).
        let flags = run(Command::new("rpm")
            .args([
                "-qp",
                "--queryformat",
                "[%{FILENAMES} %{FILEFLAGS:fflags}\n]",
            ])
            .arg(rpm_path))?;
        let config_flags = flags
            .lines()
            .find_map(|line| line.strip_prefix(&format!("/etc/hostwatch/{name}.toml ")))
            .unwrap_or_default();
        ensure!(
            config_flags.contains('c') && config_flags.contains('n'),
            "/etc/hostwatch/{name}.toml is not %config(noreplace): flags {config_flags:?}"
        );

        let scripts = run(Command::new("rpm")
            .arg("-qp")
            .arg("--scripts")
            .arg(rpm_path))?;
        for (heading, file) in [
            ("preinstall scriptlet", "pre.sh".to_owned()),
            ("postinstall scriptlet", format!("{name}-post.sh")),
            ("preuninstall scriptlet", format!("{name}-preun.sh")),
            ("postuninstall scriptlet", format!("{name}-postun.sh")),
        ] {
            let script_path = packaging.join("rpm").join(&file);
            let script = fs::read_to_string(&script_path)
                .with_context(|| format!("cannot read {}", script_path.display()))?;
            ensure!(
                scripts.contains(heading) && scripts.contains(script.trim()),
                "rpm -qp --scripts {} lacks its {heading} (packaging/rpm/{file}):\n{scripts}",
                rpm_path.display()
            );
        }
    }

    // Installed into a scratch root that has a shell, useradd and systemctl, so the
    // scriptlets run (chrooted by rpm) as they would on a host without systemd running.
    let root = ScratchRoot::mount(&debian_root()?)?;
    let root_arg = root
        .merged
        .to_str()
        .context("scratch root path is not UTF-8")?;
    run(Command::new("rpm")
        .args(["--install", "--nodeps", "--root", root_arg])
        .arg(&agent_rpm)
        .arg(&aggregator_rpm))?;
    for path in [
        "usr/bin/hostwatch-agent",
        "usr/bin/hostwatch-aggregator",
        "usr/bin/hostwatchctl",
        "etc/hostwatch/agent.toml",
        "etc/hostwatch/aggregator.toml",
        "usr/lib/systemd/system/hostwatch-agent.service",
        "usr/lib/systemd/system/hostwatch-aggregator.service",
        // %post: enabled offline.
        "etc/systemd/system/multi-user.target.wants/hostwatch-agent.service",
        "etc/systemd/system/multi-user.target.wants/hostwatch-aggregator.service",
    ] {
        ensure!(
            exists_in(&root.merged, path),
            "/{path} is missing after rpm --install --root"
        );
    }
    // %pre: the system user.
    let passwd = fs::read_to_string(root.merged.join("etc/passwd"))?;
    ensure!(
        passwd.lines().any(|line| line.starts_with("hostwatch:")),
        "%pre did not create the hostwatch user"
    );
    // %post: the state directory, owned by that user.
    let state_owner = run(Command::new("chroot").arg(&root.merged).args([
        "stat",
        "-c",
        "%U:%G %a",
        "/var/lib/hostwatch",
    ]))?;
    ensure!(
        state_owner.trim() == "hostwatch:hostwatch 750",
        "/var/lib/hostwatch: {state_owner:?}, expected hostwatch:hostwatch 750"
    );
    // The packaged agent config passes the unit's ExecStartPre, in the root.
    run(Command::new("chroot").arg(&root.merged).args([
        "/usr/bin/hostwatch-agent",
        "check-config",
        "--config",
        "/etc/hostwatch/agent.toml",
    ]))?;

    // Erase: %preun disables the unit; an edited config is saved as .rpmsave.
    fs::write(root.merged.join("etc/hostwatch/agent.toml"), "# edited\n")?;
    run(Command::new("rpm").args(["--erase", "--root", root_arg, "hostwatch-agent"]))?;
    for (path, present) in [
        ("usr/bin/hostwatch-agent", false),
        (
            "etc/systemd/system/multi-user.target.wants/hostwatch-agent.service",
            false,
        ),
        ("etc/hostwatch/agent.toml.rpmsave", true),
        ("usr/bin/hostwatch-aggregator", true),
    ] {
        ensure!(
            exists_in(&root.merged, path) == present,
            "after rpm --erase hostwatch-agent, /{path} should {}exist",
            if present { "" } else { "not " }
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Shared: prerequisites, the Debian root, overlays, commands
// ---------------------------------------------------------------------------------------

/// `target/dist`, where `cargo xtask dist` puts the packages.
struct Dist {
    dir: PathBuf,
}

impl Dist {
    /// The one file in `target/dist` named `<prefix>…<suffix>`.
    fn package(&self, prefix: &str, suffix: &str) -> Result<PathBuf> {
        let mut matches = Vec::new();
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?
        {
            let path = entry?.path();
            let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
            if name.starts_with(prefix) && name.ends_with(suffix) {
                matches.push(path);
            }
        }
        match &matches[..] {
            [path] => Ok(path.clone()),
            [] => bail!(
                "no {prefix}*{suffix} in {}: run `cargo xtask dist`",
                self.dir.display()
            ),
            _ => bail!(
                "several {prefix}*{suffix} in {}: {matches:?}",
                self.dir.display()
            ),
        }
    }
}

/// `Some(dist)` when the test can run. Otherwise under CI an error naming what is missing;
/// elsewhere (or when not asked to run) `None`, after printing why the test skips.
fn prerequisites(test: &str, commands: &[&str]) -> Result<Option<Dist>> {
    let in_ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    if !in_ci && std::env::var("HOSTWATCH_PACKAGING_TESTS").is_err() {
        println!(
            "skipping {test}: it installs packages and a system user on this host; set \
             HOSTWATCH_PACKAGING_TESTS=1 (CI runs it)"
        );
        return Ok(None);
    }
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    for command in commands {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(command).is_file())
        });
        if !found {
            missing.push(format!("the command {command}"));
        }
    }
    let test_exe = std::env::current_exe().context("cannot find the running test binary")?;
    let target_dir = test_exe
        .ancestors()
        .nth(3)
        .with_context(|| format!("{} is not in a target directory", test_exe.display()))?;
    let dist = Dist {
        dir: target_dir.join("dist"),
    };
    if !dist.dir.is_dir() {
        missing.push(format!("{} (`cargo xtask dist`)", dist.dir.display()));
    }
    if missing.is_empty() {
        return Ok(Some(dist));
    }
    let message = format!(
        "{test} needs {} (`.ci/run` installs the tools; `cargo xtask ci` builds the packages)",
        missing.join(", ")
    );
    if in_ci {
        bail!("{message}");
    }
    println!("skipping {message}");
    Ok(None)
}

/// The cached Debian root, made with debootstrap the first time (one test at a time).
fn debian_root() -> Result<PathBuf> {
    static CREATING: Mutex<()> = Mutex::new(());
    let _guard = CREATING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = PathBuf::from(DEBIAN_ROOT);
    if root.join("usr/lib/systemd/systemd").exists() || root.join("lib/systemd/systemd").exists() {
        return Ok(root);
    }
    let partial = PathBuf::from(format!("{DEBIAN_ROOT}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    println!("making the Debian root {DEBIAN_ROOT} with debootstrap (once, about 2 minutes)");
    let started = Instant::now();
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={DEBIAN_EXTRA}"),
            DEBIAN_SUITE,
        ])
        .arg(&partial)
        .arg(DEBIAN_MIRROR))?;
    fs::rename(&partial, &root)
        .with_context(|| format!("cannot rename {} to {DEBIAN_ROOT}", partial.display()))?;
    println!("debootstrap took {:.0?}", started.elapsed());
    Ok(root)
}

/// A writable overlay over the cached Debian root: changes go to a temporary directory.
/// Dropping it unmounts the overlay (lazily, should a process still use it) and removes
/// the directory; anything running inside must be stopped first.
struct ScratchRoot {
    merged: PathBuf,
    /// Holds upper, work and merged. Declared last: removed after the unmount in `drop`.
    _dir: TempDir,
}

impl ScratchRoot {
    fn mount(lower: &Path) -> Result<ScratchRoot> {
        // In /var/tmp, not /tmp: overlayfs needs upper and work on a real filesystem.
        let dir = tempfile::Builder::new()
            .prefix("pkgtest-root-")
            .tempdir_in("/var/tmp")
            .context("cannot create a directory in /var/tmp")?;
        let [upper, work, merged] = ["upper", "work", "merged"].map(|name| dir.path().join(name));
        for path in [&upper, &work, &merged] {
            fs::create_dir(path).with_context(|| format!("cannot create {}", path.display()))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged))?;
        Ok(ScratchRoot { merged, _dir: dir })
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        if let Err(error) = run(Command::new("umount").arg("--lazy").arg(&self.merged)) {
            eprintln!("cannot unmount the scratch root: {error:#}");
        }
    }
}

/// Whether `path` exists below `root`, a symlink counting as itself: enablement symlinks
/// point to absolute paths, which mean the root's files, not this host's.
fn exists_in(root: &Path, path: &str) -> bool {
    fs::symlink_metadata(root.join(path)).is_ok()
}

fn copy_into(file: &Path, dir: &Path) -> Result<()> {
    let name = file
        .file_name()
        .with_context(|| format!("{} has no file name", file.display()))?;
    fs::copy(file, dir.join(name))
        .with_context(|| format!("cannot copy {} to {}", file.display(), dir.display()))?;
    Ok(())
}

/// Runs the command and returns its stdout; fails unless it exits 0, with both outputs.
fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("{command:?} printed non-UTF-8"))
}
