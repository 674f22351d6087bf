//! `es_docs_per_shard` (seed 001): documents in each primary shard (`docs.count +
//! docs.deleted`, what counts toward Lucene's limit of 2,147,483,519), warning over
//! 1,800,000,000 and error over 2,000,000,000, one issue per shard (resource `shard`,
//! `index/number`, per cluster whichever agent reported it). The agent lists only the
//! shards over its floor: a shard a complete listing leaves out has at most the floor's
//! documents, so its issue closes (`unlisted`).

use super::threshold::{SeverityTier, ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::{EsReading, EsResult, NodeKey, Reading, ResourceKind, ResourceRef, Severity};

#[derive(Debug)]
pub struct EsDocsPerShard;

impl ThresholdRule for EsDocsPerShard {
    const NAME: &'static str = "es_docs_per_shard";
    const REMEDY: &'static str = "reindex the index into several (or split it) so that each \
        shard holds fewer documents, or delete data the timed clean-up missed; a shard \
        cannot hold more than 2,147,483,519 documents";
    const MAX_THRESHOLD: Option<f64> = None;

    fn defaults() -> ThresholdRuleConfig {
        let tier = |above, severity| SeverityTier {
            above,
            severity,
            open_for: None,
        };
        ThresholdRuleConfig {
            threshold: 1_800_000_000.0,
            tiers: vec![
                tier(1_800_000_000.0, Severity::Warning),
                tier(2_000_000_000.0, Severity::Error),
            ],
            ..ThresholdRuleConfig::default()
        }
    }

    fn measure<'a>(_config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        let Reading::Elasticsearch(EsReading {
            outcome: Ok(EsResult::Docs(docs)),
            ..
        }) = reading
        else {
            return;
        };
        for shard in &docs.shards {
            let metric = Metric {
                scope: Scope::Cluster,
                resource: Some(ResourceRef {
                    kind: ResourceKind::Shard,
                    name: &shard.name,
                }),
                value: shard.docs as f64,
            };
            each(metric, &|reporter| Description {
                what: what(&shard.name, reporter),
                how: format!(
                    "{} documents and {} deleted ones",
                    shard.docs_count, shard.docs_deleted
                ),
                unit: Unit::Count,
            });
        }
    }

    /// A listing not cut short says every shard it leaves out holds at most the floor:
    /// under the threshold when the agent's floor is (otherwise it proves nothing).
    fn unlisted(config: &ThresholdRuleConfig, reading: &Reading) -> Option<Unlisted> {
        let Reading::Elasticsearch(EsReading {
            outcome: Ok(EsResult::Docs(docs)),
            ..
        }) = reading
        else {
            return None;
        };
        let floor = docs.floor as f64;
        (docs.shards_omitted == 0 && floor < config.threshold).then_some(Unlisted {
            scope: Scope::Cluster,
            kind: ResourceKind::Shard,
            value: floor,
            describe: |name, reporter, floor| Description {
                what: what(name, reporter),
                how: format!("not listed by the agent: at most its floor of {floor:.0} documents"),
                unit: Unit::Count,
            },
        })
    }
}

fn what(shard: &str, reporter: &NodeKey) -> String {
    format!(
        "documents in primary shard {shard} of {}/{}",
        reporter.tenant, reporter.cluster
    )
}
