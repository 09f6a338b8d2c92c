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
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::buf::{Node, PooledBuf};
use crate::pool::Shared;
use crate::stats::ThreadStats;

thread_local! {
    /// The caches. `ManuallyDrop`, so this thread-local has no destructor: reaching it then
    /// needs no check of whether its destructor was registered or has run, on every get
    /// and return. [`ExitGuard`] empties it instead.
    static CACHES: RefCell<ManuallyDrop<Vec<LocalCache>>> =
        const { RefCell::new(ManuallyDrop::new(Vec::new())) };
    /// Registered with the thread's first cache (see [`register`]); flushes them all when
    /// the thread exits.
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Drops this thread's caches when the thread exits, which flushes their buffers to the
/// shared queues, and leaves [`CACHES`] borrowed for good: a buffer dropped later in the
/// thread's teardown finds no cache and goes to its pool's shared queue.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = CACHES.try_with(|caches| {
            if let Ok(mut caches) = caches.try_borrow_mut() {
                let all = std::mem::take(&mut **caches);
                // Never released: nothing is cached on this thread from now on.
                std::mem::forget(caches);
                drop(all);
            }
        });
    }
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
            epoch: shared.epoch.load(Ordering::Acquire) & !1,
            stacks,
            stats,
            registered,
        }
    }

    /// Moves every cached buffer to the shared queues (which free them if the pool closed).
    fn flush(&mut self) {
        for (class, stack) in self.stacks.iter_mut().enumerate() {
            if stack.is_empty() {
                continue;
            }
            self.stats.flushed(class, stack.len());
            for node in stack.drain(..) {
                self.shared.put_idle(node);
            }
        }
    }

    /// Flushes if the pool's epoch moved on since the last flush; true if it had not.
    ///
    /// The epoch is odd while anyone waits for memory. The cache then records the even value
    /// below it, so it is never current: every get and return takes the slow path, which
    /// bypasses the cache.
    #[inline]
    fn sync(&mut self) -> bool {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if self.epoch == epoch {
            return true;
        }
        self.flush();
        self.epoch = epoch & !1;
        false
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        self.flush();
        if self.registered {
            let mut threads = self.shared.threads.lock();
            self.stats
                .fold_into(&self.shared.counters, self.shared.sizes());
            threads.retain(|t| !Arc::ptr_eq(t, &self.stats));
        }
    }
}

/// This thread's cache for `shared`, when it is not the first (see [`pop`] and [`push`]).
#[cold]
fn find_further<'a>(
    caches: &'a mut [LocalCache],
    shared: &Arc<Shared>,
) -> Option<&'a mut LocalCache> {
    caches.iter_mut().find(|c| Arc::ptr_eq(&c.shared, shared))
}

impl LocalCache {
    /// Whether this is `shared`'s cache and has flushed since the pool's epoch last moved (so
    /// nobody is waiting for memory either): the one state in which the fast paths may use
    /// it. Pools' epochs never meet (each starts at a multiple of 2^40 of its own), so one
    /// comparison says both.
    #[inline]
    fn is_current_for(&self, shared: &Shared) -> bool {
        self.epoch == shared.epoch.load(Ordering::Acquire)
    }

    /// Pops an idle buffer of `class`.
    #[inline]
    fn take(&mut self, class: usize) -> Option<Box<Node>> {
        let node = self.stacks.get_mut(class)?.pop()?;
        self.stats.took(class);
        Some(node)
    }
}

/// Takes an idle buffer of `class` from this thread's cache.
///
/// The fast path is the common case, spelled out so it compiles to a few loads and stores:
/// the thread's first cache is this pool's and no flush is due. Everything else is out of
/// line in [`pop_slow`]. [`CACHES`] has no destructor, so `with` always runs the closure.
#[inline]
pub(crate) fn pop(shared: &Arc<Shared>, class: usize) -> Option<PooledBuf> {
    CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            let node = match caches.first_mut() {
                Some(cache) if cache.is_current_for(shared) => cache.take(class)?,
                _ => pop_slow(&mut caches, shared, class)?,
            };
            Some(PooledBuf::new(node))
        })
        .ok()
        .flatten()
}

