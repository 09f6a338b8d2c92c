//! The last N outcomes, lock-free.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// Totals over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl From<[u64; 3]> for Totals {
    /// From a time window's sums: calls, failures, slow calls.
    fn from([calls, failures, slow]: [u64; 3]) -> Self {
        Totals {
            calls,
            failures,
            slow,
        }
    }
}

/// A ring of the last `size` outcomes with running totals.
///
/// Each record overwrites the oldest slot with one atomic swap and adjusts the totals by the
/// difference between the old and new outcome, so the totals stay exact under concurrent
/// recording.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    pub(crate) fn record(&self, failed: bool, slow: bool) -> Totals {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the remainder is below the slot count, itself a usize, so it fits"
        )]
        let index = (self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64) as usize;
        let new = RECORDED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let old = self.slots[index].swap(new, Ordering::AcqRel);
        if old & RECORDED == 0 {
            self.calls.fetch_add(1, Ordering::AcqRel);
        }
        adjust(&self.failures, old & FAILED != 0, failed);
        adjust(&self.slow, old & SLOW != 0, slow);
        self.totals()
    }

    pub(crate) fn totals(&self) -> Totals {
        Totals {
            calls: u64::from(self.calls.load(Ordering::Acquire)),
            failures: u64::from(self.failures.load(Ordering::Acquire)),
            slow: u64::from(self.slow.load(Ordering::Acquire)),
        }
    }

    pub(crate) fn clear(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Release);
        }
        self.next.store(0, Ordering::Release);
        self.calls.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.slow.store(0, Ordering::Release);
    }
}

#[inline]
fn adjust(counter: &AtomicU32, was: bool, is: bool) {
    match (was, is) {
        (false, true) => {
            counter.fetch_add(1, Ordering::AcqRel);
        }
        (true, false) => {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n() {
        let w = CountWindow::new(4);
        w.record(true, false);
        w.record(true, true);
        assert_eq!(
            w.totals(),
            Totals {
                calls: 2,
                failures: 2,
                slow: 1
            }
        );
        w.record(false, false);
        w.record(false, false);
        // The first failure is overwritten.
        let t = w.record(false, false);
        assert_eq!(
            t,
            Totals {
                calls: 4,
                failures: 1,
                slow: 1
            }
        );
        w.clear();
        assert_eq!(w.totals(), Totals::default());
    }

    #[test]
    fn totals_exact_under_concurrency() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        w.record((i + t) % 3 == 0, i % 5 == 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let totals = w.totals();
        let failures = w
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) & FAILED != 0)
            .count();
        let slow = w
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) & SLOW != 0)
            .count();
        assert_eq!(totals.calls, 64);
        assert_eq!(totals.failures, failures as u64);
        assert_eq!(totals.slow, slow as u64);
    }
}
