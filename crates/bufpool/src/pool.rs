//! The pool: shared state, the slow paths, waiting for memory and trimming.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_queue::SegQueue;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::buf::{Node, PooledBuf};
use crate::class::{ClassIndex, ClassTable};
use crate::config::BufPoolBuilder;
use crate::error::GetError;
use crate::local;
use crate::stats::{Counters, Stats, ThreadStats};

/// How often a waiter re-checks when memory may sit idle in another thread's cache, which no
/// release wakes it for (see [`BufPoolBuilder::thread_cache_bytes`]).
const STRANDED_RECHECK: Duration = Duration::from_millis(5);

/// A validated configuration, from [`BufPoolBuilder::build`].
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) classes: Vec<usize>,
    pub(crate) local_max: Vec<usize>,
    pub(crate) budget: usize,
    pub(crate) low_watermark: usize,
    pub(crate) max_cached_threads: usize,
    pub(crate) name: Arc<str>,
}

/// One size class: its idle buffers in a lock-free queue shared by all threads.
#[derive(Debug)]
pub(crate) struct Class {
    pub(crate) size: usize,
    /// How many buffers of this class one thread may cache.
    pub(crate) local_max: usize,
    /// Idle buffers. Each keeps its pool reference; closing drains the queue (see
    /// `Shared::put_idle`).
    pub(crate) queue: SegQueue<Box<Node>>,
    /// The fewest buffers the queue held since the last trim: that many sat idle all period.
    idle_min: AtomicUsize,
}

/// Where each pool's epochs start: pools' epochs never meet, so a thread cache whose epoch
/// equals a pool's is that pool's cache, and current (see `LocalCache::is_current_for`).
static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// Epochs a pool may go through before reaching the next pool's: 2^40, which at a thousand
/// flush requests a second lasts 35 years.
const EPOCH_SPAN: u64 = 1 << 40;

/// State shared by every handle, buffer and thread cache of one pool.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Finding a length's class, apart from `classes` so that it reads one cache line.
    table: ClassTable,
    pub(crate) classes: Box<[Class]>,
    pub(crate) budget: usize,
    /// Bytes charged for every buffer the pool owns: in the queues, in thread caches, or out.
    used: AtomicUsize,
    /// Tasks waiting in [`BufPool::get`]. While non-zero, returns skip thread caches.
    pub(crate) waiters: AtomicUsize,
    /// Moved on to make every thread cache flush on its next use: memory pressure, trimming,
    /// closing, a new waiter. Odd while anyone waits (see [`WaiterGuard`]). Starts at a
    /// multiple of [`EPOCH_SPAN`] of its own, so it also tells pools apart.
    pub(crate) epoch: AtomicU64,
    /// Serialises waiters registering and leaving, so the epoch's parity follows `waiters`.
    waiter_gate: Mutex<()>,
    /// Live [`BufPool`] handles; at zero the pool closes and frees its idle buffers.
    handles: AtomicUsize,
    notify: Notify,
    low_watermark: usize,
    pub(crate) max_cached_threads: usize,
    /// Statistics of threads that have a cache, each written only by its thread.
    pub(crate) threads: Mutex<Vec<&'static ThreadStats>>,
    pub(crate) counters: Counters,
    pub(crate) name: Arc<str>,
}

/// A pool of size-classed byte buffers under a byte budget.
///
/// Clones share one pool. Buffers go back to the pool when dropped, from any thread, and so
/// do frozen [`Bytes`](bytes::Bytes) when their last clone is dropped. When the last handle is
/// dropped, idle buffers are freed; buffers still out are freed as they come back.
///
/// Fast path: each thread keeps a few idle buffers per class, so a get and a drop on one thread
/// take no lock and no atomic read-modify-write. Behind the caches, each class has a lock-free
/// queue shared by all threads.
#[derive(Debug)]
pub struct BufPool {
    shared: Arc<Shared>,
}

