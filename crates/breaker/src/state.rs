//! The breaker's states and the events announcing changes between them.

use std::fmt;
use std::time::Instant;

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A bounded number of probe calls pass; their outcomes close or reopen the circuit.
    HalfOpen,
    /// Held open by [`CircuitBreaker::force_open`](crate::CircuitBreaker::force_open) until
    /// reset.
    ForcedOpen,
    /// Held closed by [`CircuitBreaker::force_closed`](crate::CircuitBreaker::force_closed) until
    /// reset: every call passes and nothing trips.
    ForcedClosed,
}

impl State {
    pub(crate) const fn to_bits(self) -> u64 {
        self.index() as u64
    }

    /// A dense index, for arrays of per-state handles.
    pub(crate) const fn index(self) -> usize {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::ForcedClosed => 4,
        }
    }

    pub(crate) const fn from_bits(bits: u64) -> State {
        match bits & 0b111 {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::ForcedClosed,
        }
    }

    /// The value of the `sssonector_breaker_state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 forced closed.
    pub fn gauge_value(self) -> f64 {
        self.to_bits() as f64
    }

    /// A short lowercase name, used in metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
        }
    }

    /// Whether calls may be rejected in this state.
    pub fn rejects(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen | State::HalfOpen)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Cause {
    /// Consecutive failures reached the threshold.
    ConsecutiveFailures(u32),
    /// The failure rate over the window reached the threshold.
    FailureRate(f64),
    /// The slow-call rate over the window reached the threshold.
    SlowCallRate(f64),
    /// A probe failed while half-open.
    ProbeFailed,
    /// Enough probes succeeded while half-open.
    ProbesSucceeded(u32),
    /// The open period ended.
    OpenPeriodEnded,
    /// The probes did not report within the half-open wait.
    ProbesTimedOut,
    /// An operator called `force_open`, `force_closed` or `reset`.
    Manual,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            Cause::FailureRate(r) => write!(f, "failure rate {:.1}%", r * 100.0),
            Cause::SlowCallRate(r) => write!(f, "slow-call rate {:.1}%", r * 100.0),
            Cause::ProbeFailed => f.write_str("a half-open probe failed"),
            Cause::ProbesSucceeded(1) => f.write_str("a half-open probe succeeded"),
            Cause::ProbesSucceeded(n) => write!(f, "{n} half-open probes succeeded"),
            Cause::OpenPeriodEnded => f.write_str("the open period ended"),
            Cause::ProbesTimedOut => f.write_str("the probes did not report in time"),
            Cause::Manual => f.write_str("manual override"),
        }
    }
}

/// A change of state, given to the breaker's `on_state_change` callback.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StateChange {
    /// The breaker's name.
    pub breaker: String,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub cause: Cause,
    /// When, on the breaker's clock.
    pub at: Instant,
    /// For a change to [`State::Open`], how long the open period lasts.
    pub open_for: Option<std::time::Duration>,
}
