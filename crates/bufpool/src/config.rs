//! Building a pool: size classes, budget, caches and trimming.

use std::sync::Arc;

use crate::error::ConfigError;
use crate::pool::BufPool;

/// Default size classes: a packet (2 KiB), a TLS record (16 KiB) and a large read or write
/// (64 KiB).
pub const DEFAULT_CLASSES: [usize; 3] = [2 * 1024, 16 * 1024, 64 * 1024];

/// Configures and builds a [`BufPool`].
///
/// ```
/// use sssonector_bufpool::BufPool;
///
/// let pool = BufPool::builder()
///     .name("tunnel")
///     .classes([1500, 16 * 1024, 64 * 1024])
///     .budget(32 << 20)
///     .build()?;
/// assert_eq!(pool.stats().budget, 32 << 20);
/// # Ok::<(), sssonector_bufpool::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BufPoolBuilder {
    classes: Vec<usize>,
    budget: usize,
    thread_cache_bytes: usize,
    low_watermark: usize,
    name: Option<String>,
}

impl Default for BufPoolBuilder {
    fn default() -> Self {
        Self {
            classes: DEFAULT_CLASSES.to_vec(),
            budget: 64 << 20,
            thread_cache_bytes: 256 << 10,
            low_watermark: 1 << 20,
            name: None,
        }
    }
}

impl BufPoolBuilder {
    /// The size classes, in bytes, in any order. A request is served from the smallest class
    /// that holds it; a request larger than every class is allocated to its exact length,
    /// charged to the budget, and freed (not pooled) when returned. Default: [`DEFAULT_CLASSES`].
    pub fn classes(mut self, classes: impl IntoIterator<Item = usize>) -> Self {
        self.classes = classes.into_iter().collect();
        self
    }

    /// The byte budget covering every buffer the pool holds, idle or handed out. Default 64 MiB.
    pub fn budget(mut self, bytes: usize) -> Self {
        self.budget = bytes;
        self
    }

    /// Bytes of idle buffers each thread may keep for itself (split evenly between the
    /// classes, at least one buffer each), so a get and a drop on the same thread touch no
    /// shared memory. Set 0 to disable thread caches. Default 256 KiB.
    ///
    /// Thread caches count against the budget, and a buffer in one thread's cache cannot be
    /// handed out on another until that thread uses the pool again. So that waiters always
    /// make progress, only as many threads get a cache as leave at least one buffer of the
    /// largest class outside all caches (`threads × thread_cache_bytes ≤ budget − largest`);
    /// further threads use the shared queues only.
    pub fn thread_cache_bytes(mut self, bytes: usize) -> Self {
        self.thread_cache_bytes = bytes;
        self
    }

    /// Idle bytes that [`BufPool::trim`] keeps in the shared queues however long they sit
    /// unused. Default 1 MiB.
    pub fn low_watermark(mut self, bytes: usize) -> Self {
        self.low_watermark = bytes;
        self
    }

    /// Names the pool: the `pool` label on its metrics. Default `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Validates the configuration and builds the pool.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid setting.
    pub fn build(self) -> Result<BufPool, ConfigError> {
        let mut classes = self.classes;
        if classes.is_empty() {
            return Err(ConfigError::NoClasses);
        }
        if classes.len() > crate::stats::MAX_CLASSES {
            return Err(ConfigError::TooManyClasses(classes.len()));
        }
        classes.sort_unstable();
        if classes[0] == 0 {
            return Err(ConfigError::ZeroClass);
        }
        if let Some(w) = classes.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicateClass(w[0]));
        }
        let largest = classes[classes.len() - 1];
        if largest > crate::buf::MAX_CHARGE {
            return Err(ConfigError::ClassTooLarge(largest));
        }
        if self.budget < largest {
            return Err(ConfigError::BudgetTooSmall {
                budget: self.budget,
                largest,
            });
        }
        let name: Arc<str> = match self.name {
            Some(n) if n.is_empty() => return Err(ConfigError::EmptyName),
            Some(n) => n.into(),
            None => "default".into(),
        };
        let per_class = self.thread_cache_bytes / classes.len();
        let local_max: Vec<usize> = classes
            .iter()
            .map(|&size| {
                if self.thread_cache_bytes == 0 {
                    0
                } else {
                    (per_class / size).max(1)
                }
            })
            .collect();
        let per_thread: usize = classes.iter().zip(&local_max).map(|(s, n)| s * n).sum();
        // Liveness: the caches together must leave room for one buffer of the largest class.
        let max_cached_threads = (self.budget - largest).checked_div(per_thread).unwrap_or(0);
        Ok(BufPool::from_config(crate::pool::Config {
            classes,
            local_max,
            budget: self.budget,
            low_watermark: self.low_watermark,
            max_cached_threads,
            name,
        }))
    }
}
