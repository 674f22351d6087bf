//! Elasticsearch's answers → the proto's results: pure functions over the bodies, so that
//! every real body in `tests/fixtures/elasticsearch/` is tested without a server.
//!
//! Tolerant where Elasticsearch, its versions and OpenSearch differ (unknown fields, `_cat`
//! values as strings or `null`, nested or flat settings, `hits.total` as a number or an
//! object), strict where a missing value would be a wrong answer: an error names the field.

use std::collections::HashMap;

use proto::v1::{
    ElasticsearchDataNode, ElasticsearchDocs, ElasticsearchHealth, ElasticsearchShardDocs,
};
use serde::Deserialize;
use serde_json::Value;

/// The name of the filter aggregation in the audit search.
pub(super) const ERRORS_AGGREGATION: &str = "status_5xx";

/// A body that is not the expected JSON: what was wrong, naming the field.
pub(super) type Unexpected = String;

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Unexpected> {
    serde_json::from_slice(body).map_err(|err| format!("invalid JSON: {err}"))
}

/// `error.type` of an error answer (`{"error": {"type": …}}`); old versions answer
/// `{"error": "text"}`, which names no type.
pub(super) fn error_type(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("error")?.get("type")?.as_str().map(str::to_owned)
}

#[derive(Deserialize)]
struct Health {
    cluster_name: Option<String>,
    status: Option<String>,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    number_of_nodes: u32,
    #[serde(default)]
    number_of_data_nodes: u32,
    #[serde(default)]
    active_primary_shards: u32,
    #[serde(default)]
    active_shards: u32,
    #[serde(default)]
    relocating_shards: u32,
    #[serde(default)]
    initializing_shards: u32,
    #[serde(default)]
    unassigned_shards: u32,
}

/// `GET /_cluster/health` (also the body of its 408 answer).
pub(super) fn health(body: &[u8]) -> Result<ElasticsearchHealth, Unexpected> {
    let health: Health = json(body)?;
    let status = health.status.ok_or("no \"status\"")?;
    if !matches!(status.as_str(), "green" | "yellow" | "red") {
        return Err(format!("status: {status:?} is not green, yellow or red"));
    }
    Ok(ElasticsearchHealth {
        cluster_name: health.cluster_name.unwrap_or_default(),
        status,
        timed_out: health.timed_out,
        number_of_nodes: health.number_of_nodes,
        number_of_data_nodes: health.number_of_data_nodes,
        active_primary_shards: health.active_primary_shards,
        active_shards: health.active_shards,
        relocating_shards: health.relocating_shards,
        initializing_shards: health.initializing_shards,
        unassigned_shards: health.unassigned_shards,
    })
}

#[derive(Deserialize)]
struct NodesStats {
    nodes: HashMap<String, NodeStats>,
}

#[derive(Deserialize)]
struct NodeStats {
    name: Option<String>,
    host: Option<String>,
    ip: Option<String>,
    /// Absent before 7.x's role names; such a node is taken as a data node.
    roles: Option<Vec<String>>,
    fs: Option<Fs>,
}

#[derive(Deserialize)]
struct Fs {
    total: Option<FsSpace>,
    #[serde(default)]
    data: Vec<FsSpace>,
}

#[derive(Deserialize)]
struct FsSpace {
    path: Option<String>,
    total_in_bytes: Option<u64>,
    available_in_bytes: Option<u64>,
}

