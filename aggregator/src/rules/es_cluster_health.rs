//! `es_cluster_health` (seed 001): the cluster's health status from `GET
//! /_cluster/health`, one issue per cluster (whichever agent reported it). Yellow (a
//! replica unassigned) held 5 min opens a warning; red (a primary unassigned: data
//! unavailable) held 1 min opens an error, or escalates the open warning (one issue); red
//! back to yellow steps down to warning; green closes. A 408 with `timed_out` still
//! carries a valid status and counts.
//!
//! Measured as 0 green, 1 yellow, 2 red against tiers over 0.5 (warning) and 1.5
//! (error), each with its own `open_for` (`SeverityTier::open_for`).

use std::time::Duration;

use super::threshold::{SeverityTier, ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::{EsReading, EsResult, Reading, Severity};

#[derive(Debug)]
pub struct EsClusterHealth;

impl ThresholdRule for EsClusterHealth {
    const NAME: &'static str = "es_cluster_health";
    const REMEDY: &'static str = "find the unassigned shards and why (GET \
        /_cluster/allocation/explain): yellow misses replicas, red misses primaries (data \
        unavailable); bring back the lost nodes, free disk under the watermarks, or fix \
        the allocation settings";
    const MAX_THRESHOLD: Option<f64> = Some(RED);

    fn defaults() -> ThresholdRuleConfig {
        ThresholdRuleConfig {
            threshold: YELLOW - 0.5,
            open_for: Duration::from_secs(5 * 60),
            tiers: vec![
                SeverityTier {
                    above: YELLOW - 0.5,
                    severity: Severity::Warning,
                    open_for: Some(Duration::from_secs(5 * 60)),
                },
                SeverityTier {
                    above: RED - 0.5,
                    severity: Severity::Error,
                    open_for: Some(Duration::from_secs(60)),
                },
            ],
            ..ThresholdRuleConfig::default()
        }
    }

    fn measure<'a>(_config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        let Reading::Elasticsearch(EsReading {
            outcome: Ok(EsResult::Health(health)),
            ..
        }) = reading
        else {
            return;
        };
        let value = match health.status.as_str() {
            "green" => GREEN,
            "yellow" => YELLOW,
            "red" => RED,
            // Validation admits only the three.
            _ => return,
        };
        let metric = Metric {
            scope: Scope::Cluster,
            resource: None,
            value,
        };
        each(metric, &|reporter| Description {
            what: format!(
                "health of Elasticsearch cluster {} ({}/{})",
                health.cluster_name, reporter.tenant, reporter.cluster
            ),
            how: format!(
                "status {}{}: {} nodes, {} data nodes, {} unassigned shards",
                health.status,
                if health.timed_out {
                    " (the health request timed out waiting: HTTP 408)"
                } else {
                    ""
                },
                health.number_of_nodes,
                health.number_of_data_nodes,
                health.unassigned_shards
            ),
            unit: Unit::Status,
        });
    }

    fn unlisted(_config: &ThresholdRuleConfig, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}

const GREEN: f64 = 0.0;
const YELLOW: f64 = 1.0;
const RED: f64 = 2.0;
