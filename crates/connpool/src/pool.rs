//! The pool: its state, checkout, return, waiting, and upkeep.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sssonector_breaker::{CircuitBreaker, Permit};
use sssonector_core::Rng;
use sssonector_ratelimit::RateLimiter;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, timeout, timeout_at};

use crate::balance::{Balancer, Candidate};
use crate::config::{Config, PoolBuilder};
use crate::conn::{Live, Pooled};
use crate::error::PoolError;
use crate::lock::{Guard, Mutex, Padded};
use crate::manager::Manager;
use crate::stats::{Counters, EndpointStats, Stats};

/// One endpoint: where to connect, its weight and its breaker.
pub(crate) struct Endpoint<M: Manager> {
    pub(crate) target: M::Endpoint,
    pub(crate) weight: u32,
    pub(crate) breaker: CircuitBreaker,
}

/// What the pool knows of one endpoint's connections.
struct EpState<C> {
    /// Idle connections, oldest first; checkout takes the newest (warmest).
    idle: VecDeque<Live<C>>,
    /// Checked out (the established connections are these and the idle ones).
    in_use: usize,
    connecting: usize,
    /// Consecutive failed attempts to replenish the minimum idle, and when to try next.
    replenish_failures: u32,
    replenish_at: Option<Instant>,
}

/// What a waiter is handed: a connection, a slot to connect with itself, or word that its
/// checkout timeout passed.
pub(crate) enum Grant<M: Manager> {
    Conn(Pooled<M>),
    Slot(SlotToken<M>),
    Expired,
}

struct Waiter<M: Manager> {
    /// When its checkout timeout ends. Every waiter has the same timeout and the queue is
    /// first come, first served, so deadlines never decrease along the queue: the head's is
    /// always the next to pass, and one timer for the whole queue is enough.
    deadline: Instant,
    tx: oneshot::Sender<Grant<M>>,
}

pub(crate) struct State<M: Manager> {
    max_size: usize,
    /// Capacity taken: established connections, connects in progress, and slots granted.
    total: usize,
    eps: Vec<EpState<M::Connection>>,
    waiters: VecDeque<Waiter<M>>,
    /// Checkouts that waited, counted under the lock they take anyway (a shared atomic
    /// would bounce between cores on every wait).
    waits: u64,
    /// Whether a task is expiring waiters (it runs while the queue is not empty).
    expiring: bool,
    balancer: Balancer,
    closed: bool,
}

/// State shared by the pool's handles and its connections.
///
/// Aligned to 128 bytes, so the `Arc`'s reference counts (changed by every checkout and
/// return) sit on a line of their own, ahead of the read-mostly configuration; the locked
/// state sits on lines of its own after it.
#[repr(align(128))]
pub(crate) struct Shared<M: Manager> {
    manager: M,
    endpoints: Box<[Endpoint<M>]>,
    pub(crate) config: Config,
    limiter: Option<RateLimiter>,
    state: Padded<Mutex<State<M>>>,
    rng: Rng,
    drained: Notify,
    /// Whether the last checkout had to wait: a hint (read and written without ordering)
    /// that the next one will too, so it makes its channel before taking the lock.
    saturated: AtomicBool,
    pub(crate) counters: Counters,
    /// `sssonector_connpool_wait_seconds`, registered once with the recorder installed when
    /// the pool was built.
    wait_seconds: metrics::Histogram,
}

/// A pool of connections to one or more endpoints. Clones share one pool.
///
/// [`get`](Pool::get) hands out an idle connection, or opens one (spreading new connections
/// over endpoints by the [`Balance`](crate::Balance) setting and failing over to the next
/// endpoint when one fails), or, when the pool is full, waits in a first-come, first-served
/// queue. A connection goes back when its [`Pooled`] guard is dropped.
pub struct Pool<M: Manager> {
    shared: Arc<Shared<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.config.name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Releases a reserved unit of capacity unless disarmed: a get cancelled while connecting
/// leaks nothing.
struct Reservation<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    connecting: Option<usize>,
    armed: bool,
}

impl<M: Manager> Drop for Reservation<'_, M> {
    fn drop(&mut self) {
        if self.connecting.is_none() && !self.armed {
            return;
        }
        let mut st = self.shared.state.lock();
        if let Some(ep) = self.connecting.take() {
            st.eps[ep].connecting -= 1;
        }
        if self.armed {
            self.shared.release_slot(&mut st);
        }
        let drained = st.closed && st.total == 0;
        drop(st);
        if drained {
            self.shared.drained.notify_waiters();
        }
    }
}

