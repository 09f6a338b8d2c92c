//! A direct (unkeyed) rate limiter: one or several quotas, checked or waited on.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};
use parking_lot::Mutex;
use sssonector_core::{RateLimited, SharedClock, Timeline};

use crate::error::{ConfigError, Rejected};
use crate::gcra::{Cell, Decision, Params, ticks, ticks_to_duration};
use crate::quota::Quota;

/// What an admitted check leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Capacity left, in `unit`s of the tightest quota; divided only on request.
    slack: u64,
    unit: u64,
}

impl Admitted {
    /// `remaining` units left.
    pub(crate) fn units(remaining: u64) -> Self {
        Self {
            slack: remaining,
            unit: 1,
        }
    }

    /// `slack` ticks left under a quota whose unit is worth `unit` ticks.
    #[inline]
    pub(crate) fn ticks(slack: u64, unit: u64) -> Self {
        Self { slack, unit }
    }

    /// Units still available at once (under the tightest quota).
    pub fn remaining(&self) -> u64 {
        self.slack / self.unit.max(1)
    }
}

/// A rate limiter: one quota, or several stacked (say 10/s and 1000/h) that are decided
/// together, all admitting or none charged.
///
/// Checks with a single quota are lock-free. Clones share the limiter.
///
/// # Examples
///
/// ```
/// use sssonector_ratelimit::{Quota, RateLimiter};
///
/// let limiter = RateLimiter::new(Quota::per_second(10)?.with_burst(2)?);
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_ok());
/// let denied = limiter.check().unwrap_err();
/// assert!(denied.retry_after <= std::time::Duration::from_millis(100));
/// # Ok::<(), sssonector_ratelimit::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The name, if given (metrics are recorded only then).
    name: Option<Cow<'static, str>>,
    timeline: Timeline,
    /// The first quota's state, inline: a single-quota check touches no other allocation.
    first: Limit,
    /// Further stacked quotas.
    rest: Box<[Limit]>,
    /// Serialises decisions across several quotas and rate changes.
    lock: Mutex<()>,
    metrics: Metrics,
}

struct Limit {
    quota: Mutex<Quota>,
    t: AtomicU64,
    tau: AtomicU64,
    burst: AtomicU64,
    cell: Cell,
}

impl Inner {
    fn limits(&self) -> impl Iterator<Item = &Limit> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    fn count(&self) -> usize {
        1 + self.rest.len()
    }
}

impl Limit {
    fn new(quota: Quota) -> Self {
        let p = Params::from_quota(&quota);
        Self {
            quota: Mutex::new(quota),
            t: AtomicU64::new(p.t),
            tau: AtomicU64::new(p.tau),
            burst: AtomicU64::new(p.burst),
            cell: Cell::default(),
        }
    }

    #[inline]
    fn params(&self) -> Params {
        Params {
            t: self.t.load(Ordering::Relaxed),
            tau: self.tau.load(Ordering::Relaxed),
            burst: self.burst.load(Ordering::Relaxed),
        }
    }

    fn set_params(&self, p: Params) {
        self.t.store(p.t, Ordering::Relaxed);
        self.tau.store(p.tau, Ordering::Relaxed);
        self.burst.store(p.burst, Ordering::Relaxed);
    }
}

/// A refusal: `wait` ticks until admitted, `remaining` units now. Out of line, so the admitting
/// path stays small.
#[cold]
#[inline(never)]
fn limited(wait: u64, remaining: u64) -> RateLimited {
    RateLimited::with_remaining(ticks_to_duration(wait), remaining)
}

/// The admitted / limited counters and the wait histogram; present only for named limiters, so
/// an unnamed limiter's check touches nothing but its own state.
pub(crate) struct Metrics(Option<Handles>);

struct Handles {
    admitted: Counter,
    limited: Counter,
    wait: Histogram,
}

impl Metrics {
    pub(crate) fn register(kind: &'static str, name: Option<&str>) -> Self {
        Self(name.map(|name| Handles {
            admitted: metrics::counter!("sssonector_ratelimit_admitted_total", "limiter" => name.to_owned(), "kind" => kind),
            limited: metrics::counter!("sssonector_ratelimit_limited_total", "limiter" => name.to_owned(), "kind" => kind),
            wait: metrics::histogram!("sssonector_ratelimit_wait_seconds", "limiter" => name.to_owned(), "kind" => kind),
        }))
    }

    #[inline]
    pub(crate) fn count<T, E>(&self, result: &Result<T, E>) {
        if let Some(h) = &self.0 {
            match result {
                Ok(_) => h.admitted.increment(1),
                Err(_) => h.limited.increment(1),
            }
        }
    }

