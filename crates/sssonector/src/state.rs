//! The server's state across restarts: address leases and bans, in one versioned JSON file,
//! written atomically (a temporary file, fsync, rename, fsync of the directory) off the
//! runtime, and checked on load. A file that cannot be read as this version is moved aside
//! with a warning, and the server starts clean.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The format's version; a file of another version is moved aside.
const VERSION: u32 = 1;

/// What is saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    pub(crate) version: u32,
    /// Each identity's tunnel addresses.
    #[serde(default)]
    pub(crate) leases: Vec<Lease>,
    /// Bans in force when it was written.
    #[serde(default)]
    pub(crate) bans: Vec<SavedBan>,
}

/// One identity's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Lease {
    pub(crate) identity: String,
    pub(crate) address: IpAddr,
}

/// One ban, with when it ends in seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedBan {
    pub(crate) source: IpAddr,
    pub(crate) until_unix: u64,
    pub(crate) level: u32,
    pub(crate) reason: String,
}

impl SavedBan {
    /// How long it still runs at `now` (`None` once over).
    pub(crate) fn left(&self, now: SystemTime) -> Option<Duration> {
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(self.until_unix);
        until.duration_since(now).ok().filter(|d| !d.is_zero())
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StateError {
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{}: not a state file of version {VERSION}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

/// Reads the state at `path`: empty if there is none yet. A file that is unreadable as
/// this version is renamed `<path>.corrupt-<unix seconds>` (a warning says so) and the
/// state starts empty.
pub(crate) fn load(path: &Path) -> State {
    match read(path) {
        Ok(state) => state,
        Err(StateError::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            State {
                version: VERSION,
                ..State::default()
            }
        }
        Err(e) => {
            let stamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".corrupt-{stamp}"));
            let aside = PathBuf::from(aside);
            let moved = std::fs::rename(path, &aside);
            tracing::warn!(
                error = %e,
                moved_to = %aside.display(),
                moved = moved.is_ok(),
                "the state file is unusable; starting with no leases or bans"
            );
            State {
                version: VERSION,
                ..State::default()
            }
        }
    }
}

fn read(path: &Path) -> Result<State, StateError> {
    let text = std::fs::read_to_string(path).map_err(|error| StateError::Read {
        path: path.to_owned(),
        error,
    })?;
    let state: State = serde_json::from_str(&text).map_err(|e| StateError::Invalid {
        path: path.to_owned(),
        problem: e.to_string(),
    })?;
    if state.version != VERSION {
        return Err(StateError::Invalid {
            path: path.to_owned(),
            problem: format!("version {}", state.version),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for lease in &state.leases {
        if lease.identity.is_empty() || !seen.insert(lease.address) {
            return Err(StateError::Invalid {
                path: path.to_owned(),
                problem: format!("lease {lease:?} is empty or repeats an address"),
            });
        }
    }
    Ok(state)
}

/// Writes `state` to `path` atomically: a reader (or a crash) sees the old file or the new
/// one, never part of either. Blocking: call it off the runtime.
pub(crate) fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let write_error = |error| StateError::Write {
        path: path.to_owned(),
        error,
    };
    let mut text = serde_json::to_vec_pretty(state).map_err(|e| write_error(e.into()))?;
    text.push(b'\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(write_error)?;
        file.write_all(&text).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
    }
    std::fs::rename(&tmp, path).map_err(write_error)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself is durable once the directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sss-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn round_trip() {
        let dir = dir("trip");
        let path = dir.join("state.json");
        assert_eq!(load(&path).leases, []);
        let state = State {
            version: VERSION,
            leases: vec![Lease {
                identity: "alice".into(),
                address: "10.8.0.2".parse().unwrap(),
            }],
            bans: vec![SavedBan {
                source: "192.0.2.7".parse().unwrap(),
                until_unix: 4_000_000_000,
                level: 2,
                reason: "tls".into(),
            }],
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path), state);
        assert!(!dir.join("state.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = dir("corrupt");
        let path = dir.join("state.json");
        for bad in [
            "{ not json",
            r#"{"version": 2, "leases": []}"#,
            r#"{"version": 1, "leases": [{"identity": "a", "address": "10.8.0.2"}, {"identity": "b", "address": "10.8.0.2"}]}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let state = load(&path);
            assert_eq!((state.version, state.leases.len()), (VERSION, 0), "{bad}");
            assert!(!path.exists(), "{bad}: not moved aside");
            let aside: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("state.json.corrupt-")
                })
                .collect();
            assert!(!aside.is_empty(), "{bad}");
            for entry in aside {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
