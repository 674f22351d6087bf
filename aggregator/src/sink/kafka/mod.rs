//! The `kafka` sink: per-node health events (`health` module, schema
//! `hes-event.schema.json`) to the tenant's topic `<topic_prefix><tenant>` (default
//! `health-<tenant>`), keyed by the service instance id, so one node's events stay in one
//! partition, in order. The producer is idempotent with `acks=all`.
//!
//! librdkafka retries inside the producer for up to the integration's timeout; what
//! still fails is reported as transient, except errors no retry can fix (a message too
//! large, an invalid topic, no authorization), which are permanent. Extra librdkafka
//! settings go in `options`; `sasl_password` is a secret.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use serde_json::Value;

use super::envelope::text;
use super::secret::{self, Secret};
use super::{DeliveryError, Sink, SinkError};

fn default_topic_prefix() -> String {
    "health-".to_owned()
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_platform() -> String {
    "ESC".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,host:port`.
    pub brokers: String,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Every node's health event is sent again this often (and at once on a change).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The health event's `platform`.
    #[serde(default = "default_platform")]
    pub platform: String,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub sasl_password_file: Option<PathBuf>,
    /// Extra librdkafka settings, e.g. `"security.protocol" = "SASL_SSL"`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl KafkaConfig {
    pub fn build(&self, timeout: Duration) -> Result<KafkaSink, SinkError> {
        let mut client = ClientConfig::new();
        for (key, value) in &self.options {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", timeout.as_millis().max(1).to_string());
        if let Some(username) = &self.sasl_username {
            client.set("sasl.username", username);
        }
        if let Some(password) = secret::resolve(
            "sasl_password",
            self.sasl_password.as_ref(),
            self.sasl_password_file.as_deref(),
        )? {
            client.set("sasl.password", password.expose());
        }
        let producer: FutureProducer = client.create().map_err(|error| SinkError::Invalid {
            field: "kafka",
            problem: error.to_string(),
        })?;
        Ok(KafkaSink {
            producer,
            topic_prefix: self.topic_prefix.clone(),
            timeout,
        })
    }
}

pub struct KafkaSink {
    producer: FutureProducer,
    topic_prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic_prefix", &self.topic_prefix)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// The topic for an event: the prefix and its tenant.
    pub fn topic(&self, envelope: &Value) -> String {
        let tenant = match text(envelope, "tenant_name") {
            "" => text(envelope, "tenant"),
            tenant => tenant,
        };
        format!("{}{tenant}", self.topic_prefix)
    }
}

/// The record key: the service instance id (or the node for other events).
pub fn key(envelope: &Value) -> &str {
    envelope["service_instance"]["id"]
        .as_str()
        .unwrap_or_else(|| text(envelope, "node"))
}

fn classify(error: KafkaError) -> DeliveryError {
    let permanent = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    );
    let reason = format!("kafka: {error}");
    if permanent {
        DeliveryError::Permanent(reason)
    } else {
        DeliveryError::Transient(reason)
    }
}

impl Sink for KafkaSink {
    async fn deliver(&mut self, envelope: &Value) -> Result<(), DeliveryError> {
        let topic = self.topic(envelope);
        let payload = envelope.to_string();
        let record = FutureRecord::to(&topic)
            .key(key(envelope))
            .payload(&payload);
        self.producer
            .send(record, self.timeout)
            .await
            .map(|_| ())
            .map_err(|(error, _)| classify(error))
    }
}

#[cfg(test)]
mod tests;
