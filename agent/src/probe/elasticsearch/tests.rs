//! The parsers against every real body in `agent/tests/fixtures/elasticsearch/` (ES 1.7, 7,
//! 8 and OpenSearch shapes, see its SOURCES.txt) and the variants the fixtures lack.

use super::parse;
use super::*;

macro_rules! fixture {
    ($name:literal) => {{
        let bytes: &[u8] = include_bytes!(concat!("../../../tests/fixtures/elasticsearch/", $name));
        bytes
    }};
}

#[test]
fn every_health_fixture_parses() {
    for (body, cluster, status, nodes, unassigned) in [
        (
            fixture!("elasticsearch_exporter__fixtures__clusterhealth_1.7.6.json"),
            "elasticsearch",
            "yellow",
            1,
            5,
        ),
        (
            fixture!("elasticsearch_exporter__fixtures__clusterhealth_7.13.1.json"),
            "elasticsearch",
            "yellow",
            1,
            30,
        ),
        (
            fixture!("es-spec__cluster_health__ClusterHealthResponseExample1.json"),
            "testcluster",
            "yellow",
            1,
            1,
        ),
        (
            fixture!("opensearch-docs__cluster_health__green.json"),
            "opensearch-cluster",
            "green",
            2,
            0,
        ),
    ] {
        let health = parse::health(body).unwrap();
        assert_eq!(
            (
                health.cluster_name.as_str(),
                health.status.as_str(),
                health.timed_out,
                health.number_of_nodes,
                health.unassigned_shards
            ),
            (cluster, status, false, nodes, unassigned)
        );
    }
}

#[test]
fn a_health_body_without_a_known_status_is_unexpected() {
    assert!(parse::health(br#"{"cluster_name":"x"}"#).is_err());
    let err = parse::health(br#"{"status":"purple"}"#).unwrap_err();
    assert!(err.contains("purple"), "{err}");
    let err = parse::health(b"<html>").unwrap_err();
    assert!(err.starts_with("invalid JSON"), "{err}");
}

#[test]
fn nodes_stats_fixture_gives_the_least_available_data_path() {
    let nodes = parse::data_nodes(fixture!(
        "elasticsearch_exporter__fixtures__nodestats_7.13.1.json"
    ))
    .unwrap();
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!(node.id, "byoDEtBRSRGZyMKaIpmhCQ");
    assert_eq!(node.name, "aaf5a8a0bceb");
    assert_eq!(node.host, "172.17.0.2");
    assert_eq!(node.path, "/usr/share/elasticsearch/data/nodes/0");
    assert_eq!(node.total_bytes, 476_630_163_456);
    assert_eq!(node.available_bytes, 63_425_642_496);
    let expected = 100.0 - 100.0 * 63_425_642_496.0 / 476_630_163_456.0;
    assert!(
        (node.used_percent - expected).abs() < 1e-9,
        "{}",
        node.used_percent
    );
}

#[test]
fn storage_takes_the_path_with_least_available_and_skips_non_data_nodes() {
    let body = br#"{"nodes": {
        "n1": {"name": "es-1", "roles": ["data_hot", "ingest"], "fs": {
            "total": {"total_in_bytes": 300, "available_in_bytes": 150},
            "data": [
                {"path": "/a", "total_in_bytes": 100, "available_in_bytes": 80},
                {"path": "/b", "total_in_bytes": 200, "available_in_bytes": 10}
            ]}},
        "m1": {"name": "master-1", "roles": ["master"], "fs": {
            "total": {"total_in_bytes": 100, "available_in_bytes": 1}}},
        "o1": {"name": "old-1", "fs": {
            "total": {"total_in_bytes": 1000, "available_in_bytes": 100}}}
    }}"#;
    let nodes = parse::data_nodes(body).unwrap();
    let seen: Vec<(&str, &str, f64)> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.path.as_str(), n.used_percent))
        .collect();
    // /b has less available space though /a is fuller in share: ES's watermarks use /b.
    assert_eq!(seen, [("es-1", "/b", 95.0), ("old-1", "", 90.0)]);
}

#[test]
fn used_percent_is_as_elasticsearch_computes_it() {
    assert!((parse::used_percent(1000, 150) - 85.0).abs() < 1e-9);
    assert_eq!(parse::used_percent(0, 0), 0.0);
    assert_eq!(parse::used_percent(100, 200), 0.0);
}

