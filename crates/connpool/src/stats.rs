//! Counters and the snapshot users read.

use std::sync::atomic::AtomicU64;

use sssonector_breaker::State as BreakerState;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) health_failures: AtomicU64,
    pub(crate) timeouts: AtomicU64,
}

/// One endpoint's connections, in [`Stats::endpoints`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Established connections: idle plus in use.
    pub open: usize,
    /// Idle connections.
    pub idle: usize,
    /// Connections checked out.
    pub in_use: usize,
    /// Connects in progress.
    pub connecting: usize,
    /// The endpoint's breaker: open while the endpoint is ejected.
    pub breaker: BreakerState,
}

/// A snapshot of a pool, from [`Pool::stats`](crate::Pool::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The maximum size.
    pub max_size: usize,
    /// Capacity taken: open connections, connects in progress and slots handed to waiters.
    pub size: usize,
    /// Idle connections.
    pub idle: usize,
    /// Connections checked out.
    pub in_use: usize,
    /// Tasks waiting for a connection.
    pub waiters: usize,
    /// Whether the pool was closed.
    pub closed: bool,
    /// Per endpoint, in the order given.
    pub endpoints: Vec<EndpointStats>,
    /// Connections opened.
    pub connects: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
    /// Health checks that failed (on checkout or periodic).
    pub health_failures: u64,
    /// Gets that timed out waiting.
    pub timeouts: u64,
    /// Gets that had to wait.
    pub waits: u64,
}

impl Stats {
    pub(crate) fn publish(&self, pool: &str) {
        let label = [("pool", pool.to_owned())];
        #[allow(clippy::cast_precision_loss, reason = "connection counts are small")]
        let gauges = [
            ("sssonector_connpool_size", self.size as f64),
            ("sssonector_connpool_idle", self.idle as f64),
            ("sssonector_connpool_in_use", self.in_use as f64),
            ("sssonector_connpool_waiters", self.waiters as f64),
            ("sssonector_connpool_max_size", self.max_size as f64),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name, &label).set(value);
        }
        let counters = [
            ("sssonector_connpool_connects_total", self.connects),
            (
                "sssonector_connpool_connect_failures_total",
                self.connect_failures,
            ),
            (
                "sssonector_connpool_health_check_failures_total",
                self.health_failures,
            ),
            ("sssonector_connpool_timeouts_total", self.timeouts),
            ("sssonector_connpool_waits_total", self.waits),
        ];
        for (name, value) in counters {
            metrics::counter!(name, &label).absolute(value);
        }
    }
}
