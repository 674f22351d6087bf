//! The `cloudwatch_metrics` sink: `PutMetricData` (Query protocol) under a namespace, from
//! `metrics` records (`telemetry::metrics_record`): CoreLoad, MemoryUsedPercent and
//! DiskUsedPercent with the dimensions Tenant, Cluster, Node (and Mount for disks).
//! Other events carry no metrics and are accepted without a call.
//!
//! Batches keep within the API's limits: at most 1,000 data points per call (and far
//! under its 1 MB body). Signed with SigV4 (`aws`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::aws::{AwsClient, CredentialFields};
use super::envelope::text;
use super::secret::Secret;
use super::{DeliveryError, Sink, SinkError, http};

pub const MAX_BATCH_DATUMS: usize = 1000;

fn default_namespace() -> String {
    "Hostwatch".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchMetricsConfig {
    pub region: String,
    /// Default `https://monitoring.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub secret_access_key_file: Option<PathBuf>,
    pub profile: Option<String>,
}

impl CloudWatchMetricsConfig {
    pub fn build(&self, timeout: Duration) -> Result<CloudWatchMetricsSink, SinkError> {
        let aws = AwsClient::new(
            "monitoring",
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
        Ok(CloudWatchMetricsSink {
            aws,
            namespace: self.namespace.clone(),
        })
    }
}

#[derive(Debug)]
pub struct CloudWatchMetricsSink {
    aws: AwsClient,
    namespace: String,
}

/// One data point.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub time: String,
    pub dimensions: Vec<(&'static str, String)>,
}

/// The data points of a metrics record.
pub fn datums(record: &Value) -> Vec<Datum> {
    let Some(metrics) = record["metrics"].as_array() else {
        return Vec::new();
    };
    metrics
        .iter()
        .filter_map(|metric| {
            let mut dimensions = vec![
                ("Tenant", text(record, "tenant").to_owned()),
                ("Cluster", text(record, "cluster").to_owned()),
                ("Node", text(record, "node").to_owned()),
            ];
            let mount = text(metric, "mount");
            if !mount.is_empty() {
                dimensions.push(("Mount", mount.to_owned()));
            }
            Some(Datum {
                name: text(metric, "name").to_owned(),
                value: metric["value"].as_f64().filter(|value| value.is_finite())?,
                unit: match text(metric, "unit") {
                    "" => "None".to_owned(),
                    unit => unit.to_owned(),
                },
                time: text(record, "time").to_owned(),
                dimensions,
            })
        })
        .collect()
}

/// The form body of one `PutMetricData` call.
pub fn form(namespace: &str, datums: &[Datum]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").unwrap_or_else(|_| unreachable!());
    {
        let mut pairs = url.query_pairs_mut();
        pairs.append_pair("Action", "PutMetricData");
        pairs.append_pair("Version", "2010-08-01");
        pairs.append_pair("Namespace", namespace);
        for (index, datum) in datums.iter().enumerate() {
            let member = format!("MetricData.member.{}", index + 1);
            pairs.append_pair(&format!("{member}.MetricName"), &datum.name);
            pairs.append_pair(&format!("{member}.Value"), &datum.value.to_string());
            pairs.append_pair(&format!("{member}.Unit"), &datum.unit);
            if !datum.time.is_empty() {
                pairs.append_pair(&format!("{member}.Timestamp"), &datum.time);
            }
            for (dimension_index, (name, value)) in datum.dimensions.iter().enumerate() {
                let dimension = format!("{member}.Dimensions.member.{}", dimension_index + 1);
                pairs.append_pair(&format!("{dimension}.Name"), name);
                pairs.append_pair(&format!("{dimension}.Value"), value);
            }
        }
    }
    url.query().unwrap_or_default().to_owned()
}

impl CloudWatchMetricsSink {
    /// Sends the data points of `records` in batches within the limits.
    pub async fn put(&mut self, records: &[Value]) -> Result<(), DeliveryError> {
        let all: Vec<Datum> = records.iter().flat_map(datums).collect();
        for batch in all.chunks(MAX_BATCH_DATUMS) {
            let body = form(&self.namespace, batch);
            let headers = [(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )];
            let what = "cloudwatch PutMetricData";
            let response = self.aws.post(what, &headers, body.into_bytes()).await?;
            match http::check(what, response).await {
                Ok(_) => {}
                // CloudWatch throttles with 400 `Throttling`.
                Err(DeliveryError::Permanent(reason)) if reason.contains("Throttling") => {
                    return Err(DeliveryError::Throttled {
                        retry_after: Duration::from_secs(1),
                        reason,
                    });
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

impl Sink for CloudWatchMetricsSink {
    async fn deliver(&mut self, envelope: &Value) -> Result<(), DeliveryError> {
        self.put(std::slice::from_ref(envelope)).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_record_becomes_data_points_with_dimensions() {
        let record = json!({
            "source": "metrics", "tenant": "acme", "cluster": "db", "node": "n1",
            "time": "2024-07-01T12:00:00.000Z",
            "metrics": [
                {"name": "CoreLoad", "value": 1.5, "unit": "None"},
                {"name": "DiskUsedPercent", "value": 81.0, "unit": "Percent", "mount": "/data"},
            ],
        });
        let datums = datums(&record);
        assert_eq!(datums.len(), 2);
        assert_eq!(
            datums[1].dimensions.last(),
            Some(&("Mount", "/data".to_owned()))
        );
        let body = form("Hostwatch", &datums);
        insta::assert_snapshot!("put_metric_data_form", body.replace('&', "\n"));
    }
}
