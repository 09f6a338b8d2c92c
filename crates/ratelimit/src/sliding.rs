//! The sliding-window-counter algorithm, for users who want "N requests per window" semantics.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sssonector_core::{RateLimited, SharedClock, Timeline, duration_to_nanos};

use crate::error::ConfigError;
use crate::limiter::Admitted;

/// Admits at most `limit` requests per `window`, estimating the sliding window from the current
/// and previous fixed windows: `current + previous × (unelapsed fraction of the window)`.
///
/// Unlike GCRA it lets a whole window's quota through at once; it is what most HTTP APIs
/// document ("100 requests per minute"). Clones share the limiter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_ratelimit::SlidingWindowLimiter;
///
/// let limiter = SlidingWindowLimiter::new(3, Duration::from_secs(60))?;
/// for _ in 0..3 {
///     limiter.check()?;
/// }
/// assert!(limiter.check().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SlidingWindowLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    limit: u64,
    window: u64,
    timeline: Timeline,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Index of the current fixed window.
    index: u64,
    current: u64,
    previous: u64,
}

impl SlidingWindowLimiter {
    /// `limit` requests per `window`, on the time-stamp counter (see `Timeline::fast`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroRate`] for a zero limit or window.
    pub fn new(limit: u64, window: Duration) -> Result<Self, ConfigError> {
        Self::build(limit, window, Timeline::fast())
    }

    /// As [`new`](Self::new), reading time from `clock`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_clock(
        limit: u64,
        window: Duration,
        clock: SharedClock,
    ) -> Result<Self, ConfigError> {
        Self::build(limit, window, Timeline::new(clock))
    }

    fn build(limit: u64, window: Duration, timeline: Timeline) -> Result<Self, ConfigError> {
        let window = duration_to_nanos(window);
        if limit == 0 || window == 0 {
            return Err(ConfigError::ZeroRate);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                limit,
                window,
                timeline,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// Admits `cost` requests if the estimated count stays within the limit.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] with the time until enough of the previous window has slid out (or the
    /// next window starts) and the requests left.
    pub fn check_n(&self, cost: u64) -> Result<Admitted, RateLimited> {
        let inner = &*self.inner;
        let now = inner.timeline.now_nanos();
        let index = now / inner.window;
        let into = now % inner.window;
        let mut state = inner.state.lock();
        if index != state.index {
            state.previous = if index == state.index + 1 {
                state.current
            } else {
                0
            };
            state.current = 0;
            state.index = index;
        }
        // The previous window's requests still inside the sliding window, rounded up.
        let weight = u128::from(inner.window - into);
        let carried =
            u64::try_from((u128::from(state.previous) * weight).div_ceil(u128::from(inner.window)))
                .unwrap_or(u64::MAX);
        let used = carried.saturating_add(state.current);
        if used.saturating_add(cost) <= inner.limit {
            state.current += cost;
            return Ok(Admitted::units(inner.limit - used - cost));
        }
        let remaining = inner.limit.saturating_sub(used);
        let wait = if cost > inner.limit {
            Duration::MAX
        } else if state.previous == 0 || state.current + cost > inner.limit {
            Duration::from_nanos(inner.window - into)
        } else {
            // Wait until enough of the previous window has slid out:
            // previous × (window − into − w) / window ≤ limit − current − cost.
            let allowed = u128::from(inner.limit - state.current - cost);
            let needed_weight = allowed * u128::from(inner.window) / u128::from(state.previous);
            let wait = weight.saturating_sub(needed_weight);
            Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX).max(1))
        };
        Err(RateLimited::with_remaining(wait, remaining))
    }

    /// Admits one request.
    ///
    /// # Errors
    ///
    /// As [`check_n`](Self::check_n).
    pub fn check(&self) -> Result<Admitted, RateLimited> {
        self.check_n(1)
    }

    /// The limit per window.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }
}

impl fmt::Debug for SlidingWindowLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlidingWindowLimiter")
            .field("limit", &self.inner.limit)
            .field("window", &Duration::from_nanos(self.inner.window))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sssonector_core::ManualClock;

    #[test]
    fn previous_window_slides_out() {
        let clock = ManualClock::new();
        let l =
            SlidingWindowLimiter::with_clock(10, Duration::from_secs(10), Arc::new(clock.clone()))
                .unwrap();
        for _ in 0..10 {
            l.check().unwrap();
        }
        assert!(l.check().is_err());
        // Halfway into the next window, half of the previous 10 still count.
        clock.advance(Duration::from_secs(15));
        for _ in 0..5 {
            l.check().unwrap();
        }
        let denied = l.check().unwrap_err();
        assert_eq!(denied.remaining, 0);
        // One more is allowed once a tenth more of the previous window has slid out.
        assert_eq!(denied.retry_after, Duration::from_secs(1));
        clock.advance(denied.retry_after);
        l.check().unwrap();
    }
}
