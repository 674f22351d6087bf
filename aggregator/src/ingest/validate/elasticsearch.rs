//! Validation of the `elasticsearch` probe's samples (seed 001): a check's result with an
//! impossible value (a negative count, more available than total bytes, a percentage
//! outside 0..=100, NaN) is rejected with a reason naming the field, as host samples are;
//! a failed check is kept, with its classified cause, for `es_unreachable`.

use proto::v1 as wire;
use wire::elasticsearch_sample::Result as WireResult;

use super::{Rejection, percent, size};
use crate::model::{
    EsAudit, EsCheck, EsDataNode, EsDocs, EsError, EsHealth, EsReading, EsResult, EsShardDocs,
    EsShards, EsStorage,
};

/// Validates one `ElasticsearchSample`.
pub(super) fn sample(es: wire::ElasticsearchSample) -> Result<EsReading, Rejection> {
    let check = match wire::ElasticsearchCheck::try_from(es.check) {
        Ok(wire::ElasticsearchCheck::Health) => EsCheck::Health,
        Ok(wire::ElasticsearchCheck::Storage) => EsCheck::Storage,
        Ok(wire::ElasticsearchCheck::Shards) => EsCheck::Shards,
        Ok(wire::ElasticsearchCheck::Docs) => EsCheck::Docs,
        Ok(wire::ElasticsearchCheck::Audit) => EsCheck::Audit,
        Ok(wire::ElasticsearchCheck::Unspecified) | Err(_) => {
            return Err(invalid(format!(
                "elasticsearch.check: {} is not a known check",
                es.check
            )));
        }
    };
    let outcome = match (es.error, es.result) {
        (Some(error), None) => Err(self::error(error)),
        (None, Some(result)) => Ok(self::result(check, result)?),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "elasticsearch: both error and result are set".into(),
            ));
        }
        (None, None) => {
            return Err(invalid(
                "elasticsearch: neither error nor result is set".into(),
            ));
        }
    };
    Ok(EsReading {
        check,
        url: es.url,
        outcome,
    })
}

fn invalid(detail: String) -> Rejection {
    Rejection::new("invalid_field", detail)
}

fn error(error: wire::ElasticsearchError) -> EsError {
    use wire::ElasticsearchErrorKind as Kind;
    let kind = match Kind::try_from(error.kind) {
        Ok(Kind::Refused) => "refused",
        Ok(Kind::Connect) => "connect",
        Ok(Kind::Timeout) => "timeout",
        Ok(Kind::Tls) => "tls",
        Ok(Kind::Auth) => "auth",
        Ok(Kind::Server) => "server",
        Ok(Kind::Http) => "http",
        Ok(Kind::Protocol) => "protocol",
        Ok(Kind::UnexpectedBody) => "unexpected_body",
        // A newer agent's class: still a failure to reach the cluster.
        Ok(Kind::Unspecified) | Err(_) => "unknown",
    };
    EsError {
        kind,
        path: error.path,
        http_status: error.http_status,
        es_error_type: error.es_error_type,
        detail: error.detail,
    }
}

fn result(check: EsCheck, result: WireResult) -> Result<EsResult, Rejection> {
    let result = match (check, result) {
        (EsCheck::Health, WireResult::Health(health)) => EsResult::Health(self::health(health)?),
        (EsCheck::Storage, WireResult::Storage(storage)) => {
            EsResult::Storage(self::storage(storage)?)
        }
        (EsCheck::Shards, WireResult::Shards(shards)) => EsResult::Shards(self::shards(shards)?),
        (EsCheck::Docs, WireResult::Docs(docs)) => EsResult::Docs(self::docs(docs)?),
        (EsCheck::Audit, WireResult::Audit(audit)) => EsResult::Audit(self::audit(audit)?),
        (check, _) => {
            return Err(invalid(format!(
                "elasticsearch.result: not the result of the {} check",
                check.probe_name()
            )));
        }
    };
    Ok(result)
}

fn health(health: wire::ElasticsearchHealth) -> Result<EsHealth, Rejection> {
    if !matches!(health.status.as_str(), "green" | "yellow" | "red") {
        return Err(invalid(format!(
            "elasticsearch.health.status: {:?} is not green, yellow or red",
            health.status
        )));
    }
    Ok(EsHealth {
        cluster_name: health.cluster_name,
        status: health.status,
        timed_out: health.timed_out,
        number_of_nodes: health.number_of_nodes,
        number_of_data_nodes: health.number_of_data_nodes,
        unassigned_shards: health.unassigned_shards,
    })
}

