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
use crate::stats::{MAX_CLASSES, ThreadStats};

thread_local! {
    /// The caches. `ManuallyDrop`, so this thread-local has no destructor: reaching it then
    /// needs no check of whether its destructor was registered or has run, on every get
    /// and return. [`ExitGuard`] empties it instead.
    static CACHES: RefCell<ManuallyDrop<Caches>> =
        const { RefCell::new(ManuallyDrop::new(Caches::EMPTY)) };
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
                let all = std::mem::replace(&mut **caches, Caches::EMPTY);
                // Never released: nothing is cached on this thread from now on.
                std::mem::forget(caches);
                drop(all);
            }
        });
    }
}

/// One thread's caches, one per pool it has returned buffers to.
struct Caches {
    /// The first pool's cache, held in the thread-local itself so the fast paths find its
    /// epoch and stacks at fixed offsets, following no pointer. Idle (see
    /// [`LocalCache::IDLE`]) until the thread's first return.
    first: LocalCache,
    /// Further pools' caches.
    rest: Vec<LocalCache>,
}

impl Caches {
    const EMPTY: Self = Self {
        first: LocalCache::IDLE,
        rest: Vec::new(),
    };

    /// This thread's cache for `shared`, if it has one.
    fn find(&mut self, shared: &Arc<Shared>) -> Option<&mut LocalCache> {
        std::iter::once(&mut self.first)
            .chain(self.rest.iter_mut())
            .find(|c| c.is_for(shared))
    }

    /// Drops the caches of pools that closed (freeing their buffers).
    fn drop_closed(&mut self) {
        self.rest.retain(|c| !c.is_closed());
        if self.first.is_closed() {
            let next = self.rest.pop().unwrap_or(LocalCache::IDLE);
            drop(std::mem::replace(&mut self.first, next));
        }
    }

    /// Drops this thread's cache for `shared`.
    fn remove(&mut self, shared: &Arc<Shared>) {
        self.rest.retain(|c| !c.is_for(shared));
        if self.first.is_for(shared) {
            let next = self.rest.pop().unwrap_or(LocalCache::IDLE);
            drop(std::mem::replace(&mut self.first, next));
        }
    }

    /// Adds a cache: the first if the thread has none yet, else one of the rest.
    fn add(&mut self, cache: LocalCache) -> &mut LocalCache {
        if self.first.shared.is_none() {
            self.first = cache;
            return &mut self.first;
        }
        self.rest.push(cache);
        let last = self.rest.len() - 1;
        &mut self.rest[last]
    }
}

/// One thread's cache for one pool.
struct LocalCache {
    /// The pool's epoch when this cache last flushed; 0, which no pool's epoch is, while
    /// the cache is idle.
    epoch: u64,
    /// Idle buffers per class. Cached nodes keep their pool reference, so handing them out
    /// touches no reference count. A fixed array (the builder allows at most
    /// [`MAX_CLASSES`]), so indexing needs no bounds check.
    stacks: [Stack; MAX_CLASSES],
    /// This thread's counters: registered with the pool if the thread got room, else the
    /// idle block, which nothing counts in (no room means nothing is stored or taken). Which
    /// of the two it is says whether the thread got room (see [`LocalCache::registered`]).
    stats: &'static ThreadStats,
    /// The pool; `None` only for [`LocalCache::IDLE`].
    shared: Option<Arc<Shared>>,
}

/// One class's idle buffers in one thread's cache, newest first: the newest in a slot of its
/// own, the rest on a stack.
///
/// The slot is what makes the common rhythm fast, a drop and then a get of the same class:
/// both touch one fixed place, where a stack's get and put each read the length the other
/// just wrote and address the buffer by it.
struct Stack {
    newest: Option<Box<Node>>,
    /// Allocated once, one short of the class's limit, so storing never reallocates.
    #[allow(
        clippy::vec_box,
        reason = "boxed on purpose: moving a pointer in and out is what makes the fast path fast"
    )]
    rest: Vec<Box<Node>>,
}

