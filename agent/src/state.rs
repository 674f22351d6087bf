//! Small files in the state directory, written so that a crash leaves either the old or the
//! new content, never a torn one (temp file, fsync when it must survive a power loss,
//! rename).
//!
//! It knows nothing about what the files mean; [`crate::identity`] and [`crate::outbox`]
//! own their files' names and formats.

use std::io::Write;
use std::path::Path;

use crate::AgentError;

/// Creates the state directory if it does not exist yet.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(dir).map_err(|source| AgentError::State {
        path: dir.to_owned(),
        source,
    })
}

/// The file's content, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::State {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the file's content atomically and durably (fsync before the rename).
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> Result<(), AgentError> {
    write_replacing(path, content, true)
}

/// Replaces the file's content atomically, without waiting for the disk: a killed process
/// leaves the old or the new content, but a power loss may leave the old one. For files
/// rewritten on every sample, where an fsync would cost more CPU than the whole sample.
pub(crate) fn write_replace(path: &Path, content: &[u8]) -> Result<(), AgentError> {
    write_replacing(path, content, false)
}

fn write_replacing(path: &Path, content: &[u8], durable: bool) -> Result<(), AgentError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp_path = std::path::PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp_path)?;
        file.write_all(content)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&tmp_path, path)
    })();
    result.map_err(|source| AgentError::State {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        assert_eq!(read_optional(&path).unwrap(), None);
        write_atomic(&path, b"1\n").unwrap();
        write_atomic(&path, b"2\n").unwrap();
        assert_eq!(read_optional(&path).unwrap().as_deref(), Some("2\n"));
        assert!(!dir.path().join("seq.tmp").exists());
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("seq");
        let err = write_atomic(&path, b"1").unwrap_err();
        assert!(err.to_string().contains("missing-dir/seq"), "{err}");
    }
}
