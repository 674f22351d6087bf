//! Fuzzing the Elasticsearch parsers (stable proptest, bounded for CI): whatever a node or
//! something in its place answers, every parser gives a result that holds its invariants
//! or an error, never a panic.
//!
//! Three inputs: arbitrary bytes (finds JSON and shape faults), the real bodies of
//! `tests/fixtures/elasticsearch/` with a few bytes changed or cut short, and those bodies
//! with one value replaced by a wrong type, `null`, a negative or huge number or deep
//! nesting, or removed (finds value faults the fixtures never show). Bounded by case
//! counts (6,000 in all: 2.9 s of a debug build on the project's 2-core machine, shared).
//! `corpus/` holds every body that broke a parser so far, replayed by
//! `the_corpus_of_past_failures_passes`; proptest adds what it finds to
//! `agent/proptest-regressions/probe/elasticsearch/fuzz.txt` (commit it).

use proptest::prelude::*;
use serde_json::{Value, json};

use super::parse;

macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        &[$(include_bytes!(concat!("../../../tests/fixtures/elasticsearch/", $name)).as_slice()),*]
    };
}

/// Every real body, plus the `_cat` answers the fixtures lack.
const BODIES: &[&[u8]] = fixtures![
    "elasticsearch_exporter__fixtures__clusterhealth_1.7.6.json",
    "elasticsearch_exporter__fixtures__clusterhealth_7.13.1.json",
    "elasticsearch_exporter__fixtures__indices_shards_7.17.3.json",
    "elasticsearch_exporter__fixtures__nodestats_7.13.1.json",
    "elasticsearch_exporter__fixtures__settings-8.9.1-watermark.json",
    "elasticsearch_exporter__fixtures__settings-persistent-clustermaxshardspernode-7.17.5.json",
    "es-docs__filter_aggregation__response.json",
    "es-spec__cluster_health__ClusterHealthResponseExample1.json",
    "es-spec__search__SearchResponseExample1.json",
    "opensearch-docs__cluster_health__green.json",
    "third-party-capture__cluster_settings_flat_settings__es8.json",
];

const CAT_BODIES: &[&[u8]] = &[
    br#"[{"id": "a", "node.role": "cdfhilmrstw"}, {"id": "b", "node.role": "f"},
         {"id": "c", "node.role": null}]"#,
    br#"[{"index": "logs-1", "status": "open", "pri": "5", "rep": "1"},
         {"index": "old", "status": "close", "pri": null, "rep": null}]"#,
    br#"{"hits": {"total": {"value": 10, "relation": "eq"}},
         "aggregations": {"status_5xx": {"doc_count": 3}}, "_shards": {"failed": 0}}"#,
];

fn bodies() -> impl Iterator<Item = &'static [u8]> {
    BODIES.iter().chain(CAT_BODIES).copied()
}

/// Every parser over `body`; panics (the case fails) when an answer breaks an invariant.
fn parse_all(body: &[u8]) {
    let _ = parse::error_type(body);
    if let Ok(health) = parse::health(body) {
        assert!(
            matches!(health.status.as_str(), "green" | "yellow" | "red"),
            "{health:?}"
        );
    }
    if let Ok(nodes) = parse::data_nodes(body) {
        for node in &nodes {
            assert!(node.total_bytes >= 0, "{node:?}");
            assert!(node.available_bytes >= 0, "{node:?}");
            assert!(node.available_bytes <= node.total_bytes, "{node:?}");
            assert!((0.0..=100.0).contains(&node.used_percent), "{node:?}");
        }
        let order = |node: &proto::v1::ElasticsearchDataNode| (node.name.clone(), node.id.clone());
        assert!(nodes.windows(2).all(|w| order(&w[0]) <= order(&w[1])));
    }
    if let Ok(settings) = parse::settings(body)
        && let Ok(max) = settings.max_shards_per_node()
    {
        assert!(max >= 1, "max_shards_per_node {max}");
    }
    // Parsed as the parsers do (a `Value` would refuse nesting they skip over).
    let entries = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body)
        .map(|list| list.len())
        .ok();
    if let Ok(count) = parse::non_frozen_data_nodes(body) {
        assert!(entries.is_some_and(|entries| count as usize <= entries));
    }
    if let Ok((shards, open)) = parse::open_shards(body) {
        assert!(shards >= 0, "open shards {shards}");
        assert!(entries.is_some_and(|entries| open as usize <= entries));
    }
    for (floor, max_shards) in [(0, 2), (1_000, 1_000)] {
        if let Ok(docs) = parse::docs(body, floor, max_shards) {
            assert!(docs.shards.len() <= max_shards as usize, "{docs:?}");
            let counted = docs.shards.len() as u64 + u64::from(docs.shards_omitted);
            assert!(u64::from(docs.primaries_counted) >= counted, "{docs:?}");
            for shard in &docs.shards {
                assert!(
                    shard.docs > floor as i64 && shard.docs <= docs.max_docs,
                    "{docs:?}"
                );
                assert!(shard.docs_count >= 0 && shard.docs_deleted >= 0, "{docs:?}");
                assert!(
                    shard.docs >= shard.docs_count.max(shard.docs_deleted),
                    "{docs:?}"
                );
            }
            assert!(docs.shards.windows(2).all(|w| w[0].docs >= w[1].docs));
        }
    }
    if let Ok(counts) = parse::audit(body) {
        assert!(counts.requests >= 0, "{counts:?}");
        assert!(
            (0..=counts.requests).contains(&counts.errors_5xx),
            "{counts:?}"
        );
    }
}

