//! A **stand-in Elasticsearch**, not Elasticsearch: no Elasticsearch server can be installed
//! on these machines, so tests of the agent's elasticsearch probe (and end-to-end tests with
//! the real aggregator) talk to this real HTTP/1.1 server on 127.0.0.1 instead. It serves
//! the real bodies in `agent/tests/fixtures/elasticsearch/` (see its SOURCES.txt) and the
//! error answers Elasticsearch gives, per path, switched on a timeline: the n-th request to
//! a path gets the n-th reply of its list (the last one repeats), so a test steps through
//! faults without a clock. It can also stop listening (connection refused) and listen again
//! on the same port.
//!
//! It knows nothing about the probe: it matches paths (the query string is recorded, not
//! interpreted) and records every request for the test to check (method, target,
//! `authorization`, body).
//!
//! Shared by the `agent` crate's tests (`#[path]` include) and the `tests` crate (module
//! `es_stand_in`), so it uses only tokio and serde_json.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Real bodies from the fixtures, and Elasticsearch-shaped bodies written here where no
/// real one was captured (each says so).
pub mod bodies {
    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../agent/tests/fixtures/elasticsearch/", $name))
        };
    }

    /// ES 7.13.1, yellow (elasticsearch_exporter fixture).
    pub const HEALTH_YELLOW: &str =
        fixture!("elasticsearch_exporter__fixtures__clusterhealth_7.13.1.json");
    /// OpenSearch docs' example, green.
    pub const HEALTH_GREEN: &str = fixture!("opensearch-docs__cluster_health__green.json");
    /// ES 7.13.1 `_nodes/stats` of one data node (about 86.7 % used).
    pub const NODES_STATS: &str =
        fixture!("elasticsearch_exporter__fixtures__nodestats_7.13.1.json");
    /// ES 8.9.1 `_cluster/settings?include_defaults`: watermarks 88 %, 92 %, 96 %.
    pub const SETTINGS: &str =
        fixture!("elasticsearch_exporter__fixtures__settings-8.9.1-watermark.json");
    /// ES 7.17.3 `_stats?level=shards`: four primaries, 37 docs at most.
    pub const SHARDS_STATS: &str =
        fixture!("elasticsearch_exporter__fixtures__indices_shards_7.17.3.json");
    /// The ES docs' filter aggregation answer (7 hits, 3 in the filter); its aggregation is
    /// named `t_shirts` there, see [`audit_fixture`].
    pub const FILTER_AGGREGATION: &str = fixture!("es-docs__filter_aggregation__response.json");

    /// `_cat/nodes?format=json&h=id,node.role`: written here in the `_cat` shape (strings or
    /// null): a hot/content node, a frozen-only node, a master-only node.
    pub const CAT_NODES: &str = r#"[
        {"id": "byoDEtBRSRGZyMKaIpmhCQ", "node.role": "cdhilmrstw"},
        {"id": "f1", "node.role": "f"},
        {"id": "m1", "node.role": "m"}
    ]"#;
    /// `_cat/indices?format=json&h=index,status,pri,rep`: written here; a closed index
    /// (not counted) and an open index whose replica is UNASSIGNED (still counted).
    pub const CAT_INDICES: &str = r#"[
        {"index": "otherindex", "status": "open", "pri": "1", "rep": "1"},
        {"index": ".geoip_databases", "status": "open", "pri": "1", "rep": "0"},
        {"index": "archive", "status": "close", "pri": null, "rep": null}
    ]"#;
    /// `_stats?level=shards` written here: a primary whose copy is UNASSIGNED has `docs:
    /// null`, as `_cat/shards` shows it (shards_7.15.0 fixture).
    pub const SHARDS_STATS_NULL_DOCS: &str = r#"{"indices": {"testindex": {"shards": {
        "0": [{"routing": {"state": "UNASSIGNED", "primary": true, "node": null}, "docs": null}],
        "1": [{"routing": {"state": "STARTED", "primary": true, "node": "n1"},
               "docs": {"count": 1900000000, "deleted": 200000000}}]
    }}}}"#;
    /// The 503 of a cluster without an elected master (ES's error body shape).
    pub const MASTER_NOT_DISCOVERED: &str = r#"{"error":{"root_cause":[{"type":"master_not_discovered_exception","reason":null}],"type":"master_not_discovered_exception","reason":null},"status":503}"#;
    /// The 401 of ES security without credentials (ES's error body shape).
    pub const UNAUTHORIZED: &str = r#"{"error":{"root_cause":[{"type":"security_exception","reason":"missing authentication credentials for REST request [/_cluster/health]"}],"type":"security_exception","reason":"missing authentication credentials for REST request [/_cluster/health]"},"status":401}"#;
    /// Not JSON at all.
    pub const GARBAGE: &str = "{\"cluster_name\": \"x\", \"status\": gre";

    /// The yellow fixture as a 408 `wait_for_status` timeout: `timed_out: true`, red.
    pub fn health_timed_out_red() -> String {
        HEALTH_YELLOW
            .replace("\"timed_out\": false", "\"timed_out\": true")
            .replace("\"status\": \"yellow\"", "\"status\": \"red\"")
    }

    /// The yellow fixture with another status.
    pub fn health(status: &str) -> String {
        HEALTH_YELLOW.replace(
            "\"status\": \"yellow\"",
            &format!("\"status\": \"{status}\""),
        )
    }

    /// The filter aggregation fixture with the probe's aggregation name (`status_5xx`).
    pub fn audit_fixture() -> String {
        FILTER_AGGREGATION.replace("\"t_shirts\"", "\"status_5xx\"")
    }

    /// An audit search answer in the fixture's shape with these counts.
    pub fn audit(requests: u64, errors_5xx: u64) -> String {
        format!(
            r#"{{"took": 3, "timed_out": false,
                "_shards": {{"total": 1, "successful": 1, "skipped": 0, "failed": 0}},
                "hits": {{"total": {{"value": {requests}, "relation": "eq"}}, "max_score": null, "hits": []}},
                "aggregations": {{"status_5xx": {{"doc_count": {errors_5xx}}}}}}}"#
        )
    }

    /// `_nodes/stats/fs` in the fixture's shape: (id, name, total bytes, available bytes).
    pub fn nodes_stats(nodes: &[(&str, &str, u64, u64)]) -> String {
        let entries: Vec<String> = nodes
            .iter()
            .map(|(id, name, total, available)| {
                format!(
                    r#""{id}": {{"name": "{name}", "host": "10.0.0.1", "roles": ["data", "master"],
                        "fs": {{"total": {{"total_in_bytes": {total}, "available_in_bytes": {available}}},
                                "data": [{{"path": "/var/lib/elasticsearch", "total_in_bytes": {total},
                                           "available_in_bytes": {available}}}]}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"cluster_name": "es", "nodes": {{{}}}}}"#,
            entries.join(",")
        )
    }

    /// `_stats/docs?level=shards` in the fixture's shape: (index, shard, count, deleted),
    /// primaries only.
    pub fn shards_stats(shards: &[(&str, u32, u64, u64)]) -> String {
        let mut by_index: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (index, shard, count, deleted) in shards {
            by_index.entry(index).or_default().push(format!(
                r#""{shard}": [{{"routing": {{"state": "STARTED", "primary": true}},
                    "docs": {{"count": {count}, "deleted": {deleted}}}}}]"#
            ));
        }
        let indices: Vec<String> = by_index
            .into_iter()
            .map(|(index, shards)| format!(r#""{index}": {{"shards": {{{}}}}}"#, shards.join(",")))
            .collect();
        format!(r#"{{"indices": {{{}}}}}"#, indices.join(","))
    }
}

/// What the stand-in answers to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A status and a JSON body.
    Json(u16, String),
    /// Read the request and never answer (until the client gives up).
    Hang,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply::Json(200, body.into())
    }
}

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Debug, Default)]
struct State {
    /// Per path: the replies in order and how many requests were answered.
    routes: HashMap<String, (Vec<Reply>, usize)>,
    received: Vec<Received>,
}