impl Stack {
    const EMPTY: Self = Self {
        newest: None,
        rest: Vec::new(),
    };

    /// Room for `max` buffers, at least 1 (the builder gives every class at least one
    /// buffer when thread caches are on).
    fn with_room(max: usize) -> Self {
        debug_assert!(
            max >= 1,
            "a cache with room holds at least one buffer per class"
        );
        Self {
            newest: None,
            rest: Vec::with_capacity(max.saturating_sub(1)),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.newest.is_some()) + self.rest.len()
    }

    #[inline]
    fn pop(&mut self) -> Option<Box<Node>> {
        match self.newest.take() {
            Some(node) => Some(node),
            None => self.rest.pop(),
        }
    }

    /// Keeps `node` as the newest, or hands it back when the stack is full.
    #[inline]
    fn push(&mut self, node: Box<Node>) -> Result<(), Box<Node>> {
        match &mut self.newest {
            None => {
                self.newest = Some(node);
                Ok(())
            }
            Some(_) if self.rest.len() < self.rest.capacity() => {
                if let Some(older) = self.newest.replace(node) {
                    self.rest.push(older);
                }
                Ok(())
            }
            Some(_) => Err(node),
        }
    }

    fn drain(&mut self) -> impl Iterator<Item = Box<Node>> + '_ {
        self.newest.take().into_iter().chain(self.rest.drain(..))
    }
}

impl LocalCache {
    /// No cache: matches no pool's epoch and has no room.
    const IDLE: Self = Self {
        epoch: 0,
        stacks: [const { Stack::EMPTY }; MAX_CLASSES],
        stats: ThreadStats::idle(),
        shared: None,
    };

    fn new(shared: &Arc<Shared>) -> Self {
        let leased = {
            let mut threads = shared.threads.lock();
            (threads.len() < shared.max_cached_threads).then(|| {
                let stats = ThreadStats::lease();
                threads.push(stats);
                stats
            })
        };
        let registered = leased.is_some();
        let stats = leased.unwrap_or_else(ThreadStats::idle);
        let mut stacks = [const { Stack::EMPTY }; MAX_CLASSES];
        if registered {
            for (stack, class) in stacks.iter_mut().zip(shared.classes.iter()) {
                *stack = Stack::with_room(class.local_max);
            }
        }
        Self {
            epoch: if registered {
                shared.epoch.load(Ordering::Acquire) & !1
            } else {
                0
            },
            stacks,
            stats,
            shared: Some(Arc::clone(shared)),
        }
    }

    /// Whether the thread got room: its counters are a leased block, not the idle one. A
    /// cache without room is never current (its epoch stays 0), so the fast paths, which
    /// store without asking, never see it.
    fn registered(&self) -> bool {
        !std::ptr::eq(self.stats, ThreadStats::idle())
    }

    fn is_for(&self, shared: &Arc<Shared>) -> bool {
        self.shared.as_ref().is_some_and(|s| Arc::ptr_eq(s, shared))
    }

    fn is_closed(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.is_closed())
    }

    /// Moves every cached buffer to the shared queues (which free them if the pool closed).
    fn flush(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        for (class, stack) in self.stacks.iter_mut().enumerate() {
            let len = stack.len();
            if len == 0 {
                continue;
            }
            self.stats.flushed(class, len);
            for node in stack.drain() {
                shared.put_idle(node);
            }
        }
    }

    /// Flushes if the pool's epoch moved on since the last flush; true if it had not.
    ///
    /// The epoch is odd while anyone waits for memory. The cache then records the even value
    /// below it, so it is never current: every get and return takes the slow path, which
    /// bypasses the cache.
    fn sync(&mut self) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        if !self.registered() {
            return false;
        }
        let epoch = shared.epoch.load(Ordering::Acquire);
        if self.epoch == epoch {
            return true;
        }
        self.flush();
        self.epoch = epoch & !1;
        false
    }

    /// Pops an idle buffer of `class`.
    #[inline]
    fn take(&mut self, class: usize) -> Option<Box<Node>> {
        let node = self.stacks[class % MAX_CLASSES].pop()?;
        self.stats.took(class);
        Some(node)
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        self.flush();
        let Some(shared) = &self.shared else {
            return;
        };
        if self.registered() {
            let mut threads = shared.threads.lock();
            self.stats.fold_into(&shared.counters, shared.sizes());
            threads.retain(|t| !std::ptr::eq(*t, self.stats));
            drop(threads);
            ThreadStats::give_back(self.stats);
        }
    }
}

