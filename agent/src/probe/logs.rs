//! The log tailer: lines appended to the configured files (`[[logs]] path`, `*` and `?`
//! allowed in the file name), as `LogRecord`s, surviving rotation and truncation.
//!
//! Files are followed by identity (device and inode), not by name, through an open handle
//! read with `pread`:
//! - **rotation by rename** (`app.json` → `app.json.1`, a new `app.json`): the old handle
//!   keeps reading the renamed file to its end, for one more poll after it left the pattern
//!   (a writer may append a last line before it reopens), then it is closed; the new file
//!   is read from its start. A renamed file that still matches the pattern is the same
//!   inode, so it is not read twice.
//! - **truncation** (`copytruncate`): a file shorter than what was read is read again from
//!   its start.
//!
//! Files present when the agent starts are read from their end (the history is not
//! shipped); files that appear later are read from their start. Offsets are not persisted:
//! lines written while the agent is stopped are not shipped.
//!
//! Memory is bounded: at most `max_lines_per_batch` lines per poll call (the caller calls
//! again while [`Polled::more`] says so), each cut to `max_line_bytes` (cut lines are
//! counted), one read buffer shared by all files. It does not know about batches or the
//! network; it does not parse the lines.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::v1::{LogRecord, sample};

use super::{Collected, Collecting, Probe};
use crate::AgentError;
use crate::config::{AgentConfig, LogConfig};

/// One tailer for all `[[logs]]` sections, polling at the shortest of their intervals;
/// none without a section.
pub(crate) fn probes(config: &AgentConfig) -> Result<Vec<Box<dyn Probe>>, AgentError> {
    if config.logs.is_empty() {
        return Ok(Vec::new());
    }
    let probe: Box<dyn Probe> = Box::new(LogTailer::new(&config.logs));
    Ok(vec![probe])
}

/// Bytes read from a file at a time.
const READ_CHUNK: usize = 16 * 1024;

/// What one [`LogTailer::poll`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// Complete lines, in file order (files rotated away before the files that replaced
    /// them).
    pub records: Vec<LogRecord>,
    /// Lines among `records` that were longer than their `max_line_bytes` and were cut.
    pub cut_lines: u64,
    /// True when the line cap stopped the poll before every file was read to its end.
    pub more: bool,
}

/// Follows every file matching the configured patterns.
#[derive(Debug)]
pub struct LogTailer {
    poll_interval: Duration,
    patterns: Vec<Pattern>,
    /// Followed files, oldest first.
    files: Vec<TailedFile>,
    buf: Vec<u8>,
    max_lines_per_batch: usize,
    /// Lines cut to `max_line_bytes` since the agent started.
    pub cut_lines_total: u64,
}

#[derive(Debug)]
struct Pattern {
    dir: PathBuf,
    file_name: String,
    max_line_bytes: usize,
}

#[derive(Debug)]
struct TailedFile {
    /// The name it was last seen under, as shipped in `LogRecord.path`.
    path: PathBuf,
    file: File,
    id: (u64, u64),
    offset: u64,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    /// The partial line was already cut.
    partial_cut: bool,
    max_line_bytes: usize,
    /// Polls since it stopped matching its pattern; it is closed after one.
    polls_gone: u32,
}

impl LogTailer {
    /// Starts following the files matching `configs` now, from their current end.
    pub fn new(configs: &[LogConfig]) -> LogTailer {
        let patterns = configs
            .iter()
            .map(|config| {
                let path = Path::new(&config.path);
                Pattern {
                    dir: path
                        .parent()
                        .map_or_else(|| PathBuf::from("/"), Path::to_owned),
                    file_name: path
                        .file_name()
                        .map(|name| name.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    max_line_bytes: config.max_line_bytes.max(1),
                }
            })
            .collect();
        let mut tailer = LogTailer {
            poll_interval: configs
                .iter()
                .map(|config| config.poll_interval)
                .min()
                .unwrap_or(Duration::from_secs(1)),
            patterns,
            files: Vec::new(),
            buf: vec![0; READ_CHUNK],
            max_lines_per_batch: configs
                .iter()
                .map(|config| config.max_lines_per_batch)
                .min()
                .unwrap_or(1)
                .max(1),
            cut_lines_total: 0,
        };
        tailer.discover(true);
        tailer
    }

    /// The files followed right now.
    pub fn followed(&self) -> Vec<&Path> {
        self.files.iter().map(|file| file.path.as_path()).collect()
    }

    /// Reads what was appended since the last poll, up to `max_lines_per_batch` lines.
    pub fn poll(&mut self) -> Polled {
        self.discover(false);
        let mut polled = Polled::default();
        for file in &mut self.files {
            let room = self.max_lines_per_batch - polled.records.len();
            if room == 0 {
                polled.more = true;
                break;
            }
            if file.read_lines(&mut self.buf, room, &mut polled) {
                polled.more = true;
                break;
            }
        }
        if !polled.more {
            // Files that left their pattern were read once more above; now they go, with a
            // last line that never got its newline.
            self.files.retain_mut(|file| {
                if file.polls_gone < 2 {
                    return true;
                }
                if !file.partial.is_empty() {
                    let line = std::mem::take(&mut file.partial);
                    polled.records.push(record(&file.path, &line));
                }
                false
            });
        }
        self.cut_lines_total += polled.cut_lines;
        polled
    }

    /// Matches the patterns against the directories: new files are followed, renamed ones
    /// get their new name, files that no longer match start their last poll.
    fn discover(&mut self, at_start: bool) {
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        for pattern in &self.patterns {
            let Ok(entries) = std::fs::read_dir(&pattern.dir) else {
                continue;
            };
            let mut matching: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    glob_match(&pattern.file_name, &entry.file_name().to_string_lossy())
                })
                .map(|entry| entry.path())
                .collect();
            matching.sort();
            for path in matching {
                let Ok(metadata) = std::fs::metadata(&path) else {
                    continue;
                };
                if !metadata.is_file() {
                    continue;
                }
                let id = (metadata.dev(), metadata.ino());
                if !seen.insert(id) {
                    continue;
                }
                if let Some(file) = self.files.iter_mut().find(|file| file.id == id) {
                    file.path = path;
                    file.polls_gone = 0;
                    continue;
                }
                match File::open(&path) {
                    Ok(file) => {
                        let offset = if at_start { metadata.len() } else { 0 };
                        tracing::info!(path = %path.display(), offset, "tailing");
                        self.files.push(TailedFile {
                            path,
                            file,
                            id,
                            offset,
                            partial: Vec::new(),
                            partial_cut: false,
                            max_line_bytes: pattern.max_line_bytes,
                            polls_gone: 0,
                        });
                    }
                    Err(err) => tracing::warn!(path = %path.display(), "cannot tail: {err}"),
                }
            }
        }
        for file in &mut self.files {
            if !seen.contains(&file.id) {
                file.polls_gone += 1;
            }
        }
    }
}

