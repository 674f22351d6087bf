//! The `cloudwatch_logs` sink: `PutLogEvents` into one log group, one log stream per
//! node (`tenant/cluster/node`), each record a JSON object: for the `logs` source the
//! shipped line's object, whose `message` is the original line; for other sources the
//! event envelope. The group and the stream are created when missing.
//!
//! Batches keep within the API's limits: at most 10,000 events and 1,048,576 bytes
//! (each message's UTF-8 size plus 26) per call, in time order. Signed with SigV4 (`aws`).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::aws::{AwsClient, CredentialFields};
use super::envelope::text;
use super::secret::Secret;
use super::{DeliveryError, Sink, SinkError};

pub const MAX_BATCH_EVENTS: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What the API counts per event besides its message.
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// A single message is cut to this (the API's limit per event, less the overhead).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchLogsConfig {
    pub region: String,
    /// Default `https://logs.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    pub log_group: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub secret_access_key_file: Option<PathBuf>,
    /// A profile of the shared credentials file.
    pub profile: Option<String>,
}

impl CloudWatchLogsConfig {
    pub fn build(&self, timeout: Duration) -> Result<CloudWatchLogsSink, SinkError> {
        let aws = AwsClient::new(
            "logs",
            &self.region,
            self.endpoint.as_ref(),
            CredentialFields {
                access_key_id: self.access_key_id.as_ref(),
                secret_access_key: self.secret_access_key.as_ref(),
                secret_access_key_file: self.secret_access_key_file.as_ref(),
                profile: self.profile.as_ref(),
            },
            timeout,
        )?;
        Ok(CloudWatchLogsSink {
            aws,
            log_group: self.log_group.clone(),
            group_ready: false,
            streams_ready: HashSet::new(),
        })
    }
}

#[derive(Debug)]
pub struct CloudWatchLogsSink {
    aws: AwsClient,
    log_group: String,
    group_ready: bool,
    streams_ready: HashSet<String>,
}

/// The log stream of a record: its node (or its cluster for cluster-wide events).
pub fn stream_name(record: &Value) -> String {
    let mut name = format!("{}/{}", text(record, "tenant"), text(record, "cluster"));
    let node = text(record, "node");
    if !node.is_empty() {
        name.push('/');
        name.push_str(node);
    }
    // ':' and '*' are not allowed in stream names.
    name.replace([':', '*'], "_")
}

/// One log event: its time (from `time_unix_ms`, else the RFC 3339 `time`, else now) and
/// its message (the record as JSON).
fn log_event(record: &Value) -> (i64, String) {
    let time = record["time_unix_ms"]
        .as_i64()
        .or_else(|| {
            let time = humantime::parse_rfc3339(text(record, "time")).ok()?;
            let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
            i64::try_from(since_epoch.as_millis()).ok()
        })
        .unwrap_or_else(crate::delivery::now_ms);
    let mut message = record.to_string();
    if message.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    (time, message)
}

