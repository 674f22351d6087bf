//! Sinks: the services events are delivered to. One module (or folder) per sink, each
//! with its config and an implementation of `Sink`; this file is the registry: the
//! `SinkConfig` enum, `build`, and `AnySink`, which a delivery worker drives. A sink
//! knows its service's format and transport, nothing about routing, filtering, queues
//! or retries (`dispatch` and `delivery` own those).
//!
//! A sink receives the event envelope (`events::Event::to_json`) rather than the typed
//! event: the envelope is what the persistent outbox keeps, so a delivery that survives
//! a restart is the same delivery.

pub mod aws;
pub mod cloudwatch_logs;
pub mod cloudwatch_metrics;
pub mod envelope;
pub mod http;
pub mod kafka;
pub mod log;
pub mod opsgenie;
pub mod secret;
pub mod slack;
pub mod webhook;

#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

pub use secret::Secret;

/// The sink an integration delivers to, as written in `[[integrations]] sink = {...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Every event as one JSON line on stdout.
    Log,
    /// The envelope as JSON, POSTed to a URL, optionally signed.
    Webhook(webhook::WebhookConfig),
    /// A message per event (incoming webhook) or per issue, edited in place (bot token).
    Slack(slack::SlackConfig),
    /// An alert per issue (alias = issue id): created, noted, closed.
    Opsgenie(opsgenie::OpsgenieConfig),
    /// Per-node health events to the tenant's topic.
    Kafka(kafka::KafkaConfig),
    /// Records (log lines, or events) as JSON into a log stream per node.
    CloudwatchLogs(cloudwatch_logs::CloudWatchLogsConfig),
    /// Host metrics as data points with Tenant, Cluster, Node (and Mount) dimensions.
    CloudwatchMetrics(cloudwatch_metrics::CloudWatchMetricsConfig),
}

impl SinkConfig {
    /// The registry's name for this kind of sink, as in `type = "..."`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Log => "log",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Slack(_) => "slack",
            SinkConfig::Opsgenie(_) => "opsgenie",
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::CloudwatchLogs(_) => "cloudwatch_logs",
            SinkConfig::CloudwatchMetrics(_) => "cloudwatch_metrics",
        }
    }

    /// For `health` integrations: how often every node's event is repeated, and the
    /// health event's `platform`.
    pub fn health_settings(&self) -> (Duration, String) {
        match self {
            SinkConfig::Kafka(config) => (config.interval, config.platform.clone()),
            _ => (Duration::from_secs(60), "ESC".to_owned()),
        }
    }

    /// Reads secret files and builds the sink; `timeout` bounds one request.
    pub fn build(&self, timeout: Duration) -> Result<AnySink, SinkError> {
        Ok(match self {
            SinkConfig::Log => AnySink::Log(log::LogSink::stdout()),
            SinkConfig::Webhook(config) => AnySink::Webhook(config.build(timeout)?),
            SinkConfig::Slack(config) => AnySink::Slack(Box::new(config.build(timeout)?)),
            SinkConfig::Opsgenie(config) => AnySink::Opsgenie(config.build(timeout)?),
            SinkConfig::Kafka(config) => AnySink::Kafka(config.build(timeout)?),
            SinkConfig::CloudwatchLogs(config) => {
                AnySink::CloudwatchLogs(Box::new(config.build(timeout)?))
            }
            SinkConfig::CloudwatchMetrics(config) => {
                AnySink::CloudwatchMetrics(Box::new(config.build(timeout)?))
            }
        })
    }
}

