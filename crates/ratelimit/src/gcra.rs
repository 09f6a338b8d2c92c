//! The Generic Cell Rate Algorithm, sans IO: decisions from a state, a time and a cost.
//!
//! GCRA keeps one number per limit, the theoretical arrival time (TAT): when the limiter will be
//! back to full capacity. A request of cost `n` at time `now` is admitted when
//! `max(TAT, now) + n·T − now ≤ τ`, where `T` is the time one unit is worth and `τ = burst·T`;
//! admitting moves TAT to `max(TAT, now) + n·T`.
//!
//! Times are in ticks of 1/64 ns: fine enough that `T` is exact to within 1.6 % even at
//! 10 Gbit/s counted in bytes, and a `u64` of them lasts 9 years from the limiter's start. `T`
//! is rounded up, so a limiter never admits more than its quota.

use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

use sssonector_core::RateLimited;

use crate::error::Rejected;
use crate::quota::Quota;

/// Ticks per nanosecond.
pub(crate) const TICKS_PER_NS: u64 = 64;

/// Converts nanoseconds on a timeline to ticks.
#[inline]
pub(crate) fn ticks(ns: u64) -> u64 {
    ns.saturating_mul(TICKS_PER_NS)
}

/// Converts ticks to a duration, rounding up so a caller told to wait never wakes early.
#[inline]
pub(crate) fn ticks_to_duration(t: u64) -> Duration {
    Duration::from_nanos(t.div_ceil(TICKS_PER_NS))
}

/// A quota in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Params {
    /// Ticks one unit is worth.
    pub(crate) t: u64,
    /// Burst tolerance: `burst · t`.
    pub(crate) tau: u64,
    pub(crate) burst: u64,
}

impl Params {
    pub(crate) fn from_quota(quota: &Quota) -> Self {
        let period = u128::from(ticks(
            u64::try_from(quota.period().as_nanos()).unwrap_or(u64::MAX),
        ));
        let t = period.div_ceil(u128::from(quota.count())).max(1);
        let t = u64::try_from(t).unwrap_or(u64::MAX);
        Self {
            t,
            tau: t.saturating_mul(quota.burst()),
            burst: quota.burst(),
        }
    }

    /// Ticks `cost` units are worth, or `None` if that exceeds the burst (never admissible).
    #[inline]
    pub(crate) fn increment(&self, cost: u64) -> Option<u64> {
        if cost > self.burst {
            return None;
        }
        Some(self.t * cost) // ≤ tau, which fits
    }

    /// Ticks `cost` units are worth, or the refusal for a cost above the burst.
    #[inline]
    pub(crate) fn charge(&self, cost: u64) -> Result<u64, Rejected> {
        self.increment(cost).ok_or(Rejected::InsufficientCapacity {
            requested: cost,
            burst: self.burst,
        })
    }

    /// Units available at `now` for state `tat`.
    #[inline]
    pub(crate) fn remaining(&self, tat: u64, now: u64) -> u64 {
        let used = tat.saturating_sub(now);
        self.tau.saturating_sub(used) / self.t
    }
}

/// The outcome of one decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted; the new TAT and the ticks of capacity left (divided by `t` only when someone
    /// asks how many units that is: a division per check was measurable).
    Admit { tat: u64, slack: u64 },
    /// Refused; ticks until the cost would be admitted, and the units available now.
    Deny { wait: u64, remaining: u64 },
}

/// Decides a request of `increment` ticks at `now` against `tat`.
#[inline]
pub(crate) fn decide(params: &Params, tat: u64, now: u64, increment: u64) -> Decision {
    let base = tat.max(now);
    let new_tat = base.saturating_add(increment);
    let ahead = new_tat - now;
    if ahead <= params.tau {
        Decision::Admit {
            tat: new_tat,
            slack: params.tau - ahead,
        }
    } else {
        Decision::Deny {
            wait: ahead - params.tau,
            remaining: params.remaining(tat, now),
        }
    }
}

/// Decides a cost against several limits together (the caller holds whatever lock makes this
/// atomic): the new TATs and the units left under the tightest limit if every limit admits,
/// else the refusal with the longest wait and the least capacity.
#[inline(never)]
pub(crate) fn decide_all<'a>(
    limits: impl Iterator<Item = (&'a Params, u64, u64)>,
    now: u64,
) -> Result<(Vec<u64>, u64), RateLimited> {
    let mut tats = Vec::new();
    let mut left = u64::MAX;
    let mut denied: Option<RateLimited> = None;
    for (params, tat, increment) in limits {
        match decide(params, tat, now, increment) {
            Decision::Admit { tat, slack } => {
                tats.push(tat);
                left = left.min(slack / params.t);
            }
            Decision::Deny { wait, remaining } => {
                let wait = ticks_to_duration(wait);
                denied = Some(match denied {
                    Some(d) => RateLimited::with_remaining(
                        d.retry_after.max(wait),
                        d.remaining.min(remaining),
                    ),
                    None => RateLimited::with_remaining(wait, remaining),
                });
            }
        }
    }
    match denied {
        Some(denied) => Err(denied),
        None => Ok((tats, left)),
    }
}

/// One GCRA state, updated lock-free.
#[derive(Debug, Default)]
pub(crate) struct Cell {
    tat: AtomicU64,
}

