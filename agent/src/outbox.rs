//! The outbox: sample batches waiting for the aggregator's `Ack`, and the seq counter that
//! numbers them.
//!
//! It owns `state_dir/seq` (the next seq to hand out, written before the batch exists, so a
//! restart never reuses a seq), `state_dir/seq_epoch` (a random id naming that counter, so
//! a counter that restarts at 1 because the state directory was lost is not taken for a
//! replay) and `state_dir/dropped_batches_total`. It is bounded: when
//! full, [`Outbox::push`] drops the oldest batch and counts it, so sampling never waits for
//! the network. Batches live in memory for now; spooling them to the state directory can be
//! added behind the same methods (`open` reloads, `push` appends, `ack` truncates).
//!
//! It does not send anything, nor know about connections: the uplink reads it with
//! [`Outbox::next_unsent_seq`] and [`Outbox::batch`] and clears it with [`Outbox::ack`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use proto::v1::{Sample, SampleBatch};

use crate::AgentError;
use crate::state;

/// The file that keeps the next seq.
pub const SEQ_FILE: &str = "seq";
/// The file that keeps the id of the seq counter (`Hello.seq_epoch`).
pub const SEQ_EPOCH_FILE: &str = "seq_epoch";
/// The file that keeps the running count of dropped batches.
pub const DROPPED_FILE: &str = "dropped_batches_total";

/// Unacknowledged batches, oldest first, with strictly increasing seqs.
#[derive(Debug)]
pub struct Outbox {
    batches: VecDeque<SampleBatch>,
    max_batches: usize,
    next_seq: u64,
    seq_epoch: String,
    dropped_batches_total: u64,
    seq_path: PathBuf,
    dropped_path: PathBuf,
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The new batch's seq.
    pub seq: u64,
    /// The seq of the batch dropped to make room, if the outbox was full.
    pub dropped_seq: Option<u64>,
}

impl Outbox {
    /// Opens the outbox kept in `state_dir` (which must exist), holding at most
    /// `max_batches` batches (at least one).
    pub fn open(state_dir: &Path, max_batches: usize) -> Result<Outbox, AgentError> {
        let seq_path = state_dir.join(SEQ_FILE);
        let dropped_path = state_dir.join(DROPPED_FILE);
        let epoch_path = state_dir.join(SEQ_EPOCH_FILE);
        let stored_seq = read_counter(&seq_path)?;
        let stored_epoch = state::read_optional(&epoch_path)?
            .map(|text| text.trim().to_owned())
            .filter(|epoch| !epoch.is_empty());
        let (next_seq, seq_epoch) = match (stored_seq, stored_epoch) {
            (Some(next_seq), Some(epoch)) => (next_seq.max(1), epoch),
            // A counter without its epoch (or the reverse) cannot be trusted to continue
            // the old numbering: start a new epoch at 1. The epoch is written first, so a
            // crash in between just starts yet another epoch.
            _ => {
                let epoch = uuid::Uuid::new_v4().to_string();
                state::write_atomic(&epoch_path, format!("{epoch}\n").as_bytes())?;
                state::write_atomic(&seq_path, b"1\n")?;
                (1, epoch)
            }
        };
        let dropped_batches_total = read_counter(&dropped_path)?.unwrap_or(0);
        Ok(Outbox {
            batches: VecDeque::new(),
            max_batches: max_batches.max(1),
            next_seq,
            seq_epoch,
            dropped_batches_total,
            seq_path,
            dropped_path,
        })
    }

