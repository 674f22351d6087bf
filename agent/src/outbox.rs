//! The outbox: sample batches waiting for the aggregator's `Ack`, spooled to the state
//! directory, and the seq counter that numbers them.
//!
//! It owns `state_dir/seq` (the next seq to hand out), `state_dir/seq_epoch` (a random id
//! naming that counter, so a counter that restarts at 1 because the state directory was
//! lost is not taken for a replay), `state_dir/dropped_batches_total`, and the spool
//! `state_dir/outbox/`: one file per unacknowledged batch, named by its zero-padded seq and
//! holding the protobuf-encoded `SampleBatch` exactly as it is sent.
//!
//! **Crash safety** (a SIGKILL at any instant): a batch file is written with one `write`
//! to a new file (a kill leaves it whole, or empty if it came between the create and the
//! write: an empty or mismatched file is skipped, never sent); it is written *before* the
//! seq file moves on, and [`Outbox::open`] continues from the larger of the seq file and the newest
//! spooled seq + 1, so a seq is never handed out twice; a batch file is removed only after
//! its `Ack` (or when it is dropped), so nothing unacknowledged is lost.
//!
//! **No fsync and no rename per sample**: a killed process loses nothing the kernel already
//! has, and an fsync per sample cost ~1 ms of kernel CPU here, 8× the agent's whole budget;
//! renames cost a journal transaction each, so the seq file is rewritten in place (one
//! fixed-width `pwrite` on a file kept open). Against a
//! power loss, seqs are *reserved* durably in blocks of [`SEQ_BLOCK`]:
//! `state_dir/seq_reserved` holds "no seq at or above R was handed out" and the boot id it
//! was written in (fsync, once per block and once per start). After a reboot the seq file
//! may be stale, so `open` resumes at R: a few seqs are skipped (the aggregator counts them
//! as skipped), none reused. A clean stop ([`Outbox::sync`]) reserves exactly the next seq,
//! so a clean reboot skips nothing. Batch files lost to a power loss are skipped the same way.
//!
//! **Bounds**: `max_batches` and `max_bytes` (the encoded size of the spooled batches). When
//! a new batch would exceed either, the oldest batches are dropped and counted; each batch
//! carries the running count, so the count survives even a crash between writing the new
//! batch and removing the old ones (`open` finishes such a drop without counting it twice).
//! Memory holds only the seq and size of each spooled batch: a long outage costs disk, not
//! RSS.
//!
//! It does not send anything, nor know about connections: the uplink reads it with
//! [`Outbox::next_unsent_seq`] and [`Outbox::batch`] and clears it with [`Outbox::ack`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use prost::Message;
use proto::v1::{Sample, SampleBatch};

use crate::AgentError;
use crate::state;

/// The file that keeps the next seq.
pub const SEQ_FILE: &str = "seq";
/// The file that keeps the id of the seq counter (`Hello.seq_epoch`).
pub const SEQ_EPOCH_FILE: &str = "seq_epoch";
/// The file that keeps the running count of dropped batches.
pub const DROPPED_FILE: &str = "dropped_batches_total";
/// The file that keeps the durable seq reservation and the boot id it was written in.
pub const SEQ_RESERVED_FILE: &str = "seq_reserved";
/// Seqs reserved at a time: one fsync per this many batches.
pub const SEQ_BLOCK: u64 = 1024;
/// Changes at every boot; tells a restart after a power loss from one after a kill.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// The directory of spooled batches.
pub const SPOOL_DIR: &str = "outbox";
/// The extension of a spooled batch file; the name before it is the seq, zero-padded.
const BATCH_EXTENSION: &str = "pb";
/// Added to a batch file's name while it is being written.
const TMP_SUFFIX: &str = ".tmp";

/// How much the outbox may hold before it drops its oldest batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// At least one batch is always kept, however large.
    pub max_batches: usize,
    pub max_bytes: u64,
}

/// One spooled batch as memory knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    bytes: u64,
}

/// Unacknowledged batches, oldest first, with strictly increasing seqs.
#[derive(Debug)]
pub struct Outbox {
    entries: VecDeque<Entry>,
    spooled_bytes: u64,
    bounds: Bounds,
    next_seq: u64,
    seq_epoch: String,
    dropped_batches_total: u64,
    seq_path: PathBuf,
    /// The seq file, kept open to be rewritten in place.
    seq_file: std::fs::File,
    dropped_path: PathBuf,
    spool_dir: PathBuf,
    /// No seq at or above this was handed out; durable.
    reserved_until: u64,
    reserved_path: PathBuf,
    boot_id: String,
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The new batch's seq.
    pub seq: u64,
    /// The seqs of the batches dropped to make room, oldest first.
    pub dropped: Vec<u64>,
}

