use std::io::Write;

use super::*;

fn config(path: &Path) -> LogConfig {
    LogConfig {
        path: path.display().to_string(),
        ..LogConfig::default()
    }
}

fn append(path: &Path, lines: &[String]) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

fn numbered(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|n| format!("{{\"n\":{n}}}")).collect()
}

/// Polls until nothing more comes, returning every line.
fn drain(tailer: &mut LogTailer) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let polled = tailer.poll();
        lines.extend(polled.records.into_iter().map(|record| record.line));
        if !polled.more {
            return lines;
        }
    }
}

#[test]
fn existing_content_is_skipped_and_new_lines_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    append(&path, &numbered(0, 3));
    let mut tailer = LogTailer::new(&[config(&path)]);
    assert!(drain(&mut tailer).is_empty(), "history is not shipped");
    append(&path, &numbered(3, 6));
    assert_eq!(drain(&mut tailer), numbered(3, 6));
    assert!(drain(&mut tailer).is_empty());
    let polled = {
        append(&path, &numbered(6, 7));
        tailer.poll()
    };
    assert_eq!(polled.records[0].path, path.display().to_string());
}

#[test]
fn rotation_by_rename_loses_no_line_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    std::fs::write(&path, "").unwrap();
    // The pattern also matches the rotated name: it must not be read twice.
    let pattern = dir.path().join("app.json*");
    let mut tailer = LogTailer::new(&[config(&pattern)]);
    let mut shipped = Vec::new();

    append(&path, &numbered(0, 10));
    shipped.extend(drain(&mut tailer));
    append(&path, &numbered(10, 15));
    // Rotate: rename, the writer appends a last line to its old handle, then reopens.
    let rotated = dir.path().join("app.json.1");
    std::fs::rename(&path, &rotated).unwrap();
    append(&rotated, &numbered(15, 17));
    append(&path, &numbered(17, 25));
    shipped.extend(drain(&mut tailer));
    append(&path, &numbered(25, 30));
    // A second rotation, out of the pattern this time, with lines after the rename.
    let archived = dir.path().join("archived-1");
    std::fs::rename(&path, &archived).unwrap();
    append(&archived, &numbered(30, 32));
    shipped.extend(drain(&mut tailer));
    append(&archived, &numbered(32, 33));
    append(&path, &numbered(33, 40));
    shipped.extend(drain(&mut tailer));
    shipped.extend(drain(&mut tailer));
    shipped.extend(drain(&mut tailer));

    assert_eq!(shipped, numbered(0, 40));
    assert_eq!(tailer.followed().len(), 2, "{:?}", tailer.followed());
}

#[test]
fn truncation_is_read_from_the_start_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    std::fs::write(&path, "").unwrap();
    let mut tailer = LogTailer::new(&[config(&path)]);
    let mut shipped = Vec::new();
    append(&path, &numbered(0, 20));
    shipped.extend(drain(&mut tailer));
    // copytruncate: the content was copied elsewhere; the file starts over.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&path, &numbered(20, 23));
    shipped.extend(drain(&mut tailer));
    assert_eq!(shipped, numbered(0, 23));
}

#[test]
fn batches_are_capped_and_long_lines_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    std::fs::write(&path, "").unwrap();
    let config = LogConfig {
        max_line_bytes: 10,
        max_lines_per_batch: 4,
        ..config(&path)
    };
    let mut tailer = LogTailer::new(&[config]);
    append(&path, &numbered(0, 10));
    let first = tailer.poll();
    assert_eq!(first.records.len(), 4);
    assert!(first.more);
    assert_eq!(drain(&mut tailer), numbered(4, 10));

    let long = "x".repeat(READ_CHUNK * 2 + 7);
    append(&path, &[long, "short".to_owned()]);
    let polled = tailer.poll();
    let lines: Vec<&str> = polled.records.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(lines, ["xxxxxxxxxx", "short"]);
    assert_eq!(polled.cut_lines, 1);
    assert_eq!(tailer.cut_lines_total, 1);
}

#[test]
fn a_line_is_shipped_only_once_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    std::fs::write(&path, "").unwrap();
    let mut tailer = LogTailer::new(&[config(&path)]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"half\":")
        .unwrap();
    assert!(drain(&mut tailer).is_empty());
    append(&path, &["1}\r".to_owned()]);
    assert_eq!(drain(&mut tailer), ["{\"half\":1}"]);
}

#[test]
fn globs() {
    assert!(glob_match("*.json", "eventstore.json"));
    assert!(glob_match("*.json", ".json"));
    assert!(!glob_match("*.json", "eventstore.json.1"));
    assert!(glob_match("log-??.txt", "log-01.txt"));
    assert!(!glob_match("log-??.txt", "log-1.txt"));
    assert!(glob_match("a*b*c", "aXbYbZc"));
    assert!(glob_match("plain", "plain"));
    assert!(!glob_match("plain", "plain2"));
}
