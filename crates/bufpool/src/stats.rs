//! Statistics: shared counters, per-thread counters and the snapshot users read.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Counters updated on the shared (slow) paths.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) gets: AtomicU64,
    pub(crate) returns: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) rejections: AtomicU64,
    pub(crate) trimmed: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) dropped_on_return: AtomicU64,
}

/// The most size classes a pool may have (the builder refuses more).
pub(crate) const MAX_CLASSES: usize = 32;

/// Counters of one thread's cache, per size class. Only that thread writes them, with a plain
/// load and store (no read-modify-write); any thread may read them.
///
/// One counter moves per get or return, indexed by the buffer's class: what the cache holds
/// is derived, `stored − taken − flushed` buffers of each class.
#[derive(Debug)]
pub(crate) struct ThreadStats {
    /// Buffers handed out from the cache.
    taken: [AtomicU64; MAX_CLASSES],
    /// Buffers returned into the cache.
    stored: [AtomicU64; MAX_CLASSES],
    /// Buffers moved from the cache to the shared queues.
    flushed: [AtomicU64; MAX_CLASSES],
}

impl ThreadStats {
    const fn new() -> Self {
        Self {
            taken: [const { AtomicU64::new(0) }; MAX_CLASSES],
            stored: [const { AtomicU64::new(0) }; MAX_CLASSES],
            flushed: [const { AtomicU64::new(0) }; MAX_CLASSES],
        }
    }

    /// Counters for a new thread cache, all zero: a block a finished cache gave back, or a
    /// new one. Blocks live as long as the process and are reused by later caches of any
    /// pool, so there are never more than caches alive at once. `'static` is what lets a
    /// cache that has none (see [`ThreadStats::idle`]) still hold one, so the fast path
    /// needs no check.
    pub(crate) fn lease() -> &'static Self {
        let spare = SPARE.lock().pop();
        spare.unwrap_or_else(|| Box::leak(Box::new(Self::new())))
    }

    /// Gives back a block leased by [`lease`](Self::lease), once no pool lists it any more.
    pub(crate) fn give_back(stats: &'static Self) {
        for counter in stats
            .taken
            .iter()
            .chain(&stats.stored)
            .chain(&stats.flushed)
        {
            counter.store(0, Ordering::Relaxed);
        }
        SPARE.lock().push(stats);
    }

    /// The block of a cache that never counts: one that got no room, or none at all.
    pub(crate) const fn idle() -> &'static Self {
        &IDLE
    }
}

/// Counter blocks given back by finished caches (see [`ThreadStats::lease`]).
static SPARE: Mutex<Vec<&'static ThreadStats>> = Mutex::new(Vec::new());

/// See [`ThreadStats::idle`]. Never written: a cache without room stores nothing and so
/// never hands anything out.
static IDLE: ThreadStats = ThreadStats::new();

/// Adds to a counter that only the calling thread writes. The store releases, so a reader
/// that acquires it also sees this thread's earlier counts (which [`ThreadStats::sums`]
/// relies on); on x86 that is the same plain store.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Release,
    );
}

/// What one thread's counters say, summed over classes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ThreadSums {
    pub(crate) taken: u64,
    pub(crate) stored: u64,
    pub(crate) cached_bytes: usize,
}

impl ThreadStats {
    /// A buffer of `class` handed out from the cache.
    #[inline]
    pub(crate) fn took(&self, class: usize) {
        bump(&self.taken[class % MAX_CLASSES], 1);
    }

    /// A buffer of `class` returned into the cache.
    #[inline]
    pub(crate) fn stored(&self, class: usize) {
        bump(&self.stored[class % MAX_CLASSES], 1);
    }

    /// `count` buffers of `class` moved to the shared queues.
    pub(crate) fn flushed(&self, class: usize, count: usize) {
        bump(&self.flushed[class % MAX_CLASSES], count as u64);
    }

