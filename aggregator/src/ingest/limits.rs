//! What an agent's message would cost to decode, counted on the wire before decoding it.
//!
//! The message size limit bounds bytes, not work: an empty sample, disk, gossip member or
//! label is 2 bytes on the wire and 100-150 bytes decoded, so 4 MiB of them decoded to
//! ~0.5 GB (and an Ack rejecting each one to 100 MB). So the codec walks the protobuf
//! encoding first (tags and lengths only, no allocation) and counts the repeated fields
//! that multiply: samples per batch, disks per host sample, members per gossip view,
//! labels and probes per Hello. A message within the limits is decoded as usual. A batch
//! over them is decoded sample by sample, leaving undecoded the samples past
//! `max_samples_per_batch` and those with too many disks or members (rejected with a
//! reason, summarised); a Hello over them is refused. Sizes of strings and everything
//! else are `validate`'s. No I/O.

use prost::Message;
use proto::v1 as wire;

use crate::config::IngestConfig;

use super::validate::Rejections;

/// The counts a message may reach, from `[ingest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    pub max_samples: usize,
    pub max_disks: usize,
    pub max_members: usize,
    pub max_labels: usize,
    pub max_probes: usize,
}

impl WireLimits {
    pub fn from_config(config: &IngestConfig) -> Self {
        Self {
            max_samples: config.max_samples_per_batch,
            max_disks: config.max_disks_per_sample,
            max_members: config.max_members_per_view,
            max_labels: config.max_labels,
            max_probes: config.max_probes,
        }
    }
}

/// An agent's message as the ingest codec hands it over.
#[derive(Debug)]
pub enum Inbound {
    /// Within the limits, decoded whole.
    Message(Box<wire::AgentMessage>),
    /// A batch with samples over the limits: those are rejected undecoded.
    Limited(LimitedBatch),
    /// A Hello over the limits, undecoded; the text says which.
    RefusedHello(String),
}

impl Inbound {
    /// The message's kind when it was decoded whole, else what it is.
    pub fn into_kind(self) -> Result<Option<wire::agent_message::Kind>, Inbound> {
        match self {
            Inbound::Message(message) => Ok(message.kind),
            other => Err(other),
        }
    }
}

/// A batch some of whose samples were left undecoded.
#[derive(Debug, Default)]
pub struct LimitedBatch {
    pub seq: u64,
    pub dropped_batches_total: u64,
    /// The samples decoded, with their index in the batch.
    pub samples: Vec<(u32, wire::Sample)>,
    /// The samples rejected undecoded, per reason.
    pub refused: Rejections,
}

/// Why the walk could not read a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("malformed message: {0}")]
    Decode(String),
}

/// Decodes one `AgentMessage`, unless counting its repeated fields shows it over `limits`.
pub fn decode(bytes: &[u8], limits: &WireLimits) -> Result<Inbound, WireError> {
    let counts = count(bytes)?;
    if counts.labels > limits.max_labels || counts.probes > limits.max_probes {
        let mut over = Vec::new();
        if counts.labels > limits.max_labels {
            over.push(format!(
                "hello.identity.labels: {} labels, at most {} (ingest.max_labels)",
                counts.labels, limits.max_labels
            ));
        }
        if counts.probes > limits.max_probes {
            over.push(format!(
                "hello.probes: {} probes, at most {} (ingest.max_probes)",
                counts.probes, limits.max_probes
            ));
        }
        return Ok(Inbound::RefusedHello(over.join("; ")));
    }
    let within = counts.samples <= limits.max_samples
        && counts.most_disks <= limits.max_disks
        && counts.most_members <= limits.max_members;
    if within {
        return wire::AgentMessage::decode(bytes)
            .map(|message| Inbound::Message(Box::new(message)))
            .map_err(|error| WireError::Decode(error.to_string()));
    }
    if counts.hellos > 0 {
        // prost would keep whichever came last, after decoding both: refuse the mix.
        return Err(WireError::Malformed(
            "a hello and an oversized batch together",
        ));
    }
    limited_batch(bytes, limits).map(Inbound::Limited)
}

/// The repeated fields that multiply a message's decoded size.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    hellos: usize,
    labels: usize,
    probes: usize,
    samples: usize,
    most_disks: usize,
    most_members: usize,
}

// Field numbers, from `proto/hostwatch/v1/ingest.proto`.
const AGENT_MESSAGE_HELLO: u32 = 1;
const AGENT_MESSAGE_BATCH: u32 = 2;
const HELLO_IDENTITY: u32 = 1;
const HELLO_PROBES: u32 = 3;
const IDENTITY_LABELS: u32 = 8;
const BATCH_SEQ: u32 = 1;
const BATCH_SAMPLES: u32 = 2;
const BATCH_DROPPED: u32 = 3;
const SAMPLE_HOST: u32 = 2;
const SAMPLE_GOSSIP: u32 = 3;
const HOST_DISKS: u32 = 10;
const GOSSIP_MEMBERS: u32 = 4;

