//! Named tiers: sets of quotas, and which key is on which.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{ConfigError, Rejected};
use crate::keyed::KeyedLimiter;
use crate::limiter::Admitted;
use crate::quota::Quota;

/// Keyed limits by tier: each tier has its own quotas, each key is assigned a tier (or gets the
/// default one). Clones share the limiter.
///
/// # Examples
///
/// ```
/// use sssonector_ratelimit::{Quota, TieredLimiter};
///
/// let limiter = TieredLimiter::<String>::builder()
///     .tier("free", vec![Quota::per_second(1)?.with_burst(1)?])
///     .tier("pro", vec![Quota::per_second(100)?.with_burst(10)?])
///     .default_tier("free")
///     .build()?;
/// limiter.assign("acme".to_string(), "pro")?;
///
/// let acme = "acme".to_string();
/// for _ in 0..10 {
///     limiter.check_key(&acme)?;
/// }
/// let guest = "guest".to_string();
/// limiter.check_key(&guest)?;
/// assert!(limiter.check_key(&guest).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TieredLimiter<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for TieredLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K> {
    tiers: HashMap<String, KeyedLimiter<K>>,
    default_tier: String,
    assignments: RwLock<HashMap<K, String>>,
}

impl<K: Hash + Eq + Clone> TieredLimiter<K> {
    /// A builder.
    pub fn builder() -> TieredLimiterBuilder<K> {
        TieredLimiterBuilder {
            tiers: Vec::new(),
            default_tier: None,
            max_keys: 100_000,
            _key: std::marker::PhantomData,
        }
    }

    /// Puts `key` on `tier`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownTier`] if there is no such tier.
    pub fn assign(&self, key: K, tier: &str) -> Result<(), ConfigError> {
        if !self.inner.tiers.contains_key(tier) {
            return Err(ConfigError::UnknownTier(tier.to_owned()));
        }
        self.inner.assignments.write().insert(key, tier.to_owned());
        Ok(())
    }

    /// Returns `key` to the default tier.
    pub fn unassign(&self, key: &K) {
        self.inner.assignments.write().remove(key);
    }

    /// The tier `key` is on.
    pub fn tier_of(&self, key: &K) -> String {
        self.inner
            .assignments
            .read()
            .get(key)
            .cloned()
            .unwrap_or_else(|| self.inner.default_tier.clone())
    }

    fn limiter(&self, key: &K) -> &KeyedLimiter<K> {
        let assignments = self.inner.assignments.read();
        let tier = assignments.get(key).unwrap_or(&self.inner.default_tier);
        // Tiers are fixed at build and assignments are checked, so the tier exists.
        &self.inner.tiers[tier]
    }

    /// Admits one unit for `key` under its tier.
    ///
    /// # Errors
    ///
    /// As [`KeyedLimiter::check_key_n`].
    pub fn check_key(&self, key: &K) -> Result<Admitted, Rejected> {
        self.limiter(key).check_key_n(key, 1)
    }

    /// Admits `cost` units for `key` under its tier.
    ///
    /// # Errors
    ///
    /// As [`KeyedLimiter::check_key_n`].
    pub fn check_key_n(&self, key: &K, cost: u64) -> Result<Admitted, Rejected> {
        self.limiter(key).check_key_n(key, cost)
    }

    /// The quotas of `tier`, if it exists.
    pub fn quotas(&self, tier: &str) -> Option<&[Quota]> {
        self.inner.tiers.get(tier).map(|l| l.quotas())
    }
}

impl<K> fmt::Debug for TieredLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredLimiter")
            .field("tiers", &self.inner.tiers.keys().collect::<Vec<_>>())
            .field("default_tier", &self.inner.default_tier)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TieredLimiter`].
pub struct TieredLimiterBuilder<K> {
    tiers: Vec<(String, Vec<Quota>)>,
    default_tier: Option<String>,
    max_keys: usize,
    _key: std::marker::PhantomData<fn(K)>,
}

impl<K> fmt::Debug for TieredLimiterBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredLimiterBuilder")
            .field("tiers", &self.tiers)
            .field("default_tier", &self.default_tier)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> TieredLimiterBuilder<K> {
    /// Adds a tier named `name` with `quotas`.
    pub fn tier(mut self, name: impl Into<String>, quotas: Vec<Quota>) -> Self {
        self.tiers.push((name.into(), quotas));
        self
    }

    /// The tier of keys never assigned one (default: the first tier added).
    pub fn default_tier(mut self, name: impl Into<String>) -> Self {
        self.default_tier = Some(name.into());
        self
    }

    /// The cap on tracked keys, per tier (default 100 000).
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] with no tiers or a tier without quotas;
    /// [`ConfigError::UnknownTier`] for a default that is not a tier.
    pub fn build(self) -> Result<TieredLimiter<K>, ConfigError> {
        let first = self.tiers.first().ok_or(ConfigError::NoQuota)?.0.clone();
        let default_tier = self.default_tier.unwrap_or(first);
        let mut tiers = HashMap::new();
        for (name, quotas) in self.tiers {
            let mut builder = KeyedLimiter::builder()
                .name(format!("tier:{name}"))
                .max_keys(self.max_keys);
            for q in quotas {
                builder = builder.quota(q);
            }
            tiers.insert(name, builder.build()?);
        }
        if !tiers.contains_key(&default_tier) {
            return Err(ConfigError::UnknownTier(default_tier));
        }
        Ok(TieredLimiter {
            inner: Arc::new(Inner {
                tiers,
                default_tier,
                assignments: RwLock::new(HashMap::new()),
            }),
        })
    }
}
