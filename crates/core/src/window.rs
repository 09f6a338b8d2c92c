//! A lock-free sliding time window of counters.
//!
//! The window is split into buckets; each bucket remembers which slice of time (its epoch) it
//! counts, and is recycled when time moves past it. Reading sums the buckets whose epoch is still
//! inside the window. The retry budget (calls and retries) and the circuit breaker's time-based
//! window (calls, failures and slow calls) both use it.
//!
//! Recording is lock-free. At the moment a bucket is recycled, an increment made by another
//! thread between the recycling thread's claim of the bucket and its zeroing of the counts can be
//! lost; the error is at most the number of threads recording at that instant, once per bucket
//! period.

use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::duration_to_nanos;

/// A sliding window of `K` counters over a span of time, split into buckets.
///
/// Times are nanoseconds on a [`Timeline`](crate::Timeline).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_core::TimeWindow;
///
/// // Two counters (say calls and failures) over 10 s in 1 s buckets.
/// let window = TimeWindow::<2>::new(Duration::from_secs(10), 10);
/// let sec = 1_000_000_000;
/// window.add(0, [1, 1]);
/// window.add(3 * sec, [1, 0]);
/// assert_eq!(window.sums(5 * sec), [2, 1]);
/// // Eleven seconds later the first call has left the window.
/// assert_eq!(window.sums(11 * sec), [1, 0]);
/// ```
#[derive(Debug)]
pub struct TimeWindow<const K: usize> {
    buckets: Box<[Bucket<K>]>,
    bucket_nanos: u64,
}

#[derive(Debug)]
struct Bucket<const K: usize> {
    /// Index of the time slice this bucket counts, plus one; zero means never used.
    epoch: AtomicU64,
    counts: [AtomicU64; K],
}

impl<const K: usize> TimeWindow<K> {
    /// A window covering `span`, split into `buckets` buckets.
    ///
    /// A larger bucket count makes the window slide more smoothly at a small cost in memory and
    /// read time.
    ///
    /// # Panics
    ///
    /// If `buckets` is zero or `span / buckets` is shorter than one nanosecond; configuration
    /// types validate these before building a window.
    pub fn new(span: Duration, buckets: usize) -> Self {
        assert!(buckets > 0, "a time window needs at least one bucket");
        let bucket_nanos = duration_to_nanos(span) / buckets as u64;
        assert!(
            bucket_nanos > 0,
            "a time window's buckets must span at least 1 ns"
        );
        let buckets = (0..buckets)
            .map(|_| Bucket {
                epoch: AtomicU64::new(0),
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
            })
            .collect();
        Self {
            buckets,
            bucket_nanos,
        }
    }

    /// The span the window covers.
    pub fn span(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos * self.buckets.len() as u64)
    }

    /// Adds `deltas` to the counters at time `now` (nanoseconds).
    #[inline]
    pub fn add(&self, now: u64, deltas: [u64; K]) {
        let epoch = now / self.bucket_nanos + 1;
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the remainder is below the bucket count, itself a usize, so it fits"
        )]
        let bucket = &self.buckets[(epoch % self.buckets.len() as u64) as usize];
        let seen = bucket.epoch.load(Ordering::Acquire);
        if seen < epoch
            && bucket
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This thread claimed the bucket for the new slice: clear what the old slice left.
            // A swap rather than a store: both clear, and a read-modify-write is what the loom
            // model checks correctly beside concurrent increments (loom issue #254 lets a
            // plain store slip between the read and the write of another thread's add).
            for count in &bucket.counts {
                count.swap(0, Ordering::AcqRel);
            }
        }
        // If another thread moved the bucket to a newer slice (its clock read was later than
        // ours), counting into that slice is the closest we can do.
        for (count, delta) in bucket.counts.iter().zip(deltas) {
            if delta != 0 {
                count.fetch_add(delta, Ordering::AcqRel);
            }
        }
    }

    /// The counters summed over the window that ends at `now` (nanoseconds).
    pub fn sums(&self, now: u64) -> [u64; K] {
        let current = now / self.bucket_nanos + 1;
        let oldest = current.saturating_sub(self.buckets.len() as u64 - 1);
        let mut sums = [0u64; K];
        for bucket in self.buckets.iter() {
            let epoch = bucket.epoch.load(Ordering::Acquire);
            if epoch >= oldest && epoch <= current && epoch != 0 {
                for (sum, count) in sums.iter_mut().zip(&bucket.counts) {
                    *sum += count.load(Ordering::Acquire);
                }
            }
        }
        sums
    }

    /// Forgets everything counted so far.
    pub fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.epoch.store(0, Ordering::Release);
            for count in &bucket.counts {
                count.store(0, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert_eq, proptest};

    const MS: u64 = 1_000_000;

    #[test]
    fn slides_bucket_by_bucket() {
        let w = TimeWindow::<1>::new(Duration::from_millis(100), 10);
        for t in 0..100 {
            w.add(t * MS, [1]);
        }
        assert_eq!(w.sums(99 * MS), [100]);
        // At 105 ms the bucket [0, 10) ms has left the window.
        assert_eq!(w.sums(105 * MS), [90]);
        assert_eq!(w.sums(199 * MS), [0]);
        w.add(300 * MS, [2]);
        assert_eq!(w.sums(300 * MS), [2]);
        w.clear();
        assert_eq!(w.sums(300 * MS), [0]);
    }

    #[test]
    fn concurrent_adds_in_one_bucket_are_exact() {
        let w = std::sync::Arc::new(TimeWindow::<2>::new(Duration::from_secs(1), 4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.add(5, [1, 2]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.sums(5), [40_000, 80_000]);
    }

    proptest! {
        /// The window's sum equals a brute-force count of events inside the bucket-aligned
        /// window, for any non-decreasing sequence of event times.
        #[test]
        fn matches_reference(mut gaps in proptest::collection::vec(0u64..40, 1..200), buckets in 1usize..12) {
            let bucket_nanos = 10;
            let w = TimeWindow::<1>::new(Duration::from_nanos(bucket_nanos * buckets as u64), buckets);
            let mut now = 0;
            let mut events = Vec::new();
            for gap in gaps.drain(..) {
                now += gap;
                w.add(now, [1]);
                events.push(now);
                let current = now / bucket_nanos;
                let oldest = (current + 1).saturating_sub(buckets as u64);
                let expected = events.iter().filter(|&&t| t / bucket_nanos >= oldest).count() as u64;
                prop_assert_eq!(w.sums(now), [expected]);
            }
        }
    }
}

/// The window under every interleaving of concurrent recorders, explored by loom
/// (`RUSTFLAGS="--cfg sssonector_loom" cargo test -p sssonector-core --lib loom_tests`).
#[cfg(all(test, sssonector_loom))]
mod loom_tests {
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    /// Two recorders move a bucket to a new slice at once: the old slice's counts are gone,
    /// and at most one of the two new increments is lost (the bound the module documents),
    /// never more, and nothing is counted twice.
    #[test]
    fn recycling_a_bucket_loses_at_most_one_racing_increment() {
        loom::model(|| {
            let window = Arc::new(TimeWindow::<1>::new(Duration::from_nanos(2), 2));
            window.add(0, [5]);
            // Two slices later the same bucket counts again.
            let other = {
                let window = Arc::clone(&window);
                thread::spawn(move || window.add(2, [1]))
            };
            window.add(2, [1]);
            other.join().unwrap();
            let [counted] = window.sums(2);
            assert!((1..=2).contains(&counted), "counted {counted}");
        });
    }
}
