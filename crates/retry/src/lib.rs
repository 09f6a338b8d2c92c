//! Retry for async Rust: backoff with jitter, attempt limits, deadlines, per-attempt timeouts,
//! a shared retry budget and `Retry-After` awareness, as a function and as a tower layer.
//!
//! - [`retry`] runs any async operation under a [`RetryPolicy`]; [`retry_notify`] also reports
//!   each failure.
//! - [`RetryLayer`] does the same for a tower service. It can retry responses as well as errors
//!   ([`ClassifyResponse`]: an HTTP 503 with its `Retry-After`), and retry requests that are not
//!   `Clone` when they can be copied ([`CloneRequest`]: a buffered body yes, a stream no).
//! - Errors are classified by one [`Classify`] trait shared with `sssonector-breaker`: transient
//!   errors are retried, permanent ones are not. A circuit breaker's
//!   [`CircuitOpen`](sssonector_core::CircuitOpen) or a rate limiter's
//!   [`RateLimited`](sssonector_core::RateLimited) carries a `retry_after` that the policy honours
//!   or fails fast on ([`RetryAfterPolicy`]).
//! - A [`RetryBudget`] shared by clones caps retries at a fraction of recent calls, so a failing
//!   dependency does not see its load multiplied.
//!
//! Waits use tokio's timers: tests run under `tokio::time::pause` without real sleeping.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use sssonector_retry::{retry, Backoff, Jitter, RetryPolicy};
//! use tokio::net::TcpStream;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let policy = RetryPolicy::builder()
//!     .name("upstream")
//!     .max_retries(2)
//!     .backoff(Backoff::exponential(Duration::from_millis(10)).jitter(Jitter::Full))
//!     .deadline(Duration::from_secs(2))
//!     .on_retry(|event| eprintln!("attempt {} failed: {}; waiting {:?}", event.attempt, event.failure, event.delay))
//!     .build()
//!     .unwrap();
//!
//! // Nothing listens on this port: each attempt is refused, a transient error.
//! let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//! let err = retry(&policy, || TcpStream::connect(("127.0.0.1", port))).await.unwrap_err();
//! assert_eq!(err.attempts(), 3);
//! println!("{err}");
//! # }
//! ```
//!
//! # Metrics
//!
//! Through the `metrics` facade, labelled by `policy`: `sssonector_retry_attempts_total`,
//! `sssonector_retry_retries_total`, `sssonector_retry_give_ups_total` (with `reason`:
//! `permanent`, `exhausted`, `deadline`, `budget`, `retry_after`, `not_repeatable`) and
//! `sssonector_retry_budget_exhausted_total`. Handles are registered when a policy is built, so
//! install the recorder first.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod backoff;
mod budget;
mod error;
mod middleware;
mod plan;
mod policy;
mod retry_fn;

pub use backoff::{Backoff, Jitter};
pub use budget::RetryBudget;
pub use error::{AttemptTimedOut, ConfigError, Failure, GiveUpReason, RetryError};
pub use middleware::{
    AcceptAll, ClassifyResponse, CloneAll, CloneRequest, ResponseFuture, ResponseVerdict, Retry,
    RetryLayer,
};
pub use policy::{RetryAfterPolicy, RetryEvent, RetryPolicy, RetryPolicyBuilder};
pub use retry_fn::{retry, retry_notify};
pub use sssonector_core::{AnyError, BoxError, Classify, DefaultClassifier, ErrorClass};
