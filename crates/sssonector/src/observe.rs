//! What a running server or client knows about itself, for `/status`, `/readyz` and the
//! gauges read from live state: its sessions, certificates, readiness and last reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sssonector_certs::{ReloadableIdentity, ReloadableTrust};

use crate::sessions::{Sessions, rfc3339};
use crate::status::{CertificateStatus, PolicyStatus, ReloadStatus, Status};

/// The shared view of one running server or client. Clones share it.
#[derive(Clone)]
pub(crate) struct Observed {
    inner: Arc<Inner>,
}

struct Inner {
    role: &'static str,
    mode: &'static str,
    started: SystemTime,
    listen: Mutex<Option<String>>,
    /// The server's accept loop, whose client slots count connections from accept to close.
    server: Mutex<Option<sssonector_tunnel::server::Server>>,
    /// The server's access policy.
    guard: Mutex<Option<crate::policy::Guard>>,
    /// The server's bans.
    shield: Mutex<Option<crate::abuse::Shield>>,
    sessions: Sessions,
    identity: Arc<ReloadableIdentity>,
    trust: Arc<ReloadableTrust>,
    cert_file: PathBuf,
    ca_file: PathBuf,
    crl_files: Vec<PathBuf>,
    expiry_warning: Duration,
    last_reload: Mutex<Option<ReloadStatus>>,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("role", &self.inner.role)
            .field("sessions", &self.inner.sessions)
            .finish_non_exhaustive()
    }
}

/// What [`Observed::new`] needs.
pub(crate) struct Sources {
    pub(crate) role: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) identity: Arc<ReloadableIdentity>,
    pub(crate) trust: Arc<ReloadableTrust>,
    pub(crate) cert_file: PathBuf,
    pub(crate) ca_file: PathBuf,
    pub(crate) crl_files: Vec<PathBuf>,
    pub(crate) expiry_warning: Duration,
}

#[allow(
    clippy::cast_possible_wrap,
    reason = "seconds since 1970, far below i64::MAX"
)]
fn signed_seconds(at: SystemTime, now: SystemTime) -> i64 {
    match at.duration_since(now) {
        Ok(left) => left.as_secs() as i64,
        Err(past) => -(past.duration().as_secs() as i64),
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "seconds since 1970, far below 2^52"
)]
fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64)
}

impl Observed {
    pub(crate) fn new(sources: Sources) -> Self {
        Self {
            inner: Arc::new(Inner {
                role: sources.role,
                mode: sources.mode,
                started: SystemTime::now(),
                listen: Mutex::new(None),
                server: Mutex::new(None),
                guard: Mutex::new(None),
                shield: Mutex::new(None),
                sessions: Sessions::default(),
                identity: sources.identity,
                trust: sources.trust,
                cert_file: sources.cert_file,
                ca_file: sources.ca_file,
                crl_files: sources.crl_files,
                expiry_warning: sources.expiry_warning,
                last_reload: Mutex::new(None),
            }),
        }
    }

    /// The live sessions.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// What the server listens on, or the client's servers.
    pub(crate) fn set_listen(&self, listen: String) {
        *self.inner.listen.lock() = Some(listen);
    }

    /// The server's bans, for `/status`.
    pub(crate) fn set_shield(&self, shield: crate::abuse::Shield) {
        *self.inner.shield.lock() = Some(shield);
    }

    /// The server's access policy, for `/status`.
    pub(crate) fn set_guard(&self, guard: crate::policy::Guard) {
        *self.inner.guard.lock() = Some(guard);
    }

    /// The server's accept loop, for the count of connections still in their handshake.
    pub(crate) fn set_server(&self, server: sssonector_tunnel::server::Server) {
        *self.inner.server.lock() = Some(server);
    }

    /// Records what a reload did.
    pub(crate) fn reloaded(&self, ok: bool, outcome: String) -> ReloadStatus {
        let status = ReloadStatus {
            at: rfc3339(SystemTime::now()),
            ok,
            outcome,
        };
        metrics::counter!("sssonector_reloads_total", "result" => if ok { "ok" } else { "failed" })
            .increment(1);
        *self.inner.last_reload.lock() = Some(status.clone());
        status
    }

