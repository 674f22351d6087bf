use super::*;
use std::io::Write;
use std::os::unix::fs::FileExt;

const ROOMY: Bounds = Bounds {
    max_batches: 100,
    max_bytes: 1 << 20,
};

fn bounded(max_batches: usize) -> Bounds {
    Bounds {
        max_batches,
        ..ROOMY
    }
}

fn sample(time_unix_ms: i64) -> Vec<Sample> {
    vec![Sample {
        time_unix_ms,
        kind: None,
    }]
}

fn seqs(outbox: &Outbox) -> Vec<u64> {
    outbox.entries.iter().map(|entry| entry.seq).collect()
}

fn spooled_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(SPOOL_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn seqs_start_at_one_and_grow_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(outbox.next_seq(), 1);
    for expected in 1..=3 {
        let pushed = outbox.push(sample(expected as i64)).unwrap();
        assert_eq!(
            pushed,
            Pushed {
                seq: expected,
                dropped: vec![]
            }
        );
    }
    assert_eq!(seqs(&outbox), [1, 2, 3]);
    assert_eq!(outbox.oldest_seq(), Some(1));
    assert_eq!(outbox.batch(2).unwrap().samples[0].time_unix_ms, 2);
    assert_eq!(
        spooled_files(dir.path()),
        ["00000000000000000001.seg"],
        "one segment, appended to"
    );
}

#[test]
fn full_outbox_drops_the_oldest_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), bounded(3)).unwrap();
    let mut dropped = Vec::new();
    for n in 1..=8 {
        dropped.extend(outbox.push(sample(n)).unwrap().dropped);
    }
    assert_eq!(seqs(&outbox), [6, 7, 8]);
    assert_eq!(dropped, [1, 2, 3, 4, 5]);
    assert_eq!(outbox.dropped_batches_total(), 5);
    assert_eq!(
        seqs(&Outbox::open(dir.path(), bounded(3)).unwrap()),
        [6, 7, 8],
        "the drops are on disk too"
    );
    // Every batch carries the running total as of its creation.
    let totals: Vec<u64> = [6, 7, 8]
        .iter()
        .map(|seq| outbox.batch(*seq).unwrap().dropped_batches_total)
        .collect();
    assert_eq!(totals, [3, 4, 5]);
}

#[test]
fn the_byte_bound_drops_as_many_as_needed() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    let one = outbox.push(sample(1)).unwrap();
    assert_eq!(one.seq, 1);
    let batch_bytes = outbox.spooled_bytes();
    drop(outbox);
    // Room for three small batches by size, plenty by count.
    let bounds = Bounds {
        max_batches: 100,
        max_bytes: batch_bytes * 3,
    };
    let mut outbox = Outbox::open(dir.path(), bounds).unwrap();
    for n in 2..=3 {
        assert!(outbox.push(sample(n)).unwrap().dropped.is_empty());
    }
    // A batch four times as big needs the room of all three.
    let big: Vec<Sample> = (0..4).flat_map(sample).collect();
    let pushed = outbox.push(big).unwrap();
    assert_eq!(pushed.dropped, [1, 2, 3]);
    assert_eq!(
        seqs(&outbox),
        [4],
        "one batch is always kept, however large"
    );
    assert_eq!(outbox.dropped_batches_total(), 3);
    assert_eq!(outbox.batch(4).unwrap().dropped_batches_total, 3);
}

#[test]
fn ack_removes_only_that_batch_and_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    for n in 1..=4 {
        outbox.push(sample(n)).unwrap();
    }
    assert!(outbox.ack(2));
    assert!(!outbox.ack(2), "a second ack of the same seq finds nothing");
    assert!(!outbox.ack(99));
    assert_eq!(seqs(&outbox), [1, 3, 4]);
    assert_eq!(seqs(&Outbox::open(dir.path(), ROOMY).unwrap()), [1, 3, 4]);
    assert!(outbox.ack(1));
    assert_eq!(outbox.oldest_seq(), Some(3));
    assert!(outbox.ack(3) && outbox.ack(4));
    assert!(outbox.is_empty());
    assert_eq!(outbox.spooled_bytes(), 0);
    assert!(Outbox::open(dir.path(), ROOMY).unwrap().is_empty());
    assert_eq!(outbox.oldest_seq(), None);
    assert!(outbox.push(sample(5)).unwrap().dropped.is_empty());
}

