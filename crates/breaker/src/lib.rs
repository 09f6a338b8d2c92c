//! A circuit breaker for async Rust: stops calling a dependency that keeps failing, rejects
//! calls fast while it recovers, and probes it before trusting it again.
//!
//! # States
//!
//! - **Closed**: calls pass and outcomes are counted. The breaker trips to open on
//!   consecutive failures (default 5), on a failure rate over a count- or time-based
//!   [`Window`] once it holds a minimum of calls, or on a slow-call rate.
//! - **Open**: calls are rejected at once with [`CircuitOpen`] carrying `retry_after`, the time
//!   left in the open period (default 30 s; optionally growing on repeated trips, with jitter so
//!   clients do not probe in lockstep).
//! - **Half-open**: a bounded number of concurrent probes pass; after enough successes
//!   (default 2) the circuit closes, and any failure reopens it.
//! - Operators can [`force_open`](CircuitBreaker::force_open),
//!   [`force_closed`](CircuitBreaker::force_closed) and [`reset`](CircuitBreaker::reset).
//!
//! The closed state's hot path takes no lock. Errors are classified by the [`Classify`] trait
//! shared with `sssonector-retry`, and the retry crate understands [`CircuitOpen`]'s
//! `retry_after`. [`BreakerRegistry`] keeps one breaker per key under a bound.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use sssonector_breaker::{BreakerError, CircuitBreaker, State};
//! use sssonector_core::ManualClock;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let clock = ManualClock::new();
//! let breaker = CircuitBreaker::builder()
//!     .name("inventory")
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(10))
//!     .success_threshold(1)
//!     .clock(Arc::new(clock.clone()))
//!     .on_state_change(|change| println!("{}: {} -> {} ({})", change.breaker, change.from, change.to, change.cause))
//!     .build()
//!     .unwrap();
//!
//! for _ in 0..3 {
//!     let _ = breaker.call(|| async { Err::<(), _>("connection refused") }).await;
//! }
//! assert_eq!(breaker.state(), State::Open);
//!
//! // Rejected without running the operation, with the time left to wait.
//! match breaker.call(|| async { Ok::<_, &str>(()) }).await {
//!     Err(BreakerError::Open(open)) => assert_eq!(open.retry_after, Some(Duration::from_secs(10))),
//!     other => panic!("expected a rejection, got {other:?}"),
//! }
//!
//! // After the open period a probe is let through; its success closes the circuit.
//! clock.advance(Duration::from_secs(10));
//! breaker.call(|| async { Ok::<_, &str>(()) }).await.unwrap();
//! assert_eq!(breaker.state(), State::Closed);
//! # }
//! ```
//!
//! # Metrics
//!
//! Through the `metrics` facade, labelled by `breaker`: the gauge `sssonector_breaker_state`
//! (0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed), and the counters
//! `sssonector_breaker_calls_total` (with `outcome`: `success`, `failure`, `ignored`,
//! `rejected`), `sssonector_breaker_slow_calls_total` and
//! `sssonector_breaker_transitions_total` (with `to`). State changes are also logged through
//! `tracing` (`warn` on opening, `info` otherwise) and passed to
//! [`on_state_change`](BreakerBuilder::on_state_change).

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod breaker;
mod call;
mod config;
mod count_window;
mod middleware;
mod registry;
mod state;

pub use breaker::{CircuitBreaker, Outcome, Permit, Stats};
pub use call::BreakerError;
pub use config::{BreakerBuilder, ConfigError, Window};
pub use middleware::{
    AllOk, CircuitBreakerLayer, CircuitBreakerService, ClassifyResponse, Fallback, NoFallback,
    ResponseFuture,
};
pub use registry::BreakerRegistry;
pub use sssonector_core::{AnyError, BoxError, CircuitOpen, Classify, ErrorClass};
pub use state::{Cause, State, StateChange};
