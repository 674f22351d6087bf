//! Fuzzing the ingest path with proptest (stable toolchain, runs in CI): bytes as an agent
//! could send them → the codec's counting decode (`limits`) → validation → the monitor's
//! ordering check → the engine → the telemetry records and the events' JSON. Nothing may
//! panic, and every sample is either accepted or counted in a per-reason summary.
//!
//! Three inputs: arbitrary bytes (finds walker and decoder faults), well-formed messages
//! with arbitrary values (finds value faults: times, sizes, NaN), and such messages with a
//! few bytes changed. Bounded by case counts (26,000 in all): 8 s of a debug build on
//! the project's 2-core machine, within CI's budget of about a minute for fuzzing. `corpus/` holds every input that crashed the aggregator so
//! far, one hex file each, replayed by `the_corpus_of_past_crashes_passes`; proptest adds
//! what it finds to `aggregator/proptest-regressions/ingest/fuzz.txt` (commit it).

use std::time::Duration;

use proptest::prelude::*;
use prost::Message;
use proto::v1 as wire;

use super::limits::{self, Inbound, WireLimits};
use super::validate::{self, HelloLimits, Rejections, SampleLimits};
use crate::config::{IngestConfig, RulesConfig};
use crate::engine::{Batch, Engine, Hello};
use crate::model::{NodeKey, Timestamp};

/// 2026-11-29, the aggregator's clock in every case.
const NOW: Timestamp = Timestamp::from_unix_ms(1_795_910_400_000);

/// The default config, with counts small enough for generated messages to cross them.
fn config() -> IngestConfig {
    IngestConfig {
        max_samples_per_batch: 16,
        max_disks_per_sample: 4,
        max_members_per_view: 4,
        max_labels: 4,
        max_probes: 4,
        max_string_bytes: 128,
        max_log_line_bytes: 256,
        ..IngestConfig::default()
    }
}

fn engine_with_node(key: &NodeKey) -> Engine {
    let mut rules = RulesConfig::default();
    // Open issues at once on anything, so the events' paths run too.
    rules.core_load.threshold = 0.0;
    rules.memory_usage.threshold = 0.0;
    rules.disk_usage.threshold = 0.0;
    rules.disk_usage.open_for = Duration::ZERO;
    let mut engine = Engine::new(rules, NOW, [], []);
    let hello = Hello {
        identity: Default::default(),
        agent_version: "fuzz".into(),
        probes: Vec::new(),
        seq_epoch: "e".into(),
    };
    engine.hello(key, hello, NOW);
    engine
}

/// The whole ingest path for one message; panics (the test fails) on any fault.
fn ingest(bytes: &[u8]) {
    let config = config();
    let key = NodeKey {
        tenant: "acme".into(),
        cluster: "db".into(),
        node: "n1".into(),
    };
    let mut engine = engine_with_node(&key);
    let (seq, samples, refused): (u64, Vec<(u32, wire::Sample)>, Rejections) =
        match limits::decode(bytes, &WireLimits::from_config(&config)) {
            Err(_) | Ok(Inbound::RefusedHello(_)) => return,
            Ok(Inbound::Limited(limited)) => (limited.seq, limited.samples, limited.refused),
            Ok(Inbound::Message(message)) => match message.kind {
                None => return,
                Some(wire::agent_message::Kind::Hello(hello)) => {
                    if let Ok((key, hello)) =
                        validate::hello(hello, &HelloLimits::from_config(&config))
                    {
                        engine.hello(&key, hello, NOW);
                    }
                    return;
                }
                Some(wire::agent_message::Kind::Batch(batch)) => {
                    let n_samples = batch.samples.len();
                    assert!(n_samples <= config.max_samples_per_batch);
                    let samples = (0..).zip(batch.samples).collect();
                    (batch.seq, samples, Rejections::default())
                }
            },
        };
    let n_samples = samples.len() as u64 + refused.total();
    let mut rejections = refused;
    let mut accepted = Vec::new();
    for (index, sample) in samples {
        match validate::sample(sample, NOW, &SampleLimits::from_config(&config)) {
            Ok(sample) => accepted.push(sample),
            Err(rejection) => rejections.add(index, rejection),
        }
    }
    let mut batch = Batch {
        seq: seq.max(1),
        samples: accepted,
        n_rejected: 0,
        dropped_batches_total: 0,
    };
    let out_of_order = crate::monitor::take_out_of_order(&engine, &key, &mut batch);
    let n_applied = batch.samples.len() as u64;
    assert_eq!(
        n_applied + rejections.total() + out_of_order.len() as u64,
        n_samples,
        "every sample is accepted or rejected"
    );
    let ack = rejections.to_wire();
    assert!(ack.len() <= 16, "one summary per reason: {ack:?}");
    assert!(ack.iter().all(|entry| entry.indices.len() <= 10));
    for (_, record) in crate::telemetry::records(&key, &batch.samples) {
        record.to_string();
    }
    let outcome = engine
        .apply_batch(&key, batch, NOW)
        .unwrap_or_else(|error| panic!("the node said hello: {error}"));
    let later = engine.tick(NOW.plus(Duration::from_secs(3600)));
    for event in outcome.events.iter().chain(&later) {
        event.to_json().to_string();
    }
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("/".to_owned()),
        "[a-z/._-]{1,12}",
        ".{0,40}",
        (0usize..300).prop_map(|n| "x".repeat(n)),
    ]
}

