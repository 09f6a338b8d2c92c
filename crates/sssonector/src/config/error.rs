//! Why a configuration file cannot be used.

use std::path::PathBuf;

/// A configuration file that cannot be read, parsed or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read: {error}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// It is not TOML for this schema: the parser's message names the line and key.
    #[error("{}{}: {message}", overrides_text(overrides), file.display())]
    Parse {
        file: PathBuf,
        /// The environment overrides applied (`field ← VARIABLE`).
        overrides: Vec<String>,
        message: String,
    },
    /// An environment override names a section that is a value.
    #[error("{variable}: {name} is not a section")]
    Override { variable: String, name: String },
    /// It parsed, but these fields are wrong, each named by its path.
    #[error(
        "{}{}: {} problem{}:\n  {}",
        overrides_text(overrides),
        file.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("\n  ")
    )]
    Invalid {
        file: PathBuf,
        overrides: Vec<String>,
        problems: Vec<String>,
    },
}

fn overrides_text(overrides: &[String]) -> String {
    overrides
        .iter()
        .map(|applied| format!("override: {applied}\n"))
        .collect()
}

impl ConfigError {
    /// The message on one line (for systemd's `STATUS=`, which ends at a newline).
    pub(crate) fn one_line(&self) -> String {
        self.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}
