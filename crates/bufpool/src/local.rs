//! Per-thread caches in front of the shared queues.
//!
//! Each thread keeps, per pool it has used, a few idle buffers of each class. Only the
//! owning thread touches its cache, so the fast path is a thread-local lookup and a slot
//! write: no lock and no atomic read-modify-write. The price is that a buffer in one
//! thread's cache cannot be handed out on another thread until its owner flushes it. Owners
//! flush on their next use of the pool after the pool's epoch changes (memory pressure,
//! a waiter, trimming, closing) and when the thread exits; while anyone waits for memory,
//! returns skip the caches. The number of caches is capped so that they can never hold so
//! much that a waiter could not be served (see `BufPoolBuilder::thread_cache_bytes`).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::buf::{Node, PooledBuf};
use crate::pool::Shared;
use crate::stats::{ThreadStats, bump};

thread_local! {
    static CACHES: RefCell<Vec<LocalCache>> = const { RefCell::new(Vec::new()) };
}

/// One thread's cache for one pool.
struct LocalCache {
    shared: Arc<Shared>,
    /// The pool's epoch when this cache last flushed.
    epoch: u64,
    /// Idle buffers per class, each `Vec` allocated once at its class's limit, so storing
    /// never reallocates. No room when the thread limit was reached. Cached nodes keep
    /// their pool reference, so handing them out touches no reference count.
    // Boxed on purpose: moving a pointer in and out is what makes the fast path fast.
    #[allow(clippy::vec_box)]
    stacks: Box<[Vec<Box<Node>>]>,
    /// This thread's counters; registered with the pool only if the thread got room.
    stats: Arc<ThreadStats>,
    registered: bool,
}

impl LocalCache {
    fn new(shared: &Arc<Shared>) -> Self {
        let stats = Arc::new(ThreadStats::default());
        let registered = {
            let mut threads = shared.threads.lock();
            let room = threads.len() < shared.max_cached_threads;
            if room {
                threads.push(Arc::clone(&stats));
            }
            room
        };
        let stacks = shared
            .classes
            .iter()
            .map(|c| Vec::with_capacity(if registered { c.local_max } else { 0 }))
            .collect();
        Self {
            shared: Arc::clone(shared),
            epoch: shared.epoch.load(Ordering::Acquire),
            stacks,
            stats,
            registered,
        }
    }

    /// Moves every cached buffer to the shared queues (which free them if the pool closed).
    fn flush(&mut self) {
        for stack in self.stacks.iter_mut() {
            for node in stack.drain(..) {
                self.shared.put_idle(node);
            }
        }
        self.stats.cached_bytes.store(0, Ordering::Relaxed);
    }

    /// Flushes if the pool's epoch moved on since the last flush; true if it had not.
    #[inline]
    fn sync(&mut self) -> bool {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if self.epoch == epoch {
            return true;
        }
        self.flush();
        self.epoch = epoch;
        false
    }

    /// Adds to (or, wrapping, subtracts from) this thread's cached bytes.
    #[inline]
    fn add_cached(&self, bytes: usize) {
        let cached = &self.stats.cached_bytes;
        cached.store(
            cached.load(Ordering::Relaxed).wrapping_add(bytes),
            Ordering::Relaxed,
        );
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        self.flush();
        if self.registered {
            let mut threads = self.shared.threads.lock();
            self.stats.fold_into(&self.shared.counters);
            threads.retain(|t| !Arc::ptr_eq(t, &self.stats));
        }
    }
}

/// This thread's cache for `shared`: usually the first, so that case is checked inline.
#[inline]
fn find<'a>(caches: &'a mut [LocalCache], shared: &Arc<Shared>) -> Option<&'a mut LocalCache> {
    match caches.first() {
        Some(first) if Arc::ptr_eq(&first.shared, shared) => caches.first_mut(),
        _ => find_further(caches, shared),
    }
}

#[cold]
fn find_further<'a>(
    caches: &'a mut [LocalCache],
    shared: &Arc<Shared>,
) -> Option<&'a mut LocalCache> {
    caches.iter_mut().find(|c| Arc::ptr_eq(&c.shared, shared))
}

/// Takes an idle buffer of `class` from this thread's cache.
#[inline]
pub(crate) fn pop(shared: &Arc<Shared>, class: usize) -> Option<PooledBuf> {
    CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            let cache = find(&mut caches, shared)?;
            if !cache.sync() {
                return None;
            }
            let node = cache.stacks.get_mut(class)?.pop()?;
            cache.add_cached(node.slot.charge().wrapping_neg());
            bump(&cache.stats.gets, 1);
            Some(PooledBuf::new(node))
        })
        .ok()
        .flatten()
}

/// Keeps a returned buffer of `class` (cleared, with its class's capacity) in this thread's
/// cache, or hands it back when the cache is full, disabled or flushing, or someone is
/// waiting for memory.
#[inline]
pub(crate) fn push(node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    let Some(pool) = &node.pool else {
        return Err(node);
    };
    if pool.waiters.load(Ordering::Relaxed) != 0 {
        return Err(node);
    }
    // The closure does not run while the thread exits, so the node travels in an `Option`
    // and comes back out if it was not stored.
    let mut item = Some(node);
    let _ = CACHES.try_with(|caches| {
        let Ok(mut caches) = caches.try_borrow_mut() else {
            return;
        };
        let Some(pool) = item.as_ref().and_then(|n| n.pool.as_ref()) else {
            return;
        };
        let cache = match find(&mut caches, pool) {
            Some(cache) => cache,
            None => return register(&mut caches, &mut item, class),
        };
        if !cache.sync() && cache.shared.is_closed() {
            let shared = Arc::clone(&cache.shared);
            caches.retain(|c| !Arc::ptr_eq(&c.shared, &shared));
            return;
        }
        store(cache, &mut item, class);
    });
    match item {
        Some(node) => Err(node),
        None => Ok(()),
    }
}

#[inline]
fn store(cache: &mut LocalCache, item: &mut Option<Box<Node>>, class: usize) {
    let Some(stack) = cache.stacks.get_mut(class) else {
        return;
    };
    if stack.len() == stack.capacity() {
        return;
    }
    let Some(node) = item.take() else { return };
    let charge = node.slot.charge();
    stack.push(node);
    cache.add_cached(charge);
    bump(&cache.stats.returns, 1);
}

/// First return on this thread to this pool: make the thread's cache for it.
#[cold]
fn register(caches: &mut Vec<LocalCache>, item: &mut Option<Box<Node>>, class: usize) {
    let Some(pool) = item.as_ref().and_then(|n| n.pool.as_ref()) else {
        return;
    };
    if pool.is_closed() {
        return;
    }
    let cache = LocalCache::new(pool);
    // Caches of pools that closed since are dropped here (freeing their buffers).
    caches.retain(|c| !c.shared.is_closed());
    caches.push(cache);
    let last = caches.len() - 1;
    store(&mut caches[last], item, class);
}

/// Flushes this thread's cache for `shared` into the shared queues.
pub(crate) fn flush_current(shared: &Arc<Shared>) {
    let _ = CACHES.try_with(|caches| {
        if let Ok(mut caches) = caches.try_borrow_mut() {
            if let Some(cache) = find(&mut caches, shared) {
                cache.flush();
            }
        }
    });
}
