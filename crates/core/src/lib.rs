//! Shared building blocks of the sssonector resilience crates: an injectable clock, one error
//! classifier for retry and circuit breaking, rejection markers, a seedable jitter source and a
//! lock-free sliding time window.
//!
//! Most users meet these types through `sssonector-retry` and `sssonector-breaker`, which
//! re-export what their APIs name. Depend on this crate directly to write a classifier or a
//! clock once and hand it to both.
//!
//! # Example
//!
//! ```
//! use std::io;
//! use std::time::Duration;
//! use sssonector_core::{BoxError, Classify, CircuitOpen, DefaultClassifier, ErrorClass};
//!
//! let classifier = DefaultClassifier;
//!
//! // A refused connection may succeed later: retry it, and count it against the breaker.
//! let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
//! assert_eq!(classifier.classify(&refused), ErrorClass::Transient);
//!
//! // An open circuit says how long to wait; retry policies read that.
//! let open: BoxError = Box::new(CircuitOpen::new(Some(Duration::from_secs(3))));
//! assert_eq!(classifier.retry_after(&open), Some(Duration::from_secs(3)));
//! ```

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod classify;
mod clock;
mod rejection;
mod rng;
mod sync;
mod throttle;
mod window;

pub use classify::{AnyError, Classify, DefaultClassifier, ErrorClass, classify_io_kind};
#[cfg(feature = "tokio")]
pub use clock::TokioClock;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timeline, duration_to_nanos};
pub use rejection::{CircuitOpen, RateLimited, Rejection, find_rejection};
pub use rng::Rng;
pub use throttle::Throttle;
pub use window::TimeWindow;

/// A type-erased error, as tower middleware returns when it can fail on its own.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
