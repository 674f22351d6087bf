//! The outbox: sample batches waiting for the aggregator's `Ack`, spooled to the state
//! directory, and the seq counter that numbers them.
//!
//! It owns `state_dir/seq` (the next seq to hand out), `state_dir/seq_epoch` (a random id
//! naming that counter, so a counter that restarts at 1 because the state directory was
//! lost is not taken for a replay), `state_dir/dropped_batches_total`, and the spool
//! `state_dir/outbox/`: append-only **segment files** named by the zero-padded first seq
//! they may hold (`{seq:020}.seg`). A segment is a sequence of records, each
//! `[body length u32 LE][FNV-1a of the body u32 LE][kind u8][seq u64 LE][payload]`: a
//! *batch* record (payload: the protobuf-encoded `SampleBatch` exactly as it is sent) or a
//! *removed* record (no payload: the batch with that seq was acked, dropped or skipped).
//! Only the newest segment is appended to, with one `write` per push (the batch record,
//! then the removed records of the batches it drops) and one per ack; it is rotated once
//! it would grow past [`SEGMENT_BYTES`]. Segments are deleted oldest first, once every
//! batch in them is removed (so a removed record is never lost while its batch is kept;
//! the price is that one batch never acked pins the newer segments until the bounds drop
//! it). Memory holds the seq, size, segment and offset of each spooled batch: a long outage
//! costs disk, not RSS; [`Outbox::batch`] reads one record back with one `pread`.
//!
//! **Crash safety**: [`Outbox::open`] replays every segment oldest first and keeps the
//! batches without a removed record. A record whose length or checksum does not hold
//! (a write torn by a crash, or a power loss) ends its segment: the file is truncated
//! there, and nothing from it is ever sent; its seq is skipped, never handed out again
//! (the aggregator counts it as skipped). A batch record is written *before* the seq file
//! moves on, and `open` continues from the larger of the seq file and the newest seq
//! recorded in the spool (acked or not) + 1, so a seq is never handed out twice. Batch
//! files of the older one-file-per-batch spool (`{seq:020}.pb`) are moved into a segment
//! by `open`.
//!
//! **No fsync per sample**: a SIGKILL costs nothing (every `write` that returned is in
//! the kernel's page cache, which survives the process); an fsync per sample cost ~1 ms of
//! kernel CPU here, 8× the agent's whole budget. The seq file is rewritten in place (one
//! fixed-width `pwrite` on a file kept open). A **power loss** can cost the batches and
//! removed records of the last seconds the kernel had not written back: lost batches are
//! skipped seqs at the aggregator, lost removed records are batches sent again (the
//! aggregator discards them as duplicates), and a torn tail is truncated as above. Seqs
//! are *reserved* durably in blocks of [`SEQ_BLOCK`]: `state_dir/seq_reserved` holds "no
//! seq at or above R was handed out" and the boot id it was written in (fsync, once per
//! block and once per start). After a reboot the seq file may be stale, so `open` resumes
//! at R: a few seqs are skipped, none reused. A clean stop ([`Outbox::sync`]) fsyncs the
//! newest segment and reserves exactly the next seq, so a clean reboot skips nothing.
//!
//! **Bounds**: `max_batches` and `max_bytes` (the encoded size of the spooled batches, not
//! the segments' size on disk). When a new batch would exceed either, the oldest batches
//! are dropped and counted; each batch carries the running count, so the count survives
//! even a crash between writing the new batch and recording the drop (`open` finishes such
//! a drop without counting it twice).
//!
//! It does not send anything, nor know about connections: the uplink reads it with
//! [`Outbox::next_unsent_seq`] and [`Outbox::batch`] and clears it with [`Outbox::ack`].
//! It does not fsync the spool, and does not compact a segment pinned by one old batch.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
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
/// The directory of spool segments.
pub const SPOOL_DIR: &str = "outbox";
/// A segment is rotated once the next record would take it past this size.
pub const SEGMENT_BYTES: u64 = 1 << 20;
/// The extension of a segment file; the name before it is its first seq, zero-padded.
const SEGMENT_EXTENSION: &str = "seg";
/// The extension of a batch file of the older one-file-per-batch spool.
const LEGACY_EXTENSION: &str = "pb";
/// Length and checksum.
const HEADER_BYTES: usize = 8;
/// Kind and seq.
const BODY_PREFIX_BYTES: usize = 9;
/// A record longer than this is taken for garbage (a batch is a few hundred bytes).
const MAX_BODY_BYTES: usize = 64 << 20;
const KIND_BATCH: u8 = 1;
const KIND_REMOVED: u8 = 2;

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
    /// The encoded batch's size.
    bytes: u64,
    /// The id of the segment holding it.
    segment: u64,
    /// Where its record starts in that segment.
    offset: u64,
}