    pub(crate) fn waited(&self, wait: Duration) {
        if let Some(h) = &self.0 {
            h.admitted.increment(1);
            if !wait.is_zero() {
                h.wait.record(wait.as_secs_f64());
            }
        }
    }
}

impl RateLimiter {
    /// A limiter with one quota, on tokio's clock, named `"default"`.
    pub fn new(quota: Quota) -> Self {
        Self::builder()
            .quota(quota)
            .build()
            .expect("one quota is a valid limiter")
    }

    /// A builder, for several quotas, a name or a clock.
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder {
            name: None,
            quotas: Vec::new(),
            clock: None,
        }
    }

    /// The limiter's name (the `limiter` metric label), `"default"` when unnamed.
    pub fn name(&self) -> &str {
        self.inner.name.as_deref().unwrap_or("default")
    }

    /// The quotas, in the order given.
    pub fn quotas(&self) -> Vec<Quota> {
        self.inner.limits().map(|l| *l.quota.lock()).collect()
    }

    #[inline]
    fn now(&self) -> u64 {
        ticks(self.inner.timeline.now_nanos())
    }

    /// Admits one unit if every quota allows it.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] with how long until a unit would be admitted and how many are left.
    #[inline]
    pub fn check(&self) -> Result<Admitted, RateLimited> {
        let inner = &*self.inner;
        let result = if inner.rest.is_empty() {
            // A burst is at least 1, so a cost of 1 always fits: no capacity check.
            let now = self.now();
            let params = inner.first.params();
            match inner.first.cell.check(&params, now, params.t) {
                Decision::Admit { slack, .. } => Ok(Admitted::ticks(slack, params.t)),
                Decision::Deny { wait, remaining } => Err(limited(wait, remaining)),
            }
        } else {
            match self.decide_stacked(1) {
                Ok(a) => Ok(a),
                Err(Rejected::Limited(l)) => Err(l),
                Err(Rejected::InsufficientCapacity { .. }) => Err(RateLimited::new(Duration::MAX)),
            }
        };
        inner.metrics.count(&result);
        result
    }

    /// Admits `cost` units (a weighted request, or bytes) if every quota allows it.
    ///
    /// # Errors
    ///
    /// [`Rejected::Limited`] when over the limit now; [`Rejected::InsufficientCapacity`] when
    /// `cost` exceeds a quota's burst and can never be admitted at once.
    #[inline]
    pub fn check_n(&self, cost: u64) -> Result<Admitted, Rejected> {
        let result = self.decide(cost);
        self.inner.metrics.count(&result);
        result
    }

    /// One quota: lock-free and inline. Several: out of line, under the lock, so the common
    /// case stays a small function (the stacked path's frame and spills measurably slowed it).
    #[inline]
    fn decide(&self, cost: u64) -> Result<Admitted, Rejected> {
        if !self.inner.rest.is_empty() {
            return self.decide_stacked(cost);
        }
        let now = self.now();
        let limit = &self.inner.first;
        let params = limit.params();
        let increment = params.charge(cost)?;
        match limit.cell.check(&params, now, increment) {
            Decision::Admit { slack, .. } => Ok(Admitted::ticks(slack, params.t)),
            Decision::Deny { wait, remaining } => Err(Rejected::Limited(limited(wait, remaining))),
        }
    }

    #[inline(never)]
    fn decide_stacked(&self, cost: u64) -> Result<Admitted, Rejected> {
        let now = self.now();
        let _guard = self.inner.lock.lock();
        let params: Vec<Params> = self.inner.limits().map(Limit::params).collect();
        let increments = params
            .iter()
            .map(|p| p.charge(cost))
            .collect::<Result<Vec<_>, _>>()?;
        let limits = params
            .iter()
            .zip(self.inner.limits())
            .zip(&increments)
            .map(|((p, l), inc)| (p, l.cell.tat(), *inc));
        let (new_tats, remaining) = crate::gcra::decide_all(limits, now)?;
        for (limit, tat) in self.inner.limits().zip(new_tats) {
            limit.cell.set_tat(tat);
        }
        Ok(Admitted::units(remaining))
    }

    /// Waits until one unit is admitted, then takes it.
    ///
    /// Waiters are served first come, first served: each reserves its place when it starts
    /// waiting, so a steady stream of `check` calls cannot starve it. Dropping the future gives
    /// the reservation back.
    pub async fn until_ready(&self) {
        // A cost of 1 always fits the burst.
        let _ = self.until_n_ready(1).await;
    }

    /// Waits until `cost` units are admitted, then takes them.
    ///
    /// # Errors
    ///
    /// [`Rejected::InsufficientCapacity`] at once when `cost` exceeds a quota's burst.
    pub async fn until_n_ready(&self, cost: u64) -> Result<(), Rejected> {
        let reservation = self.reserve(cost)?;
        let wait = reservation.wait;
        self.inner.metrics.waited(wait);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        reservation.complete();
        Ok(())
    }

    /// Charges `cost` units now and says how long to wait before using them; the reservation
    /// is refunded if dropped before [`Reservation::complete`].
    pub(crate) fn reserve(&self, cost: u64) -> Result<Reservation, Rejected> {
        let now = self.now();
        let _guard = (self.inner.count() > 1).then(|| self.inner.lock.lock());
        let mut wait = 0;
        let increments = self
            .inner
            .limits()
            .map(|l| l.params().charge(cost))
            .collect::<Result<Vec<_>, _>>()?;
        for (limit, increment) in self.inner.limits().zip(&increments) {
            wait = wait.max(limit.cell.reserve(&limit.params(), now, *increment));
        }
        Ok(Reservation {
            limiter: self.clone(),
            increments,
            wait: ticks_to_duration(wait),
            done: false,
        })
    }

    /// Changes quota `index` (0 for a single-quota limiter) at run time. Debt carries over in
    /// units, so a limiter that was over its old limit is still over the new one by as many
    /// units.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] if there is no quota at `index`.
    pub fn set_quota(&self, index: usize, quota: Quota) -> Result<(), ConfigError> {
        let limit = match index {
            0 => &self.inner.first,
            i => self.inner.rest.get(i - 1).ok_or(ConfigError::NoQuota)?,
        };
        let _guard = self.inner.lock.lock();
        let old = limit.params();
        let new = Params::from_quota(&quota);
        let now = self.now();
        let debt = limit.cell.tat().saturating_sub(now);
        // Units owed under the old rate, charged at the new one.
        let units = u128::from(debt) * u128::from(new.t) / u128::from(old.t);
        limit
            .cell
            .set_tat(now.saturating_add(u64::try_from(units).unwrap_or(u64::MAX)));
        limit.set_params(new);
        *limit.quota.lock() = quota;
        tracing::info!(limiter = self.name(), index, quota = %quota, "rate limit changed");
        Ok(())
    }

    /// Units available at once now, under the tightest quota.
    pub fn remaining(&self) -> u64 {
        let now = self.now();
        self.inner
            .limits()
            .map(|l| l.params().remaining(l.cell.tat(), now))
            .min()
            .unwrap_or(0)
    }

    /// How long until the limiter is back to full capacity.
    pub fn reset_after(&self) -> Duration {
        let now = self.now();
        let ahead = self
            .inner
            .limits()
            .map(|l| l.cell.tat().saturating_sub(now))
            .max()
            .unwrap_or(0);
        ticks_to_duration(ahead)
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.name())
            .field("quotas", &self.quotas())
            .finish()
    }
}