fn any_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(253_402_300_800_000), // 10000-01-01
        -100_000i64..100_000,      // around the epoch
        NOW.as_unix_ms() - 3_600_000..NOW.as_unix_ms() + 3_600_000,
    ]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0),
        0.0..200.0f64,
    ]
}

fn any_size() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), 0i64..1 << 40, Just(0)]
}

fn disk() -> impl Strategy<Value = wire::DiskUsage> {
    (
        (any_string(), any_string(), any_string()),
        (any_size(), any_size(), any_f64(), any_size(), any_size()),
    )
        .prop_map(
            |((mount, device, fs_type), (total, available, used, inodes, free))| wire::DiskUsage {
                mount,
                device,
                fs_type,
                total_bytes: total,
                available_bytes: available,
                used_percent: used,
                inodes_total: inodes,
                inodes_free: free,
            },
        )
}

fn host() -> impl Strategy<Value = wire::sample::Kind> {
    (
        (any_f64(), any_f64(), any_f64()),
        (any::<u32>(), any::<u32>(), any::<bool>()),
        (any_size(), any_size(), any_f64()),
        prop::collection::vec(disk(), 0..6),
    )
        .prop_map(|((load1, load5, load15), cores, memory, disks)| {
            wire::sample::Kind::Host(wire::HostSample {
                load1,
                load5,
                load15,
                physical_cores: cores.0,
                logical_cores: cores.1,
                physical_cores_estimated: cores.2,
                memory_total_bytes: memory.0,
                memory_available_bytes: memory.1,
                memory_used_percent: memory.2,
                disks,
            })
        })
}

fn gossip() -> impl Strategy<Value = wire::sample::Kind> {
    let member = (any_string(), any_string(), any::<bool>(), any::<i64>()).prop_map(
        |(instance_id, state, alive, epoch_number)| wire::GossipMember {
            instance_id,
            state,
            alive,
            endpoint: "127.0.0.1:2113".into(),
            epoch_number,
        },
    );
    (
        any::<bool>(),
        any_string(),
        prop::collection::vec(member, 0..6),
        any_string(),
    )
        .prop_map(|(ok, error, members, leader_id)| {
            wire::sample::Kind::Gossip(wire::GossipSample {
                adapter: "eventstoredb".into(),
                ok,
                error,
                members,
                cluster_status: String::new(),
                leader_id,
            })
        })
}

fn sample() -> impl Strategy<Value = wire::Sample> {
    let log = (any_string(), any_string())
        .prop_map(|(path, line)| wire::sample::Kind::Log(wire::LogRecord { path, line }));
    (
        any_time(),
        prop::option::weighted(0.9, prop_oneof![host(), gossip(), log]),
    )
        .prop_map(|(time_unix_ms, kind)| wire::Sample { time_unix_ms, kind })
}

fn message() -> impl Strategy<Value = wire::AgentMessage> {
    let batch =
        (any::<u64>(), prop::collection::vec(sample(), 0..24)).prop_map(|(seq, samples)| {
            wire::agent_message::Kind::Batch(wire::SampleBatch {
                seq,
                samples,
                dropped_batches_total: 0,
            })
        });
    let hello = (
        any_string(),
        prop::collection::btree_map(any_string(), any_string(), 0..6),
    )
        .prop_map(|(node, labels)| {
            wire::agent_message::Kind::Hello(wire::Hello {
                identity: Some(wire::NodeIdentity {
                    tenant: "acme".into(),
                    cluster: "db".into(),
                    node,
                    labels: labels.into_iter().collect(),
                    ..Default::default()
                }),
                agent_version: "fuzz".into(),
                ..Default::default()
            })
        });
    prop_oneof![4 => batch, 1 => hello].prop_map(|kind| wire::AgentMessage { kind: Some(kind) })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        ingest(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_messages_never_panic(message in message()) {
        ingest(&message.encode_to_vec());
    }

    #[test]
    fn changed_messages_never_panic(
        message in message(),
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = message.encode_to_vec();
        if !bytes.is_empty() {
            for (at, byte) in changes {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
        }
        ingest(&bytes);
    }

    #[test]
    fn any_time_formats_and_matches_humantime_where_it_can(ms in any::<i64>()) {
        let text = Timestamp::from_unix_ms(ms).to_rfc3339();
        if (0..=253_402_300_799_999).contains(&ms) {
            let expected = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()),
            )
            .to_string();
            prop_assert_eq!(text, expected);
        }
    }
}

#[test]
fn the_corpus_of_past_crashes_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ingest/corpus");
    let mut n_files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let hex: String = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .collect::<String>()
            .split_whitespace()
            .collect();
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
            .collect::<Vec<u8>>();
        assert!(
            wire::AgentMessage::decode(bytes.as_slice()).is_ok(),
            "{} holds a valid message",
            path.display()
        );
        ingest(&bytes);
        n_files += 1;
    }
    assert!(n_files >= 5, "the corpus is in {}", dir.display());
}