impl TailedFile {
    /// Reads complete lines into `polled`, at most `room` of them; true when it stopped
    /// because of `room` with more to read.
    fn read_lines(&mut self, buf: &mut [u8], room: usize, polled: &mut Polled) -> bool {
        let mut n_lines = 0;
        if let Ok(metadata) = self.file.metadata()
            && metadata.len() < self.offset
        {
            tracing::info!(path = %self.path.display(), "truncated; reading from its start");
            self.offset = 0;
            self.partial.clear();
            self.partial_cut = false;
        }
        loop {
            let n_read = match self.file.read_at(buf, self.offset) {
                Ok(0) => return false,
                Ok(n_read) => n_read,
                Err(err) => {
                    tracing::warn!(path = %self.path.display(), "cannot read: {err}");
                    return false;
                }
            };
            let chunk = &buf[..n_read];
            let mut consumed = 0;
            while let Some(newline) = chunk[consumed..].iter().position(|&byte| byte == b'\n') {
                let segment = &chunk[consumed..consumed + newline];
                self.append_partial(segment);
                consumed += newline + 1;
                let line = std::mem::take(&mut self.partial);
                let line = line.strip_suffix(b"\r").unwrap_or(&line);
                polled.records.push(record(&self.path, line));
                if std::mem::take(&mut self.partial_cut) {
                    polled.cut_lines += 1;
                }
                n_lines += 1;
                if n_lines == room {
                    self.offset += consumed as u64;
                    return true;
                }
            }
            self.append_partial(&chunk[consumed..]);
            self.offset += n_read as u64;
        }
    }

    /// Adds bytes to the line being assembled, keeping at most `max_line_bytes`.
    fn append_partial(&mut self, bytes: &[u8]) {
        let room = self.max_line_bytes.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial_cut = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl Probe for LogTailer {
    fn name(&self) -> &str {
        "logs"
    }

    fn interval(&self) -> Duration {
        self.poll_interval
    }

    /// Event-driven: silence says nothing about the node.
    fn announced_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// At most `max_lines_per_batch` lines; `more` while the backlog lasts.
    fn collect(&mut self) -> Collecting<'_> {
        let polled = self.poll();
        if polled.cut_lines > 0 {
            tracing::warn!(
                cut_lines = polled.cut_lines,
                cut_lines_total = self.cut_lines_total,
                "log lines longer than max_line_bytes were cut"
            );
        }
        let samples = polled.records.into_iter().map(sample::Kind::Log).collect();
        Box::pin(std::future::ready(Collected {
            samples,
            more: polled.more,
        }))
    }
}

fn record(path: &Path, line: &[u8]) -> LogRecord {
    LogRecord {
        path: path.display().to_string(),
        line: String::from_utf8_lossy(line).into_owned(),
    }
}

/// `*` matches any run of characters, `?` one character; nothing else is special.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p_idx, mut n_idx) = (0, 0);
    // Where the last `*` was, and how much of the name it has swallowed.
    let mut star: Option<(usize, usize)> = None;
    while n_idx < name.len() {
        match pattern.get(p_idx) {
            Some('*') => {
                star = Some((p_idx, n_idx));
                p_idx += 1;
            }
            Some(&c) if c == '?' || c == name[n_idx] => {
                p_idx += 1;
                n_idx += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p_idx = star_p + 1;
                    n_idx = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p_idx..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests;