impl Outbox {
    /// Opens the outbox kept in `state_dir` (which must exist): the seq counter, the drop
    /// count and the spooled batches, which are replayed before anything new. Batches over
    /// `bounds` (a smaller bound than last time) are dropped and counted.
    pub fn open(state_dir: &Path, bounds: Bounds) -> Result<Outbox, AgentError> {
        let bounds = Bounds {
            max_batches: bounds.max_batches.max(1),
            ..bounds
        };
        let seq_path = state_dir.join(SEQ_FILE);
        let dropped_path = state_dir.join(DROPPED_FILE);
        let epoch_path = state_dir.join(SEQ_EPOCH_FILE);
        let spool_dir = state_dir.join(SPOOL_DIR);
        std::fs::create_dir_all(&spool_dir).map_err(|source| AgentError::State {
            path: spool_dir.clone(),
            source,
        })?;
        let mut entries = list_spool(&spool_dir)?;

        let stored_seq = read_counter(&seq_path)?;
        let stored_epoch = state::read_optional(&epoch_path)?
            .map(|text| text.trim().to_owned())
            .filter(|epoch| !epoch.is_empty());
        let newest_spooled = entries.back().map(|entry| entry.seq);
        let (next_seq, seq_epoch) = match (stored_epoch, stored_seq, newest_spooled) {
            (Some(epoch), Some(_), _) | (Some(epoch), None, Some(_)) => {
                let after_spool = newest_spooled.map_or(1, |seq| seq + 1);
                (stored_seq.unwrap_or(1).max(after_spool).max(1), epoch)
            }
            // A counter without its epoch (or an epoch with neither counter nor batches)
            // cannot be trusted to continue the old numbering: start a new epoch at 1.
            // Spooled batches numbered in the old epoch would be misread in the new one.
            // The epoch is written first, so a crash in between starts yet another epoch.
            _ => {
                for entry in entries.drain(..) {
                    remove_quietly(&batch_path(&spool_dir, entry.seq));
                }
                // A reservation belongs to the old counter.
                remove_quietly(&state_dir.join(SEQ_RESERVED_FILE));
                let epoch = uuid::Uuid::new_v4().to_string();
                state::write_atomic(&epoch_path, format!("{epoch}\n").as_bytes())?;
                state::write_atomic(&seq_path, b"1\n")?;
                (1, epoch)
            }
        };

        // The newest batch carries the count as of its creation, which may be ahead of the
        // count file if the agent died in between.
        let counted_in_file = read_counter(&dropped_path)?.unwrap_or(0);
        let counted_in_batch = match newest_spooled {
            Some(seq) if !entries.is_empty() => read_batch(&batch_path(&spool_dir, seq))?
                .map_or(0, |batch| batch.dropped_batches_total),
            _ => 0,
        };
        // After a reboot the seq file and the spool may have lost their last writes; the
        // reservation has not.
        let reserved_path = state_dir.join(SEQ_RESERVED_FILE);
        let boot_id = std::fs::read_to_string(BOOT_ID_PATH)
            .map(|text| text.trim().to_owned())
            .unwrap_or_default();
        let next_seq = match read_reservation(&reserved_path)? {
            Some((reserved, written_in)) if written_in.is_empty() || written_in != boot_id => {
                next_seq.max(reserved)
            }
            _ => next_seq,
        };
        let seq_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&seq_path)
            .map_err(|source| AgentError::State {
                path: seq_path.clone(),
                source,
            })?;
        let mut outbox = Outbox {
            seq_file,
            spooled_bytes: entries.iter().map(|entry| entry.bytes).sum(),
            entries,
            bounds,
            next_seq,
            seq_epoch,
            dropped_batches_total: counted_in_file.max(counted_in_batch),
            seq_path,
            dropped_path,
            spool_dir,
            reserved_until: 0,
            reserved_path,
            boot_id,
        };
        outbox.reserve(next_seq + SEQ_BLOCK)?;
        // Drops counted in a batch but not done yet are finished without counting again;
        // anything still over the bounds is a new drop.
        let mut already_counted = counted_in_batch.saturating_sub(counted_in_file);
        let mut newly_dropped = 0;
        while outbox.entries.len() > 1 && outbox.over_bounds(0) {
            outbox.drop_oldest();
            if already_counted > 0 {
                already_counted -= 1;
            } else {
                newly_dropped += 1;
            }
        }
        outbox.dropped_batches_total += newly_dropped;
        if outbox.dropped_batches_total != counted_in_file {
            state::write_replace(
                &outbox.dropped_path,
                format!("{}\n", outbox.dropped_batches_total).as_bytes(),
            )?;
        }
        Ok(outbox)
    }

    /// Numbers `samples` as the next batch and spools it, dropping the oldest batches if
    /// the outbox would exceed its bounds. Fails, changing nothing, when the batch or the
    /// seq cannot be written.
    pub fn push(&mut self, samples: Vec<Sample>) -> Result<Pushed, AgentError> {
        let seq = self.next_seq;
        if seq >= self.reserved_until {
            self.reserve(seq + SEQ_BLOCK)?;
        }
        let mut batch = SampleBatch {
            seq,
            samples,
            dropped_batches_total: self.dropped_batches_total,
        };
        // The count field's size barely moves, so sizing with the old count is close
        // enough to choose how many to drop.
        let bytes = batch.encoded_len() as u64;
        let n_drop = self.n_to_drop_for(bytes);
        batch.dropped_batches_total += n_drop as u64;
        let encoded = batch.encode_to_vec();

        let path = batch_path(&self.spool_dir, seq);
        write_batch(&path, &encoded)?;
        if let Err(err) = self.write_seq(seq + 1) {
            remove_quietly(&path);
            return Err(err);
        }
        self.next_seq = seq + 1;

        let dropped: Vec<u64> = (0..n_drop).filter_map(|_| self.drop_oldest()).collect();
        if n_drop > 0 {
            self.dropped_batches_total = batch.dropped_batches_total;
            // Already recorded in the new batch, which `open` reads: a failure here costs
            // nothing but this warning.
            if let Err(err) = state::write_replace(
                &self.dropped_path,
                format!("{}\n", self.dropped_batches_total).as_bytes(),
            ) {
                tracing::warn!("outbox: cannot record the drop count: {err}");
            }
        }
        self.entries.push_back(Entry {
            seq,
            bytes: encoded.len() as u64,
        });
        self.spooled_bytes += encoded.len() as u64;
        Ok(Pushed { seq, dropped })
    }

    /// Makes the exact next seq durable, so that even a reboot resumes there. For a clean
    /// stop; the outbox stays usable.
    pub fn sync(&mut self) -> Result<(), AgentError> {
        self.write_seq(self.next_seq)?;
        self.seq_file
            .sync_data()
            .map_err(|source| AgentError::State {
                path: self.seq_path.clone(),
                source,
            })?;
        self.reserve(self.next_seq)
    }

    /// Rewrites the seq file in place: the number padded with spaces to a fixed width, so
    /// that one `pwrite` replaces all of it and a shorter number leaves no stale digits.
    fn write_seq(&self, next_seq: u64) -> Result<(), AgentError> {
        use std::os::unix::fs::FileExt;
        self.seq_file
            .write_all_at(format!("{next_seq:<20}\n").as_bytes(), 0)
            .map_err(|source| AgentError::State {
                path: self.seq_path.clone(),
                source,
            })
    }

    /// Records durably that no seq below `until` is handed out unless reserved again.
    fn reserve(&mut self, until: u64) -> Result<(), AgentError> {
        state::write_atomic(
            &self.reserved_path,
            format!("{until} {}\n", self.boot_id).as_bytes(),
        )?;
        self.reserved_until = until;
        Ok(())
    }

    /// Removes the batch with this seq; false when it is not (or no longer) here.
    pub fn ack(&mut self, seq: u64) -> bool {
        match self.position(seq) {
            Some(idx) => {
                if let Some(entry) = self.entries.remove(idx) {
                    self.spooled_bytes -= entry.bytes;
                    remove_quietly(&batch_path(&self.spool_dir, seq));
                }
                true
            }
            None => false,
        }
    }

    /// The seq of the oldest batch still waiting with a seq of at least `from_seq`.
    pub fn next_unsent_seq(&self, from_seq: u64) -> Option<u64> {
        let idx = self.entries.partition_point(|entry| entry.seq < from_seq);
        self.entries.get(idx).map(|entry| entry.seq)
    }

    /// The batch with this seq, read back from the spool, if it is still waiting. A spooled
    /// batch that cannot be read is logged and forgotten: the aggregator will count its seq
    /// as skipped, and the stream goes on.
    pub fn batch(&mut self, seq: u64) -> Option<SampleBatch> {
        let idx = self.position(seq)?;
        let path = batch_path(&self.spool_dir, seq);
        match read_batch(&path) {
            Ok(Some(batch)) if batch.seq == seq => return Some(batch),
            // An empty file: the agent was killed between creating and writing it.
            Ok(Some(batch)) => tracing::error!(
                seq,
                found = batch.seq,
                "outbox: spooled batch holds another seq; skipping it"
            ),
            Ok(None) => tracing::error!(seq, "outbox: spooled batch vanished; skipping it"),
            Err(err) => tracing::error!(seq, "outbox: skipping an unreadable batch: {err}"),
        }
        if let Some(entry) = self.entries.remove(idx) {
            self.spooled_bytes -= entry.bytes;
        }
        remove_quietly(&path);
        None
    }

    /// The oldest unacknowledged seq, as `Hello.oldest_unacked_seq` wants it.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.seq)
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

    /// The encoded size of the spooled batches.
    pub fn spooled_bytes(&self) -> u64 {
        self.spooled_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the outbox plus `extra_bytes` in one more batch would exceed its bounds.
    fn over_bounds(&self, extra_bytes: u64) -> bool {
        let extra_batches = usize::from(extra_bytes > 0);
        self.entries.len() + extra_batches > self.bounds.max_batches
            || self.spooled_bytes + extra_bytes > self.bounds.max_bytes
    }

    /// How many of the oldest batches must go to make room for a new one of `bytes`.
    fn n_to_drop_for(&self, bytes: u64) -> usize {
        let bytes = bytes.max(1);
        let mut n_drop = 0;
        let mut n_kept = self.entries.len();
        let mut kept_bytes = self.spooled_bytes;
        while n_kept > 0
            && (n_kept + 1 > self.bounds.max_batches || kept_bytes + bytes > self.bounds.max_bytes)
        {
            kept_bytes -= self.entries[n_drop].bytes;
            n_kept -= 1;
            n_drop += 1;
        }
        n_drop
    }

    /// Removes the oldest batch, returning its seq; does not count it.
    fn drop_oldest(&mut self) -> Option<u64> {
        let entry = self.entries.pop_front()?;
        self.spooled_bytes -= entry.bytes;
        remove_quietly(&batch_path(&self.spool_dir, entry.seq));
        Some(entry.seq)
    }

    fn position(&self, seq: u64) -> Option<usize> {
        let idx = self.entries.partition_point(|entry| entry.seq < seq);
        self.entries
            .get(idx)
            .filter(|entry| entry.seq == seq)
            .map(|_| idx)
    }
}