/// One segment file, kept open.
#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    file: File,
    /// Its size: where the next record goes.
    len: u64,
    /// Batches in it without a removed record.
    live: usize,
    /// A failed write could not be undone: append no more to it.
    broken: bool,
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
    seq_file: File,
    dropped_path: PathBuf,
    spool_dir: PathBuf,
    /// Oldest first; the last one is appended to.
    segments: VecDeque<Segment>,
    segment_bytes: u64,
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

/// What replaying the spool found.
struct Replayed {
    segments: VecDeque<Segment>,
    entries: VecDeque<Entry>,
    /// The newest seq of any batch record, removed or not.
    newest_seq: Option<u64>,
    /// The drop count the newest batch record carries.
    newest_count: u64,
    /// A torn record was cut off: its seq may have been about to be handed out.
    torn: bool,
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
        std::fs::create_dir_all(&spool_dir).map_err(|source| state_error(&spool_dir, source))?;
        let newest_legacy = migrate_legacy(&spool_dir)?;
        let mut replayed = replay(&spool_dir, Mode::Repair)?;

        let stored_seq = read_counter(&seq_path)?;
        let stored_epoch = state::read_optional(&epoch_path)?
            .map(|text| text.trim().to_owned())
            .filter(|epoch| !epoch.is_empty());
        let newest_spooled = replayed.newest_seq.max(newest_legacy);
        let (next_seq, seq_epoch) = match (stored_epoch, stored_seq, newest_spooled) {
            (Some(epoch), Some(_), _) | (Some(epoch), None, Some(_)) => {
                let after_spool = newest_spooled.map_or(1, |seq| seq + 1);
                let mut next = stored_seq.unwrap_or(1).max(after_spool).max(1);
                // The torn record was numbered `next`; skip it rather than reuse it.
                if replayed.torn {
                    next += 1;
                }
                (next, epoch)
            }
            // A counter without its epoch (or an epoch with neither counter nor batches)
            // cannot be trusted to continue the old numbering: start a new epoch at 1.
            // Spooled batches numbered in the old epoch would be misread in the new one.
            // The epoch is written first, so a crash in between starts yet another epoch.
            _ => {
                for segment in replayed.segments.drain(..) {
                    remove_quietly(&segment.path);
                }
                replayed.entries.clear();
                replayed.newest_count = 0;
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
        let counted_in_batch = replayed.newest_count;
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
            .map_err(|source| state_error(&seq_path, source))?;
        let mut outbox = Outbox {
            seq_file,
            spooled_bytes: replayed.entries.iter().map(|entry| entry.bytes).sum(),
            entries: replayed.entries,
            bounds,
            next_seq,
            seq_epoch,
            dropped_batches_total: counted_in_file.max(counted_in_batch),
            seq_path,
            dropped_path,
            spool_dir,
            segments: replayed.segments,
            segment_bytes: SEGMENT_BYTES,
            reserved_until: 0,
            reserved_path,
            boot_id,
        };
        outbox.reserve(next_seq + SEQ_BLOCK)?;
        // The seq file catches up with a skip (a reservation or a torn record) now, so a
        // kill before the next push does not go back behind it within this boot.
        outbox.write_seq(next_seq)?;
        // Drops counted in a batch but not done yet are finished without counting again;
        // anything still over the bounds is a new drop.
        let mut already_counted = counted_in_batch.saturating_sub(counted_in_file);
        let mut newly_dropped = 0;
        let mut dropping = Vec::new();
        while outbox.entries.len() > 1 && outbox.over_bounds(0) {
            if let Some(seq) = outbox.forget_oldest() {
                dropping.push(seq);
            }
            if already_counted > 0 {
                already_counted -= 1;
            } else {
                newly_dropped += 1;
            }
        }
        if !dropping.is_empty() {
            let mut records = Vec::new();
            for seq in &dropping {
                encode_record(&mut records, KIND_REMOVED, *seq, &[]);
            }
            outbox.append_removals(&records);
        }
        outbox.dropped_batches_total += newly_dropped;
        if outbox.dropped_batches_total != counted_in_file {
            state::write_replace(
                &outbox.dropped_path,
                format!("{}\n", outbox.dropped_batches_total).as_bytes(),
            )?;
        }
        outbox.collect_segments();
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

        // One write: the batch first, so that a torn write keeps the batch (whose count
        // tells `open` to finish the drop) rather than a drop nobody counted.
        let mut records =
            Vec::with_capacity(HEADER_BYTES + BODY_PREFIX_BYTES + encoded.len() + n_drop * 17);
        encode_record(&mut records, KIND_BATCH, seq, &encoded);
        for entry in self.entries.iter().take(n_drop) {
            encode_record(&mut records, KIND_REMOVED, entry.seq, &[]);
        }
        let (segment, offset) = self.append(seq, &records)?;
        if let Err(err) = self.write_seq(seq + 1) {
            self.undo_append(offset);
            return Err(err);
        }
        self.next_seq = seq + 1;

        let dropped: Vec<u64> = (0..n_drop).filter_map(|_| self.forget_oldest()).collect();
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
            segment,
            offset,
        });
        if let Some(current) = self.segments.back_mut() {
            current.live += 1;
        }
        self.spooled_bytes += encoded.len() as u64;
        self.collect_segments();
        Ok(Pushed { seq, dropped })
    }

    /// Makes the newest segment and the exact next seq durable, so that even a reboot
    /// resumes there with every batch. For a clean stop; the outbox stays usable.
    pub fn sync(&mut self) -> Result<(), AgentError> {
        if let Some(current) = self.segments.back() {
            current
                .file
                .sync_data()
                .map_err(|source| state_error(&current.path, source))?;
        }
        self.write_seq(self.next_seq)?;
        self.seq_file
            .sync_data()
            .map_err(|source| state_error(&self.seq_path, source))?;
        self.reserve(self.next_seq)
    }

    /// Rewrites the seq file in place: the number padded with spaces to a fixed width, so
    /// that one `pwrite` replaces all of it and a shorter number leaves no stale digits.
    fn write_seq(&self, next_seq: u64) -> Result<(), AgentError> {
        self.seq_file
            .write_all_at(format!("{next_seq:<20}\n").as_bytes(), 0)
            .map_err(|source| state_error(&self.seq_path, source))
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

    /// Appends `records` (starting with the batch `seq`) to the newest segment with one
    /// `write`, first rotating to a new segment named `seq` when the newest is full or
    /// broken. Returns the segment's id and where the records start. On failure nothing
    /// is left behind.
    fn append(&mut self, seq: u64, records: &[u8]) -> Result<(u64, u64), AgentError> {
        let rotate = match self.segments.back() {
            None => true,
            Some(current) => {
                current.broken
                    || (current.len > 0 && current.len + records.len() as u64 > self.segment_bytes)
            }
        };
        if rotate {
            let path = segment_path(&self.spool_dir, seq);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|source| state_error(&path, source))?;
            let len = file
                .metadata()
                .map_err(|source| state_error(&path, source))?
                .len();
            self.segments.push_back(Segment {
                id: seq,
                path,
                file,
                len,
                live: 0,
                broken: false,
            });
        }
        let Some(current) = self.segments.back_mut() else {
            unreachable!("a segment was just made");
        };
        let offset = current.len;
        match current.file.write_all(records) {
            Ok(()) => {
                current.len += records.len() as u64;
                Ok((current.id, offset))
            }
            Err(source) => {
                let err = state_error(&current.path, source);
                self.undo_append(offset);
                Err(err)
            }
        }
    }

    /// Cuts the newest segment back to `len`, undoing a write; a segment that cannot be
    /// cut is appended to no more (`open` will cut it).
    fn undo_append(&mut self, len: u64) {
        let Some(current) = self.segments.back_mut() else {
            return;
        };
        match current.file.set_len(len) {
            Ok(()) => current.len = len,
            Err(err) => {
                tracing::warn!(
                    "outbox: cannot undo a write to {}: {err}",
                    current.path.display()
                );
                current.broken = true;
            }
        }
        if current.live == 0 && len == 0 && self.segments.len() > 1 {
            self.collect_segments();
        }
    }

    /// Appends removed records. A failure only means the batches may be sent again after
    /// a restart (the aggregator discards duplicates), so it is logged, not returned.
    fn append_removals(&mut self, records: &[u8]) {
        let Some(current) = self.segments.back_mut() else {
            return;
        };
        if current.broken {
            return;
        }
        let offset = current.len;
        match current.file.write_all(records) {
            Ok(()) => current.len += records.len() as u64,
            Err(err) => {
                tracing::warn!("outbox: cannot record a removal: {err}");
                self.undo_append(offset);
            }
        }
    }

    /// Deletes the oldest segments whose batches are all removed; the newest stays.
    fn collect_segments(&mut self) {
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.live == 0) {
            if let Some(segment) = self.segments.pop_front() {
                remove_quietly(&segment.path);
            }
        }
    }

    /// Forgets the entry at `idx` in memory (not on disk) and returns it.
    fn forget(&mut self, idx: usize) -> Option<Entry> {
        let entry = self.entries.remove(idx)?;
        self.spooled_bytes -= entry.bytes;
        if let Some(segment) = self.segments.iter_mut().find(|s| s.id == entry.segment) {
            segment.live -= 1;
        }
        Some(entry)
    }

    /// Removes the batch with this seq; false when it is not (or no longer) here.
    pub fn ack(&mut self, seq: u64) -> bool {
        self.remove(seq).is_some()
    }

    /// Removes the batch with this seq, in memory and on disk.
    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let idx = self.position(seq)?;
        let entry = self.forget(idx)?;
        let mut record = Vec::with_capacity(HEADER_BYTES + BODY_PREFIX_BYTES);
        encode_record(&mut record, KIND_REMOVED, seq, &[]);
        self.append_removals(&record);
        self.collect_segments();
        Some(entry)
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
        let entry = self.entries[self.position(seq)?];
        match self.read_entry(&entry) {
            Ok(batch) if batch.seq == seq => return Some(batch),
            Ok(batch) => tracing::error!(
                seq,
                found = batch.seq,
                "outbox: spooled batch holds another seq; skipping it"
            ),
            Err(err) => tracing::error!(seq, "outbox: skipping an unreadable batch: {err}"),
        }
        self.remove(seq);
        None
    }

    /// Reads an entry's record back with one `pread` and checks it.
    fn read_entry(&self, entry: &Entry) -> Result<SampleBatch, AgentError> {
        let segment = self
            .segments
            .iter()
            .find(|s| s.id == entry.segment)
            .ok_or_else(|| corrupt(&self.spool_dir, "segment vanished".to_owned()))?;
        let mut record = vec![0; HEADER_BYTES + BODY_PREFIX_BYTES + entry.bytes as usize];
        segment
            .file
            .read_exact_at(&mut record, entry.offset)
            .map_err(|source| state_error(&segment.path, source))?;
        match parse_record(&record) {
            Some((KIND_BATCH, record_seq, payload, _)) if record_seq == entry.seq => {
                SampleBatch::decode(payload)
                    .map_err(|err| corrupt(&segment.path, format!("not a SampleBatch: {err}")))
            }
            _ => Err(corrupt(
                &segment.path,
                format!("no batch {} at offset {}", entry.seq, entry.offset),
            )),
        }
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

    /// Forgets the oldest batch in memory, returning its seq; does not count it nor
    /// record it on disk (the caller writes its removed record).
    fn forget_oldest(&mut self) -> Option<u64> {
        self.forget(0).map(|entry| entry.seq)
    }

    fn position(&self, seq: u64) -> Option<usize> {
        let idx = self.entries.partition_point(|entry| entry.seq < seq);
        self.entries
            .get(idx)
            .filter(|entry| entry.seq == seq)
            .map(|_| idx)
    }
}

