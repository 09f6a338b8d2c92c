//! The circuit breaker state machine.
//!
//! The closed state's hot path takes no lock: admission is one atomic load, and recording an
//! outcome touches a few atomic counters. The lock is taken only to change state, which is rare,
//! and it makes every transition happen exactly once even when many calls cross a threshold
//! together.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use sssonector_core::{CircuitOpen, ErrorClass, Rng, TimeWindow, Timeline, duration_to_nanos};

use crate::config::{BreakerBuilder, Config, Listener, Window};
use crate::count_window::{CountWindow, Totals};
use crate::state::{Cause, State, StateChange};

const STATE_BITS: u32 = 3;

/// The outcome of a call, as the breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that counts against the dependency.
    Failure,
    /// The call's result says nothing about the dependency's health; it is not counted.
    Ignored,
}

impl From<ErrorClass> for Outcome {
    fn from(class: ErrorClass) -> Self {
        if class.is_failure() {
            Outcome::Failure
        } else {
            Outcome::Ignored
        }
    }
}

/// A circuit breaker: stops calling a dependency that keeps failing, and probes it before
/// trusting it again.
///
/// Cloning is cheap; clones share one breaker. See the [crate docs](crate) for the states and an
/// example.
#[derive(Clone)]
pub struct CircuitBreaker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: Config,
    timeline: Timeline,
    /// The state in the low bits, a generation above them. Every transition increments the
    /// generation, so a permit taken under one state cannot affect another.
    word: AtomicU64,
    /// When an open period ends, in timeline nanoseconds; while half-open, when that began.
    open_until: AtomicU64,
    consecutive_failures: AtomicU32,
    count_window: Option<CountWindow>,
    /// Counters: calls, failures, slow calls.
    time_window: Option<TimeWindow<3>>,
    /// Probes in flight while half-open, tagged with the generation in the high 32 bits so that
    /// a permit from an earlier half-open period can never change a later one's count.
    probes: AtomicU64,
    /// Successful probes, tagged likewise.
    probe_successes: AtomicU64,
    /// Serialises transitions; holds the number of opens since the circuit last closed.
    transitions: Mutex<u32>,
    rng: Rng,
    listener: Option<Listener>,
    metrics: Metrics,
}

struct Metrics {
    state: Gauge,
    success: Counter,
    failure: Counter,
    ignored: Counter,
    rejected: Counter,
    slow: Counter,
    transitions: [Counter; 5],
}

impl Metrics {
    fn register(name: &str) -> Self {
        let calls = |outcome: &'static str| metrics::counter!("sssonector_breaker_calls_total", "breaker" => name.to_owned(), "outcome" => outcome);
        let metrics = Self {
            state: metrics::gauge!("sssonector_breaker_state", "breaker" => name.to_owned()),
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: calls("rejected"),
            slow: metrics::counter!("sssonector_breaker_slow_calls_total", "breaker" => name.to_owned()),
            transitions: [
                State::Closed,
                State::Open,
                State::HalfOpen,
                State::ForcedOpen,
                State::ForcedClosed,
            ]
            .map(|to| {
                metrics::counter!(
                    "sssonector_breaker_transitions_total",
                    "breaker" => name.to_owned(),
                    "to" => to.as_str()
                )
            }),
        };
        metrics.state.set(State::Closed.gauge_value());
        metrics
    }
}

#[inline]
fn state_of(word: u64) -> State {
    State::from_bits(word)
}

#[inline]
fn generation_tag(word: u64) -> u64 {
    // The low 32 bits of the generation, moved to the high half of a tagged counter.
    ((word >> STATE_BITS) & 0xFFFF_FFFF) << 32
}