/// Splits time-ordered events into batches within the API's limits.
pub fn batches(events: Vec<(i64, String)>) -> Vec<Vec<(i64, String)>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.1.len() + EVENT_OVERHEAD_BYTES;
        if batch.len() == MAX_BATCH_EVENTS || bytes + size > MAX_BATCH_BYTES {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(event);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

impl CloudWatchLogsSink {
    async fn call(&self, target: &str, body: &Value) -> Result<(), ApiError> {
        let what = format!("cloudwatch logs {target}");
        let amz_target = format!("Logs_20140328.{target}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", amz_target.as_str()),
        ];
        let response = self
            .aws
            .post(&what, &headers, body.to_string().into_bytes())
            .await
            .map_err(ApiError::Delivery)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let answer = response.text().await.unwrap_or_default();
        let error_type = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|value| value["__type"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let error_type = error_type.rsplit('#').next().unwrap_or_default().to_owned();
        let reason = format!(
            "{what}: http {status}: {}",
            answer.chars().take(200).collect::<String>()
        );
        Err(match error_type.as_str() {
            "ResourceNotFoundException" => ApiError::NotFound,
            "ResourceAlreadyExistsException" => ApiError::AlreadyExists,
            "ThrottlingException" => ApiError::Delivery(DeliveryError::Throttled {
                retry_after: Duration::from_secs(1),
                reason,
            }),
            "ServiceUnavailableException" => ApiError::Delivery(DeliveryError::Transient(reason)),
            _ if status.is_server_error() => ApiError::Delivery(DeliveryError::Transient(reason)),
            _ => ApiError::Delivery(DeliveryError::Permanent(reason)),
        })
    }

    async fn ensure_stream(&mut self, stream: &str) -> Result<(), DeliveryError> {
        if !self.group_ready {
            match self
                .call("CreateLogGroup", &json!({ "logGroupName": self.log_group }))
                .await
            {
                Ok(()) | Err(ApiError::AlreadyExists) => self.group_ready = true,
                Err(error) => return Err(error.into_delivery("CreateLogGroup")),
            }
        }
        if !self.streams_ready.contains(stream) {
            let body = json!({ "logGroupName": self.log_group, "logStreamName": stream });
            match self.call("CreateLogStream", &body).await {
                Ok(()) | Err(ApiError::AlreadyExists) => {
                    self.streams_ready.insert(stream.to_owned());
                }
                Err(error) => return Err(error.into_delivery("CreateLogStream")),
            }
        }
        Ok(())
    }

    /// Sends records, grouped into one stream per node, in batches within the limits.
    pub async fn put(&mut self, records: &[Value]) -> Result<(), DeliveryError> {
        let mut by_stream: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for record in records {
            by_stream
                .entry(stream_name(record))
                .or_default()
                .push(log_event(record));
        }
        for (stream, mut events) in by_stream {
            events.sort_by_key(|(time, _)| *time);
            self.ensure_stream(&stream).await?;
            for batch in batches(events) {
                let body = json!({
                    "logGroupName": self.log_group,
                    "logStreamName": stream,
                    "logEvents": batch
                        .iter()
                        .map(|(time, message)| json!({ "timestamp": time, "message": message }))
                        .collect::<Vec<_>>(),
                });
                match self.call("PutLogEvents", &body).await {
                    Ok(()) => {}
                    Err(ApiError::NotFound) => {
                        // Deleted behind our back: create again, and let the retry send.
                        self.group_ready = false;
                        self.streams_ready.remove(&stream);
                        return Err(DeliveryError::Transient(format!(
                            "cloudwatch logs PutLogEvents: {}/{stream} not found; recreating",
                            self.log_group
                        )));
                    }
                    Err(error) => return Err(error.into_delivery("PutLogEvents")),
                }
            }
        }
        Ok(())
    }
}

enum ApiError {
    NotFound,
    AlreadyExists,
    Delivery(DeliveryError),
}

impl ApiError {
    fn into_delivery(self, call: &str) -> DeliveryError {
        match self {
            ApiError::Delivery(error) => error,
            ApiError::NotFound => {
                DeliveryError::Transient(format!("cloudwatch logs {call}: resource not found"))
            }
            ApiError::AlreadyExists => {
                DeliveryError::Transient(format!("cloudwatch logs {call}: already exists"))
            }
        }
    }
}

impl Sink for CloudWatchLogsSink {
    async fn deliver(&mut self, envelope: &Value) -> Result<(), DeliveryError> {
        self.put(std::slice::from_ref(envelope)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_within_the_api_limits() {
        let many: Vec<(i64, String)> = (0..25_000).map(|i| (i, "x".into())).collect();
        let sizes: Vec<usize> = batches(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
        let big = "y".repeat(200_000);
        let large: Vec<(i64, String)> = (0..12).map(|i| (i, big.clone())).collect();
        let large_batches = batches(large);
        for batch in &large_batches {
            let bytes: usize = batch
                .iter()
                .map(|(_, m)| m.len() + EVENT_OVERHEAD_BYTES)
                .sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        }
        let sizes: Vec<usize> = large_batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [5, 5, 2]);
    }

    #[test]
    fn one_stream_per_node() {
        let record = json!({"tenant": "acme", "cluster": "db", "node": "n:1"});
        assert_eq!(stream_name(&record), "acme/db/n_1");
        assert_eq!(
            stream_name(&json!({"tenant": "acme", "cluster": "db", "node": ""})),
            "acme/db"
        );
    }
}