/// `GET /_nodes/stats/fs`: every data node's data path with the least available bytes,
/// which is what the disk watermarks are compared with. Ordered by node name (the answer
/// is an object, whose order says nothing).
pub(super) fn data_nodes(body: &[u8]) -> Result<Vec<ElasticsearchDataNode>, Unexpected> {
    let stats: NodesStats = json(body)?;
    let mut nodes = Vec::new();
    for (id, node) in stats.nodes {
        let is_data = node.roles.as_ref().is_none_or(|roles| {
            roles
                .iter()
                .any(|role| role == "data" || role.starts_with("data_"))
        });
        if !is_data {
            continue;
        }
        let fs = node
            .fs
            .ok_or_else(|| format!("nodes.{id}: no \"fs\" stats"))?;
        let least_available = fs
            .data
            .iter()
            .filter(|path| path.available_in_bytes.is_some() && path.total_in_bytes.is_some())
            .min_by_key(|path| path.available_in_bytes)
            .or(fs.total.as_ref())
            .ok_or_else(|| format!("nodes.{id}.fs: neither \"data\" nor \"total\""))?;
        let (Some(total), Some(available)) = (
            least_available.total_in_bytes,
            least_available.available_in_bytes,
        ) else {
            return Err(format!(
                "nodes.{id}.fs.total: no total_in_bytes or available_in_bytes"
            ));
        };
        // More available than there is would read as an empty disk: a wrong answer.
        if available > total {
            return Err(format!(
                "nodes.{id}.fs: available_in_bytes {available} is over total_in_bytes {total}"
            ));
        }
        nodes.push(ElasticsearchDataNode {
            id,
            name: node.name.unwrap_or_default(),
            host: node.host.or(node.ip).unwrap_or_default(),
            path: least_available.path.clone().unwrap_or_default(),
            total_bytes: to_i64(total),
            available_bytes: to_i64(available),
            used_percent: used_percent(total, available),
        });
    }
    nodes.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(nodes)
}

/// `100 − 100 × available ÷ total`, as Elasticsearch's `DiskUsage` computes the used share
/// it compares with the watermarks, kept in [0, 100].
pub(super) fn used_percent(total: u64, available: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)] // byte counts far below 2^53 in practice
    let used = 100.0 - 100.0 * (available as f64) / (total as f64);
    used.clamp(0.0, 100.0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The cluster settings that apply: transient over persistent over defaults.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Settings {
    values: HashMap<String, String>,
}

pub(super) const WATERMARK_LOW: &str = "cluster.routing.allocation.disk.watermark.low";
pub(super) const WATERMARK_HIGH: &str = "cluster.routing.allocation.disk.watermark.high";
pub(super) const WATERMARK_FLOOD_STAGE: &str =
    "cluster.routing.allocation.disk.watermark.flood_stage";
pub(super) const MAX_SHARDS_PER_NODE: &str = "cluster.max_shards_per_node";
/// Elasticsearch's default for `cluster.max_shards_per_node` since 7.0.
pub(super) const DEFAULT_MAX_SHARDS_PER_NODE: i64 = 1000;

impl Settings {
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The effective `cluster.max_shards_per_node`: at least 1, as Elasticsearch allows.
    pub(super) fn max_shards_per_node(&self) -> Result<i64, Unexpected> {
        match self.get(MAX_SHARDS_PER_NODE) {
            None => Ok(DEFAULT_MAX_SHARDS_PER_NODE),
            Some(text) => text
                .parse()
                .ok()
                .filter(|max: &i64| *max >= 1)
                .ok_or_else(|| format!("{MAX_SHARDS_PER_NODE}: {text:?} is not a number from 1")),
        }
    }
}

/// `GET /_cluster/settings?include_defaults=true&flat_settings=true`; nested settings
/// (without `flat_settings`) are flattened the same way.
pub(super) fn settings(body: &[u8]) -> Result<Settings, Unexpected> {
    let value: Value = json(body)?;
    let Value::Object(scopes) = value else {
        return Err("not a JSON object".to_owned());
    };
    let mut settings = Settings::default();
    // Lowest precedence first: later scopes overwrite.
    for scope in ["defaults", "persistent", "transient"] {
        if let Some(tree) = scopes.get(scope) {
            flatten(tree, &mut String::new(), &mut settings.values);
        }
    }
    Ok(settings)
}

fn flatten(value: &Value, prefix: &mut String, into: &mut HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let restore = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(key);
                flatten(child, prefix, into);
                prefix.truncate(restore);
            }
        }
        Value::String(text) => {
            into.insert(prefix.clone(), text.clone());
        }
        Value::Number(number) => {
            into.insert(prefix.clone(), number.to_string());
        }
        Value::Bool(flag) => {
            into.insert(prefix.clone(), flag.to_string());
        }
        // Lists (e.g. awareness attributes) and nulls are not settings read here.
        Value::Array(_) | Value::Null => {}
    }
}

