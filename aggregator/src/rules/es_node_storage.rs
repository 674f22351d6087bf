//! `es_node_storage` (seed 001): used space of each Elasticsearch data node, on its data
//! path with the least available space (`100 − 100 × available ÷ total`, as ES's own
//! watermarks compute it). Tiers over 85 % info, 88 % warning, 90 % error on one issue per
//! ES node (resource `es_node`, per cluster whichever agent reported it); closes under
//! 85 %. The message states the cluster's effective watermarks, which the sample carries.

use super::threshold::{SeverityTier, ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::{EsReading, EsResult, Reading, ResourceKind, ResourceRef, Severity};

#[derive(Debug)]
pub struct EsNodeStorage;

impl ThresholdRule for EsNodeStorage {
    const NAME: &'static str = "es_node_storage";
    const REMEDY: &'static str = "free space on the node (delete or shrink indices, e.g. with \
        elastic-management) or add storage or data nodes, before Elasticsearch's disk \
        watermarks stop allocating shards to it";
    const MAX_THRESHOLD: Option<f64> = Some(100.0);

    fn defaults() -> ThresholdRuleConfig {
        let tier = |above, severity| SeverityTier {
            above,
            severity,
            open_for: None,
        };
        ThresholdRuleConfig {
            threshold: 85.0,
            tiers: vec![
                tier(85.0, Severity::Info),
                tier(88.0, Severity::Warning),
                tier(90.0, Severity::Error),
            ],
            ..ThresholdRuleConfig::default()
        }
    }

    fn measure<'a>(_config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        let Reading::Elasticsearch(EsReading {
            outcome: Ok(EsResult::Storage(storage)),
            ..
        }) = reading
        else {
            return;
        };
        for node in &storage.nodes {
            let metric = Metric {
                scope: Scope::Cluster,
                resource: Some(ResourceRef {
                    kind: ResourceKind::EsNode,
                    name: &node.name,
                }),
                value: node.used_percent,
            };
            each(metric, &|reporter| {
                let path = if node.path.is_empty() {
                    "its data paths".to_owned()
                } else {
                    node.path.clone()
                };
                Description {
                    what: format!(
                        "Elasticsearch node {} ({}) of {}/{}",
                        node.name, node.host, reporter.tenant, reporter.cluster
                    ),
                    how: format!(
                        "{} of {} bytes available on {path}; the cluster's disk watermarks: \
                         low {}, high {}, flood stage {}",
                        node.available_bytes,
                        node.total_bytes,
                        or_unknown(&storage.watermark_low),
                        or_unknown(&storage.watermark_high),
                        or_unknown(&storage.watermark_flood_stage),
                    ),
                    unit: Unit::Percent,
                }
            });
        }
    }

    fn unlisted(_config: &ThresholdRuleConfig, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}

fn or_unknown(watermark: &str) -> &str {
    if watermark.is_empty() {
        "not reported"
    } else {
        watermark
    }
}
