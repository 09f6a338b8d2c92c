//! The server's abuse protection, between accept and TLS: banned sources are closed at once,
//! and no source holds more than its share of unfinished handshakes. Failures reported by the
//! accept path and the policy feed the [`Bans`] table — or, with `[bans.redis]`, the shared
//! count in Redis (see [`crate::shared_bans`]), whose bans every server imposes; bans and
//! unbans are logged, counted and audited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sssonector_tunnel::server::Gate;
use tokio::sync::{mpsc, watch};

use crate::audit::Audit;
use crate::bans::{Ban, Bans};
use crate::sessions::rfc3339;
use crate::status::BanStatus;

/// Bans, handshake shares, and where to report. Clones share them.
#[derive(Clone)]
pub(crate) struct Shield {
    bans: Option<Bans>,
    /// Unfinished handshakes per source.
    inflight: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_inflight: usize,
    audit: Audit,
    /// Ends the live sessions from a newly banned source; returns how many.
    on_ban: Option<OnBan>,
    /// Failures to count in Redis, when bans are shared.
    shared: Option<mpsc::Sender<Failure>>,
}

/// A failure on its way to the shared count: the source it counts against and why.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) source: IpAddr,
    pub(crate) reason: String,
}

/// Where a ban was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Counted by this server alone.
    Local,
    /// Counted in Redis across the servers sharing it.
    Shared,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Shared => "shared",
        }
    }
}

/// Told of each new ban's source (an address, or an IPv6 /64 network) and how to tell an
/// address in it; returns the sessions it ended.
pub(crate) type OnBan = Arc<dyn Fn(&dyn Fn(IpAddr) -> bool) -> usize + Send + Sync>;

impl std::fmt::Debug for Shield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shield")
            .field("bans", &self.bans)
            .field("max_inflight", &self.max_inflight)
            .finish_non_exhaustive()
    }
}

/// One unfinished handshake, counted against its source until dropped.
struct Inflight {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        if let Some(n) = table.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.source);
            }
        }
    }
}

impl Shield {
    /// `bans` off (`None`) still caps unfinished handshakes per source at `max_inflight`.
    pub(crate) fn new(bans: Option<Bans>, max_inflight: usize, audit: Audit) -> Self {
        Self {
            bans,
            inflight: Arc::default(),
            max_inflight: max_inflight.max(1),
            audit,
            on_ban: None,
            shared: None,
        }
    }

    /// Sends failures to `queue` (the shared count) instead of counting them here; a failure
    /// the queue has no room for is counted here.
    pub(crate) fn with_shared(mut self, queue: mpsc::Sender<Failure>) -> Self {
        self.shared = Some(queue);
        self
    }

    /// Ends the live sessions of each newly banned source through `on_ban`.
    pub(crate) fn with_on_ban(mut self, on_ban: OnBan) -> Self {
        self.on_ban = Some(on_ban);
        self
    }

    fn source(&self, addr: IpAddr) -> IpAddr {
        match &self.bans {
            Some(bans) => bans.source(addr),
            None => sssonector_ratelimit::IpGrouping::default().key(addr),
        }
    }

    /// The accept loop's gate.
    pub(crate) fn gate(&self) -> Gate {
        let shield = self.clone();
        Arc::new(move |peer: SocketAddr| {
            if let Some(bans) = &shield.bans {
                if bans.banned(peer.ip()).is_some() {
                    return Err("banned");
                }
            }
            let source = shield.source(peer.ip());
            let mut table = shield.inflight.lock();
            let n = table.entry(source).or_insert(0);
            if *n >= shield.max_inflight {
                return Err("handshakes_per_source");
            }
            *n += 1;
            drop(table);
            Ok(Box::new(Inflight {
                table: Arc::clone(&shield.inflight),
                source,
            }))
        })
    }

    /// A failure from `peer` (a refused handshake, a policy denial): counted toward a ban.
    pub(crate) fn failure(&self, peer: SocketAddr, reason: &str) {
        let Some(bans) = &self.bans else { return };
        if let Some(queue) = &self.shared {
            let failure = Failure {
                source: bans.source(peer.ip()),
                reason: reason.to_owned(),
            };
            match queue.try_send(failure) {
                Ok(()) => return,
                Err(_) => metrics::counter!("sssonector_bans_shared_errors_total", "error" => "queue_full")
                    .increment(1),
            }
        }
        self.count_here(peer.ip(), reason);
    }

    /// Counts a failure in this server's own table (no shared count, or it failed).
    pub(crate) fn count_here(&self, addr: IpAddr, reason: &str) {
        let Some(bans) = &self.bans else { return };
        if let Some(ban) = bans.failure(addr, reason) {
            self.announce(bans, &ban, Origin::Local);
        }
    }

    /// Imposes a ban decided in the shared count (by this server's failure or another's);
    /// reported once, when it is new here.
    pub(crate) fn impose(&self, source: IpAddr, left: Duration, level: u32, reason: &str) {
        let Some(bans) = &self.bans else { return };
        if let Some(ban) = bans.impose(source, left, level, reason) {
            self.announce(bans, &ban, Origin::Shared);
        }
    }