#[derive(Deserialize)]
struct CatNode {
    #[serde(rename = "node.role")]
    role: Option<String>,
}

/// `GET /_cat/nodes?format=json&h=id,node.role`: nodes with a data role letter other than
/// frozen (`d` data, `s` content, `h` hot, `w` warm, `c` cold; `f` frozen), the nodes
/// `cluster.max_shards_per_node` multiplies.
pub(super) fn non_frozen_data_nodes(body: &[u8]) -> Result<u32, Unexpected> {
    let nodes: Vec<CatNode> = json(body)?;
    let count = nodes
        .iter()
        .filter(|node| {
            node.role
                .as_deref()
                .is_some_and(|role| role.contains(['d', 's', 'h', 'w', 'c']))
        })
        .count();
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

#[derive(Deserialize)]
struct CatIndex {
    index: Option<String>,
    status: Option<String>,
    pri: Option<String>,
    rep: Option<String>,
}

/// `GET /_cat/indices?format=json&h=index,status,pri,rep`: Σ over open indices of
/// primaries × (1 + replicas), and how many open indices there are.
pub(super) fn open_shards(body: &[u8]) -> Result<(i64, u32), Unexpected> {
    let indices: Vec<CatIndex> = json(body)?;
    let mut shards: i64 = 0;
    let mut open: u32 = 0;
    for (idx, index) in indices.iter().enumerate() {
        if index.status.as_deref() != Some("open") {
            continue;
        }
        let name = index.index.as_deref().unwrap_or("?");
        // Counts, so never negative (`-1` would lower the sum); saturating, as a huge
        // count must not overflow.
        let number = |field: &str, value: &Option<String>| -> Result<i64, Unexpected> {
            let text = value
                .as_deref()
                .ok_or_else(|| format!("[{idx}] {name}: {field} is null"))?;
            text.parse::<u32>()
                .map(i64::from)
                .map_err(|_| format!("[{idx}] {name}: {field}: {text:?} is not a count"))
        };
        let primaries = number("pri", &index.pri)?;
        let replicas = number("rep", &index.rep)?;
        shards = shards.saturating_add(primaries.saturating_mul(replicas.saturating_add(1)));
        open += 1;
    }
    Ok((shards, open))
}

#[derive(Deserialize)]
struct IndicesStats {
    #[serde(default)]
    indices: HashMap<String, IndexStats>,
}

#[derive(Deserialize)]
struct IndexStats {
    #[serde(default)]
    shards: HashMap<String, Vec<ShardCopy>>,
}

#[derive(Deserialize)]
struct ShardCopy {
    routing: Option<Routing>,
    docs: Option<Docs>,
}

#[derive(Deserialize)]
struct Routing {
    #[serde(default)]
    primary: bool,
}

#[derive(Deserialize)]
struct Docs {
    count: Option<u64>,
    deleted: Option<u64>,
}

/// `GET /_stats/docs?level=shards`: the primary shards with more than `floor` documents
/// (count + deleted), the fullest first, at most `max_shards` of them. A copy without docs
/// stats (`null`, not started) is not counted.
pub(super) fn docs(
    body: &[u8],
    floor: u64,
    max_shards: u32,
) -> Result<ElasticsearchDocs, Unexpected> {
    let stats: IndicesStats = json(body)?;
    let mut above = Vec::new();
    let mut primaries_counted: u32 = 0;
    let mut max_docs: u64 = 0;
    for (index, index_stats) in stats.indices {
        for (shard, copies) in index_stats.shards {
            let shard_number: u32 = shard
                .parse()
                .map_err(|_| format!("indices.{index}.shards: {shard:?} is not a shard number"))?;
            for copy in copies {
                if !copy.routing.as_ref().is_some_and(|routing| routing.primary) {
                    continue;
                }
                let Some(Docs {
                    count: Some(count),
                    deleted,
                }) = copy.docs
                else {
                    continue;
                };
                let deleted = deleted.unwrap_or(0);
                let total = count.saturating_add(deleted);
                primaries_counted = primaries_counted.saturating_add(1);
                max_docs = max_docs.max(total);
                if total > floor {
                    above.push(ElasticsearchShardDocs {
                        index: index.clone(),
                        shard: shard_number,
                        docs: to_i64(total),
                        docs_count: to_i64(count),
                        docs_deleted: to_i64(deleted),
                    });
                }
            }
        }
    }
    above.sort_by(|a, b| {
        b.docs
            .cmp(&a.docs)
            .then_with(|| a.index.cmp(&b.index))
            .then_with(|| a.shard.cmp(&b.shard))
    });
    let keep = usize::try_from(max_shards).unwrap_or(usize::MAX);
    let omitted = above.len().saturating_sub(keep);
    above.truncate(keep);
    Ok(ElasticsearchDocs {
        floor: to_i64(floor),
        shards: above,
        primaries_counted,
        shards_omitted: u32::try_from(omitted).unwrap_or(u32::MAX),
        max_docs: to_i64(max_docs),
    })
}

/// What the audit search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AuditCounts {
    pub(super) requests: i64,
    pub(super) errors_5xx: i64,
    pub(super) shards_failed: u32,
    pub(super) timed_out: bool,
}

