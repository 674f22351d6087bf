//! The high-volume sources: agents' log lines (`logs`) and host samples as metrics
//! (`metrics`), routed to their integrations after the batch that carried them is
//! committed, but not through the persistent outbox.
//!
//! Why not the outbox: a node ships many log lines and a host sample every few seconds;
//! writing a row per (record, integration) would multiply the database's write load by
//! the volume of the busiest log file, for data whose loss costs a gap in a dashboard,
//! not a missed page. So each logs/metrics integration has a bounded in-memory queue
//! (`QUEUE` records) and a worker that sends batches of up to `BATCH` records.
//! **Policy when full:** the new record is dropped for that integration and counted
//! (`hostwatch_telemetry_dropped_total` in the log, at most once per `DROP_LOG_EVERY`
//! drops); ingest never waits. A failing batch is retried with the integration's backoff
//! up to `MAX_ATTEMPTS` times, then dropped and counted; a permanent refusal drops it at
//! once. Records still queued at shutdown are lost. Issues, notifications and health
//! stay on their own paths (`outbox`, `health`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::delivery::RetryPolicy;
use crate::model::{HostReading, NodeKey, Reading, Sample, Timestamp};
use crate::sink::{DeliveryError, SinkConfig};

/// Records waiting per integration.
pub const QUEUE: usize = 10_000;
/// Records sent per call at most.
pub const BATCH: usize = 500;
/// Attempts per batch before it is dropped.
pub const MAX_ATTEMPTS: u32 = 5;
/// One log line per this many drops.
const DROP_LOG_EVERY: u64 = 1000;

/// A log line as routed: a JSON object whose `message` is the original line.
pub fn log_record(node: &NodeKey, time: Timestamp, path: &str, line: &str) -> Value {
    json!({
        "source": "logs",
        "tenant": node.tenant,
        "cluster": node.cluster,
        "node": node.node,
        "time": time.to_rfc3339(),
        "time_unix_ms": time.as_unix_ms(),
        "path": path,
        "message": line,
    })
}

/// A host sample as metrics: CoreLoad, MemoryUsedPercent, and DiskUsedPercent per mount.
pub fn metrics_record(node: &NodeKey, time: Timestamp, host: &HostReading) -> Value {
    let mut metrics = vec![
        json!({ "name": "CoreLoad", "value": host.core_load(), "unit": "None" }),
        json!({ "name": "MemoryUsedPercent", "value": host.memory_used_percent, "unit": "Percent" }),
    ];
    for disk in &host.disks {
        metrics.push(json!({
            "name": "DiskUsedPercent",
            "value": disk.used_percent,
            "unit": "Percent",
            "mount": disk.mount,
        }));
    }
    json!({
        "source": "metrics",
        "tenant": node.tenant,
        "cluster": node.cluster,
        "node": node.node,
        "time": time.to_rfc3339(),
        "time_unix_ms": time.as_unix_ms(),
        "metrics": metrics,
    })
}

/// The records of a batch's samples: (is a log record, record).
pub fn records(node: &NodeKey, samples: &[Sample]) -> Vec<(bool, Value)> {
    samples
        .iter()
        .filter_map(|sample| match &sample.reading {
            Reading::Log { path, line } => Some((true, log_record(node, sample.time, path, line))),
            Reading::Host(host) => Some((false, metrics_record(node, sample.time, host))),
            Reading::Gossip(_) | Reading::Elasticsearch(_) => None,
        })
        .collect()
}

/// The sending side of one integration's queue.
#[derive(Debug, Clone)]
pub(crate) struct TelemetryQueue {
    pub(crate) integration: String,
    pub(crate) sender: mpsc::Sender<Value>,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl TelemetryQueue {
    /// Never waits: a full queue drops the record (see the module's policy).
    pub(crate) fn offer(&self, record: Value) {
        if self.sender.try_send(record).is_err() {
            self.count_drop(1);
        }
    }

    fn count_drop(&self, n: u64) {
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        if before / DROP_LOG_EVERY != (before + n) / DROP_LOG_EVERY || before == 0 {
            tracing::warn!(
                integration = %self.integration,
                hostwatch_telemetry_dropped_total = before + n,
                "logs/metrics records dropped: the sink is too slow or failing"
            );
        }
    }
}

/// One logs/metrics integration's worker.
#[derive(Debug)]
pub(crate) struct TelemetryWorker {
    pub(crate) queue: TelemetryQueue,
    pub(crate) records: mpsc::Receiver<Value>,
    pub(crate) sink: SinkConfig,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) stop: CancellationToken,
}

