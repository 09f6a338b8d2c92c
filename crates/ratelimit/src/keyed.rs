//! One limiter per key, with a hard cap on how many keys are tracked.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use hashbrown::HashTable;
use metrics::{Counter, Gauge};
use sssonector_core::{RateLimited, SharedClock, Timeline};

use crate::error::{ConfigError, Rejected};
use crate::gcra::{Cell, Decision, Params, ticks, ticks_to_duration};
use crate::limiter::{Admitted, Metrics};
use crate::quota::Quota;

/// Rate limits per key (client address, API key, tenant) under a hard cap on tracked keys.
///
/// A flood of unique keys cannot grow memory past the cap: when a shard is full, keys whose
/// limiter is back at full capacity are dropped first (that loses nothing: such a key starts
/// fresh exactly as it would have continued), then the keys closest to full capacity, a
/// sixteenth of the shard at a time so that a flood of new keys stays cheap. Checks for
/// known keys take a read lock on one shard, striped per thread so concurrent checks write no
/// common line, and update the key's state lock-free.
///
/// For IP addresses, group them first with [`IpGrouping`](crate::IpGrouping) so a client
/// rotating through its IPv6 /64 counts once.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use sssonector_ratelimit::{KeyedLimiter, Quota};
///
/// let limiter = KeyedLimiter::<IpAddr>::builder()
///     .quota(Quota::per_second(5)?.with_burst(1)?)
///     .max_keys(100_000)
///     .build()?;
/// let a: IpAddr = "192.0.2.1".parse().unwrap();
/// let b: IpAddr = "192.0.2.2".parse().unwrap();
/// assert!(limiter.check_key(&a).is_ok());
/// assert!(limiter.check_key(&a).is_err());
/// assert!(limiter.check_key(&b).is_ok()); // another key, another limit
/// # Ok::<(), sssonector_ratelimit::ConfigError>(())
/// ```
pub struct KeyedLimiter<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K> {
    name: Option<Cow<'static, str>>,
    quotas: Vec<Quota>,
    params: Box<[Params]>,
    shards: Box<[Shard<K>]>,
    shard_cap: usize,
    hasher: RandomState,
    timeline: Timeline,
    keys: AtomicUsize,
    metrics: Metrics,
    tracked: Gauge,
    evictions: Counter,
}

/// One shard's table and its lock, alone on its cache lines (128 bytes: a line and the one the
/// adjacent-line prefetcher pairs with it).
///
/// The lock is crossbeam's `ShardedLock`: a reader locks only the stripe of its own thread
/// (eight stripes, each on lines of its own), a writer all of them. With one reader-writer
/// lock, every check by any thread wrote the lock's line twice (lock and unlock), so two
/// threads checking keys of one shard passed that line between their cores on nearly every
/// check. Now a check writes only its own stripe and the key's state; new keys, which take
/// the write lock, pay for it.
#[repr(align(128))]
struct Shard<K>(ShardedLock<HashTable<Entry<K>>>);

impl<K> Shard<K> {
    #[inline]
    fn read(&self) -> ShardedLockReadGuard<'_, HashTable<Entry<K>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> ShardedLockWriteGuard<'_, HashTable<Entry<K>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One key's state. Aligned to 32 bytes, and 32 bytes for a key of 8 (hash, key, first state,
/// one pointer), so an entry never straddles two cache lines: a check on it moves one line
/// between cores, not two.
#[repr(align(32))]
struct Entry<K> {
    hash: u64,
    key: K,
    /// The first quota's state, inline: the common single-quota check touches no other memory.
    first: Cell,
    /// The other quotas' states; `None` for one quota. A thin pointer, to keep the entry small.
    #[allow(
        clippy::redundant_allocation,
        reason = "a thin pointer keeps the entry small"
    )]
    more: Option<Box<Box<[Cell]>>>,
}

impl<K> Entry<K> {
    /// The latest time any of the key's limits returns to full capacity.
    fn busy_until(&self) -> u64 {
        self.cells().map(Cell::tat).max().unwrap_or(0)
    }

