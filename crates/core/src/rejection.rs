//! Marker errors for calls that middleware refused without running them.
//!
//! They live here, not in the crates that raise them, so that the retry crate recognises a
//! breaker's or a rate limiter's rejection without depending on either.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// A circuit breaker refused the call because the circuit is open (or half-open with every probe
/// slot taken).
///
/// Callers recognise it with `err.downcast_ref::<CircuitOpen>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitOpen {
    /// How long until the breaker lets a call through again, when that is known.
    pub retry_after: Option<Duration>,
}

impl CircuitOpen {
    /// A rejection that may be retried after `retry_after`, if known.
    pub fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) => write!(f, "circuit open, retry after {d:?}"),
            None => f.write_str("circuit open"),
        }
    }
}

impl Error for CircuitOpen {}

/// A rate limiter refused the call; capacity returns after `retry_after`.
///
/// Callers recognise it with `err.downcast_ref::<RateLimited>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimited {
    /// How long until the call would be admitted.
    pub retry_after: Duration,
    /// Capacity available now (less than the call asked for), in the limiter's units.
    pub remaining: u64,
}

impl RateLimited {
    /// A rejection that would be admitted after `retry_after`.
    pub fn new(retry_after: Duration) -> Self {
        Self {
            retry_after,
            remaining: 0,
        }
    }

    /// A rejection that would be admitted after `retry_after`, with `remaining` capacity now.
    pub fn with_remaining(retry_after: Duration, remaining: u64) -> Self {
        Self {
            retry_after,
            remaining,
        }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited, retry after {:?}", self.retry_after)
    }
}

impl Error for RateLimited {}

/// What a rejection found in an error chain says about waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// A [`CircuitOpen`] was found.
    CircuitOpen(CircuitOpen),
    /// A [`RateLimited`] was found.
    RateLimited(RateLimited),
}

impl Rejection {
    /// How long the rejecting middleware asked the caller to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::CircuitOpen(c) => c.retry_after,
            Rejection::RateLimited(r) => Some(r.retry_after),
        }
    }
}

/// Finds a rejection marker in `error` or the chain of its sources.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_core::{find_rejection, BoxError, RateLimited};
///
/// let err: BoxError = Box::new(RateLimited::new(Duration::from_millis(40)));
/// let found = find_rejection(err.as_ref()).unwrap();
/// assert_eq!(found.retry_after(), Some(Duration::from_millis(40)));
/// ```
pub fn find_rejection(error: &(dyn Error + 'static)) -> Option<Rejection> {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(c) = err.downcast_ref::<CircuitOpen>() {
            return Some(Rejection::CircuitOpen(*c));
        }
        if let Some(r) = err.downcast_ref::<RateLimited>() {
            return Some(Rejection::RateLimited(*r));
        }
        // An io::Error built with `io::Error::other(marker)` hides the marker behind `get_ref`,
        // not behind `source`.
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = find_rejection(inner) {
                    return Some(found);
                }
            }
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.0.as_ref())
        }
    }

    #[test]
    fn messages_are_lowercase_and_name_the_wait() {
        assert_eq!(CircuitOpen::new(None).to_string(), "circuit open");
        assert_eq!(
            CircuitOpen::new(Some(Duration::from_secs(2))).to_string(),
            "circuit open, retry after 2s"
        );
        assert_eq!(
            RateLimited::new(Duration::from_millis(5)).to_string(),
            "rate limited, retry after 5ms"
        );
    }

    #[test]
    fn found_through_sources_and_io_errors() {
        let deep = Wrapper(Box::new(std::io::Error::other(CircuitOpen::new(Some(
            Duration::from_secs(1),
        )))));
        let found = find_rejection(&deep).unwrap();
        assert_eq!(found.retry_after(), Some(Duration::from_secs(1)));
        assert!(matches!(found, Rejection::CircuitOpen(_)));

        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(find_rejection(&plain), None);
    }
}