#[test]
fn next_unsent_walks_forward_and_skips_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
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
fn unacknowledged_batches_seq_and_drop_count_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let mut outbox = Outbox::open(dir.path(), bounded(3)).unwrap();
        for n in 1..=5 {
            outbox.push(sample(n)).unwrap();
        }
        assert!(outbox.ack(4));
        assert_eq!(outbox.dropped_batches_total(), 2);
        outbox.batch(5).unwrap()
    };
    assert_eq!(
        std::fs::read_to_string(dir.path().join(SEQ_FILE))
            .unwrap()
            .trim(),
        "6"
    );
    let epoch = std::fs::read_to_string(dir.path().join(SEQ_EPOCH_FILE)).unwrap();
    let mut reopened = Outbox::open(dir.path(), bounded(3)).unwrap();
    assert_eq!(reopened.seq_epoch(), epoch.trim());
    assert_eq!(reopened.next_seq(), 6);
    assert_eq!(reopened.dropped_batches_total(), 2);
    assert_eq!(
        seqs(&reopened),
        [3, 5],
        "the unacknowledged batches, oldest first"
    );
    assert_eq!(
        reopened.batch(5).unwrap(),
        written,
        "byte for byte what was sent"
    );
    assert_eq!(reopened.push(sample(6)).unwrap().seq, 6);
}

#[test]
fn a_seq_file_behind_the_spool_never_reuses_a_seq() {
    // A kill between writing batch 3 and moving the seq file on.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        for n in 1..=3 {
            outbox.push(sample(n)).unwrap();
        }
    }
    std::fs::write(dir.path().join(SEQ_FILE), "3\n").unwrap();
    let mut reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(seqs(&reopened), [1, 2, 3]);
    assert_eq!(reopened.push(sample(4)).unwrap().seq, 4);
}

#[test]
fn an_interrupted_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        outbox.push(sample(1)).unwrap();
    }
    let tmp = dir
        .path()
        .join(SPOOL_DIR)
        .join("00000000000000000002.pb.tmp");
    std::fs::write(&tmp, b"half a batch").unwrap();
    let reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(seqs(&reopened), [1]);
    assert!(!tmp.exists());
    assert_eq!(reopened.next_seq(), 2);
}

#[test]
fn a_drop_interrupted_by_a_crash_is_finished_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut outbox = Outbox::open(dir.path(), bounded(2)).unwrap();
        for n in 1..=3 {
            outbox.push(sample(n)).unwrap();
        }
        assert_eq!(outbox.dropped_batches_total(), 1);
    }
    // Put the state back to "batch 4 written with its count, batch 2 not yet removed, the
    // count file not yet updated": what a kill in the middle of push leaves.
    let batch = SampleBatch {
        seq: 4,
        samples: sample(4),
        dropped_batches_total: 2,
    };
    let mut record = Vec::new();
    encode_record(&mut record, KIND_BATCH, 4, &batch.encode_to_vec());
    append_raw(dir.path(), &record);
    let mut reopened = Outbox::open(dir.path(), bounded(2)).unwrap();
    assert_eq!(seqs(&reopened), [3, 4]);
    assert_eq!(reopened.dropped_batches_total(), 2, "not 3");
    assert_eq!(reopened.next_seq(), 5);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(DROPPED_FILE)).unwrap(),
        "2\n"
    );
    assert_eq!(reopened.push(sample(5)).unwrap().dropped, [3]);
    assert_eq!(reopened.dropped_batches_total(), 3);
}

#[test]
fn a_smaller_bound_after_a_restart_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        for n in 1..=5 {
            outbox.push(sample(n)).unwrap();
        }
    }
    let reopened = Outbox::open(dir.path(), bounded(2)).unwrap();
    assert_eq!(seqs(&reopened), [4, 5]);
    assert_eq!(reopened.dropped_batches_total(), 3);
    drop(reopened);
    let again = Outbox::open(dir.path(), bounded(2)).unwrap();
    assert_eq!(seqs(&again), [4, 5]);
    assert_eq!(again.dropped_batches_total(), 3, "counted once");
}

#[test]
fn an_unreadable_batch_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    for n in 1..=2 {
        outbox.push(sample(n)).unwrap();
    }
    // Garble the first record's payload behind the outbox's back.
    let offset = outbox.entries[0].offset + 20;
    // (Not through the segment's own handle: pwrite on an O_APPEND file appends.)
    std::fs::OpenOptions::new()
        .write(true)
        .open(&outbox.segments[0].path)
        .unwrap()
        .write_all_at(&[0xff, 0xff, 0xff], offset)
        .unwrap();
    assert_eq!(outbox.batch(1), None);
    assert_eq!(seqs(&outbox), [2]);
    assert!(outbox.batch(2).is_some());
}