#[test]
fn settings_fixtures_give_the_effective_watermarks_and_shard_limit() {
    let es8 = parse::settings(fixture!(
        "elasticsearch_exporter__fixtures__settings-8.9.1-watermark.json"
    ))
    .unwrap();
    // Persistent overrides the defaults (85 %, 90 %, 95 %).
    assert_eq!(es8.get(parse::WATERMARK_LOW), Some("88%"));
    assert_eq!(es8.get(parse::WATERMARK_HIGH), Some("92%"));
    assert_eq!(es8.get(parse::WATERMARK_FLOOD_STAGE), Some("96%"));
    assert_eq!(es8.max_shards_per_node(), Ok(1000));

    let es7 = parse::settings(fixture!(
        "elasticsearch_exporter__fixtures__settings-persistent-clustermaxshardspernode-7.17.5.json"
    ))
    .unwrap();
    assert_eq!(es7.get(parse::WATERMARK_LOW), Some("50mb"));
    assert_eq!(es7.get(parse::WATERMARK_FLOOD_STAGE), Some("100b"));
    assert_eq!(es7.max_shards_per_node(), Ok(1000));

    let flat = parse::settings(fixture!(
        "third-party-capture__cluster_settings_flat_settings__es8.json"
    ))
    .unwrap();
    assert_eq!(flat.max_shards_per_node(), Ok(5000));
    // Captured without include_defaults: no watermark is said.
    assert_eq!(flat.get(parse::WATERMARK_LOW), None);
}

#[test]
fn transient_settings_win_and_an_absent_shard_limit_is_the_default() {
    let body = br#"{"defaults": {"cluster.routing.allocation.disk.watermark.low": "85%"},
                    "persistent": {"cluster.routing.allocation.disk.watermark.low": "80%"},
                    "transient": {"cluster": {"routing": {"allocation": {"disk": {"watermark": {"low": "75%"}}}}}}}"#;
    let settings = parse::settings(body).unwrap();
    assert_eq!(settings.get(parse::WATERMARK_LOW), Some("75%"));
    assert_eq!(settings.max_shards_per_node(), Ok(1000));
    let bad =
        parse::settings(br#"{"persistent": {"cluster.max_shards_per_node": "lots"}}"#).unwrap();
    assert!(bad.max_shards_per_node().unwrap_err().contains("lots"));
}

#[test]
fn non_frozen_data_nodes_by_role_letters() {
    let body = br#"[
        {"id": "a", "node.role": "cdfhilmrstw"},
        {"id": "b", "node.role": "f"},
        {"id": "c", "node.role": "m"},
        {"id": "d", "node.role": "-"},
        {"id": "e", "node.role": "dimr"},
        {"id": "f", "node.role": null}
    ]"#;
    assert_eq!(parse::non_frozen_data_nodes(body), Ok(2));
}

#[test]
fn open_shards_count_every_copy_of_open_indices() {
    let body = br#"[
        {"index": "logs-1", "status": "open", "pri": "5", "rep": "1"},
        {"index": ".hidden", "status": "open", "pri": "1", "rep": "2"},
        {"index": "old", "status": "close", "pri": null, "rep": null}
    ]"#;
    assert_eq!(parse::open_shards(body), Ok((13, 2)));
    let err = parse::open_shards(br#"[{"index": "x", "status": "open", "pri": null, "rep": "1"}]"#)
        .unwrap_err();
    assert!(err.contains("x: pri is null"), "{err}");
}

#[test]
fn the_shards_stats_fixture_counts_primaries() {
    let body = fixture!("elasticsearch_exporter__fixtures__indices_shards_7.17.3.json");
    let docs = parse::docs(body, 2, 10).unwrap();
    assert_eq!(docs.primaries_counted, 4);
    assert_eq!(docs.max_docs, 37);
    let above: Vec<(&str, u32, i64)> = docs
        .shards
        .iter()
        .map(|s| (s.index.as_str(), s.shard, s.docs))
        .collect();
    assert_eq!(above, [(".geoip_databases", 0, 37), ("foo_2", 0, 3)]);
    assert_eq!(docs.floor, 2);
}