fn segment_path(spool_dir: &Path, first_seq: u64) -> PathBuf {
    spool_dir.join(format!("{first_seq:020}.{SEGMENT_EXTENSION}"))
}

/// FNV-1a, 32 bits: enough to tell a torn or garbled record from a whole one.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

fn encode_record(out: &mut Vec<u8>, kind: u8, seq: u64, payload: &[u8]) {
    let start = out.len();
    let body_len = BODY_PREFIX_BYTES + payload.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = checksum(&out[start + HEADER_BYTES..]);
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&sum.to_le_bytes());
}

/// The record at the start of `bytes`: kind, seq, payload and its whole length; `None`
/// when it is cut short or its checksum does not hold.
fn parse_record(bytes: &[u8]) -> Option<(u8, u64, &[u8], usize)> {
    let body_len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(bytes.get(4..HEADER_BYTES)?.try_into().ok()?);
    if !(BODY_PREFIX_BYTES..=MAX_BODY_BYTES).contains(&body_len) {
        return None;
    }
    let body = bytes.get(HEADER_BYTES..HEADER_BYTES + body_len)?;
    if checksum(body) != sum {
        return None;
    }
    let kind = body[0];
    let seq = u64::from_le_bytes(body[1..BODY_PREFIX_BYTES].try_into().ok()?);
    Some((
        kind,
        seq,
        &body[BODY_PREFIX_BYTES..],
        HEADER_BYTES + body_len,
    ))
}

