//! Configuration of a circuit breaker, validated when built.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sssonector_core::{SharedClock, SystemClock};

use crate::breaker::CircuitBreaker;
use crate::state::StateChange;

/// Which recent calls the failure-rate and slow-call-rate trips look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `span`, counted in `buckets` slices (the window slides one slice at
    /// a time).
    Time {
        /// How far back the window reaches.
        span: Duration,
        /// How many slices it is counted in.
        buckets: u32,
    },
}

pub(crate) type Listener = Arc<dyn Fn(&StateChange) + Send + Sync>;

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) name: Cow<'static, str>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_wait: Duration,
    pub(crate) success_threshold: u32,
    pub(crate) open_duration: Duration,
    pub(crate) open_multiplier: f64,
    pub(crate) open_max: Duration,
    pub(crate) open_jitter: f64,
}

impl Config {
    pub(crate) fn uses_window(&self) -> bool {
        self.failure_rate.is_some() || self.slow_call.is_some()
    }
}

/// Builds a [`CircuitBreaker`]. Every setting has a default; [`build`](Self::build) checks them
/// together.
///
/// Defaults: trip on 5 consecutive failures; no rate trips (when enabled they look at the last
/// 100 calls and need at least 10); one half-open probe at a time, 2 successes to close; open
/// for 30 s, not growing, no jitter; the system clock.
///
/// Builders are `Clone`, which is how a [`BreakerRegistry`](crate::BreakerRegistry) makes one
/// breaker per key.
#[derive(Clone)]
pub struct BreakerBuilder {
    pub(crate) config: Config,
    pub(crate) clock: SharedClock,
    pub(crate) seed: Option<u64>,
    pub(crate) listener: Option<Listener>,
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("seed", &self.seed)
            .field("listener", &self.listener.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl Default for BreakerBuilder {
    fn default() -> Self {
        Self {
            config: Config {
                name: Cow::Borrowed("default"),
                consecutive_failures: Some(5),
                failure_rate: None,
                slow_call: None,
                window: Window::Count(100),
                minimum_calls: 10,
                half_open_probes: 1,
                half_open_wait: Duration::from_secs(60),
                success_threshold: 2,
                open_duration: Duration::from_secs(30),
                open_multiplier: 1.0,
                open_max: Duration::from_secs(30),
                open_jitter: 0.0,
            },
            clock: Arc::new(SystemClock),
            seed: None,
            listener: None,
        }
    }
}

impl BreakerBuilder {
    /// Names the breaker in metrics (`breaker` label), logs and events. Default `"default"`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Trips after `n` consecutive failures (default 5); 0 turns this trip off.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = (n > 0).then_some(n);
        self
    }

    /// Trips when at least `rate` (0.5 is 50 %) of the calls in the [`window`](Self::window)
    /// failed, once the window holds [`minimum_calls`](Self::minimum_calls).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = Some(rate);
        self
    }

