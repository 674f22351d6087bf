//! `es_unreachable` (seed 001: "if the alerting service fails to contact Elasticsearch an
//! error will be emitted"): a check of the `elasticsearch` probe that could not get its
//! answer (refused, connect, timeout, TLS, 401/403, 5xx, a broken answer, a body that is
//! not the expected JSON) opens an error naming the cause and the check; that check's next
//! answer closes it. One issue per check of a cluster (resource `check`, e.g.
//! `elasticsearch.audit`), whichever agent reported: a check that keeps failing while the
//! others answer (a 403 on the audit index, a search that times out) is one issue that
//! stays open, not one that every other check's answer closes and its next failure
//! reopens. A red
//! cluster is reachable (its health answered), and another non-2xx answer (a 404 for a
//! missing audit index, say) is the cluster answering: neither is a verdict here. A
//! failed check moves no other rule's window, so their last verdicts stand.

use super::threshold::{ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::{EsReading, Reading, ResourceKind, ResourceRef, Severity};

#[derive(Debug)]
pub struct EsUnreachable;

impl ThresholdRule for EsUnreachable {
    const NAME: &'static str = "es_unreachable";
    const REMEDY: &'static str = "check that Elasticsearch runs and listens at the agent's \
        [elasticsearch] url, the network and TLS between them, and the agent's credentials \
        (a 401/403 needs the monitor privilege); a 5xx names Elasticsearch's own error, e.g. \
        master_not_discovered_exception";
    const MAX_THRESHOLD: Option<f64> = Some(1.0);

    fn defaults() -> ThresholdRuleConfig {
        ThresholdRuleConfig {
            threshold: 0.5,
            severity: Severity::Error,
            ..ThresholdRuleConfig::default()
        }
    }

    fn measure<'a>(_config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        let Reading::Elasticsearch(EsReading {
            check,
            url,
            outcome,
        }) = reading
        else {
            return;
        };
        let value = match outcome {
            Ok(_) => REACHED,
            Err(error) if UNREACHABLE.contains(&error.kind) => UNREACHABLE_VALUE,
            // The cluster answered, if not as asked: no verdict.
            Err(_) => return,
        };
        let metric = Metric {
            scope: Scope::Cluster,
            resource: Some(ResourceRef {
                kind: ResourceKind::Check,
                name: check.probe_name(),
            }),
            value,
        };
        each(metric, &|reporter| {
            let how = match outcome {
                Ok(_) => format!("{} answered", check.probe_name()),
                Err(error) => {
                    let status = if error.http_status == 0 {
                        String::new()
                    } else {
                        format!(" (HTTP {})", error.http_status)
                    };
                    format!(
                        "{} failed: {}{status} on {}: {}",
                        check.probe_name(),
                        error.kind,
                        error.path,
                        error.detail
                    )
                }
            };
            Description {
                what: format!(
                    "Elasticsearch at {url} of {}/{}, from {}",
                    reporter.tenant, reporter.cluster, reporter.node
                ),
                how,
                unit: Unit::Reachability,
            }
        });
    }

    fn unlisted(_config: &ThresholdRuleConfig, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}

const REACHED: f64 = 0.0;
const UNREACHABLE_VALUE: f64 = 1.0;

/// The causes that mean the cluster could not be reached or did not answer as a cluster
/// does (`model::EsError::kind`).
const UNREACHABLE: [&str; 9] = [
    "refused",
    "connect",
    "timeout",
    "tls",
    "auth",
    "server",
    "protocol",
    "unexpected_body",
    "unknown",
];