/// A unit of capacity granted to a waiter, released if the waiter is gone.
pub(crate) struct SlotToken<M: Manager> {
    shared: Option<Arc<Shared<M>>>,
}

impl<M: Manager> SlotToken<M> {
    /// Takes the slot over: the caller now owns the capacity.
    fn accept(mut self) {
        self.shared = None;
    }
}

impl<M: Manager> Drop for SlotToken<M> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut st = shared.state.lock();
            shared.release_slot(&mut st);
        }
    }
}

impl<M: Manager> Pool<M> {
    /// A builder for a pool of `manager`'s connections.
    pub fn builder(manager: M) -> PoolBuilder<M> {
        PoolBuilder::new(manager)
    }

    pub(crate) fn from_parts(
        manager: M,
        endpoints: Vec<Endpoint<M>>,
        config: Config,
        limiter: Option<RateLimiter>,
    ) -> Self {
        let config_name = config.name.clone();
        let eps = endpoints
            .iter()
            .map(|_| EpState {
                idle: VecDeque::new(),
                in_use: 0,
                connecting: 0,
                replenish_failures: 0,
                replenish_at: None,
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                manager,
                endpoints: endpoints.into_boxed_slice(),
                state: Padded(Mutex::new(State {
                    max_size: config.max_size,
                    total: 0,
                    eps,
                    waiters: VecDeque::new(),
                    waits: 0,
                    expiring: false,
                    balancer: Balancer::default(),
                    closed: false,
                })),
                config,
                limiter,
                rng: Rng::from_entropy(),
                drained: Notify::new(),
                saturated: AtomicBool::new(false),
                counters: Counters::default(),
                wait_seconds: metrics::histogram!(
                    "sssonector_connpool_wait_seconds",
                    "pool" => config_name
                ),
            }),
        }
    }

    /// A connection: an idle one, a new one, or — when the pool is full — the next one
    /// returned, waiting at most the checkout timeout.
    ///
    /// # Errors
    ///
    /// - [`PoolError::Connect`] / [`PoolError::ConnectTimeout`]: opening a connection failed
    ///   at every endpoint tried; the error is the last endpoint's own. A waiter whose turn
    ///   comes because a connect failed tries a connect itself, so it too gets the real error
    ///   rather than a timeout.
    /// - [`PoolError::Unavailable`]: every endpoint's breaker is open.
    /// - [`PoolError::Timeout`]: the pool stayed full for the checkout timeout.
    /// - [`PoolError::Closed`]: the pool was closed.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with time enabled: timeouts and the task that expires waiters
    /// run on it.
    pub async fn get(&self) -> Result<Pooled<M>, PoolError<M::Error>> {
        let shared = &self.shared;
        let started = Instant::now();
        let deadline = started + shared.config.checkout_timeout;
        let mut rejoining = false;
        loop {
            // Under load most checkouts wait: allocating the waiter's channel before taking
            // the lock keeps the allocation out of the critical section.
            let mut channel = shared
                .saturated
                .load(Ordering::Relaxed)
                .then(oneshot::channel);
            let (step, to_close) = {
                let mut st = shared.state.lock();
                if st.closed {
                    return Err(PoolError::Closed);
                }
                let mut to_close = Vec::new();
                let step = match shared.take_idle(&mut st, started, &mut to_close) {
                    Some((ep, live)) => Step::Idle(ep, live),
                    None if st.total < st.max_size => {
                        st.total += 1;
                        Step::Connect
                    }
                    None => {
                        // A caller back in the queue (its connection failed its check) keeps
                        // its place by deadline, ahead of later callers: the queue stays in
                        // deadline order, which `expire_waiters` relies on.
                        if rejoining && deadline <= Instant::now() {
                            return Err(PoolError::Timeout(shared.config.checkout_timeout));
                        }
                        let (tx, rx) = channel.take().unwrap_or_else(oneshot::channel);
                        let at = st.waiters.partition_point(|w| w.deadline <= deadline);
                        st.waiters.insert(at, Waiter { deadline, tx });
                        st.waits += 1;
                        if !st.expiring {
                            st.expiring = true;
                            tokio::spawn(Arc::clone(shared).expire_waiters());
                        }
                        Step::Wait(rx)
                    }
                };
                (step, to_close)
            };
            let waiting = matches!(step, Step::Wait(_));
            if shared.saturated.load(Ordering::Relaxed) != waiting {
                shared.saturated.store(waiting, Ordering::Relaxed);
            }
            drop(channel);
            drop(to_close);
            match step {
                Step::Idle(ep, live) => {
                    if let Some(pooled) = shared.vet(ep, live).await {
                        return Ok(pooled);
                    }
                }
                Step::Connect => return shared.connect_new(deadline).await,
                Step::Wait(rx) => {
                    rejoining = true;
                    // No timer per waiter: `expire_waiters` sends `Expired` at the deadline.
                    let Ok(grant) = rx.await else {
                        return Err(PoolError::Closed);
                    };
                    let now = Instant::now();
                    shared.record_wait(now - started);
                    match grant {
                        Grant::Conn(pooled) => {
                            // Handed on without a clock read: its lifetime is checked here.
                            if pooled.expired_at(now) {
                                pooled.discard();
                                continue;
                            }
                            if let Some(pooled) = shared.revet(pooled).await {
                                return Ok(pooled);
                            }
                        }
                        Grant::Slot(token) => {
                            token.accept();
                            return shared.connect_new(deadline).await;
                        }
                        Grant::Expired => {
                            return Err(PoolError::Timeout(shared.config.checkout_timeout));
                        }
                    }
                }
            }
        }
    }

    /// Changes the maximum size. Growing hands the new room to waiters at once; shrinking
    /// closes idle connections now and connections in use as they come back.
    pub fn resize(&self, max_size: usize) {
        let shared = &self.shared;
        let mut to_close = Vec::new();
        let mut st = shared.state.lock();
        st.max_size = max_size.max(1);
        while st.total > st.max_size {
            let Some(ep) = (0..st.eps.len()).find(|&i| !st.eps[i].idle.is_empty()) else {
                break;
            };
            if let Some(live) = st.eps[ep].idle.pop_front() {
                st.total -= 1;
                to_close.push(live);
            }
        }
        while st.total < st.max_size && !st.waiters.is_empty() {
            st.total += 1;
            shared.grant_slot(&mut st);
        }
        drop(st);
        drop(to_close);
    }

    /// Closes the pool: idle connections are closed, waiters get [`PoolError::Closed`], new
    /// gets fail, and connections in use are closed as they come back. Resolves once every
    /// connection is closed and every connect in progress has finished.
    pub async fn close(&self) {
        let shared = &self.shared;
        let (idle, waiters) = {
            let mut st = shared.state.lock();
            st.closed = true;
            let mut idle = Vec::new();
            for ep in st.eps.iter_mut() {
                idle.extend(ep.idle.drain(..));
            }
            st.total -= idle.len();
            let waiters: Vec<_> = st.waiters.drain(..).collect();
            (idle, waiters)
        };
        drop(idle);
        drop(waiters);
        loop {
            let notified = shared.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.state.lock().total == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A future that keeps the pool in shape every `period` until the pool is gone or closed:
    /// closes idle connections past the idle timeout (keeping the minimum idle) and
    /// connections past their lifetime, checks idle connections at the health-check interval,
    /// opens connections up to the minimum idle per endpoint (backing off at an endpoint
    /// that keeps failing), and publishes metrics. Spawn it; it holds no strong reference.
    pub fn maintenance(&self, period: Duration) -> impl Future<Output = ()> + Send + 'static {
        let weak: Weak<Shared<M>> = Arc::downgrade(&self.shared);
        async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_check = Instant::now();
            loop {
                ticks.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                if shared.state.lock().closed {
                    return;
                }
                shared.reap();
                if let Some(interval) = shared.config.health_check_interval {
                    if last_check.elapsed() >= interval {
                        last_check = Instant::now();
                        shared.check_idle().await;
                    }
                }
                shared.replenish().await;
                Pool { shared }.publish_metrics();
            }
        }
    }

    /// A snapshot of the pool: totals and each endpoint's connections and breaker.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Publishes [`stats`](Self::stats) through the `metrics` facade, labelled `pool`:
    /// gauges `sssonector_connpool_size`, `_idle`, `_in_use`, `_waiters`, `_max_size`;
    /// counters `sssonector_connpool_connects_total`, `_connect_failures_total`,
    /// `_health_check_failures_total`, `_timeouts_total`, `_waits_total`. Waits are also
    /// recorded as they happen in the histogram `sssonector_connpool_wait_seconds`.
    /// [`maintenance`](Self::maintenance) calls it on every tick.
    pub fn publish_metrics(&self) {
        self.stats().publish(&self.shared.config.name);
    }
}

