//! The delivery outbox survives a SIGKILL: the real aggregator binary, a webhook receiver
//! on 127.0.0.1 that refuses everything at first, a fake agent that trips `core_load` on
//! three nodes; the aggregator is killed with the deliveries pending, the receiver starts
//! accepting, and the restarted aggregator delivers all three, in order.

#[path = "../../aggregator/src/sink/testing.rs"]
mod receiver;
mod sinks_support;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use receiver::{Receiver, Reply};
use sinks_support::{Agent, host, identity};
use tests::{Process, binary, eventually, free_addr, temp_dir, wait_for_port, write_file};

fn start_aggregator(name: &str, config: &Path, log_dir: &Path) -> Result<Process> {
    let args = [
        OsStr::new("run"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    Process::spawn(name, &binary("hostwatch-aggregator")?, args, log_dir)
}

/// Trips `core_load` on `node`; returns once its `opened` event is committed.
async fn trip(addr: SocketAddr, node: &str) -> Result<()> {
    Agent::connect(addr, identity(node))
        .await?
        .send(host(9.0)?)
        .await
}

#[tokio::test]
async fn pending_deliveries_survive_a_sigkill() -> Result<()> {
    let receiver = Receiver::start_with(|_, _| Reply::status(503)).await;
    let root = temp_dir("hostwatch-sinks-restart")?;
    let addr = free_addr()?;
    let config = write_file(
        root.path().join("aggregator.toml"),
        &format!(
            r#"listen = "{addr}"
data_dir = "{data_dir}"

[[integrations]]
name = "pager"
source = "issues"
backoff_min = "100ms"
backoff_max = "300ms"
sink = {{ type = "webhook", url = "{url}" }}
"#,
            data_dir = root.path().join("data").display(),
            url = receiver.url("/hook"),
        ),
    )?;

    let mut first = start_aggregator("aggregator-1", &config, root.path())?;
    wait_for_port(addr, tests::TIMEOUT).await?;
    let nodes = ["n1", "n2", "n3"];
    for node in nodes {
        trip(addr, node).await?;
    }
    // The receiver has refused attempts: the deliveries are pending, not lost.
    eventually("refused delivery attempts", || async {
        Ok((receiver.requests().len() >= 3).then_some(()))
    })
    .await?;
    first.kill()?;
    let refused = receiver.requests().len();

    receiver.respond_with(|_, _| Reply::status(200));
    let mut second = start_aggregator("aggregator-2", &config, root.path())?;
    let accepted = eventually("all three events delivered after the restart", || async {
        let requests = receiver.requests();
        let accepted: Vec<serde_json::Value> = requests[refused..]
            .iter()
            .map(receiver::Recorded::json)
            .filter(|event| event["rule"] == "core_load" && event["kind"] == "opened")
            .collect();
        Ok((accepted.len() >= nodes.len()).then_some(accepted))
    })
    .await?;
    let delivered: Vec<&str> = accepted
        .iter()
        .map(|event| event["node"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(delivered, nodes, "in commit order, each once");
    second.terminate(Duration::from_secs(15)).await?;
    Ok(())
}