impl Clone for BufPool {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SeqCst pairs with the load in `is_closed` after a push to a shared queue: either
        // that load sees the pool closed, or closing's drain sees the pushed buffer.
        if self.shared.handles.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.close();
        }
    }
}

impl Default for BufPool {
    /// A pool with the default configuration (see [`BufPoolBuilder`]).
    fn default() -> Self {
        BufPoolBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }
}

impl BufPool {
    /// A builder for a pool.
    pub fn builder() -> BufPoolBuilder {
        BufPoolBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        let classes = config
            .classes
            .iter()
            .zip(&config.local_max)
            .map(|(&size, &local_max)| Class {
                size,
                local_max,
                queue: SegQueue::new(),
                idle_min: AtomicUsize::new(0),
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                table: ClassTable::new(&config.classes),
                classes,
                budget: config.budget,
                used: AtomicUsize::new(0),
                waiters: AtomicUsize::new(0),
                epoch: AtomicU64::new(
                    NEXT_POOL
                        .fetch_add(1, Ordering::Relaxed)
                        .wrapping_mul(EPOCH_SPAN),
                ),
                waiter_gate: Mutex::new(()),
                handles: AtomicUsize::new(1),
                notify: Notify::new(),
                low_watermark: config.low_watermark,
                max_cached_threads: config.max_cached_threads,
                threads: Mutex::new(Vec::new()),
                counters: Counters::default(),
                name: config.name,
            }),
        }
    }

    /// Takes a buffer with room for at least `len` bytes (empty, capacity of its size class)
    /// without waiting.
    ///
    /// # Errors
    ///
    /// [`GetError::BudgetExhausted`] when the buffer would put the pool over its budget even
    /// after freeing idle buffers of other classes; [`GetError::TooLarge`] when `len` exceeds
    /// the whole budget.
    #[inline]
    pub fn try_get(&self, len: usize) -> Result<PooledBuf, GetError> {
        if let Some(class) = self.shared.table_class(len) {
            if let Some(buf) = local::pop(&self.shared, class) {
                return Ok(buf);
            }
        }
        self.try_get_slow(len)
    }

    /// [`try_get`](Self::try_get) past this thread's cache: one call, so the caller's code
    /// stays small.
    #[inline(never)]
    fn try_get_slow(&self, len: usize) -> Result<PooledBuf, GetError> {
        match self.shared.get_slow(len) {
            Err(GetError::BudgetExhausted { .. }) => {
                // Last resort before refusing: this thread's own cache, which may hold
                // buffers of other classes, and a request to every other thread to flush.
                local::flush_current(&self.shared);
                self.shared.get_slow(len).inspect_err(|_| {
                    self.shared
                        .counters
                        .rejections
                        .fetch_add(1, Ordering::Relaxed);
                    self.shared.request_flush();
                })
            }
            other => other,
        }
    }

    /// Takes a buffer with room for at least `len` bytes, waiting while the budget is used
    /// up until enough memory comes back (backpressure). Waiters are woken when buffers are
    /// returned or freed; cancelling the future leaves nothing behind.
    ///
    /// Needs a tokio runtime with time enabled: while memory may sit idle in another
    /// thread's cache, a waiter re-checks every 5 ms.
    ///
    /// # Errors
    ///
    /// [`GetError::TooLarge`] when `len` exceeds the whole budget; it never fits.
    pub async fn get(&self, len: usize) -> Result<PooledBuf, GetError> {
        let shared = &self.shared;
        if let Some(class) = shared.class_for(len) {
            if let Some(buf) = local::pop(shared, class.get()) {
                return Ok(buf);
            }
        }
        match shared.get_slow(len) {
            Err(GetError::BudgetExhausted { .. }) => {}
            other => return other,
        }
        shared.counters.waits.fetch_add(1, Ordering::Relaxed);
        let mut notified = pin!(shared.notify.notified());
        let _waiting = WaiterGuard::register(shared);
        loop {
            // Enable before checking, so a release between the check and the await wakes us.
            notified.as_mut().enable();
            local::flush_current(shared);
            match shared.get_slow(len) {
                Err(GetError::BudgetExhausted { .. }) => {}
                other => return other,
            }
            if shared.thread_cached_bytes() > 0 {
                let _ = tokio::time::timeout(STRANDED_RECHECK, notified.as_mut()).await;
            } else {
                notified.as_mut().await;
            }
            notified.set(shared.notify.notified());
        }
    }

    /// Frees idle buffers in the shared queues that went unused for the whole time since the
    /// previous call, largest classes first, keeping at least the low watermark of idle bytes.
    /// Also asks every thread cache to flush into the shared queues on its next use, so their
    /// idle buffers can be trimmed next time. Returns the bytes freed.
    ///
    /// Call it periodically, or run [`BufPool::maintenance`].
    pub fn trim(&self) -> usize {
        let shared = &self.shared;
        let mut idle_bytes: usize = shared.classes.iter().map(|c| c.queue.len() * c.size).sum();
        let mut freed = 0;
        for class in shared.classes.iter().rev() {
            let idle = class.idle_min.swap(class.queue.len(), Ordering::Relaxed);
            for _ in 0..idle {
                // Free only while at least the low watermark stays idle afterwards.
                if idle_bytes < shared.low_watermark + class.size {
                    break;
                }
                let Some(node) = class.queue.pop() else { break };
                drop(node);
                idle_bytes -= class.size;
                freed += class.size;
                shared.counters.trimmed.fetch_add(1, Ordering::Relaxed);
            }
            class
                .idle_min
                .fetch_min(class.queue.len(), Ordering::Relaxed);
        }
        if freed > 0 {
            shared.release_budget(freed);
        }
        shared.request_flush();
        freed
    }

    /// A future that trims the pool and publishes its metrics every `period`, until every
    /// handle to the pool has been dropped. Spawn it on a tokio runtime; it keeps no handle,
    /// so it does not keep the pool open.
    ///
    /// ```no_run
    /// # async fn run() {
    /// use std::time::Duration;
    /// let pool = sssonector_bufpool::BufPool::default();
    /// tokio::spawn(pool.maintenance(Duration::from_secs(10)));
    /// # }
    /// ```
    pub fn maintenance(&self, period: Duration) -> impl Future<Output = ()> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if shared.handles.load(Ordering::Acquire) == 0 {
                    return;
                }
                // A temporary handle, so trimming shares one code path with `trim`.
                shared.handles.fetch_add(1, Ordering::AcqRel);
                let pool = BufPool {
                    shared: Arc::clone(&shared),
                };
                pool.trim();
                pool.publish_metrics();
                drop(pool);
            }
        }
    }

    /// A snapshot of the pool's statistics. Counters are summed over threads without
    /// stopping them, so a snapshot taken while buffers move may be off by those in flight.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Publishes [`stats`](Self::stats) through the `metrics` facade, labelled `pool`:
    /// counters `sssonector_bufpool_hits_total`, `_misses_total`, `_waits_total`,
    /// `_rejections_total`, `_trimmed_total`, `_dropped_on_return_total`; gauges
    /// `sssonector_bufpool_pooled_bytes`, `_outstanding_bytes`, `_outstanding_buffers`,
    /// `_budget_bytes`. [`maintenance`](Self::maintenance) calls it on every tick.
    pub fn publish_metrics(&self) {
        self.stats().publish(&self.shared.name);
    }

    /// Panics unless every buffer taken from the pool has come back: a leak check for tests.
    ///
    /// # Panics
    ///
    /// When buffers are outstanding, with their count and bytes.
    #[track_caller]
    pub fn assert_no_outstanding(&self) {
        let stats = self.stats();
        assert!(
            stats.outstanding == 0 && stats.outstanding_bytes == 0,
            "buffer pool `{}`: {} buffers ({} bytes) still outstanding",
            self.shared.name,
            stats.outstanding,
            stats.outstanding_bytes
        );
    }
}