impl TelemetryWorker {
    pub(crate) async fn run(mut self) {
        let mut sink = match self.sink.build(self.timeout) {
            Ok(sink) => sink,
            Err(error) => {
                tracing::error!(integration = %self.queue.integration, %error, "cannot build the sink; its logs/metrics are dropped");
                return;
            }
        };
        loop {
            let first = tokio::select! {
                () = self.stop.cancelled() => return,
                record = self.records.recv() => match record {
                    Some(record) => record,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match self.records.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            let mut attempts = 0;
            let mut last_failure;
            loop {
                attempts += 1;
                let outcome = tokio::time::timeout(self.timeout, sink.deliver_batch(&batch))
                    .await
                    .unwrap_or_else(|_| {
                        Err(DeliveryError::Transient(format!(
                            "no answer within {:?}",
                            self.timeout
                        )))
                    });
                let wait = match outcome {
                    Ok(()) => break,
                    Err(DeliveryError::Permanent(reason)) => {
                        tracing::warn!(integration = %self.queue.integration, %reason, records = batch.len(), "logs/metrics refused; dropped");
                        self.queue.count_drop(batch.len() as u64);
                        break;
                    }
                    Err(DeliveryError::Throttled {
                        retry_after,
                        reason,
                    }) => {
                        last_failure = reason;
                        retry_after.max(self.retry.backoff(attempts))
                    }
                    Err(DeliveryError::Transient(reason)) => {
                        last_failure = reason;
                        self.retry.backoff(attempts)
                    }
                };
                tracing::debug!(integration = %self.queue.integration, attempts, reason = %last_failure, "logs/metrics failed; retrying");
                if attempts >= MAX_ATTEMPTS {
                    tracing::warn!(integration = %self.queue.integration, attempts, records = batch.len(), reason = %last_failure, "logs/metrics still failing; dropped");
                    self.queue.count_drop(batch.len() as u64);
                    break;
                }
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DiskReading;

    #[test]
    fn a_log_line_is_the_message_of_its_record() {
        let node = NodeKey {
            tenant: "acme".into(),
            cluster: "esdb".into(),
            node: "n1".into(),
        };
        let line = r#"{"@t":"2024-07-01T12:00:00Z","@mt":"Started"}"#;
        let record = log_record(
            &node,
            Timestamp::from_unix_ms(1_719_835_200_000),
            "/var/log/es.json",
            line,
        );
        assert_eq!(record["message"], line);
        assert_eq!(record["node"], "n1");
        assert_eq!(record["time"], "2024-07-01T12:00:00.000Z");
    }

    #[test]
    fn a_host_sample_is_three_kinds_of_metric() {
        let node = NodeKey {
            tenant: "acme".into(),
            cluster: "esdb".into(),
            node: "n1".into(),
        };
        let host = HostReading {
            load1: 3.0,
            load5: 0.0,
            load15: 0.0,
            physical_cores: 2,
            logical_cores: 4,
            physical_cores_estimated: false,
            memory_total_bytes: 100,
            memory_available_bytes: 40,
            memory_used_percent: 60.0,
            disks: vec![DiskReading {
                mount: "/data".into(),
                device: "/dev/vdb".into(),
                fs_type: "ext4".into(),
                total_bytes: 100,
                available_bytes: 10,
                used_percent: 90.0,
                inodes_total: 0,
                inodes_free: 0,
            }],
        };
        let record = metrics_record(&node, Timestamp::from_unix_ms(0), &host);
        let names: Vec<&str> = record["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["CoreLoad", "MemoryUsedPercent", "DiskUsedPercent"]);
        assert_eq!(record["metrics"][0]["value"], 1.5);
        assert_eq!(record["metrics"][2]["mount"], "/data");
    }
}