/// Counts over every occurrence of a field: protobuf merges repeated occurrences of a
/// message field (prost appends their repeated fields), so the counts add up.
fn count(bytes: &[u8]) -> Result<Counts, WireError> {
    let mut counts = Counts::default();
    for field in Fields::new(bytes) {
        match field? {
            (AGENT_MESSAGE_HELLO, Value::Bytes(hello)) => {
                counts.hellos += 1;
                for field in Fields::new(hello) {
                    match field? {
                        (HELLO_IDENTITY, Value::Bytes(identity)) => {
                            counts.labels += occurrences(identity, IDENTITY_LABELS)?;
                        }
                        (HELLO_PROBES, _) => counts.probes += 1,
                        _ => {}
                    }
                }
            }
            (AGENT_MESSAGE_BATCH, Value::Bytes(batch)) => {
                for field in Fields::new(batch) {
                    if let (BATCH_SAMPLES, Value::Bytes(sample)) = field? {
                        counts.samples += 1;
                        let (disks, members) = sample_counts(sample)?;
                        counts.most_disks = counts.most_disks.max(disks);
                        counts.most_members = counts.most_members.max(members);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(counts)
}

/// A sample's disks and gossip members (over all occurrences of its host and gossip).
fn sample_counts(sample: &[u8]) -> Result<(usize, usize), WireError> {
    let (mut disks, mut members) = (0, 0);
    for field in Fields::new(sample) {
        match field? {
            (SAMPLE_HOST, Value::Bytes(host)) => disks += occurrences(host, HOST_DISKS)?,
            (SAMPLE_GOSSIP, Value::Bytes(gossip)) => {
                members += occurrences(gossip, GOSSIP_MEMBERS)?;
            }
            _ => {}
        }
    }
    Ok((disks, members))
}

fn occurrences(message: &[u8], number: u32) -> Result<usize, WireError> {
    let mut n = 0;
    for field in Fields::new(message) {
        if field?.0 == number {
            n += 1;
        }
    }
    Ok(n)
}

/// Decodes a batch's samples one by one, refusing those over the limits undecoded.
fn limited_batch(bytes: &[u8], limits: &WireLimits) -> Result<LimitedBatch, WireError> {
    let mut limited = LimitedBatch::default();
    let mut index: u32 = 0;
    for field in Fields::new(bytes) {
        let (AGENT_MESSAGE_BATCH, Value::Bytes(batch)) = field? else {
            continue;
        };
        for field in Fields::new(batch) {
            match field? {
                (BATCH_SEQ, Value::Varint(seq)) => limited.seq = seq,
                (BATCH_DROPPED, Value::Varint(dropped)) => limited.dropped_batches_total = dropped,
                (BATCH_SAMPLES, Value::Bytes(sample)) => {
                    let (disks, members) = sample_counts(sample)?;
                    let refused = &mut limited.refused;
                    if usize::try_from(index).is_ok_and(|index| index >= limits.max_samples) {
                        refused.add_with(index, "too_many_samples", || {
                            format!(
                                "samples[{index}..]: past the {} samples a batch may hold \
                                 (ingest.max_samples_per_batch)",
                                limits.max_samples
                            )
                        });
                    } else if disks > limits.max_disks {
                        refused.add_with(index, "too_many_disks", || {
                            format!(
                                "host.disks: {disks} disks, at most {} \
                                 (ingest.max_disks_per_sample)",
                                limits.max_disks
                            )
                        });
                    } else if members > limits.max_members {
                        refused.add_with(index, "too_many_members", || {
                            format!(
                                "gossip.members: {members} members, at most {} \
                                 (ingest.max_members_per_view)",
                                limits.max_members
                            )
                        });
                    } else {
                        let decoded = wire::Sample::decode(sample)
                            .map_err(|error| WireError::Decode(error.to_string()))?;
                        limited.samples.push((index, decoded));
                    }
                    index = index.saturating_add(1);
                }
                _ => {}
            }
        }
    }
    Ok(limited)
}

/// One field's value, as far as the walk needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one encoded message, in order: (number, value). Stops at the first
/// malformed field with its error. Groups (deprecated, never written by prost) count as
/// malformed: skipping one needs the walk to nest, and no agent sends them.
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for (position, byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * position);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[position + 1..];
                return Ok(value);
            }
        }
        Err(WireError::Malformed("a varint runs past its end"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(n).map_err(|_| WireError::Malformed("a length overflows"))?;
        if n > self.rest.len() {
            return Err(WireError::Malformed("a field runs past its message"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|number| *number > 0)
            .ok_or(WireError::Malformed("a field number out of range"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err(WireError::Malformed("a group or an unknown wire type")),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WireLimits = WireLimits {
        max_samples: 3,
        max_disks: 2,
        max_members: 2,
        max_labels: 2,
        max_probes: 2,
    };

    fn encode(message: &wire::AgentMessage) -> Vec<u8> {
        message.encode_to_vec()
    }

    fn batch(samples: Vec<wire::Sample>) -> wire::AgentMessage {
        wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
                seq: 7,
                samples,
                dropped_batches_total: 2,
            })),
        }
    }

    fn host(disks: usize) -> wire::Sample {
        wire::Sample {
            time_unix_ms: 1,
            kind: Some(wire::sample::Kind::Host(wire::HostSample {
                disks: vec![wire::DiskUsage::default(); disks],
                ..Default::default()
            })),
        }
    }

    fn gossip(members: usize) -> wire::Sample {
        wire::Sample {
            time_unix_ms: 2,
            kind: Some(wire::sample::Kind::Gossip(wire::GossipSample {
                members: vec![wire::GossipMember::default(); members],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_message_within_the_limits_decodes_as_prost_would() {
        let message = batch(vec![host(2), gossip(2), wire::Sample::default()]);
        let Ok(Inbound::Message(decoded)) = decode(&encode(&message), &LIMITS) else {
            panic!("not decoded whole");
        };
        assert_eq!(*decoded, message);
    }

    #[test]
    fn samples_past_the_limit_and_oversized_ones_are_refused_undecoded() {
        let message = batch(vec![
            host(1),
            host(3),
            gossip(3),
            host(0),
            wire::Sample::default(),
        ]);
        let Ok(Inbound::Limited(limited)) = decode(&encode(&message), &LIMITS) else {
            panic!("not limited");
        };
        assert_eq!((limited.seq, limited.dropped_batches_total), (7, 2));
        let indices: Vec<u32> = limited.samples.iter().map(|(index, _)| *index).collect();
        assert_eq!(indices, [0]);
        assert_eq!(limited.samples[0].1, host(1));
        let refused: Vec<(&str, u64, Vec<u32>)> = limited
            .refused
            .iter()
            .map(|entry| (entry.reason, entry.count, entry.indices.clone()))
            .collect();
        assert_eq!(
            refused,
            [
                ("too_many_disks", 1, vec![1]),
                ("too_many_members", 1, vec![2]),
                ("too_many_samples", 2, vec![3, 4]),
            ]
        );
    }

    #[test]
    fn two_million_empty_samples_cost_a_summary_not_their_decoding() {
        // 2 bytes each on the wire: the 4 MB batch.
        let message = batch(vec![wire::Sample::default(); 2_000_000]);
        let bytes = encode(&message);
        assert!(bytes.len() <= 4 * 1024 * 1024);
        let limits = WireLimits {
            max_samples: 10_000,
            ..LIMITS
        };
        let Ok(Inbound::Limited(limited)) = decode(&bytes, &limits) else {
            panic!("not limited");
        };
        assert_eq!(limited.samples.len(), 10_000);
        let refused: Vec<_> = limited.refused.iter().collect();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].count, 1_990_000);
        assert_eq!(
            refused[0].indices.len(),
            super::super::validate::INDICES_KEPT
        );
    }

    #[test]
    fn merged_occurrences_are_counted_together() {
        // Two encodings of the same batch field: prost appends the second's samples.
        let mut bytes = encode(&batch(vec![host(0), host(0)]));
        bytes.extend(encode(&batch(vec![host(0), host(0)])));
        let Ok(Inbound::Limited(limited)) = decode(&bytes, &LIMITS) else {
            panic!("4 samples over 2 fields are over the limit of 3");
        };
        assert_eq!(limited.samples.len(), 3);
        assert_eq!(limited.refused.total(), 1);
    }

    #[test]
    fn a_hello_with_too_many_labels_or_probes_is_refused() {
        let hello = wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
                identity: Some(wire::NodeIdentity {
                    labels: (0..100_000)
                        .map(|n| (n.to_string(), String::new()))
                        .collect(),
                    ..Default::default()
                }),
                probes: vec![wire::ProbeInfo::default(); 3],
                ..Default::default()
            })),
        };
        let Ok(Inbound::RefusedHello(why)) = decode(&encode(&hello), &LIMITS) else {
            panic!("not refused");
        };
        assert_eq!(
            why,
            "hello.identity.labels: 100000 labels, at most 2 (ingest.max_labels); \
             hello.probes: 3 probes, at most 2 (ingest.max_probes)"
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bytes in [
            &[0x12, 0x05, 0x00][..],                   // a length past the end
            &[0x80; 11][..],                           // a varint without end
            &[0x0b][..],                               // a group
            &[0x00, 0x01][..],                         // field number 0
            &[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f][..], // a 4 GiB length
        ] {
            assert!(decode(bytes, &LIMITS).is_err(), "{bytes:?}");
        }
    }
}
