//! Log lines that can repeat thousands of times a second under load (refused streams,
//! denied packets) are written at most once per interval, with how many were left out since
//! the last one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One call site's limiter, usually a `static`.
///
/// ```
/// use std::time::Duration;
/// use sssonector_core::Throttle;
///
/// static REFUSED: Throttle = Throttle::new(Duration::from_secs(10));
/// if let Some(suppressed) = REFUSED.check() {
///     // log here, saying how many were left out since the last line
///     assert_eq!(suppressed, 0);
/// }
/// assert_eq!(REFUSED.check(), None); // within the interval: left out, and counted
/// ```
#[derive(Debug)]
pub struct Throttle {
    interval_ms: u64,
    /// Milliseconds since [`epoch`] of the last line logged, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

/// The process's time origin for throttles.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    /// A throttle letting one occurrence through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "intervals are seconds, far below u64::MAX ms"
        )]
        Self {
            interval_ms: interval.as_millis() as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this occurrence should be logged (with the count of those left
    /// out since the last logged one), `None` when it is to be left out.
    pub fn check(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.check(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.check(), None);
        }
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_zero_interval_logs_every_time() {
        let throttle = Throttle::new(Duration::ZERO);
        assert_eq!(throttle.check(), Some(0));
        assert_eq!(throttle.check(), Some(0));
    }
}
