//! A policy's plain settings, interned so that response futures carry them as one pointer.
//!
//! The tower layer hands every response future its policy. Copying ~100 bytes of settings into
//! each future, or cloning an `Arc` (two atomic operations), made the layer cost more per call
//! than `tower::retry` when nothing fails. Settings are immutable and programs use few distinct
//! ones, so each distinct plan is stored once for the life of the process and futures hold a
//! `&'static` to it. The table is capped: past [`MAX_INTERNED`] distinct plans (a program that
//! builds policies from unbounded input), a policy keeps its plan in its shared state instead,
//! so memory stays bounded either way.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::policy::RetryAfterPolicy;

/// Distinct plans kept for the life of the process, at most (about 100 bytes each).
pub(crate) const MAX_INTERNED: usize = 1024;

/// The settings a retry decision reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) backoff: Backoff,
    pub(crate) max_retries: u32,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) retry_after: RetryAfterPolicy,
}

impl Plan {
    /// The fields as integers, floats by their bits, for equality and hashing.
    fn key(&self) -> [u128; 11] {
        let b = &self.backoff;
        let (jitter_kind, jitter_ratio) = match b.jitter_mode() {
            Jitter::None => (0, 0.0),
            Jitter::Proportional(p) => (1, p),
            Jitter::Full => (2, 0.0),
            Jitter::Equal => (3, 0.0),
            Jitter::Decorrelated => (4, 0.0),
        };
        let (after_kind, after_limit) = match self.retry_after {
            RetryAfterPolicy::Honor => (0, Duration::ZERO),
            RetryAfterPolicy::HonorUpTo(d) => (1, d),
            RetryAfterPolicy::FailFast => (2, Duration::ZERO),
            RetryAfterPolicy::Ignore => (3, Duration::ZERO),
        };
        let opt = |d: Option<Duration>| d.map_or(u128::MAX, |d| d.as_nanos());
        [
            b.initial().as_nanos(),
            b.max().as_nanos(),
            u128::from(b.multiplier_value().to_bits()),
            jitter_kind,
            u128::from(jitter_ratio.to_bits()),
            u128::from(self.max_retries),
            opt(self.deadline),
            opt(self.attempt_timeout),
            after_kind,
            after_limit.as_nanos(),
            0,
        ]
    }
}

impl PartialEq for Plan {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Plan {}

impl Hash for Plan {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// The interned copy of `plan`, or `None` once the table is full (the caller then keeps the
/// plan in the policy's shared state).
pub(crate) fn intern(plan: Plan) -> Option<&'static Plan> {
    static TABLE: OnceLock<Mutex<HashSet<&'static Plan>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| Mutex::new(HashSet::new()));
    // A poisoned table only means another thread panicked while inserting; the set is intact.
    let mut table = table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = table.get(&plan) {
        return Some(existing);
    }
    if table.len() >= MAX_INTERNED {
        return None;
    }
    let leaked: &'static Plan = Box::leak(Box::new(plan));
    table.insert(leaked);
    Some(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(retries: u32) -> Plan {
        Plan {
            backoff: Backoff::default(),
            max_retries: retries,
            deadline: None,
            attempt_timeout: None,
            retry_after: RetryAfterPolicy::Honor,
        }
    }

    #[test]
    fn equal_plans_share_one_copy_and_the_table_is_bounded() {
        let a = intern(plan(1_000_001));
        let b = intern(plan(1_000_001));
        if let (Some(x), Some(y)) = (a, b) {
            assert!(std::ptr::eq(x, y));
        }
        for n in 0..(u32::try_from(MAX_INTERNED).unwrap() + 10) {
            if let Some(p) = intern(plan(2_000_000 + n)) {
                assert_eq!(p.max_retries, 2_000_000 + n);
            }
        }
        assert!(intern(plan(9_999_999)).is_none());

        // A policy built once the table is full keeps its plan in its shared state.
        let policy = crate::RetryPolicy::builder()
            .max_retries(77_777)
            .build()
            .unwrap();
        assert_eq!(policy.max_retries(), 77_777);
        assert!(policy.shared.is_some());
    }
}
