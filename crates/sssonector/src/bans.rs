//! Temporary bans of abusive sources, sans IO: failures (refused handshakes, policy denials)
//! are recorded per source — an IPv4 address, or an IPv6 /64 — and a source with `failures`
//! of them within `window` is banned for `ban`, doubled for each repeat within a day, up to
//! `max_ban`. Time comes from an injectable clock. Memory is bounded: at most
//! [`MAX_SOURCES`] sources are tracked, the stalest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sssonector_core::Clock;
use sssonector_ratelimit::IpGrouping;

/// Sources tracked at most (failures, bans and ban history together).
pub(crate) const MAX_SOURCES: usize = 100_000;

/// After this long without a ban, a source's next ban starts at the base duration again.
const FORGIVE: Duration = Duration::from_secs(24 * 3600);

/// When to ban and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BanPolicy {
    /// Failures within `window` that earn a ban.
    pub(crate) failures: u32,
    pub(crate) window: Duration,
    /// The first ban's length; each repeat within a day doubles it.
    pub(crate) ban: Duration,
    /// The longest ban.
    pub(crate) max_ban: Duration,
}

/// A ban in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ban {
    /// The banned source (an address, or the /64 network of an IPv6 address).
    pub(crate) source: IpAddr,
    pub(crate) until: Instant,
    pub(crate) length: Duration,
    /// The failure that tipped it.
    pub(crate) reason: String,
    /// How many bans this source has had in a row (1 for the first).
    pub(crate) level: u32,
}

#[derive(Debug, Default)]
struct Source {
    failures: VecDeque<Instant>,
    ban: Option<Ban>,
    /// Bans in a row, and when the last one started.
    level: u32,
    last_ban: Option<Instant>,
    last_seen: Option<Instant>,
}

/// The ban table. Clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Bans {
    policy: BanPolicy,
    clock: Arc<dyn Clock>,
    grouping: IpGrouping,
    sources: Arc<Mutex<HashMap<IpAddr, Source>>>,
}

impl Bans {
    pub(crate) fn new(policy: BanPolicy, clock: Arc<dyn Clock>) -> Self {
        Self {
            policy,
            clock,
            grouping: IpGrouping::default(),
            sources: Arc::default(),
        }
    }

    /// The key a peer address is tracked under.
    pub(crate) fn source(&self, addr: IpAddr) -> IpAddr {
        self.grouping.key(addr)
    }

    /// The ban on `addr`'s source now, if any.
    pub(crate) fn banned(&self, addr: IpAddr) -> Option<Ban> {
        let now = self.clock.now();
        let key = self.source(addr);
        let sources = self.sources.lock();
        sources
            .get(&key)
            .and_then(|s| s.ban.clone())
            .filter(|b| b.until > now)
    }

    /// Records a failure from `addr`; returns the ban it earned, if it tipped one.
    pub(crate) fn failure(&self, addr: IpAddr, reason: &str) -> Option<Ban> {
        let now = self.clock.now();
        let key = self.source(addr);
        let mut sources = self.sources.lock();
        if !sources.contains_key(&key) && sources.len() >= MAX_SOURCES {
            forget_stalest(&mut sources);
        }
        let source = sources.entry(key).or_default();
        source.last_seen = Some(now);
        if source.ban.as_ref().is_some_and(|b| b.until > now) {
            return None;
        }
        while source
            .failures
            .front()
            .is_some_and(|at| now.duration_since(*at) >= self.policy.window)
        {
            source.failures.pop_front();
        }
        source.failures.push_back(now);
        if source.failures.len() < self.policy.failures as usize {
            return None;
        }
        source.failures.clear();
        if source
            .last_ban
            .is_none_or(|at| now.duration_since(at) >= FORGIVE)
        {
            source.level = 0;
        }
        source.level = source.level.saturating_add(1);
        source.last_ban = Some(now);
        let length = self
            .policy
            .ban
            .checked_mul(1 << (source.level - 1).min(20))
            .unwrap_or(self.policy.max_ban)
            .min(self.policy.max_ban);
        let ban = Ban {
            source: key,
            until: now + length,
            length,
            reason: reason.to_owned(),
            level: source.level,
        };
        source.ban = Some(ban.clone());
        Some(ban)
    }

