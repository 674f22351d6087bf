//! Health events end to end against a real Kafka-protocol broker (tansu) and an
//! independent consumer (Python confluent-kafka, `tests/python/hes_consumer.py`) that
//! validates every message against `hes-event.schema.json` and checks the topic, the key,
//! the event on a status change and the periodic repeat.
//!
//! Needs `tansu` (on PATH or in ~/.cargo/bin) and Python with confluent-kafka and
//! jsonschema; `.ci/run` installs them. Without them the test fails under `CI=true` and
//! says what is missing, and is skipped (with a message) elsewhere.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use proto::v1 as wire;
use sinks_support::{Agent, host};
use tests::{Process, binary, eventually, free_addr, temp_dir, wait_for_port, write_file};

mod sinks_support;

const INSTANCE_ID: &str = "df22bc90-ebdd-4c8e-a051-b088f89f8897";
const INTERVAL_S: u64 = 10;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `name` on PATH or in ~/.cargo/bin.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_bin)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn python_has_kafka() -> bool {
    Command::new("python3")
        .args(["-c", "import confluent_kafka, jsonschema"])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Ok(None) to skip outside CI; an error naming what is missing under CI.
fn requirements() -> Result<Option<PathBuf>> {
    let tansu = find_program("tansu");
    let python = python_has_kafka();
    if let (Some(tansu), true) = (&tansu, python) {
        return Ok(Some(tansu.clone()));
    }
    let missing = format!(
        "{}{}",
        if tansu.is_none() {
            "tansu (cargo install tansu --locked --no-default-features --features dynostore) "
        } else {
            ""
        },
        if python {
            ""
        } else {
            "python3 with confluent-kafka and jsonschema (pip install confluent-kafka jsonschema)"
        }
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        bail!("missing for the Kafka end-to-end test: {missing}; `bash .ci/run` installs them");
    }
    eprintln!("SKIPPED: missing {missing}");
    Ok(None)
}

/// The node whose health events the consumer checks.
fn orion() -> wire::NodeIdentity {
    wire::NodeIdentity {
        tenant: "orion-123".into(),
        cluster: "esdb".into(),
        node: "orion1230001".into(),
        service_instance_id: INSTANCE_ID.into(),
        business_group: "marketing".into(),
        cloud_service_name: "Managed EventStoreDB".into(),
        instance_class: "Managed EventStoreDB".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn health_events_reach_a_real_broker_and_match_the_schema() -> Result<()> {
    let Some(tansu) = requirements()? else {
        return Ok(());
    };
    let root = temp_dir("hostwatch-sinks-kafka")?;
    let broker_addr = free_addr()?;
    let listener = format!("tcp://{broker_addr}");
    let _broker = Process::spawn(
        "tansu",
        &tansu,
        [
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        root.path(),
    )?;
    wait_for_port(broker_addr, tests::TIMEOUT).await?;
    let brokers = broker_addr.to_string();
    let topic = "health-orion-123";
    let script = workspace().join("tests/python/hes_consumer.py");
    // A copy of shared/reference/hes-event.schema.json, kept in the repository.
    let schema = workspace().join("tests/python/hes-event.schema.json");
    let created = Command::new("python3")
        .arg(&script)
        .args(["create", &brokers, topic])
        .output()?;
    if !created.status.success() {
        bail!(
            "cannot create {topic}: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
    }

    let addr = free_addr()?;
    let config = write_file(
        root.path().join("aggregator.toml"),
        &format!(
            r#"listen = "{addr}"
data_dir = "{data_dir}"

[[integrations]]
name = "hes"
source = "health"
sink = {{ type = "kafka", brokers = "{brokers}", interval = "{INTERVAL_S}s" }}
"#,
            data_dir = root.path().join("data").display(),
        ),
    )?;
    let mut consumer = Process::spawn(
        "consumer",
        Path::new("python3"),
        [
            script.as_os_str(),
            OsStr::new("watch"),
            OsStr::new(&brokers),
            OsStr::new(topic),
            OsStr::new(INSTANCE_ID),
            schema.as_os_str(),
            OsStr::new(&INTERVAL_S.to_string()),
        ],
        root.path(),
    )?;
    let args = [
        OsStr::new("run"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    let mut aggregator = Process::spawn(
        "aggregator",
        &binary("hostwatch-aggregator")?,
        args,
        root.path(),
    )?;
    wait_for_port(addr, tests::TIMEOUT).await?;

    let mut agent = Agent::connect(addr, orion()).await?;
    agent.send(host(0.5)?).await?;
    eventually(
        "the consumer to see the node's first event (OK)",
        || async {
            Ok(consumer
                .stdout()?
                .lines()
                .any(|line| line == "seen OK")
                .then_some(()))
        },
    )
    .await?;
    // Core load 9 / 2 cores trips core_load (warning): the node turns WARNING.
    agent.send(host(9.0)?).await?;

    let status = tests::wait_until(
        Duration::from_secs(3 * INTERVAL_S + 30),
        tests::POLL,
        "the consumer's verdict",
        || {
            let status = consumer.try_exit_status();
            async move { status }
        },
    )
    .await?;
    let output = consumer.stdout()?;
    assert!(
        status.success(),
        "the consumer failed:\n{output}\n{}",
        consumer.stderr()?
    );
    assert!(output.contains("OK: "), "{output}");
    aggregator.terminate(Duration::from_secs(15)).await?;
    Ok(())
}