impl SinkConfig {
    /// Where a sink connects: (host, port) per endpoint its settings name. Sinks whose
    /// endpoints are fixed public services (CloudWatch without `endpoint`) name none.
    pub fn destinations(&self) -> Result<Vec<(String, u16)>, SinkError> {
        let from_url = |field: &'static str, url: &str| -> Result<(String, u16), SinkError> {
            let url = reqwest::Url::parse(url).map_err(|error| SinkError::Invalid {
                field,
                problem: format!("not a URL ({error})"),
            })?;
            let host = url.host_str().ok_or(SinkError::Invalid {
                field,
                problem: "the URL has no host".to_owned(),
            })?;
            // `Url` keeps IPv6 hosts in brackets; a resolver wants them bare.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            Ok((host, url.port_or_known_default().unwrap_or(443)))
        };
        Ok(match self {
            SinkConfig::Log => Vec::new(),
            SinkConfig::Webhook(config) => {
                let url = secret::require("url", config.url.as_ref(), config.url_file.as_ref())?;
                vec![from_url("url", url.expose())?]
            }
            SinkConfig::Slack(config) => {
                match secret::resolve(
                    "webhook_url",
                    config.webhook_url.as_ref(),
                    config.webhook_url_file.as_deref(),
                )? {
                    Some(url) => vec![from_url("webhook_url", url.expose())?],
                    None => vec![from_url("api_url", &config.api_url)?],
                }
            }
            SinkConfig::Opsgenie(config) => vec![from_url("base_url", &config.base_url)?],
            SinkConfig::Kafka(config) => config
                .brokers
                .split(',')
                .map(str::trim)
                .filter(|broker| !broker.is_empty())
                .map(|broker| match broker.rsplit_once(':') {
                    Some((host, port)) => (
                        host.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                        port.parse().unwrap_or(9092),
                    ),
                    None => (broker.to_owned(), 9092),
                })
                .collect(),
            SinkConfig::CloudwatchLogs(config) => match &config.endpoint {
                Some(endpoint) => vec![from_url("endpoint", endpoint)?],
                None => Vec::new(),
            },
            SinkConfig::CloudwatchMetrics(config) => match &config.endpoint {
                Some(endpoint) => vec![from_url("endpoint", endpoint)?],
                None => Vec::new(),
            },
        })
    }
}

/// A sink could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{field}: cannot read {path}: {source}")]
    SecretFile {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: the service may accept it later.
    #[error("transient: {0}")]
    Transient(String),
    /// The service asked to wait (HTTP 429 `Retry-After`) before trying again.
    #[error("throttled for {retry_after:?}: {reason}")]
    Throttled {
        retry_after: Duration,
        reason: String,
    },
    /// Retrying will not help; the event is dead-lettered.
    #[error("permanent: {0}")]
    Permanent(String),
}

pub trait Sink: Send + 'static {
    /// Delivers one event envelope; returns once the service has accepted it.
    fn deliver(
        &mut self,
        envelope: &Value,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Every built sink, so a worker can own "a sink" without boxing futures.
#[derive(Debug)]
pub enum AnySink {
    Log(log::LogSink<std::io::Stdout>),
    Webhook(webhook::WebhookSink),
    Slack(Box<slack::SlackSink>),
    Opsgenie(opsgenie::OpsgenieSink),
    Kafka(kafka::KafkaSink),
    CloudwatchLogs(Box<cloudwatch_logs::CloudWatchLogsSink>),
    CloudwatchMetrics(Box<cloudwatch_metrics::CloudWatchMetricsSink>),
}

impl AnySink {
    /// Delivers records in one call where the service takes batches (CloudWatch), else
    /// one by one, stopping at the first failure.
    pub async fn deliver_batch(&mut self, records: &[Value]) -> Result<(), DeliveryError> {
        match self {
            AnySink::CloudwatchLogs(sink) => sink.put(records).await,
            AnySink::CloudwatchMetrics(sink) => sink.put(records).await,
            _ => {
                for record in records {
                    self.deliver(record).await?;
                }
                Ok(())
            }
        }
    }
}

impl Sink for AnySink {
    async fn deliver(&mut self, envelope: &Value) -> Result<(), DeliveryError> {
        match self {
            AnySink::Log(sink) => sink.deliver(envelope).await,
            AnySink::Webhook(sink) => sink.deliver(envelope).await,
            AnySink::Slack(sink) => sink.deliver(envelope).await,
            AnySink::Opsgenie(sink) => sink.deliver(envelope).await,
            AnySink::Kafka(sink) => sink.deliver(envelope).await,
            AnySink::CloudwatchLogs(sink) => sink.deliver(envelope).await,
            AnySink::CloudwatchMetrics(sink) => sink.deliver(envelope).await,
        }
    }
}
