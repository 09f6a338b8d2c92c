//! The lock on a pool's state, and cache-line padding.

/// Keeps what it holds on cache lines of its own (128 bytes: a line and its adjacent-line
/// prefetch), so that writes to it do not evict the read-mostly fields around it from the
/// other cores' caches.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The lock on the pool's state: std's mutex, without poisoning (no code panics while
/// holding it, and a panic elsewhere must not make the pool unusable).
///
/// std's rather than parking_lot's: with two workers contending for it at every checkout and
/// return, parking_lot's waiting (spinning, then `sched_yield`) costs more per cycle than std's
/// (spinning, then a futex wait); `ab connpool` compares them.
///
/// The data sits on cache lines of its own, apart from the lock word: a worker waiting for the
/// lock spins reading that word, and with the two together every write the holder made to the
/// state had to take the line back from the spinner first.
pub(crate) struct Mutex<T>(std::sync::Mutex<Padded<T>>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(Padded(value)))
    }

    pub(crate) fn lock(&self) -> Guard<'_, T> {
        Guard(
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The held lock on the pool's state.
pub(crate) struct Guard<'a, T>(std::sync::MutexGuard<'a, Padded<T>>);

impl<T> std::ops::Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.0
    }
}

impl<T> std::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0.0
    }
}