impl Cell {
    /// Admits `increment` ticks at `now` if the limit allows, atomically.
    #[inline]
    pub(crate) fn check(&self, params: &Params, now: u64, increment: u64) -> Decision {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let decision = decide(params, tat, now, increment);
            let Decision::Admit { tat: new_tat, .. } = decision else {
                return decision;
            };
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return decision,
                Err(current) => tat = current,
            }
        }
    }

    /// Charges `increment` ticks unconditionally, returning the ticks to wait from `now` until
    /// the charge is within the limit (0 when it already is). Later charges queue behind it,
    /// which is what makes waiting first-in, first-out.
    #[inline]
    pub(crate) fn reserve(&self, params: &Params, now: u64, increment: u64) -> u64 {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new_tat = tat.max(now).saturating_add(increment);
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (new_tat - now).saturating_sub(params.tau),
                Err(current) => tat = current,
            }
        }
    }

    /// Gives back `increment` ticks charged by an unused reservation, never below `now`.
    pub(crate) fn refund(&self, now: u64, increment: u64) {
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(increment).max(now.min(tat)))
            });
    }

    pub(crate) fn tat(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }

    pub(crate) fn set_tat(&self, tat: u64) {
        self.tat.store(tat, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(count: u64, per: Duration, burst: u64) -> Params {
        Params::from_quota(&Quota::new(count, per).unwrap().with_burst(burst).unwrap())
    }

    #[test]
    fn burst_then_rate() {
        let p = params(10, Duration::from_secs(1), 3);
        let cell = Cell::default();
        let ms = |n: u64| ticks(n * 1_000_000);
        for left in [2, 1, 0] {
            match cell.check(&p, 0, p.t) {
                Decision::Admit { slack, .. } => assert_eq!(slack / p.t, left),
                other => panic!("{other:?}"),
            }
        }
        match cell.check(&p, 0, p.t) {
            Decision::Deny { wait, remaining } => {
                assert_eq!(ticks_to_duration(wait), Duration::from_millis(100));
                assert_eq!(remaining, 0);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cell.check(&p, ms(100), p.t),
            Decision::Admit { .. }
        ));
        assert!(matches!(
            cell.check(&p, ms(100), p.t),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn reservations_queue_and_refunds_return_capacity() {
        let p = params(10, Duration::from_secs(1), 1);
        let cell = Cell::default();
        assert_eq!(cell.reserve(&p, 0, p.t), 0);
        assert_eq!(
            ticks_to_duration(cell.reserve(&p, 0, p.t)),
            Duration::from_millis(100)
        );
        assert_eq!(
            ticks_to_duration(cell.reserve(&p, 0, p.t)),
            Duration::from_millis(200)
        );
        cell.refund(0, p.t);
        assert_eq!(
            ticks_to_duration(cell.reserve(&p, 0, p.t)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn costs_above_the_burst_are_never_admissible() {
        let p = params(10, Duration::from_secs(1), 5);
        assert!(p.increment(6).is_none());
        assert_eq!(p.increment(5), Some(5 * p.t));
    }
}

/// The limiter's state under every interleaving of concurrent callers, explored by loom
/// (`RUSTFLAGS="--cfg sssonector_loom" cargo test -p sssonector-ratelimit --lib loom`).
#[cfg(all(test, sssonector_loom))]
mod loom_tests {
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    fn params(count: u64, burst: u64) -> Arc<Params> {
        let quota = Quota::new(count, Duration::from_secs(1))
            .unwrap()
            .with_burst(burst)
            .unwrap();
        Arc::new(Params::from_quota(&quota))
    }

    /// Two callers race for a burst of one at one instant: exactly one is admitted, and the
    /// state ends as one admission leaves it.
    #[test]
    fn racing_checks_admit_exactly_the_burst() {
        loom::model(|| {
            let p = params(10, 1);
            let cell = Arc::new(Cell::default());
            let other = {
                let (p, cell) = (Arc::clone(&p), Arc::clone(&cell));
                thread::spawn(move || matches!(cell.check(&p, 0, p.t), Decision::Admit { .. }))
            };
            let mine = matches!(cell.check(&p, 0, p.t), Decision::Admit { .. });
            let theirs = other.join().unwrap();
            assert!(mine != theirs, "admitted: mine {mine}, theirs {theirs}");
            assert_eq!(cell.tat(), p.t);
        });
    }

    /// A reservation racing with another reservation and a refund: each reservation is
    /// charged exactly once, and the refund gives back one charge if there was one to give
    /// back, never going below `now`.
    #[test]
    fn racing_reservations_and_a_refund_keep_the_books() {
        loom::model(|| {
            let p = params(10, 1);
            let t = p.t;
            let cell = Arc::new(Cell::default());
            let other = {
                let (p, cell) = (Arc::clone(&p), Arc::clone(&cell));
                thread::spawn(move || cell.reserve(&p, 0, p.t))
            };
            let mine = cell.reserve(&p, 0, t);
            cell.refund(0, t);
            let theirs = other.join().unwrap();
            let mut waits = [mine, theirs];
            waits.sort_unstable();
            let outcome = (waits, cell.tat());
            // Mine before theirs, refunded after both; mine refunded before theirs came (it
            // did not wait); theirs first, then mine, refunded.
            let valid = [([0, t], t), ([0, 0], t)];
            assert!(valid.contains(&outcome), "waits and state {outcome:?}");
        });
    }
}