/// The stand-in server; stops listening when dropped.
#[derive(Debug)]
pub struct StandInElasticsearch {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: Option<JoinHandle<()>>,
}

impl StandInElasticsearch {
    /// Listens on a free port of 127.0.0.1, serving a healthy cluster from the fixtures:
    /// green health, [`bodies::NODES_STATS`], [`bodies::SETTINGS`], [`bodies::CAT_NODES`],
    /// [`bodies::CAT_INDICES`], [`bodies::SHARDS_STATS`] and, for `audit_path`, the filter
    /// aggregation fixture.
    pub async fn start(audit_path: &str) -> std::io::Result<StandInElasticsearch> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state: Arc<Mutex<State>> = Arc::default();
        let stand_in = StandInElasticsearch {
            addr,
            accept: Some(tokio::spawn(accept(listener, Arc::clone(&state)))),
            state,
        };
        for (path, body) in [
            ("/_cluster/health", bodies::HEALTH_GREEN.to_owned()),
            ("/_nodes/stats/fs", bodies::NODES_STATS.to_owned()),
            ("/_cluster/settings", bodies::SETTINGS.to_owned()),
            ("/_cat/nodes", bodies::CAT_NODES.to_owned()),
            ("/_cat/indices", bodies::CAT_INDICES.to_owned()),
            ("/_stats/docs", bodies::SHARDS_STATS.to_owned()),
            (audit_path, bodies::audit_fixture()),
        ] {
            stand_in.set(path, vec![Reply::ok(body)]);
        }
        Ok(stand_in)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, requests to `path` get `replies` in order, the last one repeating.
    pub fn set(&self, path: &str, replies: Vec<Reply>) {
        let mut state = lock(&self.state);
        state.routes.insert(path.to_owned(), (replies, 0));
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    /// Stops listening: connections are refused until [`Self::resume`]. Returns once the
    /// listening socket is closed (a listener that still exists would complete the TCP
    /// handshake, and the client would wait instead of being refused).
    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.stop().await;
        // tokio sets SO_REUSEADDR: connections left in TIME_WAIT do not hold the port.
        let listener = TcpListener::bind(self.addr).await?;
        self.accept = Some(tokio::spawn(accept(listener, Arc::clone(&self.state))));
        Ok(())
    }
}

impl Drop for StandInElasticsearch {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept(listener: TcpListener, state: Arc<Mutex<State>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream, Arc::clone(&state)));
    }
}

async fn answer(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or("/").to_owned();
    let mut content_length = 0;
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    while request.len() < head_end + content_length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&request[head_end..]).into_owned();
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let reply = {
        let mut state = lock(&state);
        state.received.push(Received {
            method,
            target,
            authorization,
            body,
        });
        match state.routes.get_mut(&path) {
            Some((replies, answered)) if !replies.is_empty() => {
                let reply = replies[(*answered).min(replies.len() - 1)].clone();
                *answered += 1;
                reply
            }
            _ => Reply::Json(
                404,
                format!(
                    r#"{{"error":{{"type":"stand_in_no_such_path","reason":"{path}"}},"status":404}}"#
                ),
            ),
        }
    };
    match reply {
        // Until the client gives up and closes the connection.
        Reply::Hang => while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {},
        Reply::Json(status, body) => {
            let response = format!(
                "HTTP/1.1 {status} Stand-in\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}
