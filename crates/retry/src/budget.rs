//! A retry budget shared by every clone of a policy.

use std::sync::Arc;
use std::time::Duration;

use sssonector_core::{SharedClock, TimeWindow, Timeline, TokioClock};

use crate::error::ConfigError;

const BUCKETS: usize = 10;

/// Caps retries at a fraction of recent calls plus a small floor per second.
///
/// Each call deposits; each retry withdraws when it is decided, before its backoff wait, so
/// retries sleeping in backoff already count. When the dependency is down, every call fails and
/// wants to retry: the budget keeps the extra load at `ratio` of the real load instead of
/// multiplying it by the attempt count.
///
/// Clones share one budget.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_retry::RetryBudget;
///
/// // Retries may add 10 % to the calls of the last 10 s, plus 1 retry per second.
/// let budget = RetryBudget::new(0.1, 1)?;
/// for _ in 0..100 {
///     budget.deposit();
/// }
/// let granted = (0..1000).filter(|_| budget.try_withdraw()).count();
/// assert_eq!(granted, 10 + 10); // 10 % of 100 calls, plus 1/s over the 10 s window
/// # Ok::<(), sssonector_retry::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Counter 0: calls; counter 1: retries.
    window: TimeWindow<2>,
    timeline: Timeline,
    ratio: f64,
    floor: u64,
}

impl RetryBudget {
    /// A budget over a 10 s window allowing `ratio` retries per call (0.2 is 20 %) plus
    /// `min_per_sec` retries per second regardless of traffic.
    ///
    /// # Errors
    ///
    /// [`ConfigError::BudgetRatio`] if `ratio` is negative or not a number.
    pub fn new(ratio: f64, min_per_sec: u32) -> Result<Self, ConfigError> {
        Self::with_window(
            ratio,
            min_per_sec,
            Duration::from_secs(10),
            Arc::new(TokioClock),
        )
    }

    /// A budget over a window of `window`, reading time from `clock`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::BudgetRatio`] for a bad ratio, [`ConfigError::BudgetWindow`] for a window
    /// under 1 ms.
    pub fn with_window(
        ratio: f64,
        min_per_sec: u32,
        window: Duration,
        clock: SharedClock,
    ) -> Result<Self, ConfigError> {
        if !ratio.is_finite() || ratio < 0.0 {
            return Err(ConfigError::BudgetRatio(ratio));
        }
        if window < Duration::from_millis(1) {
            return Err(ConfigError::BudgetWindow(window));
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "float-to-int `as` saturates; a floor beyond u64 means \"unlimited\", which is right"
        )]
        let floor = (f64::from(min_per_sec) * window.as_secs_f64()).floor() as u64;
        Ok(Self {
            inner: Arc::new(Inner {
                window: TimeWindow::new(window, BUCKETS),
                timeline: Timeline::new(clock),
                ratio,
                floor,
            }),
        })
    }

    /// Records a call (a first attempt).
    #[inline]
    pub fn deposit(&self) {
        let now = self.inner.timeline.now_nanos();
        self.inner.window.add(now, [1, 0]);
    }

    /// Takes one retry from the budget; `false` if none is left.
    ///
    /// Under concurrency the check and the withdrawal are two steps, so the budget can be
    /// overdrawn by at most the number of tasks deciding at the same instant.
    pub fn try_withdraw(&self) -> bool {
        let now = self.inner.timeline.now_nanos();
        let [calls, retries] = self.inner.window.sums(now);
        if retries < self.allowed(calls) {
            self.inner.window.add(now, [0, 1]);
            true
        } else {
            false
        }
    }

    /// How many retries the budget would grant now.
    pub fn remaining(&self) -> u64 {
        let [calls, retries] = self.inner.window.sums(self.inner.timeline.now_nanos());
        self.allowed(calls).saturating_sub(retries)
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "float-to-int `as` saturates, so a huge ratio grants \"unlimited\" rather than wrapping"
    )]
    fn allowed(&self, calls: u64) -> u64 {
        self.inner.floor + (calls as f64 * self.inner.ratio).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sssonector_core::ManualClock;

    #[test]
    fn refills_as_the_window_slides() {
        let clock = ManualClock::new();
        let budget =
            RetryBudget::with_window(0.5, 0, Duration::from_secs(1), Arc::new(clock.clone()))
                .unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 5);
        assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 5);
        assert!(!budget.try_withdraw());
        clock.advance(Duration::from_millis(1500));
        assert_eq!(budget.remaining(), 0, "old calls left the window");
        budget.deposit();
        budget.deposit();
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
    }

    #[test]
    fn clones_share_and_bad_ratios_are_refused() {
        let a = RetryBudget::new(0.0, 2).unwrap();
        let b = a.clone();
        assert_eq!(a.remaining(), 20);
        assert!(b.try_withdraw());
        assert_eq!(a.remaining(), 19);
        assert_eq!(
            RetryBudget::new(-1.0, 0).unwrap_err().to_string(),
            "retry budget ratio must be a finite number of at least 0.0, got -1"
        );
    }
}