/// Counts a task as waiting for as long as it is registered.
///
/// While anyone waits, the pool's epoch is odd, which keeps every thread cache off its fast
/// path (see `LocalCache::sync`): returns go to the shared queues, where a waiter finds them.
/// Registering also asks the caches to flush what they hold.
struct WaiterGuard<'a>(&'a Shared);

impl<'a> WaiterGuard<'a> {
    fn register(shared: &'a Shared) -> Self {
        // The gate keeps the epoch's parity in step with whether the count is zero.
        let _gate = shared.waiter_gate.lock();
        let before = shared.waiters.fetch_add(1, Ordering::SeqCst);
        // The first waiter makes the epoch odd; later ones move it on by two (a flush request).
        let step = if before == 0 { 1 } else { 2 };
        shared.epoch.fetch_add(step, Ordering::Release);
        Self(shared)
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let _gate = self.0.waiter_gate.lock();
        if self.0.waiters.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.epoch.fetch_add(1, Ordering::Release);
        }
    }
}

impl Shared {
    /// Asks every thread cache to flush into the shared queues on its next use. Moves the
    /// epoch by two, keeping its parity (odd while anyone waits, see [`WaiterGuard`]).
    pub(crate) fn request_flush(&self) {
        self.epoch.fetch_add(2, Ordering::Release);
    }

