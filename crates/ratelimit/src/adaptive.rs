//! Moving a limiter's rate between a floor and a ceiling from observed utilisation.

use crate::error::ConfigError;
use crate::limiter::RateLimiter;

/// An additive-increase, multiplicative-decrease controller for a [`RateLimiter`]'s rate.
///
/// Feed it the utilisation of what the limiter protects (CPU, a queue's fill, a downstream's
/// error rate — any figure where 1.0 means "saturated"). Above the target it cuts the rate by
/// `decrease` (×0.8 by default); at or below it, it adds `increase` of the range (5 % of
/// ceiling − floor by default). The rate never leaves `[floor, ceiling]`, and the limiter keeps
/// its state across every change.
///
/// # Examples
///
/// ```
/// use sssonector_ratelimit::{AdaptiveRate, Quota, RateLimiter};
///
/// let limiter = RateLimiter::new(Quota::per_second(1000)?);
/// let mut control = AdaptiveRate::new(limiter.clone(), 100.0, 1000.0)?;
/// control.observe(0.95); // saturated: back off
/// assert_eq!(control.rate(), 800.0);
/// control.observe(0.30); // room to spare: creep up
/// assert_eq!(control.rate(), 845.0);
/// # Ok::<(), sssonector_ratelimit::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct AdaptiveRate {
    limiter: RateLimiter,
    floor: f64,
    ceiling: f64,
    rate: f64,
    target: f64,
    increase: f64,
    decrease: f64,
}

impl AdaptiveRate {
    /// A controller for the limiter's first quota, between `floor` and `ceiling` units per
    /// second, starting from the quota's current rate (clamped).
    ///
    /// # Errors
    ///
    /// [`ConfigError::FloorAboveCeiling`], or [`ConfigError::OutOfRange`] for a floor not above
    /// zero.
    pub fn new(limiter: RateLimiter, floor: f64, ceiling: f64) -> Result<Self, ConfigError> {
        if !(floor > 0.0 && floor.is_finite()) {
            return Err(ConfigError::OutOfRange {
                field: "floor",
                value: floor,
                min: f64::MIN_POSITIVE,
                max: f64::MAX,
            });
        }
        if !(ceiling >= floor && ceiling.is_finite()) {
            return Err(ConfigError::FloorAboveCeiling { floor, ceiling });
        }
        let current = limiter.quotas()[0].per_second_f64();
        Ok(Self {
            limiter,
            floor,
            ceiling,
            rate: current.clamp(floor, ceiling),
            target: 0.8,
            increase: 0.05,
            decrease: 0.8,
        })
    }

    /// The utilisation above which the rate is cut (default 0.8).
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] outside `(0, 1]`.
    pub fn target(mut self, target: f64) -> Result<Self, ConfigError> {
        check(target, "target", f64::MIN_POSITIVE, 1.0)?;
        self.target = target;
        Ok(self)
    }

    /// The step up, as a fraction of `ceiling − floor` (default 0.05), and the factor down
    /// (default 0.8).
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] unless `0 < increase ≤ 1` and `0 < decrease < 1`.
    pub fn steps(mut self, increase: f64, decrease: f64) -> Result<Self, ConfigError> {
        check(increase, "increase", f64::MIN_POSITIVE, 1.0)?;
        check(decrease, "decrease", f64::MIN_POSITIVE, 1.0 - f64::EPSILON)?;
        self.increase = increase;
        self.decrease = decrease;
        Ok(self)
    }

    /// The current rate, units per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Adjusts the rate for an observed `utilisation` and applies it to the limiter.
    pub fn observe(&mut self, utilisation: f64) {
        let next = if utilisation > self.target {
            self.rate * self.decrease
        } else {
            self.rate + self.increase * (self.ceiling - self.floor)
        }
        .clamp(self.floor, self.ceiling);
        if (next - self.rate).abs() < f64::EPSILON {
            return;
        }
        let quota = self.limiter.quotas()[0];
        if let Ok(new) = quota.rescaled(next) {
            if self.limiter.set_quota(0, new).is_ok() {
                self.rate = next;
            }
        }
    }
}

fn check(value: f64, field: &'static str, min: f64, max: f64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}
