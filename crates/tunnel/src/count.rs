//! A counter kept for a component's own `stats()` and published through the `metrics` facade,
//! its metric handle registered once rather than looked up on every increment.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter: a value read by `stats()`, and the metric it feeds.
#[derive(Debug)]
pub(crate) struct Count {
    value: AtomicU64,
    metric: metrics::Counter,
}

impl Count {
    /// A counter feeding `metric` (from `metrics::counter!`, with whatever labels it needs).
    pub(crate) fn new(metric: metrics::Counter) -> Self {
        Self {
            value: AtomicU64::new(0),
            metric,
        }
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.metric.increment(n);
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}
