//! The audit log: one JSON object per line for each security event, apart from the diagnostic
//! log, written by a thread of its own so a slow disk never stalls the tunnel, to a file
//! rotated by size (or to standard output).
//!
//! Every record has `time` (RFC 3339), `event_id`, `event`, and where they apply `session`
//! (the correlation id in that session's diagnostic lines and in `/status`), `identity` and
//! `remote`; the rest are the event's own fields. Keys and tokens are never passed in, so
//! they cannot appear.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::SystemTime;

use serde_json::{Map, Value};

/// Records queued for the writer before new ones are dropped (and counted).
const QUEUE: usize = 16_384;

/// Where the audit log goes and how it rotates.
#[derive(Debug, Clone)]
pub(crate) struct AuditConfig {
    /// The file, or `None` for standard output.
    pub(crate) path: Option<PathBuf>,
    /// Rotate when the file would grow past this.
    pub(crate) max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` the newest).
    pub(crate) keep: usize,
}

/// One event being built: `audit.event("session.start").session(id).field("rule", r).emit()`.
#[must_use = "an event is written only by emit()"]
pub(crate) struct Event<'a> {
    /// The writer's queue and the record, or `None` with the log off: then nothing is built.
    open: Option<(&'a SyncSender<String>, Map<String, Value>)>,
}

impl Event<'_> {
    fn insert(mut self, name: &str, value: impl FnOnce() -> Value) -> Self {
        if let Some((_, record)) = &mut self.open {
            record.insert(name.into(), value());
        }
        self
    }

    /// The session's correlation id.
    pub(crate) fn session(self, id: &str) -> Self {
        self.insert("session", || id.into())
    }

    /// The peer's identity (its certificate's name).
    pub(crate) fn identity(self, name: &str) -> Self {
        self.insert("identity", || name.into())
    }

    /// The peer's address.
    pub(crate) fn remote(self, addr: impl std::fmt::Display) -> Self {
        self.insert("remote", || addr.to_string().into())
    }

    /// Any other field.
    pub(crate) fn field(self, name: &str, value: impl Into<Value>) -> Self {
        self.insert(name, || value.into())
    }

    /// Queues the record for writing.
    pub(crate) fn emit(self) {
        let Some((tx, record)) = self.open else {
            return;
        };
        let mut line = serde_json::to_string(&Value::Object(record)).unwrap_or_default();
        line.push('\n');
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                static WARN: sssonector_core::Throttle =
                    sssonector_core::Throttle::new(std::time::Duration::from_secs(10));
                metrics::counter!("sssonector_audit_dropped_total").increment(1);
                if let Some(suppressed) = WARN.check() {
                    tracing::warn!(
                        suppressed,
                        "audit log queue full: records dropped (is the disk stalled?)"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("sssonector_audit_dropped_total").increment(1);
            }
        }
    }
}

/// The audit log. Clones share its writer; a disabled log ([`Audit::off`]) takes events and
/// writes nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct Audit {
    tx: Option<SyncSender<String>>,
    /// Keeps the writer thread's handle alive with the senders.
    _writer: Option<Arc<std::thread::JoinHandle<()>>>,
}

impl Audit {
    /// No audit log.
    pub(crate) fn off() -> Self {
        Self::default()
    }

    /// Starts the writer. The file is opened (created if need be, mode 0600) before this
    /// returns, so a path that cannot be written is an error at start-up.
    pub(crate) fn start(config: AuditConfig) -> Result<Self, io::Error> {
        let mut sink = Sink::open(config)?;
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
        let writer = std::thread::Builder::new()
            .name("sssonector-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    if let Err(e) = sink.write(&line) {
                        metrics::counter!("sssonector_audit_dropped_total").increment(1);
                        static WARN: sssonector_core::Throttle =
                            sssonector_core::Throttle::new(std::time::Duration::from_secs(10));
                        if let Some(suppressed) = WARN.check() {
                            tracing::warn!(error = %e, suppressed, "cannot write the audit log");
                        }
                    }
                }
                let _ = sink.flush();
            })?;
        Ok(Self {
            tx: Some(tx),
            _writer: Some(Arc::new(writer)),
        })
    }

    /// Starts an event record of kind `event` (`handshake.refused`, `session.start`, …).
    pub(crate) fn event(&self, event: &str) -> Event<'_> {
        Event {
            open: self.tx.as_ref().map(|tx| {
                let mut record = Map::new();
                record.insert("time".into(), rfc3339_micros(SystemTime::now()).into());
                record.insert("event_id".into(), event_id().into());
                record.insert("event".into(), event.into());
                (tx, record)
            }),
        }
    }
}

/// A record's id: this process's random prefix and a counter, 16 hex digits, unique across
/// processes without a system call per record.
fn event_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let prefix = PREFIX.get_or_init(|| crate::sessions::new_id()[..8].to_owned());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{n:08x}")
}

/// RFC 3339 in UTC with microseconds: audit records are ordered finer than seconds.
fn rfc3339_micros(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let at = at
        .replace_nanosecond(at.nanosecond() / 1000 * 1000)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The writer's end: a size-rotated file, or standard output.
struct Sink {
    config: AuditConfig,
    file: Option<File>,
    size: u64,
}

fn open_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

impl Sink {
    fn open(config: AuditConfig) -> io::Result<Self> {
        let (file, size) = match &config.path {
            None => (None, 0),
            Some(path) => {
                let file = open_file(path)?;
                let size = file.metadata()?.len();
                (Some(file), size)
            }
        };
        Ok(Self { config, file, size })
    }

    fn write(&mut self, line: &str) -> io::Result<()> {
        let Some(path) = self.config.path.clone() else {
            let mut out = io::stdout().lock();
            out.write_all(line.as_bytes())?;
            return out.flush();
        };
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.config.max_bytes {
            self.rotate(&path)?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_file(&path)?),
        };
        file.write_all(line.as_bytes())?;
        self.size += len;
        Ok(())
    }

    /// `audit.jsonl` → `audit.jsonl.1` → … → `audit.jsonl.{keep}`, the oldest removed.
    fn rotate(&mut self, path: &Path) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        let numbered = |n: usize| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.config.keep == 0 {
            std::fs::remove_file(path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.config.keep));
            for n in (1..self.config.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(path, numbered(1))?;
        }
        self.file = Some(open_file(path)?);
        self.size = 0;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.sync_all(),
            None => io::stdout().flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn records_carry_time_id_and_fields_and_rotate_by_size() {
        let dir = std::env::temp_dir().join(format!("sss-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let mut sink = Sink::open(AuditConfig {
            path: Some(path.clone()),
            max_bytes: 300,
            keep: 2,
        })
        .unwrap();
        let audit = Audit {
            tx: Some(mpsc::sync_channel(1).0),
            _writer: None,
        };
        for i in 0..12 {
            let (_, record) = audit
                .event("session.start")
                .session("00aa")
                .identity("alice")
                .remote("127.0.0.1:1")
                .field("n", i)
                .open
                .unwrap();
            let mut line = serde_json::to_string(&Value::Object(record)).unwrap();
            line.push('\n');
            sink.write(&line).unwrap();
        }
        let newest = lines(&path);
        let first = &lines(&dir.join("audit.jsonl.1"))[0];
        assert!(!newest.is_empty());
        assert!(std::fs::metadata(&path).unwrap().len() <= 300);
        assert!(dir.join("audit.jsonl.2").exists());
        assert!(
            !dir.join("audit.jsonl.3").exists(),
            "only two rotated files are kept"
        );
        assert_eq!(first["event"], "session.start");
        assert_eq!(first["identity"], "alice");
        assert_eq!(first["session"], "00aa");
        assert_eq!(first["event_id"].as_str().unwrap().len(), 16);
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(newest.last().unwrap()["n"], 11);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "the audit log is readable by its owner only"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_off_log_builds_nothing_and_ids_do_not_repeat() {
        assert!(Audit::off().event("x").session("s").open.is_none());
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| event_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 16));
    }
}
