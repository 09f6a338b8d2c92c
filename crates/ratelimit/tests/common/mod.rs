//! Helpers shared by the integration tests.

use sssonector_ratelimit::{Quota, RateLimiter};

/// A limiter on tokio's clock, so checks follow paused time.
pub(crate) fn tokio_limiter(quota: Quota) -> RateLimiter {
    RateLimiter::builder()
        .quota(quota)
        .tokio_clock()
        .build()
        .unwrap()
}