#[derive(Deserialize)]
struct Search {
    #[serde(default)]
    timed_out: bool,
    #[serde(rename = "_shards")]
    shards: Option<SearchShards>,
    hits: Option<Hits>,
    aggregations: Option<HashMap<String, Aggregation>>,
}

#[derive(Deserialize)]
struct SearchShards {
    #[serde(default)]
    failed: u32,
}

#[derive(Deserialize)]
struct Hits {
    total: Option<Total>,
}

/// `hits.total`: an object since 7.0, a number before (and with `rest_total_hits_as_int`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Total {
    Object { value: i64 },
    Number(i64),
}

#[derive(Deserialize)]
struct Aggregation {
    doc_count: Option<i64>,
}

/// The audit `_search` (size 0, `track_total_hits`, the filter aggregation
/// [`ERRORS_AGGREGATION`]).
pub(super) fn audit(body: &[u8]) -> Result<AuditCounts, Unexpected> {
    let search: Search = json(body)?;
    let requests = match search.hits.and_then(|hits| hits.total) {
        Some(Total::Object { value } | Total::Number(value)) => value,
        None => return Err("no \"hits.total\"".to_owned()),
    };
    let errors = search
        .aggregations
        .as_ref()
        .and_then(|aggregations| aggregations.get(ERRORS_AGGREGATION))
        .and_then(|aggregation| aggregation.doc_count);
    if requests < 0 {
        return Err(format!("hits.total: {requests} is negative"));
    }
    let errors_5xx = match errors {
        // The filter aggregation counts some of the hits: between none and all of them.
        Some(errors) if !(0..=requests).contains(&errors) => {
            return Err(format!(
                "aggregations.{ERRORS_AGGREGATION}.doc_count: {errors} is not within 0 and \
                 hits.total {requests}"
            ));
        }
        Some(errors) => errors,
        // A pattern that matches no index may answer without aggregations: nothing to count.
        None if requests == 0 => 0,
        None => {
            return Err(format!(
                "no \"aggregations.{ERRORS_AGGREGATION}.doc_count\""
            ));
        }
    };
    Ok(AuditCounts {
        requests,
        errors_5xx,
        shards_failed: search.shards.map_or(0, |shards| shards.failed),
        timed_out: search.timed_out,
    })
}