    /// The class sizes, ascending.
    pub(crate) fn sizes(&self) -> &[usize] {
        self.table.sizes()
    }

    /// The smallest class that holds `len` bytes ([`ClassTable::class_for`]).
    #[inline]
    pub(crate) fn class_for(&self, len: usize) -> Option<ClassIndex> {
        self.table.class_for(len)
    }

    /// [`ClassTable::table_class`].
    #[inline]
    pub(crate) fn table_class(&self, len: usize) -> Option<usize> {
        self.table.table_class(len)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.handles.load(Ordering::SeqCst) == 0
    }

    /// A get that missed this thread's cache: the shared queue, else a new allocation.
    fn get_slow(self: &Arc<Self>, len: usize) -> Result<PooledBuf, GetError> {
        let Some(class_index) = self.class_for(len) else {
            return self.get_oversized(len);
        };
        let class = class_index.get();
        let size = self.classes[class].size;
        let queue = &self.classes[class].queue;
        let node = if let Some(node) = queue.pop() {
            self.classes[class]
                .idle_min
                .fetch_min(queue.len(), Ordering::Relaxed);
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            node
        } else {
            self.reserve(size)?;
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            Node::of_class(Arc::clone(self), class_index, size)
        };
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        Ok(PooledBuf::new(node))
    }

    fn get_oversized(self: &Arc<Self>, len: usize) -> Result<PooledBuf, GetError> {
        if len > self.budget || len > crate::buf::MAX_CHARGE {
            return Err(GetError::TooLarge {
                requested: len,
                budget: self.budget,
            });
        }
        self.reserve(len)?;
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        Ok(PooledBuf::new(Node::oversized(Arc::clone(self), len)))
    }

