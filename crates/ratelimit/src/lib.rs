//! Rate limiting for async Rust: a lock-free GCRA limiter with stacked quotas and fair waiting.

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
mod sliding;
mod stream;
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
pub use sliding::SlidingWindowLimiter;
pub use sssonector_core::{BoxError, RateLimited};
pub use stream::{PacedStream, Pacing};
pub use tiers::{TieredLimiter, TieredLimiterBuilder};