fn storage(storage: wire::ElasticsearchStorage) -> Result<EsStorage, Rejection> {
    let mut nodes = Vec::with_capacity(storage.nodes.len());
    for (index, node) in storage.nodes.into_iter().enumerate() {
        let field = |name: &str| format!("elasticsearch.storage.nodes[{index}].{name}");
        let total_bytes = size(&field("total_bytes"), node.total_bytes)?;
        let available_bytes = size(&field("available_bytes"), node.available_bytes)?;
        if available_bytes > total_bytes {
            return Err(invalid(format!(
                "{}: {available_bytes} is more than total_bytes {total_bytes}",
                field("available_bytes")
            )));
        }
        let used_percent = percent(&field("used_percent"), node.used_percent)?;
        if node.name.is_empty() {
            return Err(invalid(format!("{}: must not be empty", field("name"))));
        }
        nodes.push(EsDataNode {
            id: node.id,
            name: node.name,
            host: node.host,
            path: node.path,
            total_bytes,
            available_bytes,
            used_percent,
        });
    }
    Ok(EsStorage {
        nodes,
        watermark_low: storage.watermark_low,
        watermark_high: storage.watermark_high,
        watermark_flood_stage: storage.watermark_flood_stage,
    })
}

fn shards(shards: wire::ElasticsearchShardHeadroom) -> Result<EsShards, Rejection> {
    Ok(EsShards {
        max_shards_per_node: size(
            &"elasticsearch.shards.max_shards_per_node",
            shards.max_shards_per_node,
        )?,
        non_frozen_data_nodes: shards.non_frozen_data_nodes,
        open_shards: size(&"elasticsearch.shards.open_shards", shards.open_shards)?,
        open_indices: shards.open_indices,
    })
}

fn docs(docs: wire::ElasticsearchDocs) -> Result<EsDocs, Rejection> {
    let mut shards = Vec::with_capacity(docs.shards.len());
    for (index, shard) in docs.shards.into_iter().enumerate() {
        let field = |name: &str| format!("elasticsearch.docs.shards[{index}].{name}");
        if shard.index.is_empty() {
            return Err(invalid(format!("{}: must not be empty", field("index"))));
        }
        shards.push(EsShardDocs {
            name: format!("{}/{}", shard.index, shard.shard),
            docs: size(&field("docs"), shard.docs)?,
            docs_count: size(&field("docs_count"), shard.docs_count)?,
            docs_deleted: size(&field("docs_deleted"), shard.docs_deleted)?,
        });
    }
    Ok(EsDocs {
        floor: size(&"elasticsearch.docs.floor", docs.floor)?,
        shards,
        primaries_counted: docs.primaries_counted,
        shards_omitted: docs.shards_omitted,
        max_docs: size(&"elasticsearch.docs.max_docs", docs.max_docs)?,
    })
}