#[test]
fn a_lost_counter_starts_a_new_epoch_at_one_without_old_batches() {
    let dir = tempfile::tempdir().unwrap();
    let first_epoch = {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        outbox.push(sample(1)).unwrap();
        outbox.seq_epoch().to_owned()
    };
    assert!(uuid::Uuid::parse_str(&first_epoch).is_ok(), "{first_epoch}");
    std::fs::remove_file(dir.path().join(SEQ_EPOCH_FILE)).unwrap();
    let outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(outbox.next_seq(), 1);
    assert!(
        outbox.is_empty(),
        "old-epoch batches would be taken for replays"
    );
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
    let err = Outbox::open(dir.path(), ROOMY).unwrap_err().to_string();
    assert!(err.contains("seq: \"seven\" is not a number"), "{err}");
}

#[test]
fn a_failed_persist_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let mut outbox = Outbox::open(&state_dir, ROOMY).unwrap();
    outbox.push(sample(1)).unwrap();
    std::fs::remove_dir_all(&state_dir).unwrap();
    // The next batch needs a new segment, which cannot be made.
    outbox.segment_bytes = 1;
    assert!(outbox.push(sample(2)).is_err());
    assert_eq!(seqs(&outbox), [1]);
    assert_eq!(outbox.next_seq(), 2);
}

fn reservation(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(SEQ_RESERVED_FILE)).unwrap()
}

#[test]
fn seqs_are_reserved_durably_in_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    assert!(reservation(dir.path()).starts_with(&format!("{} ", 1 + SEQ_BLOCK)));
    for n in 0..SEQ_BLOCK {
        outbox.push(sample(n as i64)).unwrap();
        outbox.ack(n + 1);
    }
    assert_eq!(outbox.next_seq(), SEQ_BLOCK + 1);
    outbox.push(sample(0)).unwrap();
    assert!(
        reservation(dir.path()).starts_with(&format!("{} ", 2 * SEQ_BLOCK + 1)),
        "{}",
        reservation(dir.path())
    );
}

#[test]
fn after_a_reboot_the_reservation_wins_over_a_stale_seq_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        for n in 1..=5 {
            outbox.push(sample(n)).unwrap();
            outbox.ack(n as u64);
        }
    }
    // Same boot: the (unsynced) seq file is right.
    assert_eq!(Outbox::open(dir.path(), ROOMY).unwrap().next_seq(), 6);
    // A power loss lost the last seq file writes, and the machine booted again.
    std::fs::write(dir.path().join(SEQ_FILE), "2\n").unwrap();
    std::fs::write(dir.path().join(SEQ_RESERVED_FILE), "1030 another-boot\n").unwrap();
    let outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(
        outbox.next_seq(),
        1030,
        "skip to the reservation, never reuse"
    );
}

#[test]
fn a_clean_stop_makes_the_next_seq_exact_even_across_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        for n in 1..=3 {
            outbox.push(sample(n)).unwrap();
        }
        outbox.sync().unwrap();
    }
    let text = reservation(dir.path());
    let (seq, boot_id) = text.trim().split_once(' ').unwrap();
    assert_eq!(seq, "4");
    std::fs::write(
        dir.path().join(SEQ_RESERVED_FILE),
        format!("4 not-{boot_id}\n"),
    )
    .unwrap();
    let reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(reopened.next_seq(), 4);
    assert_eq!(seqs(&reopened), [1, 2, 3]);
}

#[test]
fn an_empty_batch_file_from_a_kill_is_skipped_and_its_seq_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        outbox.push(sample(1)).unwrap();
    }
    // Killed after creating batch 2's file, before writing it and the seq file.
    std::fs::write(
        dir.path().join(SPOOL_DIR).join("00000000000000000002.pb"),
        b"",
    )
    .unwrap();
    let mut reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(reopened.next_seq(), 3);
    assert!(reopened.batch(1).is_some());
    assert_eq!(reopened.batch(2), None, "never sent as an empty batch");
    assert_eq!(seqs(&reopened), [1]);
}

#[test]
fn the_seq_file_is_rewritten_in_place_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    for n in 1..=12 {
        outbox.push(sample(n)).unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join(SEQ_FILE)).unwrap();
    assert_eq!(text.len(), 21, "{text:?}");
    assert_eq!(text.trim(), "13");
    drop(outbox);
    assert_eq!(Outbox::open(dir.path(), ROOMY).unwrap().next_seq(), 13);
}