    /// Numbers `samples` as the next batch and queues it, dropping the oldest batch if the
    /// outbox is full. Fails, changing nothing in memory, when the seq cannot be persisted.
    pub fn push(&mut self, samples: Vec<Sample>) -> Result<Pushed, AgentError> {
        let seq = self.next_seq;
        let full = self.batches.len() >= self.max_batches;
        let dropped_batches_total = self.dropped_batches_total + u64::from(full);
        state::write_atomic(&self.seq_path, format!("{}\n", seq + 1).as_bytes())?;
        if full {
            state::write_atomic(
                &self.dropped_path,
                format!("{dropped_batches_total}\n").as_bytes(),
            )?;
        }

        self.next_seq = seq + 1;
        self.dropped_batches_total = dropped_batches_total;
        let dropped_seq = if full {
            self.batches.pop_front().map(|batch| batch.seq)
        } else {
            None
        };
        self.batches.push_back(SampleBatch {
            seq,
            samples,
            dropped_batches_total,
        });
        Ok(Pushed { seq, dropped_seq })
    }

    /// Removes the batch with this seq; false when it is not (or no longer) here.
    pub fn ack(&mut self, seq: u64) -> bool {
        match self.position(seq) {
            Some(idx) => self.batches.remove(idx).is_some(),
            None => false,
        }
    }

    /// The seq of the oldest batch still waiting with a seq of at least `from_seq`.
    pub fn next_unsent_seq(&self, from_seq: u64) -> Option<u64> {
        let idx = self.batches.partition_point(|batch| batch.seq < from_seq);
        self.batches.get(idx).map(|batch| batch.seq)
    }

    /// The batch with this seq, if it is still waiting.
    pub fn batch(&self, seq: u64) -> Option<&SampleBatch> {
        self.position(seq).and_then(|idx| self.batches.get(idx))
    }

    /// The oldest unacknowledged seq, as `Hello.oldest_unacked_seq` wants it.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.batches.front().map(|batch| batch.seq)
    }

    /// The seq the next batch will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The id of the seq counter, sent as `Hello.seq_epoch`.
    pub fn seq_epoch(&self) -> &str {
        &self.seq_epoch
    }

    /// Batches dropped because the outbox was full, since the state directory was created.
    pub fn dropped_batches_total(&self) -> u64 {
        self.dropped_batches_total
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    fn position(&self, seq: u64) -> Option<usize> {
        let idx = self.batches.partition_point(|batch| batch.seq < seq);
        self.batches
            .get(idx)
            .filter(|batch| batch.seq == seq)
            .map(|_| idx)
    }
}

