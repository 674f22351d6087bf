//! The `hostwatch-agent` binary's subcommands, run as a process.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostwatch-agent"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("hostwatch-agent runs")
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("config written");
    path.display().to_string()
}

#[test]
fn check_config_prints_every_error_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        &dir,
        "[identity]\ncluster = \"a b\"\n[aggregator]\nurl = \"ftp://agg:7170\"\n\
         [host]\ninterval = \"10ms\"\n",
    );
    let output = agent(&["check-config", "--config", &path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines.iter().all(|line| line.starts_with("config: ")),
        "{stderr}"
    );
    for field in [
        "identity.tenant",
        "identity.cluster",
        "aggregator.url",
        "host.interval",
    ] {
        assert!(
            stderr.contains(&format!("config: {field}: ")),
            "{field} missing in {stderr}"
        );
    }
    assert!(
        stderr.contains("config: host.interval: must be at least 100ms"),
        "{stderr}"
    );
}

#[test]
fn check_config_rejects_unknown_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        &dir,
        "[identity]\ntenant = \"a\"\ncluster = \"b\"\nzone = \"x\"\n",
    );
    let output = agent(&["check-config", "--config", &path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("zone"), "{stderr}");
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let path = write_config(
        &dir,
        &format!(
            "state_dir = \"{}\"\n[identity]\ntenant = \"acme\"\ncluster = \"orders-db\"\n\
             [aggregator]\nurl = \"http://127.0.0.1:7170\"\n",
            state_dir.display()
        ),
    );
    let output = agent(&["check-config", "--config", &path]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok"));
    assert!(
        !state_dir.exists(),
        "check-config must not touch the state directory"
    );
}

#[test]
fn sample_once_prints_one_json_object_with_the_documented_keys() {
    let output = agent(&["sample", "--once"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sample: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    for key in [
        "time",
        "load1",
        "load5",
        "load15",
        "physical_cores",
        "logical_cores",
        "physical_cores_estimated",
        "core_load",
        "memory_total_bytes",
        "memory_available_bytes",
        "memory_used_percent",
        "disks",
    ] {
        assert!(sample.get(key).is_some(), "{key} missing in {sample}");
    }
    assert!(
        sample["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{sample}"
    );
    let disks = sample["disks"].as_array().expect("disks is an array");
    let root = disks
        .iter()
        .find(|d| d["mount"] == "/")
        .expect("the root mount is reported");
    for key in [
        "device",
        "fs_type",
        "total_bytes",
        "available_bytes",
        "used_percent",
        "inodes_total",
        "inodes_free",
    ] {
        assert!(root.get(key).is_some(), "{key} missing in {root}");
    }
    let load1 = sample["load1"].as_f64().expect("load1");
    let cores = sample["physical_cores"].as_f64().expect("physical_cores");
    let core_load = sample["core_load"].as_f64().expect("core_load");
    assert!((core_load - load1 / cores).abs() < 1e-9);
}

#[test]
fn run_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1: the agent logs its start and its failed connection.
    let path = write_config(
        &dir,
        &format!(
            "state_dir = \"{}\"\nshutdown_grace = \"1s\"\n[identity]\ntenant = \"acme\"\n\
             cluster = \"orders-db\"\n[aggregator]\nurl = \"http://127.0.0.1:1\"\n",
            dir.path().join("state").display()
        ),
    );
    for (args, json) in [
        (vec!["--log-format", "json", "run", "--config", &path], true),
        (vec!["run", "--config", &path], false),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hostwatch-agent"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("hostwatch-agent runs");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        child.kill().expect("kill");
        let output = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(
            lines.iter().any(|l| l.contains("agent started")),
            "{stderr}"
        );
        for line in lines {
            let parsed = serde_json::from_str::<serde_json::Value>(line);
            if json {
                let value = parsed.unwrap_or_else(|err| panic!("{err}: {line}"));
                assert!(
                    value["level"].is_string() && value["fields"].is_object(),
                    "{line}"
                );
            } else {
                assert!(parsed.is_err(), "plain by default: {line}");
            }
        }
    }
}
