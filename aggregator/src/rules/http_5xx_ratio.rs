//! `http_5xx_ratio` (seed 001): the share of requests in the audit trail answered with a
//! 5XX status over the agent's window (15 min by default, searched every 5 min): opens
//! over 5 % (error), closes, with an announced `closed` event, when back under. One issue
//! per audit index pattern (resource `service`, per cluster whichever agent reported it).
//! A window without requests gives no verdict, nor does a partial count (a shard failed or
//! the search timed out): either could hide the errors or the requests.

use std::time::Duration;

use super::threshold::{ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::{EsAudit, EsReading, EsResult, Reading, ResourceKind, ResourceRef, Severity};

#[derive(Debug)]
pub struct Http5xxRatio;

impl ThresholdRule for Http5xxRatio {
    const NAME: &'static str = "http_5xx_ratio";
    const REMEDY: &'static str = "look at the requests answered with 5XX in the audit trail: \
        a failing service or its infrastructure (database, network, a recent deploy)";
    const MAX_THRESHOLD: Option<f64> = Some(100.0);

    fn defaults() -> ThresholdRuleConfig {
        ThresholdRuleConfig {
            threshold: 5.0,
            severity: Severity::Error,
            ..ThresholdRuleConfig::default()
        }
    }

    fn measure<'a>(_config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        let Reading::Elasticsearch(EsReading {
            outcome: Ok(EsResult::Audit(audit)),
            ..
        }) = reading
        else {
            return;
        };
        if audit.requests == 0 || audit.shards_failed > 0 || audit.timed_out {
            return;
        }
        let metric = Metric {
            scope: Scope::Cluster,
            resource: Some(ResourceRef {
                kind: ResourceKind::Service,
                name: &audit.index_pattern,
            }),
            value: 100.0 * audit.errors_5xx as f64 / audit.requests as f64,
        };
        each(metric, &|reporter| Description {
            what: format!(
                "5XX answers in audit trail {} of {}/{}",
                audit.index_pattern, reporter.tenant, reporter.cluster
            ),
            how: format!(
                "{} of {} requests in the last {}",
                audit.errors_5xx,
                audit.requests,
                humantime::format_duration(Duration::from_secs(u64::from(audit.window_seconds)))
            ),
            unit: Unit::Percent,
        });
    }

    fn unlisted(_config: &ThresholdRuleConfig, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}

/// What a partial audit count tells the operator, or `None` for a complete one. The rule
/// takes no verdict from a partial count (`measure`); the engine reports it once, as a
/// notification, when a node's audit counts turn partial.
pub fn partial_count(audit: &EsAudit) -> Option<String> {
    let why = match (audit.shards_failed, audit.timed_out) {
        (0, false) => return None,
        (0, true) => "the search timed out".to_owned(),
        (failed, false) => format!("{failed} shards failed"),
        (failed, true) => format!("{failed} shards failed and the search timed out"),
    };
    Some(format!(
        "the request count of audit trail {} is partial ({why}): {} of {} requests counted \
         answered 5XX; http_5xx_ratio takes no verdict from it",
        audit.index_pattern, audit.errors_5xx, audit.requests
    ))
}