    fn cells(&self) -> impl Iterator<Item = &Cell> {
        std::iter::once(&self.first).chain(self.more.iter().flat_map(|more| more.iter()))
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A builder; a quota is required.
    pub fn builder() -> KeyedLimiterBuilder<K> {
        KeyedLimiterBuilder {
            name: None,
            quotas: Vec::new(),
            max_keys: 100_000,
            shards: 64,
            clock: None,
            _key: std::marker::PhantomData,
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        // The high bits (the table itself uses the low ones), masked: the shard count is a
        // power of two, so no division on the hot path.
        let index = (hash >> 32) as usize & (self.inner.shards.len() - 1);
        &self.inner.shards[index]
    }

    /// Admits one unit for `key`.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] with the wait and what is left for this key.
    #[inline]
    pub fn check_key(&self, key: &K) -> Result<Admitted, RateLimited> {
        let result = match self.decide(key, 1) {
            Ok(a) => Ok(a),
            Err(Rejected::Limited(l)) => Err(l),
            // A burst is at least 1, so a cost of 1 always fits.
            Err(_) => Err(RateLimited::new(std::time::Duration::MAX)),
        };
        self.inner.metrics.count(&result);
        result
    }

    /// Admits `cost` units for `key`.
    ///
    /// # Errors
    ///
    /// [`Rejected::Limited`] over the limit; [`Rejected::InsufficientCapacity`] when `cost`
    /// exceeds the burst.
    pub fn check_key_n(&self, key: &K, cost: u64) -> Result<Admitted, Rejected> {
        let result = self.decide(key, cost);
        self.inner.metrics.count(&result);
        result
    }

    #[inline]
    fn decide(&self, key: &K, cost: u64) -> Result<Admitted, Rejected> {
        let inner = &*self.inner;
        // The common case, one quota and a known key: a shared lock and one atomic update.
        if let [params] = &*inner.params {
            let increment = params.charge(cost)?;
            let hash = inner.hasher.hash_one(key);
            let now = ticks(inner.timeline.now_nanos());
            let table = self.shard(hash).read();
            if let Some(entry) = table.find(hash, |e| e.key == *key) {
                return Self::single(params, &entry.first, now, increment);
            }
        }
        self.decide_slow(key, cost)
    }

    /// A new key, or several quotas: decided under the shard's write lock.
    #[cold]
    #[inline(never)]
    fn decide_slow(&self, key: &K, cost: u64) -> Result<Admitted, Rejected> {
        let inner = &*self.inner;
        let increments = inner
            .params
            .iter()
            .map(|p| p.charge(cost))
            .collect::<Result<Vec<_>, _>>()?;
        let hash = inner.hasher.hash_one(key);
        let shard = self.shard(hash);
        let now = ticks(inner.timeline.now_nanos());
        let mut table = shard.write();
        if table.find(hash, |e| e.key == *key).is_none() {
            if table.len() >= inner.shard_cap {
                self.evict(&mut table, now);
            }
            table.insert_unique(
                hash,
                Entry {
                    hash,
                    key: key.clone(),
                    first: Cell::default(),
                    more: (inner.params.len() > 1).then(|| {
                        Box::new(
                            inner
                                .params
                                .iter()
                                .skip(1)
                                .map(|_| Cell::default())
                                .collect(),
                        )
                    }),
                },
                |e| e.hash,
            );
            let keys = inner.keys.fetch_add(1, Ordering::Relaxed) + 1;
            inner.tracked.set(keys as f64);
        }
        let entry = table
            .find(hash, |e| e.key == *key)
            .expect("the entry was just found or inserted");
        if entry.more.is_none() {
            return Self::single(&inner.params[0], &entry.first, now, increments[0]);
        }
        // Several quotas: decided together under the shard's write lock.
        let limits = inner
            .params
            .iter()
            .zip(entry.cells())
            .zip(&increments)
            .map(|((p, c), inc)| (p, c.tat(), *inc));
        let (tats, remaining) = crate::gcra::decide_all(limits, now)?;
        for (cell, tat) in entry.cells().zip(tats) {
            cell.set_tat(tat);
        }
        Ok(Admitted::units(remaining))
    }

    #[inline]
    fn single(
        params: &Params,
        cell: &Cell,
        now: u64,
        increment: u64,
    ) -> Result<Admitted, Rejected> {
        match cell.check(params, now, increment) {
            Decision::Admit { slack, .. } => Ok(Admitted::ticks(slack, params.t)),
            Decision::Deny { wait, remaining } => Err(Rejected::Limited(
                RateLimited::with_remaining(ticks_to_duration(wait), remaining),
            )),
        }
    }

    /// Makes room in a full shard: drops every key back at full capacity (nothing is lost),
    /// and if that frees nothing, the sixteenth of the shard's keys closest to full capacity
    /// (at least one). Dropping a batch, not one key, is what keeps a flood of new keys cheap:
    /// it pays one scan of the shard per batch instead of two per key (1 µs per new key with
    /// 100 000 keys over 64 shards, when it dropped one at a time).
    fn evict(&self, table: &mut HashTable<Entry<K>>, now: u64) {
        let inner = &*self.inner;
        let before = table.len();
        Self::drop_idle(table, now);
        if table.len() >= inner.shard_cap {
            let batch = (inner.shard_cap / 16).max(1);
            let mut busy: Vec<u64> = table.iter().map(Entry::busy_until).collect();
            let (_, &mut cutoff, _) = busy.select_nth_unstable(batch - 1);
            let mut left = batch;
            table.retain(|e| {
                if left > 0 && e.busy_until() <= cutoff {
                    left -= 1;
                    return false;
                }
                true
            });
        }
        self.forgot(before - table.len());
    }

    /// Counts `removed` keys out of the tracked-key count, its gauge and the eviction counter.
    fn forgot(&self, removed: usize) {
        if removed > 0 {
            let inner = &*self.inner;
            inner.evictions.increment(removed as u64);
            let keys = inner.keys.fetch_sub(removed, Ordering::Relaxed) - removed;
            inner.tracked.set(keys as f64);
        }
    }

    /// Drops the keys of `table` back at full capacity at `now`; how many.
    fn drop_idle(table: &mut HashTable<Entry<K>>, now: u64) -> usize {
        let before = table.len();
        table.retain(|e| e.busy_until() > now);
        before - table.len()
    }

    /// Drops every key whose limits are back at full capacity (nothing is lost: such a key
    /// would start fresh anyway). Call it periodically to return memory after a burst of keys.
    pub fn retain_recent(&self) -> usize {
        let now = ticks(self.inner.timeline.now_nanos());
        let mut removed = 0;
        for shard in self.inner.shards.iter() {
            removed += Self::drop_idle(&mut shard.write(), now);
        }
        self.forgot(removed);
        removed
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.inner.keys.load(Ordering::Relaxed)
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys ever tracked at once.
    pub fn max_keys(&self) -> usize {
        self.inner.shard_cap * self.inner.shards.len()
    }

    /// The quotas each key gets.
    pub fn quotas(&self) -> &[Quota] {
        &self.inner.quotas
    }

    /// Units `key` may use at once now (the full burst for an unknown key).
    pub fn remaining(&self, key: &K) -> u64 {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let now = ticks(inner.timeline.now_nanos());
        let table = self.shard(hash).read();
        match table.find(hash, |e| e.key == *key) {
            Some(entry) => inner
                .params
                .iter()
                .zip(entry.cells())
                .map(|(p, c)| p.remaining(c.tat(), now))
                .min()
                .unwrap_or(0),
            None => inner.params.iter().map(|p| p.burst).min().unwrap_or(0),
        }
    }
}

impl<K> fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("name", &self.inner.name)
            .field("quotas", &self.inner.quotas)
            .field("keys", &self.inner.keys.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Builds a [`KeyedLimiter`].
pub struct KeyedLimiterBuilder<K> {
    name: Option<Cow<'static, str>>,
    quotas: Vec<Quota>,
    max_keys: usize,
    shards: usize,
    clock: Option<SharedClock>,
    _key: std::marker::PhantomData<fn(K)>,
}

impl<K> fmt::Debug for KeyedLimiterBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiterBuilder")
            .field("name", &self.name)
            .field("quotas", &self.quotas)
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiterBuilder<K> {
    /// Names the limiter, and turns on its admitted / limited counters, labelled
    /// `limiter = name`. The tracked-keys gauge and eviction counter are always recorded.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a quota every key gets; all of a key's quotas must admit.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// The hard cap on tracked keys (default 100 000), spread over the shards.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// How many independently locked shards (default 64; rounded down to a power of two).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// The clock (default: the time-stamp counter, see `Timeline::fast`). Tests that pause
    /// tokio's clock pass `Arc::new(TokioClock)`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Reads tokio's clock, so that under `tokio::time::pause` checks follow paused time (for
    /// tests).
    pub fn tokio_clock(self) -> Self {
        self.clock(Arc::new(sssonector_core::TokioClock))
    }

    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] without a quota; [`ConfigError::Zero`] for a zero key cap or
    /// shard count.
    pub fn build(self) -> Result<KeyedLimiter<K>, ConfigError> {
        if self.quotas.is_empty() {
            return Err(ConfigError::NoQuota);
        }
        if self.max_keys == 0 {
            return Err(ConfigError::Zero("max_keys"));
        }
        if self.shards == 0 {
            return Err(ConfigError::Zero("shards"));
        }
        // A power of two no larger than the key cap: each shard holds at least one key, and the
        // cap is never exceeded.
        let shards = self.shards.min(self.max_keys);
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        };
        let shard_cap = self.max_keys / shards;
        let label = self.name.as_deref().unwrap_or("default").to_owned();
        Ok(KeyedLimiter {
            inner: Arc::new(Inner {
                params: self.quotas.iter().map(Params::from_quota).collect(),
                quotas: self.quotas,
                shards: (0..shards)
                    .map(|_| Shard(ShardedLock::new(HashTable::new())))
                    .collect(),
                shard_cap,
                hasher: RandomState::new(),
                timeline: self.clock.map_or_else(Timeline::fast, Timeline::new),
                keys: AtomicUsize::new(0),
                metrics: Metrics::register("keyed", self.name.as_deref()),
                tracked: metrics::gauge!("sssonector_ratelimit_tracked_keys", "limiter" => label.clone()),
                evictions: metrics::counter!("sssonector_ratelimit_evictions_total", "limiter" => label),
                name: self.name,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry for an 8-byte key fills exactly half a cache line, aligned: never split.
    #[test]
    fn an_entry_for_an_eight_byte_key_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Entry<u64>>(), 32);
        assert_eq!(std::mem::align_of::<Entry<u64>>(), 32);
    }
}
