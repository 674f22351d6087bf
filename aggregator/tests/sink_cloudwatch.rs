//! The CloudWatch sinks against moto_server with SigV4 signature checking on: log group,
//! streams and events, and metric data, read back through the API (boto3, in
//! `tests/python/cloudwatch.py`). Needs `moto_server` (`pip install "moto[server]"`);
//! without it the test fails under `CI=true`, naming it, and is skipped elsewhere.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aggregator::sink::cloudwatch_logs::CloudWatchLogsConfig;
use aggregator::sink::cloudwatch_metrics::CloudWatchMetricsConfig;
use aggregator::sink::{DeliveryError, Secret, Sink};
use serde_json::{Value, json};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/cloudwatch.py")
}

fn python(args: &[&str]) -> Value {
    let output = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cloudwatch.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// moto_server on a free port, checking signatures after the IAM bootstrap; None when it
/// is missing outside CI.
fn start_moto() -> Option<Moto> {
    let Some(program) = find_program("moto_server") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "moto_server is missing: pip install \"moto[server]\" (`bash .ci/run` does)"
        );
        eprintln!("SKIPPED: moto_server is missing (pip install \"moto[server]\")");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    })
}

fn log_record(node: &str, line: &str, time_ms: i64) -> Value {
    json!({
        "source": "logs", "tenant": "acme", "cluster": "esdb", "node": node,
        "path": "/var/log/eventstore/log.json", "time_unix_ms": time_ms, "message": line,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_metrics_reach_cloudwatch_signed() {
    let Some(moto) = start_moto() else { return };
    let key = python(&["iam", &moto.endpoint]);
    let key_id = key["id"].as_str().unwrap().to_owned();
    let secret = key["secret"].as_str().unwrap().to_owned();

    let logs_config = |secret: &str| CloudWatchLogsConfig {
        region: "eu-west-1".into(),
        endpoint: Some(moto.endpoint.clone()),
        log_group: "/hostwatch/esdb".into(),
        access_key_id: Some(key_id.clone()),
        secret_access_key: Some(Secret::new(secret)),
        secret_access_key_file: None,
        profile: None,
    };
    // Signatures are checked: a wrong secret is refused for good.
    // CloudWatch refuses events older than 14 days: stamp them now.
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut forged = logs_config("not-the-secret")
        .build(Duration::from_secs(10))
        .unwrap();
    match forged.deliver(&log_record("n1", "{}", now_ms)).await {
        Err(DeliveryError::Permanent(reason)) => assert!(reason.contains("403"), "{reason}"),
        other => panic!("a forged signature was not refused: {other:?}"),
    }

    let mut logs = logs_config(&secret).build(Duration::from_secs(10)).unwrap();
    let line_1 = r#"{"@t":"2024-07-01T12:00:00Z","@mt":"Started","Level":"Information"}"#;
    let line_2 = r#"{"@t":"2024-07-01T12:00:01Z","@mt":"Scavenge done","Level":"Information"}"#;
    let records = [
        log_record("n1", line_1, now_ms - 2000),
        log_record("n2", line_1, now_ms - 1500),
        log_record("n1", line_2, now_ms - 1000),
    ];
    logs.put(&records).await.unwrap();
    // The group and streams exist now; another put goes straight to PutLogEvents.
    logs.put(&records[2..]).await.unwrap();

    let read = python(&["logs", &moto.endpoint, &key_id, &secret, "/hostwatch/esdb"]);
    let messages = |stream: &str| -> Vec<String> {
        read[stream]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| {
                let record: Value = serde_json::from_str(message.as_str().unwrap()).unwrap();
                record["message"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(messages("acme/esdb/n1"), [line_1, line_2, line_2]);
    assert_eq!(messages("acme/esdb/n2"), [line_1]);

    let mut metrics = CloudWatchMetricsConfig {
        region: "eu-west-1".into(),
        endpoint: Some(moto.endpoint.clone()),
        namespace: "Hostwatch".into(),
        access_key_id: Some(key_id.clone()),
        secret_access_key: Some(Secret::new(secret.clone())),
        secret_access_key_file: None,
        profile: None,
    }
    .build(Duration::from_secs(10))
    .unwrap();
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    metrics
        .deliver(&json!({
            "source": "metrics", "tenant": "acme", "cluster": "esdb", "node": "n1", "time": now,
            "metrics": [
                {"name": "CoreLoad", "value": 1.25, "unit": "None"},
                {"name": "MemoryUsedPercent", "value": 42.0, "unit": "Percent"},
                {"name": "DiskUsedPercent", "value": 81.5, "unit": "Percent", "mount": "/data"},
            ],
        }))
        .await
        .unwrap();
    let read = python(&["metrics", &moto.endpoint, &key_id, &secret, "Hostwatch"]);
    assert_eq!(
        read,
        json!([
            {"name": "CoreLoad", "dimensions": {"Tenant": "acme", "Cluster": "esdb", "Node": "n1"}, "values": [1.25]},
            {"name": "DiskUsedPercent", "dimensions": {"Tenant": "acme", "Cluster": "esdb", "Node": "n1", "Mount": "/data"}, "values": [81.5]},
            {"name": "MemoryUsedPercent", "dimensions": {"Tenant": "acme", "Cluster": "esdb", "Node": "n1"}, "values": [42.0]},
        ])
    );
}
