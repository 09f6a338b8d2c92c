//! Building a pool: endpoints, sizes, timeouts, balancing and breakers.

use std::time::Duration;

use sssonector_breaker::CircuitBreaker;
use sssonector_core::TokioClock;
use sssonector_ratelimit::{Quota, RateLimiter};

use crate::balance::Balance;
use crate::error::ConfigError;
use crate::manager::Manager;
use crate::pool::Pool;

/// Settings that do not change while the pool runs (the size can: [`Pool::resize`]).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) max_size: usize,
    pub(crate) max_idle_per_endpoint: usize,
    pub(crate) min_idle_per_endpoint: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) lifetime_jitter: f64,
    pub(crate) checkout_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) check_on_checkout: bool,
    pub(crate) check_timeout: Duration,
    pub(crate) health_check_interval: Option<Duration>,
    pub(crate) balance: Balance,
    pub(crate) replenish_backoff: sssonector_retry::Backoff,
}

/// Configures and builds a [`Pool`].
///
/// Defaults: 10 connections in all, at most 10 idle per endpoint and none kept warm; idle
/// connections closed after 10 minutes, any connection after 30 minutes (±10 %); checkout
/// timeout 30 s, connect timeout 5 s; no check on checkout; round-robin; a breaker per
/// endpoint that opens after 5 consecutive connect failures for 1 s, growing to 30 s.
pub struct PoolBuilder<M: Manager> {
    manager: M,
    endpoints: Vec<(M::Endpoint, u32)>,
    config: Config,
    max_connects_per_second: Option<u64>,
    breaker: Option<Box<dyn Fn(usize) -> sssonector_breaker::BreakerBuilder + Send>>,
}

impl<M: Manager> std::fmt::Debug for PoolBuilder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("endpoints", &self.endpoints)
            .field("config", &self.config)
            .field("max_connects_per_second", &self.max_connects_per_second)
            .finish_non_exhaustive()
    }
}

impl<M: Manager> PoolBuilder<M> {
    pub(crate) fn new(manager: M) -> Self {
        Self {
            manager,
            endpoints: Vec::new(),
            config: Config {
                name: "default".into(),
                max_size: 10,
                max_idle_per_endpoint: 10,
                min_idle_per_endpoint: 0,
                idle_timeout: Some(Duration::from_secs(600)),
                max_lifetime: Some(Duration::from_secs(1800)),
                lifetime_jitter: 0.1,
                checkout_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(5),
                check_on_checkout: false,
                check_timeout: Duration::from_secs(5),
                health_check_interval: None,
                balance: Balance::RoundRobin,
                replenish_backoff: sssonector_retry::Backoff::exponential(Duration::from_millis(
                    100,
                ))
                .max_delay(Duration::from_secs(10)),
            },
            max_connects_per_second: None,
            breaker: None,
        }
    }

    /// Adds an endpoint with weight 1.
    pub fn endpoint(self, endpoint: M::Endpoint) -> Self {
        self.weighted_endpoint(endpoint, 1)
    }

    /// Adds an endpoint with a weight, used by [`Balance::Weighted`].
    pub fn weighted_endpoint(mut self, endpoint: M::Endpoint, weight: u32) -> Self {
        self.endpoints.push((endpoint, weight));
        self
    }

    /// Names the pool: the `pool` label on its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Connections open or being opened, over all endpoints. Default 10.
    pub fn max_size(mut self, n: usize) -> Self {
        self.config.max_size = n;
        self
    }

    /// Idle connections kept per endpoint; more are closed when returned. Default 10.
    pub fn max_idle_per_endpoint(mut self, n: usize) -> Self {
        self.config.max_idle_per_endpoint = n;
        self
    }

    /// Idle connections kept warm per endpoint by [`Pool::maintenance`], and never closed for
    /// idleness. Default 0.
    pub fn min_idle_per_endpoint(mut self, n: usize) -> Self {
        self.config.min_idle_per_endpoint = n;
        self
    }