    /// Bans in force now, soonest to end first.
    pub(crate) fn list(&self) -> Vec<Ban> {
        let now = self.clock.now();
        let mut bans: Vec<Ban> = self
            .sources
            .lock()
            .values()
            .filter_map(|s| s.ban.clone())
            .filter(|b| b.until > now)
            .collect();
        bans.sort_by_key(|b| b.until);
        bans
    }

    /// Ends bans whose time is up and forgets sources with nothing left to remember; returns
    /// the bans that ended.
    pub(crate) fn sweep(&self) -> Vec<Ban> {
        let now = self.clock.now();
        let mut ended = Vec::new();
        self.sources.lock().retain(|_, source| {
            if let Some(ban) = source.ban.take_if(|b| b.until <= now) {
                ended.push(ban);
            }
            let remembers_ban = source
                .last_ban
                .is_some_and(|at| now.duration_since(at) < FORGIVE);
            let recent_failure = source
                .failures
                .back()
                .is_some_and(|at| now.duration_since(*at) < self.policy.window);
            source.ban.is_some() || remembers_ban || recent_failure
        });
        ended
    }

    /// Bans in force with the time each has left, for saving across a restart.
    pub(crate) fn snapshot(&self) -> Vec<(Ban, Duration)> {
        self.list()
            .into_iter()
            .map(|ban| {
                let left = self.remaining(&ban);
                (ban, left)
            })
            .collect()
    }

    /// Puts back a saved ban with `left` to run (and its level, so a repeat keeps
    /// escalating).
    pub(crate) fn restore(&self, source: IpAddr, left: Duration, level: u32, reason: &str) {
        self.impose(source, left, level, reason);
    }

    /// Bans `source` for `left` at `level`, as decided elsewhere (a saved ban, or one shared
    /// by another server). Returns the ban if the source was not banned already; a ban in
    /// force is only lengthened and raised to `level`, silently.
    pub(crate) fn impose(
        &self,
        source: IpAddr,
        left: Duration,
        level: u32,
        reason: &str,
    ) -> Option<Ban> {
        let now = self.clock.now();
        let key = self.source(source);
        let mut sources = self.sources.lock();
        if !sources.contains_key(&key) && sources.len() >= MAX_SOURCES {
            forget_stalest(&mut sources);
        }
        let entry = sources.entry(key).or_default();
        entry.level = entry.level.max(level).max(1);
        entry.last_seen = Some(now);
        let until = now + left;
        if let Some(ban) = entry.ban.as_mut().filter(|b| b.until > now) {
            if until > ban.until {
                ban.until = until;
                ban.length = until.duration_since(now);
            }
            ban.level = entry.level;
            return None;
        }
        entry.last_ban = Some(now);
        entry.failures.clear();
        let ban = Ban {
            source: key,
            until,
            length: left,
            reason: reason.to_owned(),
            level: entry.level,
        };
        entry.ban = Some(ban.clone());
        Some(ban)
    }

    /// How long until `ban` ends, from now.
    pub(crate) fn remaining(&self, ban: &Ban) -> Duration {
        ban.until.saturating_duration_since(self.clock.now())
    }
}