    /// Charges `bytes` to the budget, freeing idle buffers from the shared queues (largest
    /// first) when that is what it takes. Never lets `used` exceed the budget.
    fn reserve(&self, bytes: usize) -> Result<(), GetError> {
        loop {
            let used = self.used.load(Ordering::Relaxed);
            if used + bytes <= self.budget {
                if self
                    .used
                    .compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            if !self.evict_one() {
                return Err(GetError::BudgetExhausted {
                    requested: bytes,
                    in_use: used,
                    budget: self.budget,
                });
            }
        }
    }

    /// Frees one idle buffer from the shared queues, largest class first.
    fn evict_one(&self) -> bool {
        for class in self.classes.iter().rev() {
            if let Some(node) = class.queue.pop() {
                class
                    .idle_min
                    .fetch_min(class.queue.len(), Ordering::Relaxed);
                drop(node);
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                self.release_budget(class.size);
                return true;
            }
        }
        false
    }

    /// Returns `bytes` to the budget and wakes waiters.
    pub(crate) fn release_budget(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.wake_waiters();
    }

    pub(crate) fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Takes back a buffer that a thread cache did not: into the shared queue, or freed.
    #[cold]
    #[inline(never)]
    pub(crate) fn put_slow(node: Box<Node>) {
        let pool = Arc::clone(&node.pool);
        pool.counters.returns.fetch_add(1, Ordering::Relaxed);
        pool.put_idle(node);
    }

    /// Takes back a buffer that no longer has its class's capacity, and frees it.
    pub(crate) fn discard(node: Box<Node>) {
        let pool = Arc::clone(&node.pool);
        pool.counters.returns.fetch_add(1, Ordering::Relaxed);
        pool.counters
            .dropped_on_return
            .fetch_add(1, Ordering::Relaxed);
        let charge = node.charge();
        drop(node);
        pool.release_budget(charge);
    }

    /// Stores an idle buffer in its class's shared queue (freeing it if the pool is closed
    /// or it is oversized) and wakes waiters.
    ///
    /// Queued buffers keep their pool reference (no count changes hands on the way through
    /// the queue). That makes a cycle, pool to queue to buffer to pool, which closing breaks:
    /// it drains the queues, and a buffer pushed while it does is drained by its pusher.
    pub(crate) fn put_idle(&self, node: Box<Node>) {
        match node.class_index() {
            Some(class) if !self.is_closed() => {
                self.classes[class].queue.push(node);
                // Closing drains the queues after marking the pool closed; re-check so a
                // buffer pushed concurrently with closing is not left behind.
                if self.is_closed() {
                    self.drain();
                }
                self.wake_waiters();
            }
            _ => {
                let charge = node.charge();
                drop(node);
                self.release_budget(charge);
            }
        }
    }

    /// The last handle was dropped: free every idle buffer in the shared queues, and make
    /// thread caches free theirs on next use.
    fn close(&self) {
        self.request_flush();
        self.drain();
    }

    fn drain(&self) {
        let mut freed = 0;
        for class in self.classes.iter() {
            while let Some(node) = class.queue.pop() {
                drop(node);
                freed += class.size;
            }
        }
        if freed > 0 {
            self.release_budget(freed);
        }
    }

    /// Bytes idle in thread caches, which only their own threads can hand out.
    fn thread_cached_bytes(&self) -> usize {
        self.threads
            .lock()
            .iter()
            .map(|t| t.sums(self.table.sizes()).cached_bytes)
            .sum()
    }

    fn stats(&self) -> Stats {
        // Hold the thread list while reading the shared counters: a thread that exits folds
        // its counters into them and leaves the list under this lock, so none is counted
        // twice or missed.
        let threads = self.threads.lock();
        let c = &self.counters;
        let mut stats = Stats {
            budget: self.budget,
            in_use_bytes: self.used.load(Ordering::Acquire),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            waits: c.waits.load(Ordering::Relaxed),
            rejections: c.rejections.load(Ordering::Relaxed),
            trimmed: c.trimmed.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            dropped_on_return: c.dropped_on_return.load(Ordering::Relaxed),
            waiting: self.waiters.load(Ordering::Relaxed),
            ..Stats::default()
        };
        let mut gets = c.gets.load(Ordering::Relaxed);
        let mut returns = c.returns.load(Ordering::Relaxed);
        for t in threads.iter() {
            let sums = t.sums(self.table.sizes());
            gets += sums.taken;
            stats.hits += sums.taken;
            returns += sums.stored;
            stats.thread_cached_bytes += sums.cached_bytes;
        }
        drop(threads);
        stats.outstanding = gets.saturating_sub(returns);
        stats.shared_pooled_bytes = self.classes.iter().map(|c| c.queue.len() * c.size).sum();
        stats.pooled_bytes = stats.shared_pooled_bytes + stats.thread_cached_bytes;
        stats.outstanding_bytes = stats.in_use_bytes.saturating_sub(stats.pooled_bytes) as u64;
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn odd(pool: &BufPool) -> bool {
        pool.shared.epoch.load(Ordering::Acquire) & 1 == 1
    }

    /// Queued buffers hold their pool, so closing must break that cycle: once every handle
    /// and buffer is gone, whichever way the last ones went (thread caches, the shared queue,
    /// returned while the last handle drops), the pool's memory is freed.
    #[test]
    fn the_pool_is_freed_once_handles_and_buffers_are_gone() {
        for round in 0..200 {
            let pool = BufPool::builder()
                .budget(4 << 20)
                .thread_cache_bytes(64 * 1024)
                .build()
                .unwrap();
            let shared = Arc::downgrade(&pool.shared);
            // More than a thread cache holds, so some go to the shared queue.
            let queued: Vec<_> = (0..48).map(|_| pool.try_get(2000).unwrap()).collect();
            let racing: Vec<_> = (0..48).map(|_| pool.try_get(16_000).unwrap()).collect();
            std::thread::spawn(move || drop(queued)).join().unwrap();
            let returner = std::thread::spawn(move || drop(racing));
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            drop(pool);
            returner.join().unwrap();
            assert!(
                shared.upgrade().is_none(),
                "round {round}: the pool outlived its users"
            );
        }
    }

    /// The table-started search finds what a scan of the sizes finds, for any lengths.
    #[test]
    fn class_lookup_matches_a_scan() {
        let configs: [&[usize]; 5] = [
            &[2048, 16 * 1024, 64 * 1024],
            &[1500, 9000, 16 * 1024, 65_535],
            &[1, 2, 3, 4, 5, 1000, 1001, 1024, 1025],
            &[4096],
            &[1, 1 << 20, (1 << 20) + 1],
        ];
        for classes in configs {
            let pool = BufPool::builder()
                .classes(classes.iter().copied())
                .budget(8 << 20)
                .build()
                .unwrap();
            let sizes = pool.shared.sizes();
            let lens = (0..70_000)
                .chain((1 << 20) - 2..(1 << 20) + 3)
                .chain([usize::MAX / 2, usize::MAX]);
            for len in lens {
                let scanned = sizes.iter().position(|&size| size >= len);
                assert_eq!(
                    pool.shared.class_for(len).map(ClassIndex::get),
                    scanned,
                    "{classes:?}, len {len}"
                );
                let from_table = pool.shared.table_class(len);
                assert!(
                    from_table.is_none() || from_table == scanned,
                    "{classes:?}, len {len}: the table alone said {from_table:?}"
                );
                // Power-of-two classes: the table alone answers every length they hold.
                if classes.iter().all(|c| c.is_power_of_two()) && scanned.is_some() {
                    assert_eq!(from_table, scanned, "{classes:?}, len {len}");
                }
            }
        }
    }

    /// The thread caches' fast path trusts the epoch's parity to say whether anyone waits.
    #[test]
    fn the_epoch_is_odd_exactly_while_someone_waits() {
        let pool = BufPool::default();
        assert!(!odd(&pool));
        let first = WaiterGuard::register(&pool.shared);
        assert!(odd(&pool));
        let second = WaiterGuard::register(&pool.shared);
        pool.trim(); // a flush request keeps the parity
        assert!(odd(&pool));
        drop(first);
        assert!(odd(&pool), "one waiter is left");
        drop(second);
        assert!(!odd(&pool));
        let third = WaiterGuard::register(&pool.shared);
        assert!(odd(&pool));
        drop(third);
        assert!(!odd(&pool));
    }
}