fn read_counter(path: &Path) -> Result<Option<u64>, AgentError> {
    let Some(text) = state::read_optional(path)? else {
        return Ok(None);
    };
    text.trim()
        .parse::<u64>()
        .map(Some)
        .map_err(|err| AgentError::CorruptState {
            path: path.to_owned(),
            message: format!("{:?} is not a number: {err}", text.trim()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time_unix_ms: i64) -> Vec<Sample> {
        vec![Sample {
            time_unix_ms,
            kind: None,
        }]
    }

    fn seqs(outbox: &Outbox) -> Vec<u64> {
        outbox.batches.iter().map(|batch| batch.seq).collect()
    }

    #[test]
    fn seqs_start_at_one_and_grow_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(outbox.next_seq(), 1);
        for expected in 1..=3 {
            let pushed = outbox.push(sample(expected as i64)).unwrap();
            assert_eq!(
                pushed,
                Pushed {
                    seq: expected,
                    dropped_seq: None
                }
            );
        }
        assert_eq!(seqs(&outbox), [1, 2, 3]);
        assert_eq!(outbox.oldest_seq(), Some(1));
        assert_eq!(outbox.batch(2).unwrap().samples[0].time_unix_ms, 2);
    }

    #[test]
    fn full_outbox_drops_the_oldest_and_counts_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 3).unwrap();
        let mut dropped = Vec::new();
        for n in 1..=8 {
            dropped.extend(outbox.push(sample(n)).unwrap().dropped_seq);
        }
        assert_eq!(seqs(&outbox), [6, 7, 8]);
        assert_eq!(dropped, [1, 2, 3, 4, 5]);
        assert_eq!(outbox.dropped_batches_total(), 5);
        // Every batch carries the running total as of its creation.
        let totals: Vec<u64> = outbox
            .batches
            .iter()
            .map(|b| b.dropped_batches_total)
            .collect();
        assert_eq!(totals, [3, 4, 5]);
    }

    #[test]
    fn ack_removes_only_that_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        for n in 1..=4 {
            outbox.push(sample(n)).unwrap();
        }
        assert!(outbox.ack(2));
        assert!(!outbox.ack(2), "a second ack of the same seq finds nothing");
        assert!(!outbox.ack(99));
        assert_eq!(seqs(&outbox), [1, 3, 4]);
        assert!(outbox.ack(1));
        assert_eq!(outbox.oldest_seq(), Some(3));
        assert!(outbox.ack(3) && outbox.ack(4));
        assert!(outbox.is_empty());
        assert_eq!(outbox.oldest_seq(), None);
        // Acks free room: no drop after the outbox emptied.
        assert_eq!(outbox.push(sample(5)).unwrap().dropped_seq, None);
    }

    #[test]
    fn next_unsent_walks_forward_and_skips_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(outbox.next_unsent_seq(0), None);
        for n in 1..=4 {
            outbox.push(sample(n)).unwrap();
        }
        assert_eq!(outbox.next_unsent_seq(0), Some(1));
        assert_eq!(outbox.next_unsent_seq(3), Some(3));
        outbox.ack(3);
        assert_eq!(outbox.next_unsent_seq(3), Some(4));
        assert_eq!(outbox.next_unsent_seq(5), None);
    }

    #[test]
    fn seq_and_drop_count_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut outbox = Outbox::open(dir.path(), 2).unwrap();
            for n in 1..=5 {
                outbox.push(sample(n)).unwrap();
            }
            assert_eq!(outbox.dropped_batches_total(), 3);
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SEQ_FILE)).unwrap(),
            "6\n"
        );
        let epoch = std::fs::read_to_string(dir.path().join(SEQ_EPOCH_FILE)).unwrap();
        let mut reopened = Outbox::open(dir.path(), 2).unwrap();
        assert_eq!(reopened.seq_epoch(), epoch.trim());
        assert_eq!(reopened.next_seq(), 6);
        assert_eq!(reopened.dropped_batches_total(), 3);
        assert!(reopened.is_empty(), "batches are not spooled yet");
        assert_eq!(reopened.push(sample(6)).unwrap().seq, 6);
    }

    #[test]
    fn a_lost_counter_starts_a_new_epoch_at_one() {
        let dir = tempfile::tempdir().unwrap();
        let first_epoch = {
            let mut outbox = Outbox::open(dir.path(), 2).unwrap();
            outbox.push(sample(1)).unwrap();
            outbox.seq_epoch().to_owned()
        };
        assert!(uuid::Uuid::parse_str(&first_epoch).is_ok(), "{first_epoch}");
        std::fs::remove_file(dir.path().join(SEQ_FILE)).unwrap();
        let outbox = Outbox::open(dir.path(), 2).unwrap();
        assert_eq!(outbox.next_seq(), 1);
        assert_ne!(outbox.seq_epoch(), first_epoch);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SEQ_EPOCH_FILE))
                .unwrap()
                .trim(),
            outbox.seq_epoch()
        );
    }

    #[test]
    fn a_corrupt_seq_file_is_an_error_not_a_restart_at_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SEQ_FILE), "seven\n").unwrap();
        let err = Outbox::open(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains("seq: \"seven\" is not a number"), "{err}");
    }

    #[test]
    fn a_failed_persist_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        let mut outbox = Outbox::open(&state_dir, 2).unwrap();
        outbox.push(sample(1)).unwrap();
        std::fs::remove_dir_all(&state_dir).unwrap();
        assert!(outbox.push(sample(2)).is_err());
        assert_eq!(seqs(&outbox), [1]);
        assert_eq!(outbox.next_seq(), 2);
    }
}
