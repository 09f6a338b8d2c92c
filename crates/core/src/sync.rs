//! The atomics of the lock-free time window: loom's under `cfg(sssonector_loom)`, so that the
//! model checker explores every interleaving of concurrent recorders (`cargo xtask ci` runs
//! those tests), and std's otherwise.

#[cfg(sssonector_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(sssonector_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