    /// The counters summed, with the bytes cached given the class sizes. Read by other
    /// threads while this one works: `flushed` first and `stored` last, each load acquiring
    /// what the owner released, so a counter that moves meanwhile can only make the cached
    /// figure too high, never too low (a waiter that believes nothing is cached stops
    /// looking).
    pub(crate) fn sums(&self, sizes: &[usize]) -> ThreadSums {
        let mut sums = ThreadSums::default();
        for (class, size) in sizes.iter().enumerate().take(MAX_CLASSES) {
            let flushed = self.flushed[class].load(Ordering::Acquire);
            let taken = self.taken[class].load(Ordering::Acquire);
            let stored = self.stored[class].load(Ordering::Acquire);
            sums.taken = sums.taken.wrapping_add(taken);
            sums.stored = sums.stored.wrapping_add(stored);
            let held = stored.saturating_sub(taken).saturating_sub(flushed);
            let bytes = usize::try_from(held)
                .unwrap_or(usize::MAX)
                .saturating_mul(*size);
            sums.cached_bytes = sums.cached_bytes.saturating_add(bytes);
        }
        sums
    }

    /// Folds a finished thread's counters into the shared ones.
    pub(crate) fn fold_into(&self, counters: &Counters, sizes: &[usize]) {
        let sums = self.sums(sizes);
        // Buffers handed out from a thread cache are hits.
        counters.hits.fetch_add(sums.taken, Ordering::Relaxed);
        counters.gets.fetch_add(sums.taken, Ordering::Relaxed);
        counters.returns.fetch_add(sums.stored, Ordering::Relaxed);
    }
}

/// A snapshot of a pool's statistics, from [`BufPool::stats`](crate::BufPool::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The byte budget.
    pub budget: usize,
    /// Bytes charged for every buffer the pool owns: idle plus outstanding. Never above
    /// `budget`.
    pub in_use_bytes: usize,
    /// Bytes in idle buffers: shared queues plus thread caches.
    pub pooled_bytes: usize,
    /// Bytes in idle buffers in the shared queues.
    pub shared_pooled_bytes: usize,
    /// Bytes in idle buffers in thread caches.
    pub thread_cached_bytes: usize,
    /// Buffers handed out and not yet returned (frozen ones count until their last clone is
    /// dropped).
    pub outstanding: u64,
    /// Bytes charged for outstanding buffers: `in_use_bytes − pooled_bytes`.
    pub outstanding_bytes: u64,
    /// Gets served by an idle buffer.
    pub hits: u64,
    /// Gets that allocated a new buffer.
    pub misses: u64,
    /// Calls to `get` that had to wait for memory.
    pub waits: u64,
    /// Calls to `try_get` refused because the budget was used up.
    pub rejections: u64,
    /// Idle buffers freed by trimming.
    pub trimmed: u64,
    /// Idle buffers freed to make room for a buffer of another class.
    pub evicted: u64,
    /// Buffers freed on return because they grew past, or shrank below, their class.
    pub dropped_on_return: u64,
    /// Tasks waiting for memory now.
    pub waiting: usize,
}

impl Stats {
    pub(crate) fn publish(&self, pool: &str) {
        let label = [("pool", pool.to_owned())];
        let counters = [
            ("sssonector_bufpool_hits_total", self.hits),
            ("sssonector_bufpool_misses_total", self.misses),
            ("sssonector_bufpool_waits_total", self.waits),
            ("sssonector_bufpool_rejections_total", self.rejections),
            ("sssonector_bufpool_trimmed_total", self.trimmed),
            ("sssonector_bufpool_evicted_total", self.evicted),
            (
                "sssonector_bufpool_dropped_on_return_total",
                self.dropped_on_return,
            ),
        ];
        for (name, value) in counters {
            metrics::counter!(name, &label).absolute(value);
        }
        #[allow(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
        let gauges = [
            ("sssonector_bufpool_pooled_bytes", self.pooled_bytes as f64),
            (
                "sssonector_bufpool_outstanding_bytes",
                self.outstanding_bytes as f64,
            ),
            (
                "sssonector_bufpool_outstanding_buffers",
                self.outstanding as f64,
            ),
            ("sssonector_bufpool_in_use_bytes", self.in_use_bytes as f64),
            ("sssonector_bufpool_budget_bytes", self.budget as f64),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name, &label).set(value);
        }
    }
}
