//! `es_shard_headroom` (seed 001): the shards an Elasticsearch cluster can still allocate
//! before `cluster.max_shards_per_node` stops it: max_shards_per_node × non-frozen data
//! nodes − Σ over open indices of primaries × (1 + replicas) (not `active_shards`:
//! unassigned copies count toward the limit too). Opens a warning under 500, closes over
//! it; one issue per cluster, whichever agent reported. Shard counts change slowly: it is
//! evaluated every 12 h, and every 30 min while open so that the recovery is seen soon
//! (`evaluate_every`, `evaluate_every_while_open`).

use std::time::Duration;

use super::threshold::{ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::{EsReading, EsResult, Reading};

#[derive(Debug)]
pub struct EsShardHeadroom;

impl ThresholdRule for EsShardHeadroom {
    const NAME: &'static str = "es_shard_headroom";
    const REMEDY: &'static str = "raise cluster.max_shards_per_node, add data nodes, or reduce \
        the shards: delete, shrink or merge indices (the elastic-management service helps)";
    const MAX_THRESHOLD: Option<f64> = None;

    fn defaults() -> ThresholdRuleConfig {
        ThresholdRuleConfig {
            threshold: 500.0,
            below: true,
            evaluate_every: Duration::from_secs(12 * 3600),
            evaluate_every_while_open: Duration::from_secs(30 * 60),
            ..ThresholdRuleConfig::default()
        }
    }

    fn measure<'a>(_config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        let Reading::Elasticsearch(EsReading {
            outcome: Ok(EsResult::Shards(shards)),
            ..
        }) = reading
        else {
            return;
        };
        let capacity = shards.max_shards_per_node as f64 * f64::from(shards.non_frozen_data_nodes);
        let metric = Metric {
            scope: Scope::Cluster,
            resource: None,
            value: capacity - shards.open_shards as f64,
        };
        each(metric, &|reporter| Description {
            what: format!(
                "shard headroom of Elasticsearch cluster {}/{}",
                reporter.tenant, reporter.cluster
            ),
            how: format!(
                "max_shards_per_node {} × {} non-frozen data nodes − {} shards of {} open indices",
                shards.max_shards_per_node,
                shards.non_frozen_data_nodes,
                shards.open_shards,
                shards.open_indices
            ),
            unit: Unit::Count,
        });
    }

    fn unlisted(_config: &ThresholdRuleConfig, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}