    fn announce(&self, bans: &Bans, ban: &Ban, origin: Origin) {
        let ended = self.on_ban.as_ref().map_or(0, |end| {
            end(&|addr: IpAddr| bans.source(addr) == ban.source)
        });
        tracing::warn!(
            source = %ban.source,
            seconds = ban.length.as_secs(),
            level = ban.level,
            reason = ban.reason,
            origin = origin.as_str(),
            sessions_ended = ended,
            "source banned"
        );
        metrics::counter!("sssonector_bans_total", "reason" => ban.reason.clone()).increment(1);
        metrics::gauge!("sssonector_bans_active").set(count(bans.list().len()));
        self.audit
            .event("ban")
            .remote(ban.source)
            .field("seconds", ban.length.as_secs())
            .field("level", ban.level)
            .field("reason", ban.reason.as_str())
            .field("origin", origin.as_str())
            .field("sessions_ended", ended)
            .emit();
    }

    /// Puts back a ban saved before a restart.
    pub(crate) fn restore_ban(&self, source: IpAddr, left: Duration, level: u32, reason: &str) {
        if let Some(bans) = &self.bans {
            bans.restore(source, left, level, reason);
        }
    }

    /// Bans in force as (source, time left, level, reason), for the state file.
    pub(crate) fn saved_bans(&self) -> Vec<(IpAddr, Duration, u32, String)> {
        self.bans.as_ref().map_or_else(Vec::new, |bans| {
            bans.snapshot()
                .into_iter()
                .map(|(ban, left)| (ban.source, left, ban.level, ban.reason))
                .collect()
        })
    }

    /// Bans in force, for `/status`.
    pub(crate) fn status(&self) -> Vec<BanStatus> {
        let Some(bans) = &self.bans else {
            return Vec::new();
        };
        let now = SystemTime::now();
        bans.list()
            .into_iter()
            .map(|ban| BanStatus {
                source: ban.source.to_string(),
                until: rfc3339(now + bans.remaining(&ban)),
                reason: ban.reason,
            })
            .collect()
    }

    /// Ends bans whose time is up, every 10 s, until `stop`.
    pub(crate) async fn sweep(self, mut stop: watch::Receiver<bool>) {
        let Some(bans) = self.bans.clone() else {
            return;
        };
        let mut ticks = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for ban in bans.sweep() {
                self.unbanned(&ban);
            }
            metrics::gauge!("sssonector_bans_active").set(count(bans.list().len()));
        }
    }

    fn unbanned(&self, ban: &Ban) {
        tracing::info!(source = %ban.source, "ban ended");
        self.audit
            .event("unban")
            .remote(ban.source)
            .field("reason", ban.reason.as_str())
            .emit();
    }
}

#[allow(clippy::cast_precision_loss, reason = "ban counts are far below 2^52")]
fn count(n: usize) -> f64 {
    n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::BanPolicy;

    #[test]
    fn a_source_holds_at_most_its_share_of_handshakes() {
        let shield = Shield::new(None, 2, Audit::off());
        let gate = shield.gate();
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let first = gate(a).unwrap();
        let _second = gate(a).unwrap();
        assert_eq!(gate(a).err(), Some("handshakes_per_source"));
        assert!(gate(b).is_ok(), "another source has its own share");
        drop(first);
        assert!(gate(a).is_ok(), "a finished handshake frees its place");
    }

    #[test]
    fn a_new_ban_ends_the_sources_live_sessions() {
        let bans = Bans::new(
            BanPolicy {
                failures: 1,
                window: Duration::from_secs(60),
                ban: Duration::from_secs(60),
                max_ban: Duration::from_secs(60),
            },
            Arc::new(sssonector_core::ManualClock::new()),
        );
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&asked);
        let shield = Shield::new(Some(bans), 10, Audit::off()).with_on_ban(Arc::new(
            move |from: &dyn Fn(IpAddr) -> bool| {
                let candidates: [IpAddr; 3] = [
                    "2001:db8:1:2::9".parse().unwrap(),
                    "2001:db8:1:3::9".parse().unwrap(),
                    "192.0.2.1".parse().unwrap(),
                ];
                let picked: Vec<IpAddr> = candidates.into_iter().filter(|a| from(*a)).collect();
                let n = picked.len();
                seen.lock().extend(picked);
                n
            },
        ));
        shield.failure("[2001:db8:1:2::1]:1000".parse().unwrap(), "policy");
        // The whole /64 of the offender, nothing else.
        assert_eq!(
            *asked.lock(),
            ["2001:db8:1:2::9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_banned_source_is_closed_at_once() {
        let bans = Bans::new(
            BanPolicy {
                failures: 2,
                window: Duration::from_secs(60),
                ban: Duration::from_secs(60),
                max_ban: Duration::from_secs(60),
            },
            Arc::new(sssonector_core::ManualClock::new()),
        );
        let shield = Shield::new(Some(bans), 10, Audit::off());
        let gate = shield.gate();
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        shield.failure(a, "tls");
        assert!(gate(a).is_ok());
        shield.failure(a, "tls");
        assert_eq!(gate(a).err(), Some("banned"));
        assert_eq!(shield.status().len(), 1);
        assert_eq!(shield.status()[0].source, "192.0.2.1");
    }
}