    /// Closes connections idle this long (keeping the minimum idle). `None`: never.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Closes connections this old, each at a point drawn within ±`jitter` of it so they do
    /// not all expire together. `None`: never.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>, jitter: f64) -> Self {
        self.config.max_lifetime = lifetime;
        self.config.lifetime_jitter = jitter;
        self
    }

    /// How long [`Pool::get`] waits for a connection when the pool is full. Default 30 s.
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.config.checkout_timeout = timeout;
        self
    }

    /// How long one connect may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Checks an idle connection with [`Manager::check`] before handing it out. Default off.
    pub fn check_on_checkout(mut self, on: bool) -> Self {
        self.config.check_on_checkout = on;
        self
    }

    /// How long one [`Manager::check`] may take. Default 5 s.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.config.check_timeout = timeout;
        self
    }

    /// Checks idle connections this often, from [`Pool::maintenance`]. Default never.
    pub fn health_check_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.health_check_interval = interval;
        self
    }

    /// How new connections (and idle ones, where several endpoints have some) are spread over
    /// endpoints. Default [`Balance::RoundRobin`].
    pub fn balance(mut self, balance: Balance) -> Self {
        self.config.balance = balance;
        self
    }

    /// At most this many new connections per second over all endpoints: a burst of
    /// reconnects after an outage does not stampede the servers. Default unlimited.
    pub fn max_connects_per_second(mut self, n: u64) -> Self {
        self.max_connects_per_second = Some(n);
        self
    }

    /// Backoff between attempts to replenish the minimum idle at an endpoint that keeps
    /// failing. Default exponential from 100 ms to 10 s.
    pub fn replenish_backoff(mut self, backoff: sssonector_retry::Backoff) -> Self {
        self.config.replenish_backoff = backoff;
        self
    }

    /// The breaker for each endpoint, from its index. The pool gives it tokio's clock, so
    /// tests under paused time see it move.
    pub fn breaker(
        mut self,
        make: impl Fn(usize) -> sssonector_breaker::BreakerBuilder + Send + 'static,
    ) -> Self {
        self.breaker = Some(Box::new(make));
        self
    }

    /// Validates the configuration and builds the pool. Needs no runtime: connections are
    /// made on demand, or by [`Pool::maintenance`] once spawned.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid setting.
    pub fn build(self) -> Result<Pool<M>, ConfigError> {
        let c = &self.config;
        if self.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        if c.max_size == 0 {
            return Err(ConfigError::ZeroMaxSize);
        }
        if c.min_idle_per_endpoint * self.endpoints.len() > c.max_size {
            return Err(ConfigError::MinIdleTooLarge {
                min_idle: c.min_idle_per_endpoint,
                endpoints: self.endpoints.len(),
                max_size: c.max_size,
            });
        }
        if c.min_idle_per_endpoint > c.max_idle_per_endpoint {
            return Err(ConfigError::MinIdleAboveMaxIdle {
                min_idle: c.min_idle_per_endpoint,
                max_idle: c.max_idle_per_endpoint,
            });
        }
        if let Some(i) = self.endpoints.iter().position(|(_, w)| *w == 0) {
            return Err(ConfigError::ZeroWeight(i));
        }
        for (name, d) in [
            ("checkout_timeout", Some(c.checkout_timeout)),
            ("connect_timeout", Some(c.connect_timeout)),
            ("check_timeout", Some(c.check_timeout)),
            ("idle_timeout", c.idle_timeout),
            ("max_lifetime", c.max_lifetime),
            ("health_check_interval", c.health_check_interval),
        ] {
            if d == Some(Duration::ZERO) {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if !(0.0..1.0).contains(&c.lifetime_jitter) {
            return Err(ConfigError::Jitter(c.lifetime_jitter));
        }
        let limiter = match self.max_connects_per_second {
            None => None,
            Some(0) => return Err(ConfigError::ZeroConnectRate),
            Some(n) => Some(
                RateLimiter::builder()
                    .quota(
                        Quota::per_second(n)
                            .and_then(|q| q.with_burst(n.div_ceil(10).max(1)))
                            .map_err(|_| ConfigError::ZeroConnectRate)?,
                    )
                    .tokio_clock()
                    .build()
                    .map_err(|_| ConfigError::ZeroConnectRate)?,
            ),
        };
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for (index, (target, weight)) in self.endpoints.into_iter().enumerate() {
            let builder = match &self.breaker {
                Some(make) => make(index),
                None => CircuitBreaker::builder()
                    .name(format!("{}-endpoint-{index}", c.name))
                    .consecutive_failures(5)
                    .open_duration(Duration::from_secs(1))
                    .open_backoff(2.0, Duration::from_secs(30)),
            };
            let breaker = builder.clock(std::sync::Arc::new(TokioClock)).build()?;
            endpoints.push(crate::pool::Endpoint {
                target,
                weight,
                breaker,
            });
        }
        Ok(Pool::from_parts(
            self.manager,
            endpoints,
            self.config,
            limiter,
        ))
    }
}
