//! Errors from building a pool and from taking a connection.

use std::time::Duration;

/// Why no connection was handed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError<E: std::error::Error + 'static> {
    /// Connecting failed at every endpoint tried; the error is the last endpoint's own.
    #[error("connecting to endpoint {endpoint} failed: {source}")]
    Connect {
        /// Index of the endpoint, in the order given to the builder.
        endpoint: usize,
        /// The manager's error.
        #[source]
        source: E,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to endpoint {endpoint} timed out after {timeout:?}")]
    ConnectTimeout {
        /// Index of the endpoint.
        endpoint: usize,
        /// The connect timeout.
        timeout: Duration,
    },
    /// Every endpoint's circuit breaker is open after repeated failures.
    #[error("every endpoint is unavailable; retry after {retry_after:?}")]
    Unavailable {
        /// When the soonest breaker lets a probe through, where known.
        retry_after: Option<Duration>,
    },
    /// The pool stayed full for the whole checkout timeout.
    #[error("no connection became free within the checkout timeout of {0:?}")]
    Timeout(Duration),
    /// The pool was closed.
    #[error("the pool is closed")]
    Closed,
}

/// An invalid pool configuration, found when the pool is built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No endpoints were given.
    #[error("at least one endpoint is required")]
    NoEndpoints,
    /// A maximum size of zero.
    #[error("max_size must be at least 1")]
    ZeroMaxSize,
    /// More connections kept warm than the pool may hold.
    #[error(
        "min_idle ({min_idle}) per endpoint × {endpoints} endpoints exceeds max_size ({max_size})"
    )]
    MinIdleTooLarge {
        /// Minimum idle connections per endpoint.
        min_idle: usize,
        /// Number of endpoints.
        endpoints: usize,
        /// The pool's maximum size.
        max_size: usize,
    },
    /// More connections kept warm per endpoint than may sit idle there.
    #[error("min_idle_per_endpoint ({min_idle}) exceeds max_idle_per_endpoint ({max_idle})")]
    MinIdleAboveMaxIdle {
        /// Minimum idle connections per endpoint.
        min_idle: usize,
        /// Maximum idle connections per endpoint.
        max_idle: usize,
    },
    /// An endpoint weight of zero.
    #[error("endpoint {0} has weight 0; weights must be at least 1")]
    ZeroWeight(usize),
    /// A zero duration where a positive one is needed.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// A lifetime jitter outside `0.0..1.0`.
    #[error("lifetime jitter {0} must be in 0.0..1.0")]
    Jitter(f64),
    /// A connect rate of zero.
    #[error("max_connects_per_second must be at least 1")]
    ZeroConnectRate,
    /// The per-endpoint breaker could not be built.
    #[error("endpoint breaker: {0}")]
    Breaker(#[from] sssonector_breaker::ConfigError),
}