/// The segment files' ids and paths, oldest first.
fn list_segments(spool_dir: &Path) -> Result<Vec<(u64, PathBuf)>, AgentError> {
    list_with_extension(spool_dir, SEGMENT_EXTENSION)
}

fn list_with_extension(
    spool_dir: &Path,
    extension: &str,
) -> Result<Vec<(u64, PathBuf)>, AgentError> {
    let mut found = Vec::new();
    for dir_entry in
        std::fs::read_dir(spool_dir).map_err(|source| state_error(spool_dir, source))?
    {
        let dir_entry = dir_entry.map_err(|source| state_error(spool_dir, source))?;
        let name = dir_entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(id) = name
            .strip_suffix(extension)
            .and_then(|stem| stem.strip_suffix('.'))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((id, dir_entry.path()));
    }
    found.sort_unstable_by_key(|(id, _)| *id);
    Ok(found)
}

/// Whether [`replay`] may change the spool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Cut torn records off and delete segments with nothing left ([`Outbox::open`]).
    Repair,
    /// Change nothing ([`spooled_batches`], while an agent may be running).
    Look,
}

/// How many batches the spool in `state_dir` holds, without changing it: for tests and
/// tools that look at a running (or stopped) agent's state directory.
pub fn spooled_batches(state_dir: &Path) -> Result<usize, AgentError> {
    let spool_dir = state_dir.join(SPOOL_DIR);
    if !spool_dir.exists() {
        return Ok(0);
    }
    Ok(replay(&spool_dir, Mode::Look)?.entries.len())
}

