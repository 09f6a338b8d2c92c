//! The atomics of the lock-free limiter state: loom's in this crate's own tests under
//! `cfg(sssonector_loom)`, so that the model checker explores every interleaving of concurrent
//! checks (`cargo xtask ci` runs those tests), and std's otherwise — also when this crate is
//! another's dependency in a loom run, since loom is only a dev-dependency.

#[cfg(all(test, sssonector_loom))]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(all(test, sssonector_loom)))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