/// A reservation of capacity, refunded if dropped before it is completed.
#[derive(Debug)]
pub(crate) struct Reservation {
    limiter: RateLimiter,
    increments: Vec<u64>,
    pub(crate) wait: Duration,
    done: bool,
}

impl Reservation {
    pub(crate) fn complete(mut self) {
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            let now = self.limiter.now();
            for (limit, increment) in self.limiter.inner.limits().zip(&self.increments) {
                limit.cell.refund(now, *increment);
            }
        }
    }
}

/// Builds a [`RateLimiter`].
pub struct RateLimiterBuilder {
    name: Option<Cow<'static, str>>,
    quotas: Vec<Quota>,
    clock: Option<SharedClock>,
}

impl fmt::Debug for RateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("name", &self.name)
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

impl RateLimiterBuilder {
    /// Names the limiter, and turns on its metrics, labelled `limiter = name`. Unnamed
    /// limiters record no metrics (and so cost nothing beyond their own state per check).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a quota; every quota must admit a request.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// The clock (default: the time-stamp counter, see `Timeline::fast`). Tests that pause
    /// tokio's clock pass `Arc::new(TokioClock)` so checks and waits agree.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Reads tokio's clock, so that under `tokio::time::pause` checks see the same time as
    /// waits (for tests).
    pub fn tokio_clock(self) -> Self {
        self.clock(Arc::new(sssonector_core::TokioClock))
    }

    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] without a quota.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        if self.quotas.is_empty() {
            return Err(ConfigError::NoQuota);
        }
        let clock = self.clock;
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                metrics: Metrics::register("direct", self.name.as_deref()),
                name: self.name,
                timeline: clock.map_or_else(Timeline::fast, Timeline::new),
                first: Limit::new(self.quotas[0]),
                rest: self.quotas[1..].iter().copied().map(Limit::new).collect(),
                lock: Mutex::new(()),
            }),
        })
    }
}
