//! How long to wait before each retry.

use std::time::Duration;

use sssonector_core::Rng;

use crate::error::ConfigError;

/// How randomness spreads retry delays, so that clients that failed together do not retry
/// together.
///
/// `base` below is the delay before jitter: `initial × multiplier^(retry - 1)`, capped.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly `base`.
    None,
    /// `base × (1 ± p)`, uniformly; `Proportional(0.2)` is ±20 %. `p` is in `[0, 1]`.
    Proportional(f64),
    /// Uniform in `[0, base]` ("full jitter"): the widest spread, the lowest mean.
    Full,
    /// Uniform in `[base / 2, base]` ("equal jitter"): never shorter than half the base.
    Equal,
    /// Uniform in `[initial, 3 × previous delay]`, capped ("decorrelated jitter"): each delay
    /// depends on the last one rather than on the retry number.
    Decorrelated,
}

/// A backoff schedule: constant or exponential, capped, with [`Jitter`].
///
/// The default is exponential from 100 ms, ×2.0 per retry, capped at 5 s, with ±20 % jitter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_retry::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(50))
///     .multiplier(3.0)
///     .max_delay(Duration::from_secs(2))
///     .jitter(Jitter::None);
/// assert_eq!(backoff.base_delay(1), Duration::from_millis(50));
/// assert_eq!(backoff.base_delay(3), Duration::from_millis(450));
/// assert_eq!(backoff.base_delay(10), Duration::from_secs(2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// The same delay before every retry, without jitter.
    pub fn constant(delay: Duration) -> Self {
        Self {
            initial: delay,
            multiplier: 1.0,
            max: delay,
            jitter: Jitter::None,
        }
    }

    /// Delays growing from `initial`, ×2.0 per retry, capped at 5 s (or at `initial` if that is
    /// longer), with ±20 % jitter.
    pub fn exponential(initial: Duration) -> Self {
        Self {
            initial,
            multiplier: 2.0,
            max: initial.max(Duration::from_secs(5)),
            jitter: Jitter::Proportional(0.2),
        }
    }

    /// Sets the growth factor per retry (at least 1.0).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the cap: no delay, jitter included, is ever longer.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the jitter mode.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first delay before jitter.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The growth factor per retry.
    pub fn multiplier_value(&self) -> f64 {
        self.multiplier
    }

    /// The jitter mode.
    pub fn jitter_mode(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry number `retry` (1 is the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        clamp_secs(secs, self.max)
    }

    /// The delay before retry number `retry`, jitter applied. `previous` is the delay used before
    /// the previous retry (only [`Jitter::Decorrelated`] reads it; pass `initial` for the first).
    pub fn delay(&self, retry: u32, previous: Duration, rng: &Rng) -> Duration {
        let base = self.base_delay(retry);
        let secs = base.as_secs_f64();
        match self.jitter {
            Jitter::None => base,
            Jitter::Proportional(p) => clamp_secs(secs * (1.0 + rng.range_f64(-p, p)), self.max),
            Jitter::Full => clamp_secs(rng.range_f64(0.0, secs), base),
            Jitter::Equal => clamp_secs(rng.range_f64(secs / 2.0, secs), base),
            Jitter::Decorrelated => {
                let low = self.initial.min(self.max).as_secs_f64();
                let high = (previous.as_secs_f64() * 3.0).max(low);
                clamp_secs(rng.range_f64(low, high), self.max)
            }
        }
    }

    /// The bounds every delay before retry `retry` falls within, whatever the random draw.
    pub fn bounds(&self, retry: u32) -> (Duration, Duration) {
        let base = self.base_delay(retry);
        match self.jitter {
            Jitter::None => (base, base),
            Jitter::Proportional(p) => (
                base.mul_f64((1.0 - p).max(0.0)),
                clamp_secs(base.as_secs_f64() * (1.0 + p), self.max),
            ),
            Jitter::Full => (Duration::ZERO, base),
            Jitter::Equal => (base / 2, base),
            Jitter::Decorrelated => (self.initial.min(self.max), self.max),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(ConfigError::Multiplier(self.multiplier));
        }
        if self.max < self.initial {
            return Err(ConfigError::MaxBelowInitial {
                max: self.max,
                initial: self.initial,
            });
        }
        if let Jitter::Proportional(p) = self.jitter {
            if !(0.0..=1.0).contains(&p) {
                return Err(ConfigError::JitterRatio(p));
            }
        }
        Ok(())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100))
    }
}

fn clamp_secs(secs: f64, max: Duration) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    if secs >= max.as_secs_f64() {
        return max;
    }
    Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, Strategy, prop_assert, prop_oneof, proptest};

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            (0.0f64..=1.0).prop_map(Jitter::Proportional),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
        ]
    }

    #[test]
    fn defaults_match_the_documentation() {
        let b = Backoff::default();
        assert_eq!(b.initial(), Duration::from_millis(100));
        assert_eq!(b.max(), Duration::from_secs(5));
        assert_eq!(b.jitter_mode(), Jitter::Proportional(0.2));
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(2), Duration::from_millis(200));
        assert_eq!(b.base_delay(7), Duration::from_secs(5));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn validation_names_the_problem() {
        let e = Backoff::default().multiplier(0.5).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "backoff multiplier must be a finite number of at least 1.0, got 0.5"
        );
        let e = Backoff::exponential(Duration::from_secs(1))
            .max_delay(Duration::from_millis(10))
            .validate()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("max delay 10ms is shorter than the initial delay 1s")
        );
        assert!(
            Backoff::default()
                .jitter(Jitter::Proportional(1.5))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn jitter_modes_spread() {
        let rng = Rng::with_seed(3);
        let b = Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Full);
        let draws: Vec<_> = (0..100).map(|_| b.delay(1, b.initial(), &rng)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(30)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(70)));
    }

    proptest! {
        /// Every delay lies within its documented bounds and never above the cap.
        #[test]
        fn delays_within_bounds(
            initial_ms in 0u64..10_000,
            multiplier in 1.0f64..10.0,
            extra_ms in 0u64..100_000,
            jitter in jitter(),
            seed: u64,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = initial + Duration::from_millis(extra_ms);
            let b = Backoff::exponential(initial).multiplier(multiplier).max_delay(max).jitter(jitter);
            prop_assert!(b.validate().is_ok());
            let rng = Rng::with_seed(seed);
            let mut previous = initial;
            for retry in 1..40 {
                let d = b.delay(retry, previous, &rng);
                let (low, high) = b.bounds(retry);
                prop_assert!(d <= max, "delay {:?} above cap {:?}", d, max);
                prop_assert!(d >= low && d <= high, "retry {} delay {:?} outside {:?}..={:?}", retry, d, low, high);
                previous = d;
            }
        }
    }
}
