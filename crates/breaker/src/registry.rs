//! One breaker per key (endpoint, tenant), with a bound on how many are kept.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge};
use parking_lot::RwLock;

use crate::breaker::CircuitBreaker;
use crate::config::{BreakerBuilder, ConfigError};
use crate::state::State;

/// A keyed set of breakers built from one template, holding at most `capacity` of them.
///
/// When full, adding a key evicts the least recently used closed breakers (or, if none is
/// closed, the least recently used ones), so an unbounded stream of keys cannot grow memory.
/// Each breaker is named `"{template name}:{key}"`.
///
/// Keys are spread over shards (one per 1024 of capacity, at most 16), each with its own
/// read-write lock: a `get` of a known key takes only its shard's read lock, and a full shard
/// evicts a sixteenth of its breakers at a time, so a flood of new keys pays one scan per
/// batch rather than one per key.
///
/// # Examples
///
/// ```
/// use sssonector_breaker::{BreakerRegistry, CircuitBreaker};
///
/// let registry = BreakerRegistry::new(CircuitBreaker::builder().name("upstream"), 1024)?;
/// let a = registry.get(&"10.0.0.1:443");
/// let again = registry.get(&"10.0.0.1:443");
/// assert_eq!(a.name(), "upstream:10.0.0.1:443");
/// assert_eq!(registry.len(), 1);
/// # let _ = again;
/// # Ok::<(), sssonector_breaker::ConfigError>(())
/// ```
pub struct BreakerRegistry<K> {
    template: BreakerBuilder,
    shard_capacity: usize,
    shards: Box<[RwLock<HashMap<K, Entry>>]>,
    hasher: RandomState,
    tick: AtomicU64,
    size: Gauge,
    evictions: Counter,
}

struct Entry {
    breaker: CircuitBreaker,
    last_used: AtomicU64,
}

impl<K> BreakerRegistry<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// A registry making breakers from `template`, keeping at most `capacity`.
    ///
    /// # Errors
    ///
    /// The template's [`ConfigError`], found now rather than at the first `get`; or
    /// [`ConfigError::Zero`] for a zero capacity.
    pub fn new(template: BreakerBuilder, capacity: usize) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::Zero("registry capacity"));
        }
        template.clone().build()?;
        let name = template.config.name.to_string();
        let shards = (capacity / 1024).clamp(1, 16);
        Ok(Self {
            size: metrics::gauge!("sssonector_breaker_registry_entries", "registry" => name.clone()),
            evictions: metrics::counter!("sssonector_breaker_registry_evictions_total", "registry" => name),
            template,
            shard_capacity: capacity / shards,
            shards: (0..shards).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            tick: AtomicU64::new(0),
        })
    }

    fn shard(&self, key: &K) -> &RwLock<HashMap<K, Entry>> {
        let index = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % self.shards.len();
        &self.shards[index]
    }

    /// The breaker for `key`, made from the template if there is none yet.
    pub fn get(&self, key: &K) -> CircuitBreaker {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        let shard = self.shard(key);
        if let Some(entry) = shard.read().get(key) {
            entry.last_used.store(tick, Ordering::Relaxed);
            return entry.breaker.clone();
        }
        let mut map = shard.write();
        if let Some(entry) = map.get(key) {
            entry.last_used.store(tick, Ordering::Relaxed);
            return entry.breaker.clone();
        }
        if map.len() >= self.shard_capacity {
            self.evict(&mut map);
        }
        let name = format!("{}:{key}", self.template.config.name);
        let breaker = CircuitBreaker::from_builder(self.template.clone().name(name));
        map.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(tick),
            },
        );
        drop(map);
        self.publish_size();
        breaker
    }

    /// Evicts a sixteenth of a full shard (at least one): closed breakers first, the least
    /// recently used first.
    fn evict(&self, map: &mut HashMap<K, Entry>) {
        let count = (map.len() / 16).max(1);
        let mut ranked: Vec<((bool, u64), K)> = map
            .iter()
            .map(|(k, e)| {
                let rank = (
                    e.breaker.state() != State::Closed,
                    e.last_used.load(Ordering::Relaxed),
                );
                (rank, k.clone())
            })
            .collect();
        if count < ranked.len() {
            ranked.select_nth_unstable_by_key(count - 1, |(rank, _)| *rank);
        }
        for (_, key) in ranked.into_iter().take(count) {
            map.remove(&key);
            self.evictions.increment(1);
        }
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "breaker counts are far below 2^52"
    )]
    fn publish_size(&self) {
        self.size.set(self.len() as f64);
    }

    /// Forgets `key`'s breaker; returns it if there was one.
    pub fn remove(&self, key: &K) -> Option<CircuitBreaker> {
        let removed = self.shard(key).write().remove(key).map(|e| e.breaker);
        self.publish_size();
        removed
    }

    /// How many breakers are kept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each key with its breaker's state.
    pub fn states(&self) -> Vec<(K, State)> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .iter()
                    .map(|(k, e)| (k.clone(), e.breaker.state()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl<K> fmt::Debug for BreakerRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("template", &self.template)
            .field("capacity", &(self.shard_capacity * self.shards.len()))
            .field("shards", &self.shards.len())
            .finish()
    }
}