/// Appends raw bytes to the newest segment, as a crash or another writer would leave them.
fn append_raw(dir: &Path, bytes: &[u8]) {
    let newest = spooled_files(dir).pop().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(SPOOL_DIR).join(newest))
        .unwrap();
    file.write_all(bytes).unwrap();
}

fn spool_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join(SPOOL_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn a_torn_last_record_is_cut_off_on_reopen_and_its_seq_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        for n in 1..=2 {
            outbox.push(sample(n)).unwrap();
        }
    }
    let whole = spool_size(dir.path());
    // A kill (or a power loss) in the middle of batch 3's write: half a record.
    let batch = SampleBatch {
        seq: 3,
        samples: sample(3),
        dropped_batches_total: 0,
    };
    let mut record = Vec::new();
    encode_record(&mut record, KIND_BATCH, 3, &batch.encode_to_vec());
    append_raw(dir.path(), &record[..record.len() / 2]);
    let mut reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(seqs(&reopened), [1, 2], "never replayed as garbage");
    assert_eq!(
        spool_size(dir.path()),
        whole,
        "cut back to the last whole record"
    );
    assert_eq!(
        reopened.next_seq(),
        4,
        "the torn seq is skipped, not reused"
    );
    assert_eq!(reopened.push(sample(4)).unwrap().seq, 4);
    drop(reopened);

    // A whole-length record whose checksum does not hold is cut off too.
    let mut garbled = Vec::new();
    encode_record(&mut garbled, KIND_BATCH, 5, &[1, 2, 3, 4]);
    let last = garbled.len() - 1;
    garbled[last] ^= 0xff;
    append_raw(dir.path(), &garbled);
    let mut reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(seqs(&reopened), [1, 2, 4]);
    assert_eq!(reopened.batch(4).unwrap().samples[0].time_unix_ms, 4);
    assert!(reopened.next_seq() > 5);
}

#[test]
fn segments_rotate_and_are_deleted_once_everything_in_them_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    outbox.push(sample(1)).unwrap();
    // About three batches per segment.
    outbox.segment_bytes = spool_size(dir.path()) * 3 + 10;
    for n in 2..=9 {
        outbox.push(sample(n)).unwrap();
    }
    let files = spooled_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(files[0], "00000000000000000001.seg");
    // Acking the newer batches deletes nothing while the oldest is waiting.
    for seq in 2..=9 {
        assert!(outbox.ack(seq));
    }
    assert_eq!(spooled_files(dir.path()), files);
    assert!(outbox.ack(1));
    let left = spooled_files(dir.path());
    assert_eq!(left.len(), 1, "only the segment appended to: {left:?}");
    assert_eq!(&left[0], files.last().unwrap());
    // Rotation goes on as the outbox fills and empties.
    for n in 10..=30 {
        let seq = outbox.push(sample(n)).unwrap().seq;
        assert!(outbox.ack(seq));
        assert!(spooled_files(dir.path()).len() <= 2);
    }
    drop(outbox);
    let reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert!(reopened.is_empty());
    assert_eq!(reopened.next_seq(), 31);
}

#[test]
fn replay_is_oldest_first_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
        outbox.push(sample(1)).unwrap();
        outbox.segment_bytes = spool_size(dir.path()) * 2 + 10;
        for n in 2..=10 {
            outbox.push(sample(n)).unwrap();
        }
        assert!(spooled_files(dir.path()).len() >= 4);
        // Acks out of order, in old and new segments.
        for seq in [2, 5, 6, 9] {
            assert!(outbox.ack(seq));
        }
        for seq in [1, 3, 4, 7, 8, 10] {
            written.push(outbox.batch(seq).unwrap());
        }
    }
    let mut reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(seqs(&reopened), [1, 3, 4, 7, 8, 10]);
    let mut replayed = Vec::new();
    let mut from = 0;
    while let Some(seq) = reopened.next_unsent_seq(from) {
        replayed.push(reopened.batch(seq).unwrap());
        from = seq + 1;
    }
    assert_eq!(replayed, written, "byte for byte, oldest first");
    assert_eq!(reopened.push(sample(11)).unwrap().seq, 11);
}