fn batch_path(spool_dir: &Path, seq: u64) -> PathBuf {
    spool_dir.join(format!("{seq:020}.{BATCH_EXTENSION}"))
}

/// The spooled batches, oldest first; leftovers of interrupted writes are removed.
fn list_spool(spool_dir: &Path) -> Result<VecDeque<Entry>, AgentError> {
    let state_error = |source| AgentError::State {
        path: spool_dir.to_owned(),
        source,
    };
    let mut entries = Vec::new();
    for dir_entry in std::fs::read_dir(spool_dir).map_err(state_error)? {
        let dir_entry = dir_entry.map_err(state_error)?;
        let name = dir_entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            remove_quietly(&dir_entry.path());
            continue;
        }
        let Some(seq) = name
            .strip_suffix(BATCH_EXTENSION)
            .and_then(|stem| stem.strip_suffix('.'))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = dir_entry.metadata().map_err(state_error)?.len();
        entries.push(Entry { seq, bytes });
    }
    entries.sort_unstable_by_key(|entry| entry.seq);
    Ok(entries.into())
}

/// Writes a batch file with one `write`: a kill leaves it whole, or empty.
fn write_batch(path: &Path, encoded: &[u8]) -> Result<(), AgentError> {
    std::fs::write(path, encoded).map_err(|source| {
        remove_quietly(path);
        AgentError::State {
            path: path.to_owned(),
            source,
        }
    })
}

fn read_batch(path: &Path) -> Result<Option<SampleBatch>, AgentError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AgentError::State {
                path: path.to_owned(),
                source,
            });
        }
    };
    SampleBatch::decode(bytes.as_slice())
        .map(Some)
        .map_err(|err| AgentError::CorruptState {
            path: path.to_owned(),
            message: format!("not a SampleBatch: {err}"),
        })
}

fn remove_quietly(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!("outbox: cannot remove {}: {err}", path.display()),
    }
}

/// The reservation: the seq it reserves up to and the boot id it was written in.
fn read_reservation(path: &Path) -> Result<Option<(u64, String)>, AgentError> {
    let Some(text) = state::read_optional(path)? else {
        return Ok(None);
    };
    let mut fields = text.split_whitespace();
    let reserved = fields.next().and_then(|seq| seq.parse::<u64>().ok());
    match reserved {
        Some(reserved) => Ok(Some((reserved, fields.next().unwrap_or("").to_owned()))),
        None => Err(AgentError::CorruptState {
            path: path.to_owned(),
            message: format!("{:?} is not \"SEQ BOOT_ID\"", text.trim()),
        }),
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
mod tests;