/// What a value may be replaced by: each a shape some parser does not expect.
fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(-1)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!("-3")),
        Just(json!("9223372036854775807")),
        Just(json!("99999999999999999999")),
        Just(json!("")),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        (1_usize..200).prop_map(|depth| { (0..depth).fold(json!(1), |inner, _| json!([inner])) }),
        any::<i64>().prop_map(|number| json!(number)),
        any::<u64>().prop_map(|number| json!(number.to_string())),
    ]
}

/// Replaces the value at the `at`-th node (depth first) of `value`; `None` removes it
/// (from an object or a list).
fn mutate(value: &mut Value, at: &mut usize, with: &Option<Value>) -> bool {
    let children: Vec<&mut Value> = match value {
        Value::Object(map) => map.values_mut().collect(),
        Value::Array(list) => list.iter_mut().collect(),
        _ => return false,
    };
    let mut remove = None;
    for (index, child) in children.into_iter().enumerate() {
        if *at == 0 {
            match with {
                Some(new) => *child = new.clone(),
                None => remove = Some(index),
            }
            break;
        }
        *at -= 1;
        if mutate(child, at, with) {
            return true;
        }
    }
    let Some(index) = remove else {
        return false;
    };
    match value {
        Value::Object(map) => {
            if let Some(key) = map.keys().nth(index).cloned() {
                map.remove(&key);
            }
        }
        Value::Array(list) => {
            list.remove(index);
        }
        _ => {}
    }
    true
}

fn changed(
    body: &[u8],
    changes: &[(prop::sample::Index, u8)],
    cut: prop::sample::Index,
) -> Vec<u8> {
    let mut body = body.to_vec();
    for (at, byte) in changes {
        let at = at.index(body.len());
        body[at] = *byte;
    }
    body.truncate(cut.index(body.len() + 1));
    body
}

#[test]
fn every_fixture_passes_the_invariants() {
    for body in bodies() {
        parse_all(body);
    }
}

#[test]
fn the_corpus_of_past_failures_passes() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/probe/elasticsearch/corpus");
    let mut n_files = 0;
    let mut failed = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| parse_all(&body)).is_err() {
            failed.push(path.display().to_string());
        }
        n_files += 1;
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(n_files >= 1, "the corpus is in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_bytes_give_an_answer_or_an_error(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        parse_all(&body);
    }

    #[test]
    fn changed_and_cut_fixtures_give_an_answer_or_an_error(
        which in any::<prop::sample::Index>(),
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let all: Vec<&[u8]> = bodies().collect();
        let body: &[u8] = all[which.index(all.len())];
        parse_all(&changed(body, &changes, cut));
    }

    #[test]
    fn fixtures_with_wrong_values_give_an_answer_or_an_error(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::option::weighted(0.9, wrong_value())),
            1..4,
        ),
    ) {
        let all: Vec<&[u8]> = bodies().collect();
        let body: &[u8] = all[which.index(all.len())];
        let mut value: Value = serde_json::from_slice(body).unwrap();
        for (at, with) in &edits {
            let mut at = at.index(nodes_in(&value).max(1));
            mutate(&mut value, &mut at, with);
        }
        parse_all(&serde_json::to_vec(&value).unwrap());
    }
}

/// How many values lie below the root of `value`.
fn nodes_in(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.values().map(|child| 1 + nodes_in(child)).sum(),
        Value::Array(list) => list.iter().map(|child| 1 + nodes_in(child)).sum(),
        _ => 0,
    }
}