/// Reads every segment oldest first; in [`Mode::Repair`], truncates each at its first bad
/// record.
fn replay(spool_dir: &Path, mode: Mode) -> Result<Replayed, AgentError> {
    let mut segments = VecDeque::new();
    let mut batches: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut removed = HashSet::new();
    let mut newest: Option<(u64, u64, u64)> = None;
    let mut torn = false;
    for (id, path) in list_segments(spool_dir)? {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(mode == Mode::Repair)
            .open(&path)
            .map_err(|source| state_error(&path, source))?;
        let bytes = std::fs::read(&path).map_err(|source| state_error(&path, source))?;
        let mut offset = 0;
        while offset < bytes.len() {
            let Some((kind, seq, payload, record_len)) = parse_record(&bytes[offset..]) else {
                break;
            };
            match kind {
                KIND_BATCH if newest.is_none_or(|(newest_seq, _, _)| seq > newest_seq) => {
                    batches.insert(
                        seq,
                        Entry {
                            seq,
                            bytes: payload.len() as u64,
                            segment: id,
                            offset: offset as u64,
                        },
                    );
                    newest = Some((seq, id, offset as u64));
                }
                KIND_REMOVED => {
                    removed.insert(seq);
                }
                // An out-of-order batch or an unknown kind: keep it out, go on.
                _ => tracing::warn!(seq, kind, "outbox: ignoring a record in {}", path.display()),
            }
            offset += record_len;
        }
        if offset < bytes.len() && mode == Mode::Repair {
            tracing::warn!(
                "outbox: {} ends in a torn record at {offset}; cutting it off",
                path.display()
            );
            file.set_len(offset as u64)
                .map_err(|source| state_error(&path, source))?;
            torn = true;
        }
        segments.push_back(Segment {
            id,
            path,
            file,
            len: offset as u64,
            live: 0,
            broken: false,
        });
    }
    let entries: VecDeque<Entry> = batches
        .into_values()
        .filter(|entry| !removed.contains(&entry.seq))
        .collect();
    for entry in &entries {
        if let Some(segment) = segments.iter_mut().find(|s| s.id == entry.segment) {
            segment.live += 1;
        }
    }
    // The count the newest batch record carries (acked or not).
    let newest_count = match newest {
        Some((seq, id, offset)) => {
            let segment = segments.iter().find(|s| s.id == id);
            let mut count = 0;
            if let Some(segment) = segment {
                let bytes = std::fs::read(&segment.path)
                    .map_err(|source| state_error(&segment.path, source))?;
                if let Some((_, record_seq, payload, _)) = parse_record(&bytes[offset as usize..])
                    && record_seq == seq
                {
                    count = SampleBatch::decode(payload).map_or(0, |b| b.dropped_batches_total);
                }
            }
            count
        }
        None => 0,
    };
    // Older segments with nothing left are deleted now; the newest is appended to.
    while mode == Mode::Repair
        && segments.len() > 1
        && segments.front().is_some_and(|s| s.live == 0)
    {
        if let Some(segment) = segments.pop_front() {
            remove_quietly(&segment.path);
        }
    }
    Ok(Replayed {
        segments,
        entries,
        newest_seq: newest.map(|(seq, _, _)| seq),
        newest_count,
        torn,
    })
}