/// [`pop`] when the pool's cache is not this thread's first, or a flush is due.
#[cold]
#[inline(never)]
fn pop_slow(caches: &mut [LocalCache], shared: &Arc<Shared>, class: usize) -> Option<Box<Node>> {
    let cache = find_further(caches, shared)?;
    if !cache.sync() {
        return None;
    }
    cache.take(class)
}

/// Keeps a returned buffer of `class` (cleared, with its class's capacity) in this thread's
/// cache, or hands it back when the cache is full, disabled or flushing, or someone is
/// waiting for memory.
#[inline(always)]
pub(crate) fn push(node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    let Some(pool) = &node.pool else {
        return Err(node);
    };
    // The epoch that makes a cache current for this pool.
    let current = pool.epoch.load(Ordering::Acquire);
    // `CACHES` has no destructor (a test checks), so `try_with` always runs the closure and
    // the node it owns is never dropped unseen; the `Err` arm cannot happen.
    CACHES
        .try_with(move |caches| {
            let Ok(mut caches) = caches.try_borrow_mut() else {
                return Err(node);
            };
            match caches.first_mut() {
                Some(cache) if cache.epoch == current => store(cache, node, class),
                _ => push_slow(&mut caches, node, class),
            }
        })
        .unwrap_or(Ok(()))
}

/// [`push`] when the pool's cache is not this thread's first (or there is none yet), a flush
/// is due, or someone waits for memory (then the buffer goes to the shared queue, where the
/// waiter can have it).
#[cold]
#[inline(never)]
fn push_slow(caches: &mut Vec<LocalCache>, node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    let Some(pool) = &node.pool else {
        return Err(node);
    };
    if pool.waiters.load(Ordering::Relaxed) != 0 {
        return Err(node);
    }
    let Some(cache) = find_further(caches, pool) else {
        return register(caches, node, class);
    };
    if !cache.sync() && cache.shared.is_closed() {
        let shared = Arc::clone(&cache.shared);
        caches.retain(|c| !Arc::ptr_eq(&c.shared, &shared));
        return Err(node);
    }
    store(cache, node, class)
}

#[inline(always)]
fn store(cache: &mut LocalCache, node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    let Some(stack) = cache.stacks.get_mut(class) else {
        return Err(node);
    };
    if stack.len() == stack.capacity() {
        return Err(node);
    }
    stack.push(node);
    cache.stats.stored(class);
    Ok(())
}

/// First return on this thread to this pool: make the thread's cache for it.
#[cold]
fn register(caches: &mut Vec<LocalCache>, node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    let Some(pool) = &node.pool else {
        return Err(node);
    };
    if pool.is_closed() {
        return Err(node);
    }
    // Touching the guard registers its destructor; a thread that is already exiting has
    // none to register, and gets no cache.
    if EXIT_GUARD.try_with(|_| ()).is_err() {
        return Err(node);
    }
    let cache = LocalCache::new(pool);
    // Caches of pools that closed since are dropped here (freeing their buffers).
    caches.retain(|c| !c.shared.is_closed());
    caches.push(cache);
    let last = caches.len() - 1;
    store(&mut caches[last], node, class)
}

/// Flushes this thread's cache for `shared` into the shared queues.
pub(crate) fn flush_current(shared: &Arc<Shared>) {
    CACHES.with(|caches| {
        if let Ok(mut caches) = caches.try_borrow_mut() {
            if let Some(cache) = find_further(&mut caches, shared) {
                cache.flush();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `push` moves a buffer into the closure it gives `CACHES.try_with`, relying on the
    /// closure always running: true only while the thread-local has no destructor.
    #[test]
    fn the_caches_thread_local_has_no_destructor() {
        assert!(!std::mem::needs_drop::<
            RefCell<ManuallyDrop<Vec<LocalCache>>>,
        >());
    }
}