    /// This side's certificate, CA and CRLs, with when each stops being usable, and the
    /// problems they make for readiness. Publishes their not-after gauges.
    fn certificates(&self, now: SystemTime, problems: &mut Vec<String>) -> Vec<CertificateStatus> {
        let inner = &self.inner;
        let warning = inner.expiry_warning;
        let mut out = Vec::new();
        let mut entry = |kind: &str, file: &std::path::Path, at: Option<SystemTime>| {
            let secs = at.map(|at| signed_seconds(at, now));
            match (kind, secs) {
                (_, Some(s)) if s <= 0 => problems.push(if kind == "crl" {
                    format!(
                        "the CRL {} was due for its next update at {}",
                        file.display(),
                        rfc3339(at.unwrap_or(now))
                    )
                } else {
                    format!(
                        "the {} certificate {} expired at {}",
                        if kind == "ca" { "CA" } else { "own" },
                        file.display(),
                        rfc3339(at.unwrap_or(now))
                    )
                }),
                ("own" | "ca", Some(s)) if s.unsigned_abs() <= warning.as_secs() => {
                    problems.push(format!(
                        "the {} certificate {} expires at {}, within tls.expiry_warning",
                        if kind == "ca" { "CA" } else { "own" },
                        file.display(),
                        rfc3339(at.unwrap_or(now))
                    ))
                }
                _ => {}
            }
            out.push(CertificateStatus {
                kind: kind.to_owned(),
                file: file.display().to_string(),
                expires_at: at.map(rfc3339),
                expires_in_seconds: secs,
            });
        };
        let own = inner.identity.expires_in(now).map(|left| now + left);
        entry("own", &inner.cert_file, own);
        let trust = inner.trust.trust();
        let ca = trust.ca_not_after();
        entry("ca", &inner.ca_file, ca);
        let crl = trust.crl_next_update();
        if !inner.crl_files.is_empty() {
            let files = inner
                .crl_files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            entry("crl", std::path::Path::new(&files), crl);
        }
        for (cert, at) in [("own", own), ("ca", ca)] {
            if let Some(at) = at {
                metrics::gauge!("sssonector_certs_not_after_timestamp_seconds", "cert" => cert)
                    .set(unix_seconds(at));
            }
        }
        if let Some(at) = crl {
            metrics::gauge!("sssonector_certs_crl_next_update_timestamp_seconds")
                .set(unix_seconds(at));
        }
        out
    }

    /// The whole report; also refreshes the gauges read from live state.
    pub(crate) fn status(&self) -> Status {
        let inner = &self.inner;
        let now = SystemTime::now();
        let mut problems = Vec::new();
        let listen = inner.listen.lock().clone();
        match inner.role {
            "server" if listen.is_none() => problems.push("not listening yet".to_owned()),
            "client" if inner.sessions.len() == 0 => {
                problems.push("not connected to any server".to_owned());
            }
            _ => {}
        }
        let certificates = self.certificates(now, &mut problems);
        let sessions = inner.sessions.status();
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        {
            metrics::gauge!("sssonector_sessions", "state" => "established")
                .set(sessions.len() as f64);
            // A client slot is held from accept until the session ends: those without a
            // session yet are in their TLS or tunnel handshake.
            let connected = inner
                .server
                .lock()
                .as_ref()
                .map_or(0, |s| s.stats().connected);
            metrics::gauge!("sssonector_sessions", "state" => "handshaking")
                .set(connected.saturating_sub(sessions.len()) as f64);
            metrics::gauge!("sssonector_tunnel_streams_open")
                .set(sessions.iter().map(|s| s.streams_open).sum::<usize>() as f64);
        }
        let ready = problems.is_empty();
        metrics::gauge!("sssonector_ready").set(if ready { 1.0 } else { 0.0 });
        Status {
            role: inner.role.to_owned(),
            mode: inner.mode.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: rfc3339(inner.started),
            uptime_seconds: now.duration_since(inner.started).map_or(0, |d| d.as_secs()),
            listen,
            ready,
            problems,
            sessions,
            certificates,
            bans: inner
                .shield
                .lock()
                .as_ref()
                .map(crate::abuse::Shield::status)
                .unwrap_or_default(),
            policy: {
                let version = inner
                    .guard
                    .lock()
                    .as_ref()
                    .and_then(|g| g.access().version());
                PolicyStatus {
                    configured: version.is_some(),
                    version,
                }
            },
            last_reload: inner.last_reload.lock().clone(),
        }
    }
}
