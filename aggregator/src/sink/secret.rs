//! Secrets in sink configs (tokens, keys, webhook URLs): written inline or read from a
//! `*_file`, and never shown. `Secret`'s `Debug` prints a placeholder, it has no
//! `Display` and no `Serialize`, so neither a log line nor an API answer can carry one
//! by accident.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SinkError;

/// A value that must not be logged nor returned.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The secret written inline, else read from `file` (trailing newline trimmed).
pub fn resolve(
    field: &'static str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, SinkError> {
    if let Some(secret) = inline {
        return Ok(Some(secret.clone()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| SinkError::SecretFile {
        field,
        path: path.display().to_string(),
        source,
    })?;
    Ok(Some(Secret(text.trim_end_matches(['\n', '\r']).to_owned())))
}

/// Like `resolve`, for a secret the sink cannot work without.
pub fn require(
    field: &'static str,
    inline: Option<&Secret>,
    file: Option<&PathBuf>,
) -> Result<Secret, SinkError> {
    resolve(field, inline, file.map(PathBuf::as_path))?.ok_or(SinkError::Invalid {
        field,
        problem: format!("set {field} or {field}_file"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(secret)).contains("hunter2"));
    }

    #[test]
    fn read_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let secret = require("token", None, Some(&path)).unwrap();
        assert_eq!(secret.expose(), "s3cret");
        let missing = require("token", None, None).unwrap_err();
        assert_eq!(missing.to_string(), "token: set token or token_file");
    }
}