#[test]
fn docs_add_deleted_skip_replicas_and_null_docs_and_are_bounded() {
    let body = br#"{"indices": {
        "big": {"shards": {
            "0": [{"routing": {"primary": true}, "docs": {"count": 1900000000, "deleted": 150000000}},
                  {"routing": {"primary": false}, "docs": {"count": 2100000000, "deleted": 0}}],
            "1": [{"routing": {"primary": true}, "docs": null}],
            "2": [{"routing": {"primary": true}, "docs": {"count": 1850000000, "deleted": 0}}]
        }},
        "other": {"shards": {
            "0": [{"routing": {"primary": true}, "docs": {"count": 1800000001, "deleted": 0}}],
            "1": [{"routing": {"primary": true}}]
        }}
    }}"#;
    let docs = parse::docs(body, 1_800_000_000, 2).unwrap();
    let above: Vec<(&str, u32, i64, i64)> = docs
        .shards
        .iter()
        .map(|s| (s.index.as_str(), s.shard, s.docs, s.docs_deleted))
        .collect();
    assert_eq!(
        above,
        [
            ("big", 0, 2_050_000_000, 150_000_000),
            ("big", 2, 1_850_000_000, 0)
        ]
    );
    assert_eq!(docs.shards_omitted, 1);
    assert_eq!(docs.primaries_counted, 3);
    assert_eq!(docs.max_docs, 2_050_000_000);
}

#[test]
fn the_search_fixtures_give_the_audit_counts() {
    // Verbatim but for the aggregation's name, which is the probe's own.
    let body = std::str::from_utf8(fixture!("es-docs__filter_aggregation__response.json"))
        .unwrap()
        .replace(
            "\"t_shirts\"",
            &format!("\"{}\"", parse::ERRORS_AGGREGATION),
        );
    let counts = parse::audit(body.as_bytes()).unwrap();
    assert_eq!(
        counts,
        parse::AuditCounts {
            requests: 7,
            errors_5xx: 3,
            shards_failed: 0,
            timed_out: false
        }
    );
    // A search without the aggregation but with hits is not the audit search's answer.
    let err = parse::audit(fixture!("es-spec__search__SearchResponseExample1.json")).unwrap_err();
    assert!(err.contains(parse::ERRORS_AGGREGATION), "{err}");
}

#[test]
fn audit_counts_from_old_totals_partial_answers_and_no_indices() {
    let old = br#"{"timed_out": true, "_shards": {"total": 5, "successful": 3, "failed": 2},
                   "hits": {"total": 40}, "aggregations": {"status_5xx": {"doc_count": 4}}}"#;
    assert_eq!(
        parse::audit(old),
        Ok(parse::AuditCounts {
            requests: 40,
            errors_5xx: 4,
            shards_failed: 2,
            timed_out: true
        })
    );
    let none = br#"{"timed_out": false, "_shards": {"total": 0, "successful": 0, "failed": 0},
                    "hits": {"total": {"value": 0, "relation": "eq"}}}"#;
    assert_eq!(parse::audit(none).map(|c| c.requests), Ok(0));
}

#[test]
fn error_types_from_error_answers() {
    let body = br#"{"error":{"root_cause":[{"type":"master_not_discovered_exception","reason":null}],"type":"master_not_discovered_exception","reason":null},"status":503}"#;
    assert_eq!(
        parse::error_type(body).as_deref(),
        Some("master_not_discovered_exception")
    );
    assert_eq!(
        parse::error_type(br#"{"error":"old text","status":500}"#),
        None
    );
    assert_eq!(parse::error_type(b"Unauthorized"), None);
}

#[test]
fn base64_is_rfc_4648() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("hostwatch:s3cr3t", "aG9zdHdhdGNoOnMzY3IzdA=="),
    ] {
        assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
    }
}

#[test]
fn the_audit_query_counts_the_window_and_filters_5xx() {
    let query: serde_json::Value =
        serde_json::from_slice(&audit_query("@timestamp", "http.status", 900)).unwrap();
    assert_eq!(query["size"], 0);
    assert_eq!(query["track_total_hits"], true);
    assert_eq!(query["query"]["range"]["@timestamp"]["gte"], "now-900s");
    let filter = &query["aggs"][parse::ERRORS_AGGREGATION]["filter"]["range"]["http.status"];
    assert_eq!(
        (filter["gte"].as_i64(), filter["lt"].as_i64()),
        (Some(500), Some(600))
    );
}