#[test]
fn drop_oldest_across_segments_counts_exactly_and_deletes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), bounded(3)).unwrap();
    outbox.push(sample(1)).unwrap();
    outbox.segment_bytes = spool_size(dir.path()) * 2 + 10;
    let mut dropped = Vec::new();
    for n in 2..=40 {
        dropped.extend(outbox.push(sample(n)).unwrap().dropped);
    }
    assert_eq!(dropped, (1..=37).collect::<Vec<u64>>());
    assert_eq!(outbox.dropped_batches_total(), 37);
    assert_eq!(seqs(&outbox), [38, 39, 40]);
    let files = spooled_files(dir.path());
    assert!(
        files.len() <= 4,
        "segments of dropped batches go: {files:?}"
    );
    assert_eq!(outbox.batch(40).unwrap().dropped_batches_total, 37);
    drop(outbox);
    let reopened = Outbox::open(dir.path(), bounded(3)).unwrap();
    assert_eq!(seqs(&reopened), [38, 39, 40]);
    assert_eq!(
        reopened.dropped_batches_total(),
        37,
        "exact across a reopen"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join(DROPPED_FILE)).unwrap(),
        "37\n"
    );
}

#[test]
fn batch_files_of_the_old_spool_are_moved_into_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        Outbox::open(dir.path(), ROOMY).unwrap();
    }
    let spool = dir.path().join(SPOOL_DIR);
    let mut written = Vec::new();
    for seq in [3, 4] {
        let batch = SampleBatch {
            seq,
            samples: sample(seq as i64),
            dropped_batches_total: 1,
        };
        std::fs::write(spool.join(format!("{seq:020}.pb")), batch.encode_to_vec()).unwrap();
        written.push(batch);
    }
    std::fs::write(spool.join("00000000000000000005.pb"), b"").unwrap();
    let mut reopened = Outbox::open(dir.path(), ROOMY).unwrap();
    assert_eq!(seqs(&reopened), [3, 4]);
    assert_eq!(reopened.batch(3).unwrap(), written[0]);
    assert_eq!(reopened.batch(4).unwrap(), written[1]);
    assert_eq!(reopened.next_seq(), 6, "the empty file's seq is not reused");
    assert_eq!(reopened.dropped_batches_total(), 1);
    assert_eq!(spooled_files(dir.path()), ["00000000000000000003.seg"]);
}

/// `cargo test -p agent --release --lib outbox::tests::push_ack_cost -- --ignored --nocapture`:
/// the CPU time (user + system) of one push and its ack, the outbox's share of a sample.
#[test]
#[ignore = "a measurement, not a check"]
fn push_ack_cost() {
    fn cpu_ticks() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        (fields[11].parse().unwrap(), fields[12].parse().unwrap())
    }
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), ROOMY).unwrap();
    let batch: Vec<Sample> = (0..8).flat_map(sample).collect();
    let n = 20_000u64;
    let (user0, sys0) = cpu_ticks();
    for _ in 0..n {
        let seq = outbox.push(batch.clone()).unwrap().seq;
        assert!(outbox.ack(seq));
    }
    let (user1, sys1) = cpu_ticks();
    // Clock ticks of 10 ms.
    let per = |ticks: u64| ticks as f64 * 10_000.0 / n as f64;
    println!(
        "push+ack: {:.1} µs CPU ({:.1} user, {:.1} system) over {n}",
        per(user1 + sys1 - user0 - sys0),
        per(user1 - user0),
        per(sys1 - sys0)
    );
}

/// One step of the crash model.
#[derive(Debug, Clone)]
enum Op {
    Push,
    AckOldest,
    /// Acks the batch at this index (modulo the outbox's length): acks out of order.
    AckAt(usize),
    /// A clean stop and start.
    Reopen,
    /// The agent dies and the newest segment loses its last `cut` bytes (a torn write, or
    /// writes a power loss kept from the disk). With `reboot`, the seq file is lost too and
    /// the machine boots again (another boot id).
    Crash {
        cut: usize,
        reboot: bool,
    },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => Just(Op::Push),
        3 => Just(Op::AckOldest),
        1 => (0..8usize).prop_map(Op::AckAt),
        1 => Just(Op::Reopen),
        1 => (0..200usize, any::<bool>()).prop_map(|(cut, reboot)| Op::Crash { cut, reboot }),
    ]
}