enum Step<M: Manager> {
    Idle(usize, Live<M::Connection>),
    Connect,
    Wait(oneshot::Receiver<Grant<M>>),
}

impl<M: Manager> Shared<M> {
    /// Takes an idle connection, from the endpoint the balancer picks among those with idle
    /// connections; expired ones are moved to `to_close`.
    fn take_idle(
        &self,
        st: &mut State<M>,
        now: Instant,
        to_close: &mut Vec<Live<M::Connection>>,
    ) -> Option<(usize, Live<M::Connection>)> {
        loop {
            // One endpoint (the common case) needs no choosing.
            if st.eps.len() == 1 {
                let live = st.eps[0].idle.pop_back()?;
                if self.expired(&live, now) {
                    st.total -= 1;
                    to_close.push(live);
                    continue;
                }
                st.eps[0].in_use += 1;
                return Some((0, live));
            }
            let candidates: Vec<Candidate> = st
                .eps
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.idle.is_empty())
                .map(|(index, e)| Candidate {
                    index,
                    load: e.in_use + e.connecting,
                    weight: self.endpoints[index].weight,
                })
                .collect();
            if candidates.is_empty() {
                return None;
            }
            let ep = st
                .balancer
                .pick(self.config.balance, &candidates, &self.rng);
            let live = st.eps[ep].idle.pop_back()?;
            if self.expired(&live, now) {
                st.total -= 1;
                to_close.push(live);
                continue;
            }
            st.eps[ep].in_use += 1;
            return Some((ep, live));
        }
    }

    fn expired(&self, live: &Live<M::Connection>, now: Instant) -> bool {
        live.expires.is_some_and(|at| now >= at)
            || self
                .config
                .idle_timeout
                .is_some_and(|t| now >= live.idle_since + t)
    }

    /// Checks a connection taken from idle, if configured; a failing one is closed.
    async fn vet(self: &Arc<Self>, ep: usize, live: Live<M::Connection>) -> Option<Pooled<M>> {
        let pooled = Pooled::new(Arc::clone(self), ep, live);
        self.revet(pooled).await
    }

    async fn revet(self: &Arc<Self>, mut pooled: Pooled<M>) -> Option<Pooled<M>> {
        if !self.config.check_on_checkout {
            return Some(pooled);
        }
        let healthy = matches!(
            timeout(self.config.check_timeout, self.manager.check(&mut *pooled)).await,
            Ok(Ok(()))
        );
        if healthy {
            return Some(pooled);
        }
        self.counters
            .health_failures
            .fetch_add(1, Ordering::Relaxed);
        pooled.discard();
        None
    }

    /// Opens a connection with capacity already reserved, failing over across endpoints.
    async fn connect_new(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let mut reservation = Reservation {
            shared: self,
            connecting: None,
            armed: true,
        };
        let mut tried = vec![false; self.endpoints.len()];
        let mut last_error = None;
        loop {
            let (ep, permit) = {
                let mut st = self.state.lock();
                if st.closed {
                    return Err(PoolError::Closed);
                }
                match self.choose(&mut st, &tried) {
                    Ok(chosen) => {
                        st.eps[chosen.0].connecting += 1;
                        chosen
                    }
                    Err(unavailable) => return Err(last_error.unwrap_or(unavailable)),
                }
            };
            reservation.connecting = Some(ep);
            if let Some(limiter) = &self.limiter {
                if timeout_at(deadline, limiter.until_ready()).await.is_err() {
                    self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(PoolError::Timeout(self.config.checkout_timeout));
                }
            }
            let connect_timeout = self.config.connect_timeout;
            let result = timeout(
                connect_timeout,
                self.manager.connect(&self.endpoints[ep].target),
            )
            .await;
            match result {
                Ok(Ok(conn)) => {
                    permit.success();
                    return Ok(self.established(ep, conn, &mut reservation));
                }
                Ok(Err(source)) => {
                    permit.failure();
                    last_error = Some(PoolError::Connect {
                        endpoint: ep,
                        source,
                    });
                }
                Err(_) => {
                    permit.failure();
                    last_error = Some(PoolError::ConnectTimeout {
                        endpoint: ep,
                        timeout: connect_timeout,
                    });
                }
            }
            self.counters
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            self.state.lock().eps[ep].connecting -= 1;
            reservation.connecting = None;
            tried[ep] = true;
            if tried.iter().all(|t| *t) {
                return Err(last_error.unwrap_or(PoolError::Unavailable { retry_after: None }));
            }
        }
    }

    /// A connect to `ep` succeeded: count it, take over the reservation, and hand the new
    /// connection out (in use) with its lifetime drawn.
    fn established(
        self: &Arc<Self>,
        ep: usize,
        conn: M::Connection,
        reservation: &mut Reservation<'_, M>,
    ) -> Pooled<M> {
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let live = Live {
            conn,
            created: now,
            idle_since: now,
            expires: self.lifetime_end(now),
            doomed: false,
            resume_idle_since: None,
        };
        let mut st = self.state.lock();
        let state = &mut st.eps[ep];
        state.connecting -= 1;
        state.in_use += 1;
        state.replenish_failures = 0;
        state.replenish_at = None;
        drop(st);
        reservation.connecting = None;
        reservation.armed = false;
        Pooled::new(Arc::clone(self), ep, live)
    }

    /// Picks an endpoint not yet tried whose breaker lets a connect through.
    fn choose(
        &self,
        st: &mut State<M>,
        tried: &[bool],
    ) -> Result<(usize, Permit), PoolError<M::Error>> {
        let mut candidates: Vec<Candidate> = st
            .eps
            .iter()
            .enumerate()
            .filter(|(i, _)| !tried[*i])
            .map(|(index, e)| Candidate {
                index,
                load: e.in_use + e.connecting,
                weight: self.endpoints[index].weight,
            })
            .collect();
        let mut retry_after: Option<Duration> = None;
        while !candidates.is_empty() {
            let ep = st
                .balancer
                .pick(self.config.balance, &candidates, &self.rng);
            match self.endpoints[ep].breaker.try_acquire() {
                Ok(permit) => return Ok((ep, permit)),
                Err(open) => {
                    retry_after = match (retry_after, open.retry_after) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    candidates.retain(|c| c.index != ep);
                }
            }
        }
        Err(PoolError::Unavailable { retry_after })
    }

    fn lifetime_end(&self, now: Instant) -> Option<Instant> {
        let lifetime = self.config.max_lifetime?;
        let jitter = self.config.lifetime_jitter;
        // Uniform in [1 − jitter, 1 + jitter] of the lifetime.
        #[allow(
            clippy::cast_precision_loss,
            reason = "53 bits of randomness are plenty"
        )]
        let unit = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 - jitter + 2.0 * jitter * unit;
        Some(now + lifetime.mul_f64(factor))
    }

    /// Takes a connection back from its guard, with the guard's handle on the pool (moved
    /// on to the next waiter's guard, so a hand-off costs no reference-count traffic).
    pub(crate) fn put_back(self: Arc<Self>, ep: usize, mut live: Live<M::Connection>) {
        // No clock read on a hand-off to a waiter: the waiter reads the clock anyway (for its
        // wait time) and checks the lifetime itself. Only a connection going idle needs it.
        let broken = live.doomed || self.manager.is_broken(&mut live.conn);
        // A connection going idle needs the time: read it before taking the lock, unless
        // the last checkout waited (then this one most likely goes to a waiter).
        let early_now = (!self.saturated.load(Ordering::Relaxed)).then(Instant::now);
        let mut this = self;
        let mut st = this.state.lock();
        if broken || st.closed || st.total > st.max_size {
            st.eps[ep].in_use -= 1;
            return this.close_returned(st, live);
        }
        // First come, first served: the oldest waiter gets it directly. The hand-off wakes
        // the waiter's task, so it happens after the lock is released: the other worker is
        // not kept spinning on the pool while this one schedules a task. The connection
        // stays in use throughout, so the endpoint's count is not touched (nor its cache
        // line, which the other worker would then have to fetch back).
        while let Some(waiter) = st.waiters.pop_front() {
            drop(st);
            // Handed on: it is in use, whatever a health check meant to keep.
            live.resume_idle_since = None;
            let pooled = Pooled::new(this, ep, live);
            match waiter.tx.send(Grant::Conn(pooled)) {
                Ok(()) => return,
                Err(Grant::Conn(mut pooled)) => {
                    // That waiter gave up: back under the lock, and on to the next.
                    (this, live) = pooled.take_parts();
                    st = this.state.lock();
                    if st.closed || st.total > st.max_size {
                        st.eps[ep].in_use -= 1;
                        return this.close_returned(st, live);
                    }
                }
                Err(Grant::Slot(_) | Grant::Expired) => unreachable!("a connection was sent"),
            }
        }
        st.eps[ep].in_use -= 1;
        let now = early_now.unwrap_or_else(Instant::now);
        if live.expires.is_some_and(|at| now >= at) {
            return this.close_returned(st, live);
        }
        if st.eps[ep].idle.len() < this.config.max_idle_per_endpoint {
            live.idle_since = live.resume_idle_since.take().unwrap_or(now);
            st.eps[ep].idle.push_back(live);
        } else {
            st.total -= 1;
            drop(st);
            drop(live);
        }
    }

    /// Closes a returned connection that is not to be used again, freeing its capacity.
    fn close_returned(self: &Arc<Self>, mut st: Guard<'_, State<M>>, live: Live<M::Connection>) {
        self.release_slot(&mut st);
        let drained = st.closed && st.total == 0;
        drop(st);
        drop(live);
        if drained {
            self.drained.notify_waiters();
        }
    }

    /// A unit of capacity came free: the oldest waiter gets it to connect with, else it is
    /// returned.
    fn release_slot(self: &Arc<Self>, st: &mut State<M>) {
        if st.closed || st.total > st.max_size || !self.grant_slot(st) {
            st.total -= 1;
        }
    }

    /// Hands one unit of capacity (already counted in `total`) to the oldest live waiter;
    /// false if there was none.
    fn grant_slot(self: &Arc<Self>, st: &mut State<M>) -> bool {
        while let Some(waiter) = st.waiters.pop_front() {
            let token = SlotToken {
                shared: Some(Arc::clone(self)),
            };
            match waiter.tx.send(Grant::Slot(token)) {
                Ok(()) => return true,
                Err(Grant::Slot(token)) => token.accept(),
                Err(Grant::Conn(_) | Grant::Expired) => unreachable!("a slot was sent"),
            }
        }
        false
    }

    /// Runs while anyone waits: at the head waiter's deadline, tells every waiter whose
    /// deadline has passed that it timed out, then sleeps until the new head's deadline.
    async fn expire_waiters(self: Arc<Self>) {
        loop {
            let (expired, next) = {
                let mut st = self.state.lock();
                let now = Instant::now();
                let mut expired = Vec::new();
                while st.waiters.front().is_some_and(|w| w.deadline <= now) {
                    expired.extend(st.waiters.pop_front());
                }
                let next = st.waiters.front().map(|w| w.deadline);
                if next.is_none() {
                    st.expiring = false;
                }
                (expired, next)
            };
            for waiter in expired {
                // A waiter that was cancelled meanwhile is not counted.
                if waiter.tx.send(Grant::Expired).is_ok() {
                    self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
            let Some(next) = next else { return };
            tokio::time::sleep_until(next).await;
        }
    }

    fn record_wait(&self, waited: Duration) {
        self.wait_seconds.record(waited.as_secs_f64());
    }

    /// Closes idle connections past the idle timeout (above the minimum idle) or past their
    /// lifetime.
    fn reap(&self) {
        let now = Instant::now();
        let mut to_close = Vec::new();
        let mut st = self.state.lock();
        let min_idle = self.config.min_idle_per_endpoint;
        let mut closed = 0;
        for ep in st.eps.iter_mut() {
            let mut kept = VecDeque::with_capacity(ep.idle.len());
            let mut surplus = ep.idle.len().saturating_sub(min_idle);
            for live in ep.idle.drain(..) {
                let past_lifetime = live.expires.is_some_and(|at| now >= at);
                let past_idle = surplus > 0
                    && self
                        .config
                        .idle_timeout
                        .is_some_and(|t| now >= live.idle_since + t);
                if past_lifetime || past_idle {
                    surplus = surplus.saturating_sub(1);
                    to_close.push(live);
                } else {
                    kept.push_back(live);
                }
            }
            closed = to_close.len();
            ep.idle = kept;
        }
        st.total -= closed;
        drop(st);
        drop(to_close);
    }

    /// Checks the idle connections one at a time, so the rest stay available meanwhile;
    /// failing ones are closed, healthy ones go back to a waiter, or to the idle set with
    /// their idle time kept (a check is not use: the idle timeout still applies).
    async fn check_idle(self: &Arc<Self>) {
        let counts: Vec<usize> = self
            .state
            .lock()
            .eps
            .iter()
            .map(|ep| ep.idle.len())
            .collect();
        for (ep, count) in counts.into_iter().enumerate() {
            // Oldest first; bounded by what was idle when the round began.
            for _ in 0..count {
                let live = {
                    let mut st = self.state.lock();
                    let Some(live) = st.eps[ep].idle.pop_front() else {
                        break;
                    };
                    st.eps[ep].in_use += 1;
                    live
                };
                let idle_since = live.idle_since;
                let mut pooled = Pooled::new(Arc::clone(self), ep, live);
                let healthy = matches!(
                    timeout(self.config.check_timeout, self.manager.check(&mut *pooled)).await,
                    Ok(Ok(()))
                );
                if healthy {
                    pooled.keep_idle_since(idle_since);
                } else {
                    self.counters
                        .health_failures
                        .fetch_add(1, Ordering::Relaxed);
                    pooled.discard();
                }
                // Returned (or closed) as the guard drops.
            }
        }
    }

    /// Opens connections up to the minimum idle per endpoint.
    async fn replenish(self: &Arc<Self>) {
        let min_idle = self.config.min_idle_per_endpoint;
        if min_idle == 0 {
            return;
        }
        for ep in 0..self.endpoints.len() {
            // Bounded per tick: a manager whose connections come back closed cannot spin us.
            for _ in 0..min_idle {
                let permit = {
                    let mut st = self.state.lock();
                    let state = &st.eps[ep];
                    let short = state.idle.len() + state.connecting < min_idle;
                    let due = state.replenish_at.is_none_or(|at| Instant::now() >= at);
                    if st.closed || !short || !due || st.total >= st.max_size {
                        break;
                    }
                    let Ok(permit) = self.endpoints[ep].breaker.try_acquire() else {
                        break;
                    };
                    st.total += 1;
                    st.eps[ep].connecting += 1;
                    permit
                };
                let mut reservation = Reservation {
                    shared: self,
                    connecting: Some(ep),
                    armed: true,
                };
                let result = timeout(
                    self.config.connect_timeout,
                    self.manager.connect(&self.endpoints[ep].target),
                )
                .await;
                let Ok(Ok(conn)) = result else {
                    permit.failure();
                    self.counters
                        .connect_failures
                        .fetch_add(1, Ordering::Relaxed);
                    drop(reservation);
                    let mut st = self.state.lock();
                    let state = &mut st.eps[ep];
                    state.replenish_failures += 1;
                    let delay = self.config.replenish_backoff.delay(
                        state.replenish_failures,
                        self.config.replenish_backoff.initial(),
                        &self.rng,
                    );
                    state.replenish_at = Some(Instant::now() + delay);
                    break;
                };
                permit.success();
                // Through the guard: a waiter gets it first, else it goes idle.
                drop(self.established(ep, conn, &mut reservation));
            }
        }
    }

    fn stats(&self) -> Stats {
        let st = self.state.lock();
        let endpoints = st
            .eps
            .iter()
            .zip(self.endpoints.iter())
            .map(|(e, endpoint)| EndpointStats {
                open: e.idle.len() + e.in_use,
                idle: e.idle.len(),
                in_use: e.in_use,
                connecting: e.connecting,
                breaker: endpoint.breaker.state(),
            })
            .collect();
        let c = &self.counters;
        Stats {
            max_size: st.max_size,
            size: st.total,
            idle: st.eps.iter().map(|e| e.idle.len()).sum(),
            in_use: st.eps.iter().map(|e| e.in_use).sum(),
            waiters: st.waiters.len(),
            closed: st.closed,
            endpoints,
            connects: c.connects.load(Ordering::Relaxed),
            connect_failures: c.connect_failures.load(Ordering::Relaxed),
            health_failures: c.health_failures.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            waits: st.waits,
        }
    }

    pub(crate) fn manager(&self) -> &M {
        &self.manager
    }
}
