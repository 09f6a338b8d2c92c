//! The live sessions of this process, for `/status` and the session gauges: each registered
//! when its link is established and removed when the [`Registered`] guard drops, so a session
//! that ends in any way leaves the table.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use sssonector_certs::PeerIdentity;
use sssonector_tunnel::Link;

use crate::status::{IdentityStatus, SessionStatus};

/// A session's correlation id: 16 hex digits from the system's CSPRNG, in every log line,
/// audit event and status row of that session.
pub(crate) fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The kernel's random source failing is not a reason to refuse a client; a
        // process-unique counter still correlates.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        bytes = NEXT
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes();
    }
    crate::certs_cli::hex(&bytes)
}

/// RFC 3339 in UTC, seconds precision.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at)
        .replace_nanosecond(0)
        .unwrap_or_else(|_| at.into());
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

struct Entry {
    identity: Option<PeerIdentity>,
    remote: String,
    addresses: Vec<IpAddr>,
    since: SystemTime,
    link: Link,
    /// The last rate sample: when, bytes in, bytes out, and the rates it gave.
    sample: Mutex<Sample>,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    bytes_in: u64,
    bytes_out: u64,
    rate_in: f64,
    rate_out: f64,
}

/// The table of live sessions. Clones share it.
#[derive(Clone, Default)]
pub(crate) struct Sessions {
    inner: Arc<Mutex<BTreeMap<String, Arc<Entry>>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.inner.lock().len())
            .finish()
    }
}

/// Removes its session from the table when dropped.
#[must_use = "the session leaves the table when this is dropped"]
pub(crate) struct Registered {
    sessions: Sessions,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.inner.lock().remove(&self.id);
    }
}

impl Sessions {
    /// Adds a session established over `link`.
    pub(crate) fn register(
        &self,
        id: &str,
        identity: Option<PeerIdentity>,
        remote: String,
        addresses: Vec<IpAddr>,
        link: Link,
    ) -> Registered {
        let stats = link.stats();
        let entry = Entry {
            identity,
            remote,
            addresses,
            since: SystemTime::now(),
            sample: Mutex::new(Sample {
                at: Instant::now(),
                bytes_in: stats.bytes_in,
                bytes_out: stats.bytes_out,
                rate_in: 0.0,
                rate_out: 0.0,
            }),
            link,
        };
        self.inner.lock().insert(id.to_owned(), Arc::new(entry));
        Registered {
            sessions: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Sessions live now.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Ends (with a goodbye) every session whose remote address `from` picks; returns how
    /// many.
    pub(crate) fn close_where(&self, from: impl Fn(IpAddr) -> bool) -> usize {
        let mut closed = 0;
        for (_, entry) in self.entries() {
            let remote = entry.remote.parse::<std::net::SocketAddr>().ok();
            if remote.is_some_and(|r| from(r.ip())) && !entry.link.is_closed() {
                entry.link.close();
                closed += 1;
            }
        }
        closed
    }

    /// Closes the live sessions of identity `name` other than `except` (a session id);
    /// returns how many.
    pub(crate) fn close_identity(&self, name: &str, except: &str) -> usize {
        let mut closed = 0;
        for (id, entry) in self.entries() {
            let same = entry.identity.as_ref().is_some_and(|i| i.name() == name);
            if same && id != except && !entry.link.is_closed() {
                entry.link.close();
                closed += 1;
            }
        }
        closed
    }

    fn entries(&self) -> Vec<(String, Arc<Entry>)> {
        self.inner
            .lock()
            .iter()
            .map(|(id, e)| (id.clone(), Arc::clone(e)))
            .collect()
    }

    /// One status row per session. Rates are over the time since the previous call that was
    /// at least a second earlier (since the session began, on the first call).
    #[allow(
        clippy::cast_precision_loss,
        reason = "byte counts and rates far below 2^52"
    )]
    pub(crate) fn status(&self) -> Vec<SessionStatus> {
        let now = Instant::now();
        let wall = SystemTime::now();
        self.entries()
            .into_iter()
            .map(|(id, e)| {
                let stats = e.link.stats();
                let mut sample = e.sample.lock();
                let elapsed = now.duration_since(sample.at).as_secs_f64();
                if elapsed >= 1.0 {
                    *sample = Sample {
                        at: now,
                        bytes_in: stats.bytes_in,
                        bytes_out: stats.bytes_out,
                        rate_in: (stats.bytes_in - sample.bytes_in) as f64 * 8.0 / elapsed,
                        rate_out: (stats.bytes_out - sample.bytes_out) as f64 * 8.0 / elapsed,
                    };
                }
                let seconds = wall.duration_since(e.since).map_or(0, |d| d.as_secs());
                SessionStatus {
                    id,
                    identity: e.identity.as_ref().map(identity_status).unwrap_or_default(),
                    remote: e.remote.clone(),
                    addresses: e.addresses.iter().map(ToString::to_string).collect(),
                    bytes_in: stats.bytes_in,
                    bytes_out: stats.bytes_out,
                    rate_in_bps: sample.rate_in,
                    rate_out_bps: sample.rate_out,
                    streams_open: stats.open_streams,
                    streams_opened: stats.streams_opened,
                    since: rfc3339(e.since),
                    seconds,
                }
            })
            .collect()
    }
}

/// A peer's names as `/status` shows them.
pub(crate) fn identity_status(identity: &PeerIdentity) -> IdentityStatus {
    IdentityStatus {
        name: identity.name().to_owned(),
        common_name: identity.common_name.clone(),
        organizational_units: identity.organizational_units.clone(),
        dns_names: identity.dns_names.clone(),
        uris: identity.uris.clone(),
        sha256: identity.sha256.clone(),
        serial: identity.serial_hex(),
    }
}