    /// Counts calls lasting `threshold` or longer as slow, and trips when at least `rate` of the
    /// calls in the window were slow (once it holds the minimum number of calls).
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.config.slow_call = Some((threshold, rate));
        self
    }

    /// The window for rate trips (default the last 100 calls).
    pub fn window(mut self, window: Window) -> Self {
        self.config.window = window;
        self
    }

    /// Rate trips wait until the window holds this many calls (default 10).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// Concurrent probe calls admitted while half-open (default 1).
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.config.half_open_probes = n;
        self
    }

    /// The longest the circuit stays half-open with probes out that have not reported
    /// (default 60 s): a probe that never reports (a hung call, a leaked permit) would
    /// otherwise hold its slot, and the circuit half-open, forever. Past it the next call
    /// opens the circuit again, to probe afresh after the open duration; outcomes of the old
    /// probes are ignored.
    pub fn half_open_wait(mut self, wait: Duration) -> Self {
        self.config.half_open_wait = wait;
        self
    }

    /// Successful probes needed to close (default 2). Any failed probe reopens.
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.config.success_threshold = n;
        self
    }

    /// How long the circuit stays open before probing (default 30 s).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_duration = duration;
        if self.config.open_max < duration {
            self.config.open_max = duration;
        }
        self
    }

    /// Grows the open period by `multiplier` each time it reopens without having closed, up to
    /// `max`; closing resets it.
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.config.open_multiplier = multiplier;
        self.config.open_max = max;
        self
    }

    /// Spreads each open period by ±`ratio` (0.1 is ±10 %, applied after the growth cap), so
    /// clients that tripped together do not probe together.
    pub fn open_jitter(mut self, ratio: f64) -> Self {
        self.config.open_jitter = ratio;
        self
    }

    /// The clock (default the system clock); tests pass a
    /// [`ManualClock`](sssonector_core::ManualClock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Fixes the jitter's random sequence (default: a random seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Calls `listener` after every change of state, outside the breaker's lock.
    pub fn on_state_change(
        mut self,
        listener: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Checks the settings and builds the breaker.
    ///
    /// Metrics handles are registered here: install the `metrics` recorder first.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting at fault.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let c = &self.config;
        if c.consecutive_failures.is_none() && !c.uses_window() {
            return Err(ConfigError::NoTrip);
        }
        if let Some(rate) = c.failure_rate {
            check_rate("failure_rate", rate)?;
        }
        if let Some((threshold, rate)) = c.slow_call {
            check_rate("slow_call_rate", rate)?;
            if threshold.is_zero() {
                return Err(ConfigError::Zero("slow_call_threshold"));
            }
        }
        match c.window {
            Window::Count(0) => return Err(ConfigError::Zero("window")),
            Window::Count(_) => {}
            Window::Time { span, buckets } => {
                if buckets == 0 {
                    return Err(ConfigError::Zero("window buckets"));
                }
                if span < Duration::from_millis(1) * buckets {
                    return Err(ConfigError::WindowTooShort { span, buckets });
                }
            }
        }
        if c.half_open_wait.is_zero() {
            return Err(ConfigError::Zero("half_open_wait"));
        }
        if c.half_open_probes == 0 {
            return Err(ConfigError::Zero("half_open_probes"));
        }
        if c.success_threshold == 0 {
            return Err(ConfigError::Zero("success_threshold"));
        }
        if c.open_duration.is_zero() {
            return Err(ConfigError::Zero("open_duration"));
        }
        if !c.open_multiplier.is_finite() || c.open_multiplier < 1.0 {
            return Err(ConfigError::OpenMultiplier(c.open_multiplier));
        }
        if c.open_max < c.open_duration {
            return Err(ConfigError::OpenMaxBelowDuration {
                max: c.open_max,
                duration: c.open_duration,
            });
        }
        check_ratio("open_jitter", c.open_jitter)?;
        Ok(CircuitBreaker::from_builder(self))
    }
}

fn check_rate(field: &'static str, rate: f64) -> Result<(), ConfigError> {
    if rate.is_finite() && rate > 0.0 && rate <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::Rate { field, rate })
    }
}

fn check_ratio(field: &'static str, ratio: f64) -> Result<(), ConfigError> {
    if ratio.is_finite() && (0.0..=1.0).contains(&ratio) {
        Ok(())
    } else {
        Err(ConfigError::Ratio { field, ratio })
    }
}

/// A breaker configuration that cannot work.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Every trip condition is turned off, so the breaker could never open.
    #[error("no trip condition: set consecutive_failures above 0, a failure_rate or slow_calls")]
    NoTrip,
    /// A rate or ratio outside its range.
    #[error("{field} must be above 0.0 and at most 1.0, got {rate}")]
    Rate {
        /// The setting at fault.
        field: &'static str,
        /// Its value.
        rate: f64,
    },
    /// A ratio outside `[0, 1]`.
    #[error("{field} must be between 0.0 and 1.0, got {ratio}")]
    Ratio {
        /// The setting at fault.
        field: &'static str,
        /// Its value.
        ratio: f64,
    },
    /// A count or duration that must not be zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A time window too short for its buckets.
    #[error("time window of {span:?} is too short for {buckets} buckets (at least 1ms each)")]
    WindowTooShort {
        /// The window's span.
        span: Duration,
        /// Its bucket count.
        buckets: u32,
    },
    /// The open-period growth factor is below 1.0 or not a number.
    #[error("open_backoff multiplier must be a finite number of at least 1.0, got {0}")]
    OpenMultiplier(f64),
    /// The open-period cap is shorter than the open period.
    #[error("open_backoff max {max:?} is shorter than open_duration {duration:?}")]
    OpenMaxBelowDuration {
        /// The cap.
        max: Duration,
        /// The open period.
        duration: Duration,
    },
}