fn audit(audit: wire::ElasticsearchAudit) -> Result<EsAudit, Rejection> {
    let requests = size(&"elasticsearch.audit.requests", audit.requests)?;
    let errors_5xx = size(&"elasticsearch.audit.errors_5xx", audit.errors_5xx)?;
    if errors_5xx > requests {
        return Err(invalid(format!(
            "elasticsearch.audit.errors_5xx: {errors_5xx} is more than requests {requests}"
        )));
    }
    if audit.index_pattern.is_empty() {
        return Err(invalid(
            "elasticsearch.audit.index_pattern: must not be empty".into(),
        ));
    }
    Ok(EsAudit {
        index_pattern: audit.index_pattern,
        window_seconds: audit.window_seconds,
        requests,
        errors_5xx,
        shards_failed: audit.shards_failed,
        timed_out: audit.timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage_sample(total: i64, available: i64, used_percent: f64) -> wire::ElasticsearchSample {
        wire::ElasticsearchSample {
            check: wire::ElasticsearchCheck::Storage as i32,
            url: "http://127.0.0.1:9200".into(),
            error: None,
            result: Some(WireResult::Storage(wire::ElasticsearchStorage {
                nodes: vec![wire::ElasticsearchDataNode {
                    id: "abc".into(),
                    name: "es-1".into(),
                    host: "10.0.0.1".into(),
                    path: "/var/lib/elasticsearch".into(),
                    total_bytes: total,
                    available_bytes: available,
                    used_percent,
                }],
                watermark_low: "85%".into(),
                watermark_high: "90%".into(),
                watermark_flood_stage: "95%".into(),
            })),
        }
    }

    fn audit_sample(requests: i64, errors_5xx: i64) -> wire::ElasticsearchSample {
        wire::ElasticsearchSample {
            check: wire::ElasticsearchCheck::Audit as i32,
            url: String::new(),
            error: None,
            result: Some(WireResult::Audit(wire::ElasticsearchAudit {
                index_pattern: "audit-*".into(),
                window_seconds: 900,
                requests,
                errors_5xx,
                shards_failed: 0,
                timed_out: false,
            })),
        }
    }

    #[test]
    fn a_good_storage_sample_passes() {
        let reading = sample(storage_sample(1000, 100, 90.0)).unwrap();
        let Ok(EsResult::Storage(storage)) = reading.outcome else {
            panic!("not a storage result: {reading:?}");
        };
        assert_eq!(storage.nodes[0].used_percent, 90.0);
        assert_eq!(storage.watermark_high, "90%");
    }

    #[test]
    fn impossible_storage_values_are_rejected_naming_the_field() {
        let rejected = sample(storage_sample(1000, 1001, 0.0)).unwrap_err();
        assert_eq!(rejected.reason, "invalid_field");
        assert_eq!(
            rejected.detail,
            "elasticsearch.storage.nodes[0].available_bytes: 1001 is more than total_bytes 1000"
        );
        let rejected = sample(storage_sample(-1, 0, 0.0)).unwrap_err();
        assert_eq!(rejected.reason, "negative_size");
        let rejected = sample(storage_sample(1000, 100, 101.0)).unwrap_err();
        assert_eq!(rejected.reason, "percent_out_of_range");
        let rejected = sample(storage_sample(1000, 100, f64::NAN)).unwrap_err();
        assert_eq!(rejected.reason, "not_finite");
        assert_eq!(
            rejected.detail,
            "elasticsearch.storage.nodes[0].used_percent: NaN is not a finite number"
        );
    }

    #[test]
    fn negative_counts_and_more_errors_than_requests_are_rejected() {
        assert_eq!(
            sample(audit_sample(-5, 0)).unwrap_err().reason,
            "negative_size"
        );
        let rejected = sample(audit_sample(10, 11)).unwrap_err();
        assert_eq!(
            rejected.detail,
            "elasticsearch.audit.errors_5xx: 11 is more than requests 10"
        );
        assert!(sample(audit_sample(0, 0)).is_ok(), "no traffic is valid");
    }

    #[test]
    fn a_failed_check_is_kept_with_its_cause() {
        let failed = wire::ElasticsearchSample {
            check: wire::ElasticsearchCheck::Health as i32,
            url: "http://127.0.0.1:9200".into(),
            error: Some(wire::ElasticsearchError {
                kind: wire::ElasticsearchErrorKind::Server as i32,
                path: "/_cluster/health".into(),
                http_status: 503,
                es_error_type: "master_not_discovered_exception".into(),
                detail: "HTTP 503".into(),
            }),
            result: None,
        };
        let reading = sample(failed).unwrap();
        let Err(error) = reading.outcome else {
            panic!("not a failure: {reading:?}");
        };
        assert_eq!((error.kind, error.http_status), ("server", 503));
    }

    #[test]
    fn a_result_of_another_check_or_none_at_all_is_rejected() {
        let mut mismatched = audit_sample(1, 0);
        mismatched.check = wire::ElasticsearchCheck::Health as i32;
        assert_eq!(
            sample(mismatched).unwrap_err().detail,
            "elasticsearch.result: not the result of the elasticsearch.health check"
        );
        let mut empty = audit_sample(1, 0);
        empty.result = None;
        assert_eq!(sample(empty).unwrap_err().reason, "invalid_field");
        let mut unknown = audit_sample(1, 0);
        unknown.check = 0;
        assert_eq!(sample(unknown).unwrap_err().reason, "invalid_field");
    }

    #[test]
    fn a_health_status_other_than_the_three_is_rejected() {
        let health = wire::ElasticsearchSample {
            check: wire::ElasticsearchCheck::Health as i32,
            url: String::new(),
            error: None,
            result: Some(WireResult::Health(wire::ElasticsearchHealth {
                status: "purple".into(),
                ..Default::default()
            })),
        };
        assert_eq!(
            sample(health).unwrap_err().detail,
            "elasticsearch.health.status: \"purple\" is not green, yellow or red"
        );
    }
}