/// Makes room: forgets the sixteenth of the sources seen longest ago, bans in force kept
/// unless nothing else is left. One scan per sixteenth of the table, not one per new source.
fn forget_stalest(sources: &mut HashMap<IpAddr, Source>) {
    let mut seen: Vec<(bool, Option<Instant>)> = sources
        .values()
        .map(|s| (s.ban.is_some(), s.last_seen))
        .collect();
    let drop = (sources.len() / 16).max(1);
    let (_, cutoff, _) = seen.select_nth_unstable(drop - 1);
    let cutoff = *cutoff;
    let mut left = drop;
    sources.retain(|_, s| {
        if left > 0 && (s.ban.is_some(), s.last_seen) <= cutoff {
            left -= 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use sssonector_core::ManualClock;

    fn bans() -> (Bans, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let bans = Bans::new(
            BanPolicy {
                failures: 3,
                window: Duration::from_secs(60),
                ban: Duration::from_secs(60),
                max_ban: Duration::from_secs(300),
            },
            clock.clone(),
        );
        (bans, clock)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn failures_in_the_window_earn_a_ban_that_ends() {
        let (bans, clock) = bans();
        let a = ip("192.0.2.7");
        assert_eq!(bans.failure(a, "tls"), None);
        assert_eq!(bans.failure(a, "tls"), None);
        let ban = bans.failure(a, "tls").expect("the third failure bans");
        assert_eq!(ban.length, Duration::from_secs(60));
        assert_eq!(ban.reason, "tls");
        assert!(bans.banned(a).is_some());
        assert!(bans.banned(ip("192.0.2.8")).is_none(), "only that source");
        assert_eq!(bans.list().len(), 1);
        clock.advance(Duration::from_secs(61));
        assert!(bans.banned(a).is_none());
        assert_eq!(bans.sweep(), vec![ban]);
        assert!(bans.list().is_empty());
    }

    #[test]
    fn failures_spread_out_earn_nothing() {
        let (bans, clock) = bans();
        let a = ip("192.0.2.7");
        for _ in 0..10 {
            assert_eq!(bans.failure(a, "tls"), None);
            clock.advance(Duration::from_secs(31));
        }
    }

    #[test]
    fn repeats_double_up_to_the_cap_and_a_day_forgives() {
        let (bans, clock) = bans();
        let a = ip("192.0.2.7");
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let ban = (0..3).find_map(|_| bans.failure(a, "policy")).unwrap();
            lengths.push(ban.length.as_secs());
            clock.advance(ban.length + Duration::from_secs(1));
        }
        assert_eq!(lengths, [60, 120, 240, 300, 300]);
        clock.advance(FORGIVE);
        let ban = (0..3).find_map(|_| bans.failure(a, "policy")).unwrap();
        assert_eq!((ban.length.as_secs(), ban.level), (60, 1));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let (bans, _clock) = bans();
        bans.failure(ip("2001:db8:1:2::1"), "tls");
        bans.failure(ip("2001:db8:1:2::2"), "tls");
        let ban = bans.failure(ip("2001:db8:1:2:ffff::3"), "tls").unwrap();
        assert_eq!(ban.source, ip("2001:db8:1:2::"));
        assert!(bans.banned(ip("2001:db8:1:2::99")).is_some());
        assert!(bans.banned(ip("2001:db8:1:3::1")).is_none());
    }

    #[test]
    fn a_restored_ban_holds_and_keeps_escalating() {
        let (bans, clock) = bans();
        let a = ip("192.0.2.7");
        bans.restore(a, Duration::from_secs(30), 2, "tls");
        assert!(bans.banned(a).is_some());
        let saved = bans.snapshot();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].1, Duration::from_secs(30));
        clock.advance(Duration::from_secs(31));
        assert!(bans.banned(a).is_none());
        let next = (0..3).find_map(|_| bans.failure(a, "tls")).unwrap();
        assert_eq!((next.level, next.length.as_secs()), (3, 240));
    }

    #[test]
    fn an_imposed_ban_is_new_once_and_then_only_lengthened() {
        let (bans, clock) = bans();
        let a = ip("2001:db8:1:2::5");
        let ban = bans
            .impose(a, Duration::from_secs(60), 2, "shared")
            .unwrap();
        assert_eq!((ban.source, ban.level), (ip("2001:db8:1:2::"), 2));
        clock.advance(Duration::from_secs(10));
        // Heard again (another server's announcement of the same ban): nothing new.
        assert_eq!(bans.impose(a, Duration::from_secs(60), 2, "shared"), None);
        let held = bans.banned(a).unwrap();
        assert_eq!(bans.remaining(&held), Duration::from_secs(60));
        // A shorter one changes nothing; a higher level is kept for the next ban.
        assert_eq!(bans.impose(a, Duration::from_secs(5), 3, "shared"), None);
        assert_eq!(bans.banned(a).unwrap().level, 3);
        clock.advance(Duration::from_secs(61));
        assert!(bans.banned(a).is_none());
        let next = (0..3).find_map(|_| bans.failure(a, "tls")).unwrap();
        assert_eq!(next.level, 4);
        assert!(
            bans.impose(ip("192.0.2.9"), Duration::from_secs(1), 1, "x")
                .is_some()
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let (bans, _clock) = bans();
        for i in 0..u32::try_from(MAX_SOURCES + 500).unwrap() {
            bans.failure(IpAddr::V4(i.into()), "tls");
        }
        let tracked = bans.sources.lock().len();
        assert!(
            tracked <= MAX_SOURCES && tracked > MAX_SOURCES - MAX_SOURCES / 16 - 1,
            "{tracked}"
        );
    }
}