/// Reopens with small segments, so that rotation and segment deletion happen often.
fn reopen_small(dir: &Path, bounds: Bounds) -> Outbox {
    let mut outbox = Outbox::open(dir, bounds).unwrap();
    outbox.segment_bytes = 150;
    outbox
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever the pushes, acks, restarts and crashes: no seq is ever handed out twice;
    /// a clean restart gives back exactly the unacknowledged batches, oldest first, and the
    /// exact drop count; after a crash only batches that were pushed come back (removed
    /// ones may: the aggregator discards those as duplicates; the cut-off ones are skipped
    /// seqs); the bound holds; every waiting batch reads back whole.
    #[test]
    fn the_spool_survives_any_history_of_pushes_acks_restarts_and_crashes(
        max_batches in 1..6usize,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        check_history(max_batches, ops)?;
    }
}

/// Runs `ops` against a real outbox and against a model of what it must hold.
fn check_history(
    max_batches: usize,
    ops: Vec<Op>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::{prop_assert, prop_assert_eq};
    let dir = tempfile::tempdir().unwrap();
    let bounds = bounded(max_batches);
    let mut outbox = reopen_small(dir.path(), bounds);
    // Pushed, not acked, not dropped: oldest first.
    let mut waiting: Vec<u64> = Vec::new();
    // Every seq ever pushed, acked or dropped.
    let mut removed: HashSet<u64> = HashSet::new();
    let mut highest_handed_out = 0;
    let mut dropped_total = 0;
    for op in ops {
        match op {
            Op::Push => {
                let pushed = outbox.push(sample(0)).unwrap();
                prop_assert!(pushed.seq > highest_handed_out, "seq {} reused", pushed.seq);
                highest_handed_out = pushed.seq;
                prop_assert_eq!(
                    &pushed.dropped[..],
                    &waiting[..pushed.dropped.len()],
                    "drops the oldest"
                );
                waiting.drain(..pushed.dropped.len());
                removed.extend(&pushed.dropped);
                dropped_total += pushed.dropped.len() as u64;
                waiting.push(pushed.seq);
            }
            Op::AckOldest => {
                if let Some(&seq) = waiting.first() {
                    prop_assert!(outbox.ack(seq));
                    waiting.remove(0);
                    removed.insert(seq);
                }
            }
            Op::AckAt(idx) => {
                if !waiting.is_empty() {
                    let seq = waiting.remove(idx % waiting.len());
                    prop_assert!(outbox.ack(seq));
                    removed.insert(seq);
                }
            }
            Op::Reopen => {
                outbox.sync().unwrap();
                drop(outbox);
                outbox = reopen_small(dir.path(), bounds);
                prop_assert_eq!(seqs(&outbox), waiting.clone());
                prop_assert_eq!(outbox.dropped_batches_total(), dropped_total);
                prop_assert_eq!(outbox.next_seq(), highest_handed_out + 1);
            }
            Op::Crash { cut, reboot } => {
                drop(outbox);
                if let Some(newest) = spooled_files(dir.path()).pop() {
                    let newest = dir.path().join(SPOOL_DIR).join(newest);
                    let len = std::fs::metadata(&newest).unwrap().len();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&newest)
                        .unwrap()
                        .set_len(len.saturating_sub(cut as u64))
                        .unwrap();
                }
                if reboot {
                    std::fs::write(dir.path().join(SEQ_FILE), "1\n").unwrap();
                    let text = reservation(dir.path());
                    let until = text.split_whitespace().next().unwrap().to_owned();
                    std::fs::write(
                        dir.path().join(SEQ_RESERVED_FILE),
                        format!("{until} another-boot\n"),
                    )
                    .unwrap();
                }
                outbox = reopen_small(dir.path(), bounds);
                let back = seqs(&outbox);
                for seq in &back {
                    prop_assert!(
                        waiting.contains(seq) || removed.contains(seq),
                        "{seq} was never pushed"
                    );
                }
                prop_assert!(
                    outbox.next_seq() > highest_handed_out,
                    "next seq {} could reuse {highest_handed_out}",
                    outbox.next_seq()
                );
                prop_assert!(outbox.dropped_batches_total() >= dropped_total || cut > 0);
                // What came back is the new truth; batches cut off are skipped seqs.
                for seq in &back {
                    removed.remove(seq);
                }
                waiting = back;
                dropped_total = outbox.dropped_batches_total();
                // Seqs skipped at the restart count as handed out.
                highest_handed_out = outbox.next_seq() - 1;
            }
        }
        prop_assert!(outbox.len() <= max_batches);
        for &seq in &waiting {
            let batch = outbox.batch(seq);
            prop_assert_eq!(batch.map(|batch| batch.seq), Some(seq));
        }
    }
    Ok(())
}
