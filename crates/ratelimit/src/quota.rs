//! How much a limiter admits: a rate and a burst.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// A rate (`count` units per `period`) and a burst (how many units may pass at once after a
/// quiet spell).
///
/// By default the burst is 100 ms worth of the rate (at least 1), so a limiter smooths traffic
/// instead of letting a full second's quota through in one go.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_ratelimit::Quota;
///
/// let q = Quota::per_second(100)?;
/// assert_eq!(q.burst(), 10); // 100 ms worth
/// let q = Quota::per_minute(600)?.with_burst(50)?;
/// assert_eq!(q.burst(), 50);
/// // 100 Mbit/s as bytes per second, bursting 10 ms worth.
/// let q = Quota::bytes_per_second(12_500_000)?.with_burst_window(Duration::from_millis(10))?;
/// assert_eq!(q.burst(), 125_000);
/// # Ok::<(), sssonector_ratelimit::ConfigError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u64,
    period: Duration,
    burst: u64,
}

impl Quota {
    /// `count` units per `period`, bursting 100 ms worth.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroRate`] for a zero count or period.
    pub fn new(count: u64, period: Duration) -> Result<Self, ConfigError> {
        if count == 0 || period.is_zero() {
            return Err(ConfigError::ZeroRate);
        }
        let quota = Self {
            count,
            period,
            burst: 1,
        };
        quota.with_burst_window(Duration::from_millis(100))
    }

    /// `count` per second.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_second(count: u64) -> Result<Self, ConfigError> {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` per minute.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_minute(count: u64) -> Result<Self, ConfigError> {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` per hour.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_hour(count: u64) -> Result<Self, ConfigError> {
        Self::new(count, Duration::from_secs(3600))
    }

    /// `bytes` per second, for byte pacing.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn bytes_per_second(bytes: u64) -> Result<Self, ConfigError> {
        Self::per_second(bytes)
    }

    /// `bits` per second (a link speed), counted in bytes.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn bits_per_second(bits: u64) -> Result<Self, ConfigError> {
        Self::new(bits, Duration::from_secs(8))
    }

    /// Sets the burst to `burst` units.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroBurst`] for zero.
    pub fn with_burst(mut self, burst: u64) -> Result<Self, ConfigError> {
        if burst == 0 {
            return Err(ConfigError::ZeroBurst);
        }
        self.burst = burst;
        Ok(self)
    }

    /// Sets the burst to what the rate admits in `window` (at least 1 unit).
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroBurst`] for a zero window.
    pub fn with_burst_window(self, window: Duration) -> Result<Self, ConfigError> {
        if window.is_zero() {
            return Err(ConfigError::ZeroBurst);
        }
        let burst = u128::from(self.count) * window.as_nanos() / self.period.as_nanos();
        self.with_burst(u64::try_from(burst).unwrap_or(u64::MAX).max(1))
    }

    /// Units admitted per period.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Units that may pass at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Units per second, as a float (for display and controllers).
    pub fn per_second_f64(&self) -> f64 {
        self.count as f64 / self.period.as_secs_f64()
    }

    /// The same burst window at a new rate of `per_second` units per second.
    pub(crate) fn rescaled(&self, per_second: f64) -> Result<Self, ConfigError> {
        let window = self.period.mul_f64(self.burst as f64 / self.count as f64);
        // Keep nanosecond precision for high rates: express the rate per 1000 s.
        let count = (per_second * 1000.0).round();
        if !(count >= 1.0 && count.is_finite()) {
            return Err(ConfigError::ZeroRate);
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "finite and ≥ 1, saturating"
        )]
        let quota = Quota::new(count as u64, Duration::from_secs(1000))?;
        quota.with_burst_window(window)
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Quota({}/{:?}, burst {})",
            self.count, self.period, self.burst
        )
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} per {:?} (burst {})",
            self.count, self.period, self.burst
        )
    }
}