/// Moves the batch files of the one-file-per-batch spool into a segment named by the
/// first of them (or the next after the segments' newest), then removes them. A crash in
/// between leaves both: batches already in a segment are not appended again.
fn migrate_legacy(spool_dir: &Path) -> Result<Option<u64>, AgentError> {
    // Leftovers of interrupted writes of the old spool.
    for dir_entry in
        std::fs::read_dir(spool_dir).map_err(|source| state_error(spool_dir, source))?
    {
        let dir_entry = dir_entry.map_err(|source| state_error(spool_dir, source))?;
        if dir_entry.file_name().to_string_lossy().ends_with(".pb.tmp") {
            remove_quietly(&dir_entry.path());
        }
    }
    let legacy = list_with_extension(spool_dir, LEGACY_EXTENSION)?;
    if legacy.is_empty() {
        return Ok(None);
    }
    let already = replay(spool_dir, Mode::Repair)?;
    let newest = already.newest_seq.unwrap_or(0);
    let mut records = Vec::new();
    let mut first = None;
    for (seq, path) in &legacy {
        if *seq <= newest {
            continue;
        }
        let bytes = std::fs::read(path).map_err(|source| state_error(path, source))?;
        // An empty or garbled file (a kill between create and write): skipped, its seq too.
        match SampleBatch::decode(bytes.as_slice()) {
            Ok(batch) if batch.seq == *seq && !bytes.is_empty() => {
                encode_record(&mut records, KIND_BATCH, *seq, &bytes);
                first.get_or_insert(*seq);
            }
            _ => tracing::warn!(seq, "outbox: skipping an unreadable spooled batch file"),
        }
    }
    if let Some(first) = first {
        let path = segment_path(spool_dir, first);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|source| state_error(&path, source))?;
        file.write_all(&records)
            .map_err(|source| state_error(&path, source))?;
    }
    for (_, path) in &legacy {
        remove_quietly(path);
    }
    // Even an empty newest file's seq may have been about to be handed out.
    Ok(legacy.last().map(|(seq, _)| *seq))
}

fn state_error(path: &Path, source: std::io::Error) -> AgentError {
    AgentError::State {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, message: String) -> AgentError {
    AgentError::CorruptState {
        path: path.to_owned(),
        message,
    }
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
