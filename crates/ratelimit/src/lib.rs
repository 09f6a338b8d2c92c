//! Rate limiting for async Rust: a lock-free GCRA limiter with stacked quotas and fair waiting,
//! keyed limits under a hard key cap, paced byte streams, tower layers, `RateLimit` headers and
//! (feature `redis`) limits shared by several servers.
//!
//! - [`RateLimiter`]: `check()`, weighted `check_n(n)`, and `until_ready()` /
//!   `until_n_ready(n)` that wait first come, first served. A refusal is a
//!   [`RateLimited`] with `retry_after` and the capacity left. Several [`Quota`]s stack (say
//!   10/s and 1000/h) and are decided together. Rates change at run time without losing state;
//!   [`AdaptiveRate`] moves them between a floor and a ceiling.
//! - [`KeyedLimiter`]: one limit per key with a hard cap on tracked keys, so a flood of unique
//!   keys cannot exhaust memory; [`IpGrouping`] folds IPv6 addresses into their /64.
//!   [`TieredLimiter`] gives named tiers their own quotas.
//! - [`SlidingWindowLimiter`]: the "N per window" algorithm request APIs document.
//! - [`PacedStream`] and [`Pacing`]: any `AsyncRead + AsyncWrite` paced per direction, charged
//!   before bytes move, with TCP/IP overhead compensation; budgets nest by sharing.
//! - [`RateLimitLayer`] and [`KeyedRateLimitLayer`]: tower middleware that waits or rejects.
//! - [`headers`]: `RateLimit-Policy`, `RateLimit` and `Retry-After` values.
//!
//! Limiters read a time-stamp-counter clock by default (a few nanoseconds per read); tests that
//! pause tokio's clock build them with `.tokio_clock()`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use sssonector_ratelimit::{headers, Quota, RateLimiter};
//!
//! // 10 requests per second with bursts of 2, and at most 100 per hour. (The default burst is
//! // 100 ms worth of the rate; an hourly budget sets its burst to the whole hour's.)
//! let limiter = RateLimiter::builder()
//!     .name("api")
//!     .quota(Quota::per_second(10)?.with_burst(2)?)
//!     .quota(Quota::per_hour(100)?.with_burst(100)?)
//!     .build()?;
//!
//! assert_eq!(limiter.check()?.remaining(), 1);
//! limiter.check()?;
//! let refused = limiter.check().unwrap_err();
//! assert!(refused.retry_after <= Duration::from_millis(100));
//! assert_eq!(headers::retry_after(&refused), "1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Metrics
//!
//! Named limiters (`.name(..)` on the builder) record, labelled `limiter` and `kind` (`direct`,
//! `keyed`, `redis`): `sssonector_ratelimit_admitted_total`,
//! `sssonector_ratelimit_limited_total`, the histogram `sssonector_ratelimit_wait_seconds` (time
//! spent waiting in `until_ready`), and for keyed limiters the gauge
//! `sssonector_ratelimit_tracked_keys` and the counter `sssonector_ratelimit_evictions_total`.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod adaptive;
mod error;
mod gcra;
pub mod headers;
mod ip;
mod keyed;
mod limiter;
mod middleware;
mod quota;
#[cfg(feature = "redis")]
mod redis;
mod sliding;
mod stream;
mod sync;
mod tiers;

pub use adaptive::AdaptiveRate;
pub use error::{ConfigError, Rejected};
pub use ip::IpGrouping;
pub use keyed::{KeyedLimiter, KeyedLimiterBuilder};
pub use limiter::{Admitted, RateLimiter, RateLimiterBuilder};
pub use middleware::{
    KeyedRateLimit, KeyedRateLimitLayer, KeyedResponseFuture, Mode, RateLimit, RateLimitLayer,
    ResponseFuture,
};
pub use quota::Quota;
#[cfg(feature = "redis")]
pub use redis::{
    Block, BlockWatch, FailurePolicy, RedisBlocklist, RedisBlocklistBuilder, RedisLimiter,
    RedisLimiterBuilder, RedisStore, RedisStoreBuilder, StoreError, Strike,
};
pub use sliding::SlidingWindowLimiter;
pub use sssonector_core::{BoxError, RateLimited};
pub use stream::{PacedStream, Pacing};
pub use tiers::{TieredLimiter, TieredLimiterBuilder};
