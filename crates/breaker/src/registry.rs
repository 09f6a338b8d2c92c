//! One breaker per key (endpoint, tenant), with a bound on how many are kept.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use metrics::{Counter, Gauge};
use parking_lot::Mutex;

use crate::breaker::CircuitBreaker;
use crate::config::{BreakerBuilder, ConfigError};
use crate::state::State;

/// A keyed set of breakers built from one template, holding at most `capacity` of them.
///
/// When full, adding a key evicts the least recently used closed breaker (or, if none is closed,
/// the least recently used one), so an unbounded stream of keys cannot grow memory. Each breaker
/// is named `"{template name}:{key}"`.
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
    capacity: usize,
    entries: Mutex<Entries<K>>,
    size: Gauge,
    evictions: Counter,
}

struct Entries<K> {
    map: HashMap<K, Entry>,
    tick: u64,
}

struct Entry {
    breaker: CircuitBreaker,
    last_used: u64,
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
        Ok(Self {
            size: metrics::gauge!("sssonector_breaker_registry_entries", "registry" => name.clone()),
            evictions: metrics::counter!("sssonector_breaker_registry_evictions_total", "registry" => name),
            template,
            capacity,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                tick: 0,
            }),
        })
    }

    /// The breaker for `key`, made from the template if there is none yet.
    pub fn get(&self, key: &K) -> CircuitBreaker {
        let mut entries = self.entries.lock();
        entries.tick += 1;
        let tick = entries.tick;
        if let Some(entry) = entries.map.get_mut(key) {
            entry.last_used = tick;
            return entry.breaker.clone();
        }
        if entries.map.len() >= self.capacity {
            self.evict_one(&mut entries);
        }
        let name = format!("{}:{key}", self.template.config.name);
        let breaker = CircuitBreaker::from_builder(self.template.clone().name(name));
        entries.map.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: tick,
            },
        );
        self.size.set(entries.map.len() as f64);
        breaker
    }

    fn evict_one(&self, entries: &mut Entries<K>) {
        let victim = entries
            .map
            .iter()
            .min_by_key(|(_, e)| (e.breaker.state() != State::Closed, e.last_used))
            .map(|(k, _)| k.clone());
        if let Some(key) = victim {
            entries.map.remove(&key);
            self.evictions.increment(1);
        }
    }

    /// Forgets `key`'s breaker; returns it if there was one.
    pub fn remove(&self, key: &K) -> Option<CircuitBreaker> {
        let mut entries = self.entries.lock();
        let removed = entries.map.remove(key).map(|e| e.breaker);
        self.size.set(entries.map.len() as f64);
        removed
    }

    /// How many breakers are kept.
    pub fn len(&self) -> usize {
        self.entries.lock().map.len()
    }

    /// Whether no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each key with its breaker's state.
    pub fn states(&self) -> Vec<(K, State)> {
        self.entries
            .lock()
            .map
            .iter()
            .map(|(k, e)| (k.clone(), e.breaker.state()))
            .collect()
    }
}

impl<K> fmt::Debug for BreakerRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("template", &self.template)
            .field("capacity", &self.capacity)
            .field("len", &self.entries.lock().map.len())
            .finish()
    }
}