/// Takes an idle buffer of `class` from this thread's cache.
///
/// The fast path is the common case, spelled out so it compiles to a few loads and stores:
/// the thread's first cache is this pool's and no flush is due (one comparison says both:
/// pools' epochs never meet, each starting at a multiple of 2^40 of its own). Everything
/// else is out of line in [`pop_slow`]. [`CACHES`] has no destructor, so `with` always runs
/// the closure.
#[inline]
pub(crate) fn pop(shared: &Arc<Shared>, class: usize) -> Option<PooledBuf> {
    let current = shared.epoch.load(Ordering::Acquire);
    CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            let node = if caches.first.epoch == current {
                caches.first.take(class)?
            } else {
                pop_slow(&mut caches, shared, class)?
            };
            Some(PooledBuf::new(node))
        })
        .ok()
        .flatten()
}

/// [`pop`] when the pool's cache is not this thread's first, or a flush is due.
#[cold]
#[inline(never)]
fn pop_slow(caches: &mut Caches, shared: &Arc<Shared>, class: usize) -> Option<Box<Node>> {
    let cache = caches.find(shared)?;
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
    let pool = &node.pool;
    // The epoch that makes a cache current for this pool.
    let current = pool.epoch.load(Ordering::Acquire);
    // `CACHES` has no destructor (a test checks), so `try_with` always runs the closure and
    // the node it owns is never dropped unseen; the `Err` arm cannot happen.
    CACHES
        .try_with(move |caches| {
            let Ok(mut caches) = caches.try_borrow_mut() else {
                return Err(node);
            };
            if caches.first.epoch == current {
                store(&mut caches.first, node, class)
            } else {
                push_slow(&mut caches, node, class)
            }
        })
        .unwrap_or(Ok(()))
}

/// [`push`] when the pool's cache is not this thread's first (or there is none yet), a flush
/// is due, or someone waits for memory (then the buffer goes to the shared queue, where the
/// waiter can have it).
#[cold]
#[inline(never)]
fn push_slow(caches: &mut Caches, node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    let pool = &node.pool;
    if pool.waiters.load(Ordering::Relaxed) != 0 {
        return Err(node);
    }
    let Some(cache) = caches.find(pool) else {
        return register(caches, node, class);
    };
    if !cache.sync() && pool.is_closed() {
        let pool = Arc::clone(pool);
        caches.remove(&pool);
        return Err(node);
    }
    store_if_room(cache, node, class)
}

/// Stores into a current cache (which has room: see [`LocalCache::registered`]).
#[inline(always)]
fn store(cache: &mut LocalCache, node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    cache.stacks[class % MAX_CLASSES].push(node)?;
    cache.stats.stored(class);
    Ok(())
}

/// [`store`] on the slow paths, where the cache may be one without room.
fn store_if_room(cache: &mut LocalCache, node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    if !cache.registered() {
        return Err(node);
    }
    store(cache, node, class)
}

/// First return on this thread to this pool: make the thread's cache for it.
#[cold]
fn register(caches: &mut Caches, node: Box<Node>, class: usize) -> Result<(), Box<Node>> {
    let pool = &node.pool;
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
    caches.drop_closed();
    store_if_room(caches.add(cache), node, class)
}

/// Flushes this thread's cache for `shared` into the shared queues.
pub(crate) fn flush_current(shared: &Arc<Shared>) {
    CACHES.with(|caches| {
        if let Ok(mut caches) = caches.try_borrow_mut() {
            if let Some(cache) = caches.find(shared) {
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
        assert!(!std::mem::needs_drop::<RefCell<ManuallyDrop<Caches>>>());
    }
}
