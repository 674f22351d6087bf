//! The gossip probe against real HTTP(S) servers on 127.0.0.1, written here: the reference
//! EventStoreDB gossip and its variants, Elasticsearch, and every way a query fails. Then
//! the agent itself: the probe is announced in Hello and its samples reach the aggregator.
//!
//! The elasticsearch probe's checks against the stand-in Elasticsearch
//! (`tests/src/es_stand_in.rs`): the fixtures' bodies, then its faults on a timeline.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../tests/src/es_stand_in.rs"]
mod es_stand_in;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent::GossipProbe;
use agent::config::{GossipAdapter, GossipConfig};
use common::tls;
use common::{Action, Seen, config, start_agent, start_server};
use proto::v1::{GossipSample, sample};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const HEALTHY: &str = include_str!("fixtures/eventstoredb-gossip-healthy.json");

#[derive(Clone)]
enum Reply {
    Json(u16, String),
    /// Accept the request and never answer.
    Hang,
}

/// A real HTTP/1.1 server: answers each path (query ignored) as `routes` says, 404
/// otherwise; over TLS when `tls` is given.
async fn serve(
    routes: HashMap<&'static str, Reply>,
    tls: Option<tokio_rustls::rustls::ServerConfig>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Arc::new(routes);
    let acceptor = tls.map(|config| TlsAcceptor::from(Arc::new(config)));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let routes = Arc::clone(&routes);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => answer(tcp, &routes).await,
                    Some(acceptor) => {
                        // A client that rejects our certificate ends here.
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            answer(stream, &routes).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    routes: &HashMap<&'static str, Reply>,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let target = text.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let reply = routes
        .get(path)
        .cloned()
        .unwrap_or(Reply::Json(404, "{\"error\":\"no such path\"}".to_owned()));
    match reply {
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Reply::Json(status, body) => {
            let reason = match status {
                200 => "OK",
                404 => "Not Found",
                500 => "Internal Server Error",
                _ => "Other",
            };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

fn gossip_config(url: String) -> GossipConfig {
    GossipConfig {
        adapter: Some(GossipAdapter::Eventstoredb),
        url,
        timeout: Duration::from_millis(1500),
        ..GossipConfig::default()
    }
}

async fn esdb_sample(reply: Reply) -> GossipSample {
    let addr = serve(HashMap::from([("/gossip", reply)]), None).await;
    GossipProbe::new(&gossip_config(format!("http://{addr}")))
        .unwrap()
        .sample()
        .await
}

fn members(sample: &GossipSample) -> Vec<(String, String, bool)> {
    sample
        .members
        .iter()
        .map(|m| (m.instance_id.clone(), m.state.clone(), m.alive))
        .collect()
}

fn ok(status: u16, body: &str) -> Reply {
    Reply::Json(status, body.to_owned())
}

#[tokio::test]
async fn the_reference_gossip() {
    let sample = esdb_sample(ok(200, HEALTHY)).await;
    assert!(sample.ok, "{}", sample.error);
    assert_eq!(sample.adapter, "eventstoredb");
    assert_eq!(sample.error, "");
    assert_eq!(sample.members.len(), 3);
    assert_eq!(sample.leader_id, "3b3a2b5e-6a55-4c1e-9a3e-1f2d7c0e9a01");
    let first = &sample.members[0];
    assert_eq!(
        (
            first.state.as_str(),
            first.alive,
            first.endpoint.as_str(),
            first.epoch_number
        ),
        ("Leader", true, "10.0.0.11:2113", 4)
    );
    assert_eq!(sample.members[2].endpoint, "10.0.0.13:2113");
}

#[tokio::test]
async fn version_5_field_names() {
    let body = r#"{"members": [
        {"instanceId": "a", "state": "Master", "isAlive": true, "externalHttpIp": "10.0.0.1", "externalHttpPort": 2113, "internalHttpIp": "10.1.0.1", "internalHttpPort": 2112, "epochNumber": 3},
        {"instanceId": "b", "state": "Slave", "isAlive": true, "externalHttpIp": "10.0.0.2", "externalHttpPort": 2113, "epochNumber": 3},
        {"instanceId": "c", "state": "Slave", "isAlive": true, "internalHttpIp": "10.1.0.3", "internalHttpPort": 2112, "epochNumber": 3}
    ]}"#;
    let sample = esdb_sample(ok(200, body)).await;
    assert!(sample.ok, "{}", sample.error);
    let endpoints: Vec<&str> = sample.members.iter().map(|m| m.endpoint.as_str()).collect();
    assert_eq!(
        endpoints,
        ["10.0.0.1:2113", "10.0.0.2:2113", "10.1.0.3:2112"]
    );
    assert_eq!(sample.leader_id, "a");
}

#[tokio::test]
async fn a_dead_member() {
    let body = HEALTHY.replacen("\"isAlive\": true", "\"isAlive\": false", 3);
    // The third member's flag is the third occurrence: only it is dead.
    let body = body.replacen("\"isAlive\": false", "\"isAlive\": true", 2);
    let sample = esdb_sample(ok(200, &body)).await;
    assert!(sample.ok, "{}", sample.error);
    let alive: Vec<bool> = sample.members.iter().map(|m| m.alive).collect();
    assert_eq!(alive, [true, true, false]);
}

#[tokio::test]
async fn two_leaders_are_both_reported() {
    let body = HEALTHY.replacen("\"state\": \"Follower\"", "\"state\": \"Leader\"", 1);
    let sample = esdb_sample(ok(200, &body)).await;
    assert!(sample.ok, "{}", sample.error);
    let states: Vec<(String, String, bool)> = members(&sample);
    assert_eq!(
        states
            .iter()
            .filter(|(_, state, _)| state == "Leader")
            .count(),
        2,
        "{states:?}"
    );
    assert_eq!(
        sample.leader_id, "3b3a2b5e-6a55-4c1e-9a3e-1f2d7c0e9a01",
        "the first one"
    );
}

#[tokio::test]
async fn empty_members() {
    let sample = esdb_sample(ok(200, r#"{"members": [], "serverIp": "10.0.0.11"}"#)).await;
    assert!(sample.ok, "{}", sample.error);
    assert!(sample.members.is_empty());
    assert_eq!(sample.leader_id, "");
}

#[tokio::test]
async fn a_500() {
    let sample = esdb_sample(ok(500, "{}")).await;
    assert!(!sample.ok);
    assert_eq!(sample.error, "HTTP 500 Internal Server Error from /gossip");
    assert!(sample.members.is_empty());
    assert_eq!(sample.adapter, "eventstoredb");
}

#[tokio::test]
async fn invalid_json() {
    let sample = esdb_sample(ok(200, "{\"members\": [")).await;
    assert!(!sample.ok);
    assert!(
        sample.error.starts_with("invalid JSON from /gossip: "),
        "{}",
        sample.error
    );
}

#[tokio::test]
async fn a_hang_past_the_timeout() {
    let started = std::time::Instant::now();
    let sample = esdb_sample(Reply::Hang).await;
    assert!(!sample.ok);
    assert_eq!(sample.error, "timeout after 1s 500ms");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout bounds the query"
    );
}

#[tokio::test]
async fn connection_refused() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let sample = GossipProbe::new(&gossip_config(format!("http://{addr}")))
        .unwrap()
        .sample()
        .await;
    assert!(!sample.ok);
    assert_eq!(
        sample.error,
        format!("cannot connect to {addr}: connection refused")
    );
}

fn write_temp(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn a_self_signed_certificate_with_and_without_its_ca() {
    let (cert, key) = tls::self_signed();
    let addr = serve(
        HashMap::from([("/gossip", ok(200, HEALTHY))]),
        Some(tls::server_config(&cert, &key, None)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://{addr}");

    let with_ca = GossipConfig {
        ca_file: Some(write_temp(&dir, "ca.pem", &cert)),
        ..gossip_config(url.clone())
    };
    let sample = GossipProbe::new(&with_ca).unwrap().sample().await;
    assert!(sample.ok, "{}", sample.error);
    assert_eq!(sample.members.len(), 3);

    // Another CA (or the system's): the certificate is not trusted.
    let other_ca = tls::pki(dir.path());
    let wrong_ca = GossipConfig {
        ca_file: Some(other_ca.ca_file.clone()),
        ..gossip_config(url.clone())
    };
    let sample = GossipProbe::new(&wrong_ca).unwrap().sample().await;
    assert!(!sample.ok);
    assert!(
        sample.error.starts_with("TLS: invalid peer certificate"),
        "{}",
        sample.error
    );
    if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        let sample = GossipProbe::new(&gossip_config(url.clone()))
            .unwrap()
            .sample()
            .await;
        assert!(!sample.ok);
        assert!(
            sample.error.starts_with("TLS: invalid peer certificate"),
            "{}",
            sample.error
        );
    }

    let skip_verify = GossipConfig {
        insecure_skip_verify: true,
        ..gossip_config(url)
    };
    let sample = GossipProbe::new(&skip_verify).unwrap().sample().await;
    assert!(sample.ok, "{}", sample.error);
}

#[tokio::test]
async fn a_client_certificate_when_the_node_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::pki(dir.path());
    let addr = serve(
        HashMap::from([("/gossip", ok(200, HEALTHY))]),
        Some(tls::server_config(
            &pki.server_cert,
            &pki.server_key,
            Some(&pki.ca_pem),
        )),
    )
    .await;
    let base = GossipConfig {
        ca_file: Some(pki.ca_file.clone()),
        ..gossip_config(format!("https://{addr}"))
    };
    let sample = GossipProbe::new(&base).unwrap().sample().await;
    assert!(!sample.ok, "no client certificate, no answer");
    assert!(
        sample.error.starts_with("TLS: ") || sample.error.starts_with("HTTP: "),
        "{}",
        sample.error
    );

    let with_client_cert = GossipConfig {
        client_cert_file: Some(pki.client_cert_file.clone()),
        client_key_file: Some(pki.client_key_file.clone()),
        ..base
    };
    let sample = GossipProbe::new(&with_client_cert).unwrap().sample().await;
    assert!(sample.ok, "{}", sample.error);
}

#[tokio::test]
async fn a_missing_ca_file_is_a_config_error_naming_the_field() {
    let config = GossipConfig {
        ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
        ..gossip_config("https://127.0.0.1:2113".to_owned())
    };
    let err = GossipProbe::new(&config).unwrap_err().to_string();
    assert!(
        err.starts_with("config: gossip.ca_file: cannot read /nonexistent/ca.pem: "),
        "{err}"
    );
}

#[tokio::test]
async fn elasticsearch_nodes_and_health() {
    let nodes = r#"[
        {"id": "AAAA", "name": "es-1", "ip": "10.0.0.1", "http_address": "10.0.0.1:9200", "node.role": "dimr", "master": "-"},
        {"id": "BBBB", "name": "es-2", "ip": "10.0.0.2", "http_address": "10.0.0.2:9200", "node.role": "dimr", "master": "*"}
    ]"#;
    let addr = serve(
        HashMap::from([
            ("/_cat/nodes", ok(200, nodes)),
            (
                "/_cluster/health",
                ok(200, r#"{"cluster_name": "logs", "status": "red"}"#),
            ),
        ]),
        None,
    )
    .await;
    let config = GossipConfig {
        adapter: Some(GossipAdapter::Elasticsearch),
        ..gossip_config(format!("http://{addr}/"))
    };
    let sample = GossipProbe::new(&config).unwrap().sample().await;
    assert!(sample.ok, "{}", sample.error);
    assert_eq!(sample.adapter, "elasticsearch");
    assert_eq!(sample.cluster_status, "red");
    assert_eq!(sample.leader_id, "BBBB");
    assert_eq!(
        members(&sample),
        [
            ("AAAA".to_owned(), "dimr".to_owned(), true),
            ("BBBB".to_owned(), "master".to_owned(), true)
        ]
    );

    // Health unreachable: the whole view fails.
    let addr = serve(HashMap::from([("/_cat/nodes", ok(200, nodes))]), None).await;
    let config = GossipConfig {
        adapter: Some(GossipAdapter::Elasticsearch),
        ..gossip_config(format!("http://{addr}"))
    };
    let sample = GossipProbe::new(&config).unwrap().sample().await;
    assert!(!sample.ok);
    assert_eq!(sample.error, "HTTP 404 Not Found from /_cluster/health");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_announces_the_probe_and_ships_failures_too() {
    let gossip_addr = serve(HashMap::from([("/gossip", ok(200, HEALTHY))]), None).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::Ack)).await;
    let state_dir = tempfile::tempdir().unwrap();
    let mut agent_config = config(state_dir.path(), server.addr);
    agent_config.gossip = Some(GossipConfig {
        interval: Duration::from_millis(300),
        ..gossip_config(format!("http://{gossip_addr}"))
    });
    let running = start_agent(agent_config);
    let hello = server.expect_hello(1).await;
    let probes: Vec<(&str, u64)> = hello
        .probes
        .iter()
        .map(|p| (p.name.as_str(), p.interval_ms))
        .collect();
    assert_eq!(probes, [("host", 200), ("gossip", 300)]);

    let mut gossip_samples = Vec::new();
    while gossip_samples.len() < 2 {
        if let Seen::Batch { batch, .. } = server.next().await {
            for sample in batch.samples {
                if let Some(sample::Kind::Gossip(gossip)) = sample.kind {
                    gossip_samples.push(gossip);
                }
            }
        }
    }
    assert!(gossip_samples.iter().all(|g| g.ok && g.members.len() == 3));
    running.stop().await;
}

// ---- the elasticsearch probe, against the stand-in Elasticsearch ----

use agent::config::{ElasticsearchAuditConfig, ElasticsearchConfig};
use agent::probe::elasticsearch::ElasticsearchProbe;
use es_stand_in::{Reply as EsReply, StandInElasticsearch, bodies};
use proto::v1::elasticsearch_sample::Result as EsResult;
use proto::v1::{ElasticsearchCheck, ElasticsearchErrorKind, ElasticsearchSample};

const AUDIT_PATH: &str = "/audit-*/_search";

fn es_config(url: String) -> ElasticsearchConfig {
    ElasticsearchConfig {
        url,
        timeout: Duration::from_millis(1500),
        audit: ElasticsearchAuditConfig {
            index_pattern: "audit-*".to_owned(),
            ..ElasticsearchAuditConfig::default()
        },
        ..ElasticsearchConfig::default()
    }
}

/// The probe of one check, built from `config`.
fn es_probe(config: &ElasticsearchConfig, check: ElasticsearchCheck) -> ElasticsearchProbe {
    ElasticsearchProbe::from_config(config)
        .unwrap()
        .into_iter()
        .find(|probe| probe.check_kind() == check)
        .unwrap()
}

fn es_error(sample: &ElasticsearchSample) -> (ElasticsearchErrorKind, u32, &str) {
    let error = sample
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("expected an error: {sample:?}"));
    assert!(sample.result.is_none(), "{sample:?}");
    (
        error.kind(),
        error.http_status,
        error.es_error_type.as_str(),
    )
}

#[tokio::test]
async fn every_check_reads_the_fixtures_the_stand_in_serves() {
    let es = StandInElasticsearch::start(AUDIT_PATH).await.unwrap();
    let mut config = es_config(es.url());
    config.docs.floor = 2;
    let probes = ElasticsearchProbe::from_config(&config).unwrap();
    let names: Vec<&str> = probes.iter().map(agent::Probe::name).collect();
    assert_eq!(
        names,
        [
            "elasticsearch.health",
            "elasticsearch.storage",
            "elasticsearch.shards",
            "elasticsearch.docs",
            "elasticsearch.audit"
        ]
    );
    let intervals: Vec<u64> = probes
        .iter()
        .map(|probe| agent::Probe::interval(probe).as_secs())
        .collect();
    assert_eq!(intervals, [30, 30, 1800, 1800, 300]);

    let mut results = Vec::new();
    for probe in &probes {
        let sample = probe.check().await;
        assert_eq!(sample.check(), probe.check_kind());
        assert_eq!(sample.url, es.url());
        assert!(sample.error.is_none(), "{sample:?}");
        results.push(sample.result.unwrap());
    }
    let [
        EsResult::Health(health),
        EsResult::Storage(storage),
        EsResult::Shards(shards),
        EsResult::Docs(docs),
        EsResult::Audit(audit),
    ] = &results[..]
    else {
        panic!("{results:?}");
    };
    assert_eq!(
        (health.cluster_name.as_str(), health.status.as_str()),
        ("opensearch-cluster", "green")
    );
    assert_eq!(storage.nodes.len(), 1);
    assert_eq!(storage.nodes[0].name, "aaf5a8a0bceb");
    assert!((storage.nodes[0].used_percent - 86.69).abs() < 0.01);
    assert_eq!(
        (
            storage.watermark_low.as_str(),
            storage.watermark_high.as_str(),
            storage.watermark_flood_stage.as_str()
        ),
        ("88%", "92%", "96%")
    );
    // 1000 per node × 1 non-frozen data node; 1 × (1 + 1) with an unassigned replica + 1.
    assert_eq!(
        (
            shards.max_shards_per_node,
            shards.non_frozen_data_nodes,
            shards.open_shards,
            shards.open_indices
        ),
        (1000, 1, 3, 2)
    );
    assert_eq!(docs.max_docs, 37);
    assert_eq!(docs.shards.len(), 2);
    assert_eq!(
        (
            audit.index_pattern.as_str(),
            audit.window_seconds,
            audit.requests,
            audit.errors_5xx
        ),
        ("audit-*", 900, 7, 3)
    );

    let received = es.received();
    let targets: Vec<&str> = received.iter().map(|r| r.target.as_str()).collect();
    assert!(
        targets.contains(&"/_cluster/settings?include_defaults=true&flat_settings=true"),
        "{targets:?}"
    );
    let search = received
        .iter()
        .find(|r| r.target.starts_with("/audit-*/_search"))
        .unwrap();
    assert_eq!(search.method, "POST");
    let query: serde_json::Value = serde_json::from_str(&search.body).unwrap();
    assert_eq!(query["query"]["range"]["@timestamp"]["gte"], "now-900s");
    assert!(received.iter().all(|r| r.authorization.is_none()));
}

#[tokio::test]
async fn health_faults_on_a_timeline() {
    let es = StandInElasticsearch::start(AUDIT_PATH).await.unwrap();
    let mut config = es_config(es.url());
    config.timeout = Duration::from_millis(400);
    let probe = es_probe(&config, ElasticsearchCheck::Health);
    es.set(
        "/_cluster/health",
        vec![
            EsReply::ok(bodies::health("yellow")),
            EsReply::Json(503, bodies::MASTER_NOT_DISCOVERED.to_owned()),
            EsReply::Json(401, bodies::UNAUTHORIZED.to_owned()),
            EsReply::ok(bodies::GARBAGE),
            EsReply::Json(408, bodies::health_timed_out_red()),
            EsReply::Hang,
            EsReply::Json(404, "{}".to_owned()),
            EsReply::ok(bodies::HEALTH_GREEN),
        ],
    );
    let health = |sample: &ElasticsearchSample| match &sample.result {
        Some(EsResult::Health(health)) => (health.status.clone(), health.timed_out),
        other => panic!("expected health, got {other:?} ({:?})", sample.error),
    };

    assert_eq!(health(&probe.check().await), ("yellow".to_owned(), false));

    let sample = probe.check().await;
    assert_eq!(
        es_error(&sample),
        (
            ElasticsearchErrorKind::Server,
            503,
            "master_not_discovered_exception"
        )
    );
    let detail = &sample.error.as_ref().unwrap().detail;
    assert!(
        detail.contains("master_not_discovered_exception"),
        "{detail}"
    );
    assert_eq!(sample.error.as_ref().unwrap().path, "/_cluster/health");

    let sample = probe.check().await;
    assert_eq!(
        es_error(&sample),
        (ElasticsearchErrorKind::Auth, 401, "security_exception")
    );

    let sample = probe.check().await;
    assert_eq!(
        es_error(&sample),
        (ElasticsearchErrorKind::UnexpectedBody, 0, "")
    );

    // A 408 with timed_out: a valid answer, and red is not "unreachable".
    assert_eq!(health(&probe.check().await), ("red".to_owned(), true));

    let sample = probe.check().await;
    assert_eq!(es_error(&sample), (ElasticsearchErrorKind::Timeout, 0, ""));
    let detail = &sample.error.as_ref().unwrap().detail;
    assert!(detail.contains("timeout after 400ms"), "{detail}");

    let sample = probe.check().await;
    assert_eq!(es_error(&sample), (ElasticsearchErrorKind::Http, 404, ""));

    assert_eq!(health(&probe.check().await), ("green".to_owned(), false));
}

#[tokio::test]
async fn refused_then_listening_again() {
    let mut es = StandInElasticsearch::start(AUDIT_PATH).await.unwrap();
    let probe = es_probe(&es_config(es.url()), ElasticsearchCheck::Health);
    es.stop().await;
    let sample = probe.check().await;
    assert_eq!(es_error(&sample), (ElasticsearchErrorKind::Refused, 0, ""));
    let detail = &sample.error.as_ref().unwrap().detail;
    assert!(detail.contains("connection refused"), "{detail}");
    es.resume().await.unwrap();
    assert!(probe.check().await.error.is_none());
}

#[tokio::test]
async fn a_failing_check_leaves_the_others_alone() {
    let es = StandInElasticsearch::start(AUDIT_PATH).await.unwrap();
    let config = es_config(es.url());
    es.set(
        "/_nodes/stats/fs",
        vec![EsReply::Json(503, bodies::MASTER_NOT_DISCOVERED.to_owned())],
    );
    es.set("/_cluster/health", vec![EsReply::ok(bodies::health("red"))]);
    let storage = es_probe(&config, ElasticsearchCheck::Storage).check().await;
    let health = es_probe(&config, ElasticsearchCheck::Health).check().await;
    assert_eq!(storage.check(), ElasticsearchCheck::Storage);
    assert_eq!(es_error(&storage).0, ElasticsearchErrorKind::Server);
    assert_eq!(
        storage.error.as_ref().unwrap().path,
        "/_nodes/stats/fs?filter_path=nodes.*.name,nodes.*.host,nodes.*.ip,nodes.*.roles,\
         nodes.*.fs.total,nodes.*.fs.data"
    );
    assert!(
        matches!(&health.result, Some(EsResult::Health(h)) if h.status == "red"),
        "{health:?}"
    );
}

#[tokio::test]
async fn storage_docs_and_audit_on_a_timeline() {
    let es = StandInElasticsearch::start(AUDIT_PATH).await.unwrap();
    let config = es_config(es.url());
    let gib = 1 << 30;
    es.set(
        "/_nodes/stats/fs",
        vec![
            EsReply::ok(bodies::nodes_stats(&[("a", "es-a", 100 * gib, 16 * gib)])),
            EsReply::ok(bodies::nodes_stats(&[("a", "es-a", 100 * gib, 9 * gib)])),
        ],
    );
    let storage = es_probe(&config, ElasticsearchCheck::Storage);
    for expected in [84.0, 91.0] {
        match storage.check().await.result {
            Some(EsResult::Storage(storage)) => {
                assert!((storage.nodes[0].used_percent - expected).abs() < 1e-9)
            }
            other => panic!("{other:?}"),
        }
    }

    es.set(
        "/_stats/docs",
        vec![
            EsReply::ok(bodies::SHARDS_STATS_NULL_DOCS),
            EsReply::ok(bodies::shards_stats(&[("logs", 0, 1_700_000_000, 0)])),
        ],
    );
    let docs = es_probe(&config, ElasticsearchCheck::Docs);
    match docs.check().await.result {
        // The UNASSIGNED primary's null docs are not counted; the other is over the floor.
        Some(EsResult::Docs(docs)) => {
            assert_eq!(docs.primaries_counted, 1);
            assert_eq!(docs.shards.len(), 1);
            assert_eq!(
                (
                    docs.shards[0].index.as_str(),
                    docs.shards[0].shard,
                    docs.shards[0].docs
                ),
                ("testindex", 1, 2_100_000_000)
            );
        }
        other => panic!("{other:?}"),
    }
    match docs.check().await.result {
        // 1.7 B is above the default floor (1 billion), so it is listed.
        Some(EsResult::Docs(docs)) => assert_eq!(docs.shards[0].docs, 1_700_000_000),
        other => panic!("{other:?}"),
    }

    es.set(
        AUDIT_PATH,
        vec![
            EsReply::ok(bodies::audit(1000, 80)),
            EsReply::ok(bodies::audit(0, 0)),
            EsReply::Json(
                404,
                r#"{"error":{"type":"index_not_found_exception"},"status":404}"#.to_owned(),
            ),
        ],
    );
    let audit = es_probe(&config, ElasticsearchCheck::Audit);
    let counts = |sample: ElasticsearchSample| match sample.result {
        Some(EsResult::Audit(audit)) => (audit.requests, audit.errors_5xx),
        other => panic!("{other:?} {:?}", sample.error),
    };
    assert_eq!(counts(audit.check().await), (1000, 80));
    assert_eq!(counts(audit.check().await), (0, 0));
    let sample = audit.check().await;
    assert_eq!(
        es_error(&sample),
        (
            ElasticsearchErrorKind::Http,
            404,
            "index_not_found_exception"
        )
    );
}

#[tokio::test]
async fn credentials_are_sent_as_basic_or_api_key() {
    let es = StandInElasticsearch::start(AUDIT_PATH).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password = write_temp(&dir, "password", "s3cr3t\n");
    let api_key = write_temp(
        &dir,
        "api_key",
        "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==\n",
    );
    let basic = ElasticsearchConfig {
        username: "hostwatch".to_owned(),
        password_file: Some(password),
        ..es_config(es.url())
    };
    es_probe(&basic, ElasticsearchCheck::Health).check().await;
    let keyed = ElasticsearchConfig {
        api_key_file: Some(api_key),
        ..es_config(es.url())
    };
    es_probe(&keyed, ElasticsearchCheck::Health).check().await;
    let sent: Vec<Option<String>> = es.received().into_iter().map(|r| r.authorization).collect();
    assert_eq!(
        sent,
        [
            Some("Basic aG9zdHdhdGNoOnMzY3IzdA==".to_owned()),
            Some("ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==".to_owned())
        ]
    );
    // A missing password file is a config error naming the field, not a panic.
    let missing = ElasticsearchConfig {
        password_file: Some(dir.path().join("nope")),
        ..basic
    };
    let err = ElasticsearchProbe::from_config(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config: elasticsearch.password_file: cannot read"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_ships_each_checks_samples() {
    let es = StandInElasticsearch::start(AUDIT_PATH).await.unwrap();
    es.set(
        "/_nodes/stats/fs",
        vec![EsReply::Json(401, bodies::UNAUTHORIZED.to_owned())],
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::Ack)).await;
    let state_dir = tempfile::tempdir().unwrap();
    let mut agent_config = config(state_dir.path(), server.addr);
    let mut es_section = es_config(es.url());
    es_section.health.interval = Some(Duration::from_millis(300));
    es_section.storage.interval = Some(Duration::from_millis(300));
    es_section.shards.enabled = false;
    es_section.docs.enabled = false;
    es_section.audit.index_pattern = String::new();
    agent_config.elasticsearch = Some(es_section);
    agent_config.validate().unwrap();
    let running = start_agent(agent_config);
    let hello = server.expect_hello(1).await;
    let probes: Vec<(&str, u64)> = hello
        .probes
        .iter()
        .map(|p| (p.name.as_str(), p.interval_ms))
        .collect();
    assert_eq!(
        probes,
        [
            ("host", 200),
            ("elasticsearch.health", 300),
            ("elasticsearch.storage", 300)
        ]
    );

    let mut health_ok = 0;
    let mut storage_failed = 0;
    while health_ok < 2 || storage_failed < 2 {
        if let Seen::Batch { batch, .. } = server.next().await {
            for sample in batch.samples {
                if let Some(sample::Kind::Elasticsearch(es)) = sample.kind {
                    match (es.check(), &es.error, &es.result) {
                        (ElasticsearchCheck::Health, None, Some(EsResult::Health(_))) => {
                            health_ok += 1
                        }
                        (ElasticsearchCheck::Storage, Some(error), None) => {
                            assert_eq!(error.kind(), ElasticsearchErrorKind::Auth);
                            storage_failed += 1;
                        }
                        other => panic!("unexpected sample {other:?}"),
                    }
                }
            }
        }
    }
    running.stop().await;
}