impl CircuitBreaker {
    /// A builder with the defaults (see [`BreakerBuilder`]).
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder::default()
    }

    pub(crate) fn from_builder(builder: BreakerBuilder) -> Self {
        let BreakerBuilder {
            config,
            clock,
            seed,
            listener,
        } = builder;
        let (count_window, time_window) = match (config.uses_window(), config.window) {
            (false, _) => (None, None),
            (true, Window::Count(n)) => (Some(CountWindow::new(n)), None),
            (true, Window::Time { span, buckets }) => {
                (None, Some(TimeWindow::new(span, buckets as usize)))
            }
        };
        let metrics = Metrics::register(&config.name);
        Self {
            inner: Arc::new(Inner {
                timeline: Timeline::new(clock),
                word: AtomicU64::new(State::Closed.to_bits()),
                open_until: AtomicU64::new(0),
                consecutive_failures: AtomicU32::new(0),
                count_window,
                time_window,
                probes: AtomicU64::new(0),
                probe_successes: AtomicU64::new(0),
                transitions: Mutex::new(0),
                rng: seed.map_or_else(Rng::from_entropy, Rng::with_seed),
                listener,
                metrics,
                config,
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The current state.
    ///
    /// An open circuit whose open period has ended still reports [`State::Open`] until the next
    /// call moves it to half-open.
    pub fn state(&self) -> State {
        state_of(self.inner.word.load(Ordering::Acquire))
    }

    /// Asks to make a call. The [`Permit`] records the call's outcome; dropping it unrecorded
    /// (a cancelled call) counts nothing and frees its half-open probe slot.
    ///
    /// # Errors
    ///
    /// [`CircuitOpen`] when the circuit is open, forced open, or half-open with every probe slot
    /// taken. Its `retry_after` says when the open period ends, where that is known.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        let word = self.inner.acquire()?;
        let started = if self.inner.config.slow_call.is_some() {
            self.inner.timeline.now_nanos()
        } else {
            0
        };
        Ok(Permit {
            breaker: self.clone(),
            word,
            started,
            recorded: false,
        })
    }

    /// Forces the circuit open until [`reset`](Self::reset): every call is rejected.
    pub fn force_open(&self) {
        self.inner
            .transition(None, State::ForcedOpen, Cause::Manual);
    }

    /// Forces the circuit closed until [`reset`](Self::reset): every call passes and nothing
    /// trips it.
    pub fn force_closed(&self) {
        self.inner
            .transition(None, State::ForcedClosed, Cause::Manual);
    }

    /// Closes the circuit and forgets every count, ending any forced state.
    pub fn reset(&self) {
        self.inner.transition(None, State::Closed, Cause::Manual);
    }

    /// A snapshot of the counts the breaker decides on.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let totals = inner.window_totals(inner.timeline.now_nanos());
        let word = inner.word.load(Ordering::Acquire);
        let tag = generation_tag(word);
        let tagged = |v: u64| {
            if v & !0xFFFF_FFFF == tag {
                u32::try_from(v & 0xFFFF_FFFF).unwrap_or(u32::MAX)
            } else {
                0
            }
        };
        Stats {
            state: state_of(word),
            consecutive_failures: inner.consecutive_failures.load(Ordering::Acquire),
            window_calls: totals.calls,
            window_failures: totals.failures,
            window_slow_calls: totals.slow,
            probes_in_flight: tagged(inner.probes.load(Ordering::Acquire)),
            probe_successes: tagged(inner.probe_successes.load(Ordering::Acquire)),
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Counts a breaker decides on, from [`CircuitBreaker::stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The state.
    pub state: State,
    /// Failures since the last success (while closed).
    pub consecutive_failures: u32,
    /// Calls in the rate window (0 when no rate trip is configured).
    pub window_calls: u64,
    /// Failed calls in the rate window.
    pub window_failures: u64,
    /// Slow calls in the rate window.
    pub window_slow_calls: u64,
    /// Probe calls in flight (while half-open).
    pub probes_in_flight: u32,
    /// Successful probes so far (while half-open).
    pub probe_successes: u32,
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Record the outcome with [`success`](Self::success), [`failure`](Self::failure),
/// [`ignored`](Self::ignored) or [`record`](Self::record). Dropping it unrecorded counts nothing.
#[must_use = "a permit records the call's outcome; dropping it counts nothing"]
pub struct Permit {
    breaker: CircuitBreaker,
    word: u64,
    started: u64,
    recorded: bool,
}

impl Permit {
    /// Starts the slow-call clock now: for a permit taken before the call itself begins (in
    /// a tower `poll_ready`, say), so waiting for readiness does not count as call time.
    #[inline]
    pub fn start_clock(&mut self) {
        if self.breaker.inner.config.slow_call.is_some() {
            self.started = self.breaker.inner.timeline.now_nanos();
        }
    }

    /// The call succeeded.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The call failed.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// The call's result is not counted either way.
    pub fn ignored(self) {
        self.record(Outcome::Ignored);
    }

    /// Records `outcome`.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        self.breaker.inner.record(self.word, self.started, outcome);
    }

    /// The state the call was admitted in.
    pub fn state(&self) -> State {
        state_of(self.word)
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if !self.recorded && state_of(self.word) == State::HalfOpen {
            self.breaker.inner.release_probe(self.word);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name())
            .field("state", &self.state())
            .finish()
    }
}

impl Inner {
    #[inline]
    fn acquire(&self) -> Result<u64, CircuitOpen> {
        loop {
            let word = self.word.load(Ordering::Acquire);
            match state_of(word) {
                State::Closed | State::ForcedClosed => return Ok(word),
                State::ForcedOpen => return Err(self.reject(None)),
                State::Open => {
                    let now = self.timeline.now_nanos();
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(Some(Duration::from_nanos(until - now))));
                    }
                    self.transition(Some(word), State::HalfOpen, Cause::OpenPeriodEnded);
                }
                State::HalfOpen => {
                    let tag = generation_tag(word);
                    let limit = u64::from(self.config.half_open_probes);
                    let mut probes = self.probes.load(Ordering::Acquire);
                    // Probes still out past the half-open wait (a hung call, a leaked permit)
                    // give their slots up: the circuit opens again and probes afresh later.
                    if probes & !0xFFFF_FFFF == tag && probes & 0xFFFF_FFFF > 0 {
                        let since = self.open_until.load(Ordering::Acquire);
                        let wait = duration_to_nanos(self.config.half_open_wait);
                        if self.timeline.now_nanos() >= since.saturating_add(wait) {
                            self.transition(Some(word), State::Open, Cause::ProbesTimedOut);
                            continue;
                        }
                    }
                    loop {
                        if probes & !0xFFFF_FFFF != tag {
                            // The half-open period this word belongs to is over.
                            break;
                        }
                        if probes & 0xFFFF_FFFF >= limit {
                            return Err(self.reject(None));
                        }
                        match self.probes.compare_exchange_weak(
                            probes,
                            probes + 1,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => return Ok(word),
                            Err(current) => probes = current,
                        }
                    }
                }
            }
        }
    }

    fn reject(&self, retry_after: Option<Duration>) -> CircuitOpen {
        self.metrics.rejected.increment(1);
        CircuitOpen::new(retry_after)
    }

    fn release_probe(&self, word: u64) {
        let tag = generation_tag(word);
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p & !0xFFFF_FFFF == tag && p & 0xFFFF_FFFF > 0).then(|| p - 1)
            });
    }

    #[inline]
    fn record(&self, word: u64, started: u64, outcome: Outcome) {
        let slow = match self.config.slow_call {
            Some((threshold, _)) if outcome != Outcome::Ignored => {
                let elapsed = self.timeline.now_nanos().saturating_sub(started);
                elapsed >= duration_to_nanos(threshold)
            }
            _ => false,
        };
        match outcome {
            Outcome::Success => self.metrics.success.increment(1),
            Outcome::Failure => self.metrics.failure.increment(1),
            Outcome::Ignored => self.metrics.ignored.increment(1),
        }
        if slow {
            self.metrics.slow.increment(1);
        }
        match state_of(word) {
            State::Closed => self.record_closed(word, outcome, slow),
            State::HalfOpen => self.record_probe(word, outcome, slow),
            _ => {}
        }
    }

    #[inline]
    fn record_closed(&self, word: u64, outcome: Outcome, slow: bool) {
        if outcome == Outcome::Ignored {
            return;
        }
        let failed = outcome == Outcome::Failure;
        let mut cause = None;
        if let Some(limit) = self.config.consecutive_failures {
            if failed {
                let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= limit {
                    cause = Some(Cause::ConsecutiveFailures(n));
                }
            } else if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Release);
            }
        }
        if self.config.uses_window() {
            let totals = match (&self.count_window, &self.time_window) {
                (Some(w), _) => w.record(failed, slow),
                (None, Some(w)) => {
                    let now = self.timeline.now_nanos();
                    w.add(now, [1, u64::from(failed), u64::from(slow)]);
                    Totals::from(w.sums(now))
                }
                (None, None) => Totals::default(),
            };
            if cause.is_none() && totals.calls >= u64::from(self.config.minimum_calls.max(1)) {
                let calls = totals.calls as f64;
                if let Some(rate) = self.config.failure_rate {
                    let observed = totals.failures as f64 / calls;
                    if failed && observed >= rate {
                        cause = Some(Cause::FailureRate(observed));
                    }
                }
                if let Some((_, rate)) = self.config.slow_call {
                    let observed = totals.slow as f64 / calls;
                    if slow && observed >= rate && cause.is_none() {
                        cause = Some(Cause::SlowCallRate(observed));
                    }
                }
            }
        }
        if let Some(cause) = cause {
            self.transition(Some(word), State::Open, cause);
        }
    }

    fn record_probe(&self, word: u64, outcome: Outcome, slow: bool) {
        let tag = generation_tag(word);
        if self.word.load(Ordering::Acquire) != word {
            return;
        }
        self.release_probe(word);
        match outcome {
            Outcome::Failure => {
                self.transition(Some(word), State::Open, Cause::ProbeFailed);
            }
            // A slow probe is a sign the dependency has not recovered.
            Outcome::Success if slow => {
                self.transition(Some(word), State::Open, Cause::ProbeFailed);
            }
            Outcome::Success => {
                let updated =
                    self.probe_successes
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                            (s & !0xFFFF_FFFF == tag).then(|| s + 1)
                        });
                if let Ok(previous) = updated {
                    let successes = (previous & 0xFFFF_FFFF) as u32 + 1;
                    if successes >= self.config.success_threshold {
                        self.transition(
                            Some(word),
                            State::Closed,
                            Cause::ProbesSucceeded(successes),
                        );
                    }
                }
            }
            Outcome::Ignored => {}
        }
    }

    fn window_totals(&self, now: u64) -> Totals {
        match (&self.count_window, &self.time_window) {
            (Some(w), _) => w.totals(),
            (None, Some(w)) => Totals::from(w.sums(now)),
            (None, None) => Totals::default(),
        }
    }

    fn clear_counts(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        if let Some(w) = &self.count_window {
            w.clear();
        }
        if let Some(w) = &self.time_window {
            w.clear();
        }
    }

    /// The length of the next open period: the base grown by the number of opens since the
    /// circuit last closed, capped, then spread by ±jitter.
    fn open_duration(&self, opens: u32) -> Duration {
        let c = &self.config;
        let exponent = i32::try_from(opens).unwrap_or(i32::MAX);
        let grown = c.open_duration.as_secs_f64() * c.open_multiplier.powi(exponent);
        let max = c.open_max.as_secs_f64();
        let mut secs = grown.min(max);
        if c.open_jitter > 0.0 {
            secs *= 1.0 + self.rng.range_f64(-c.open_jitter, c.open_jitter);
        }
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(c.open_max)
    }

    /// Moves to `to` if the state word is still `expected` (any state when `None`, for manual
    /// overrides). Returns whether it moved.
    fn transition(&self, expected: Option<u64>, to: State, cause: Cause) -> bool {
        let mut opens = self.transitions.lock();
        let current = self.word.load(Ordering::Acquire);
        if expected.is_some_and(|e| e != current) {
            return false;
        }
        let from = state_of(current);
        let generation = (current >> STATE_BITS) + 1;
        let word = (generation << STATE_BITS) | to.to_bits();
        let now = self.timeline.now_nanos();
        let mut open_for = None;
        match to {
            State::Open => {
                let duration = self.open_duration(*opens);
                *opens = opens.saturating_add(1);
                self.open_until.store(
                    now.saturating_add(duration_to_nanos(duration)),
                    Ordering::Release,
                );
                open_for = Some(duration);
            }
            State::HalfOpen => {
                // While half-open, `open_until` holds when it began (for the half-open wait).
                self.open_until.store(now, Ordering::Release);
                let tag = generation_tag(word);
                self.probes.store(tag, Ordering::Release);
                self.probe_successes.store(tag, Ordering::Release);
            }
            State::Closed | State::ForcedClosed | State::ForcedOpen => {
                if to == State::Closed {
                    *opens = 0;
                }
                self.clear_counts();
            }
        }
        self.word.store(word, Ordering::Release);
        drop(opens);
        self.announce(StateChange {
            breaker: self.config.name.to_string(),
            from,
            to,
            cause,
            at: self.timeline.instant_at(now),
            open_for,
        });
        true
    }

    fn announce(&self, change: StateChange) {
        self.metrics.state.set(change.to.gauge_value());
        self.metrics.transitions[change.to.index()].increment(1);
        let breaker = &*self.config.name;
        match change.to {
            State::Open | State::ForcedOpen => tracing::warn!(
                breaker,
                from = change.from.as_str(),
                to = change.to.as_str(),
                cause = %change.cause,
                open_for_ms = change
                    .open_for
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                "circuit opened"
            ),
            _ => tracing::info!(
                breaker,
                from = change.from.as_str(),
                to = change.to.as_str(),
                cause = %change.cause,
                "circuit state changed"
            ),
        }
        if let Some(listener) = &self.listener {
            listener(&change);
        }
    }
}
