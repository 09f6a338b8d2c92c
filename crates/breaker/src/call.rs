//! Guarding any async operation with a breaker.

use std::error::Error;
use std::fmt;
use std::future::Future;

use sssonector_core::{AnyError, CircuitOpen, Classify};

use crate::breaker::{CircuitBreaker, Outcome};

/// The error of [`CircuitBreaker::call`]: the breaker refused, or the operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The circuit is open; the operation was not run.
    Open(CircuitOpen),
    /// The operation ran and returned this error.
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The operation's error, if it ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            BreakerError::Open(_) => None,
        }
    }

    /// Whether the breaker refused the call.
    pub fn is_open(&self) -> bool {
        matches!(self, BreakerError::Open(_))
    }
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open(open) => open.fmt(f),
            BreakerError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: Error + 'static> Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BreakerError::Open(open) => Some(open),
            BreakerError::Inner(e) => Some(e),
        }
    }
}

impl CircuitBreaker {
    /// Runs `operation` if the breaker admits it, counting every error as a failure.
    ///
    /// Dropping the returned future cancels the operation and counts nothing.
    ///
    /// # Errors
    ///
    /// [`BreakerError::Open`] without running the operation when the circuit is open;
    /// [`BreakerError::Inner`] with the operation's error otherwise.
    pub async fn call<F, Fut, T, E>(&self, operation: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(&AnyError, operation).await
    }

    /// Like [`call`](Self::call), with `classifier` deciding which errors count as failures
    /// (`Permanent` and `Transient` do, `Ignored` does not).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn call_with<C, F, Fut, T, E>(
        &self,
        classifier: &C,
        operation: F,
    ) -> Result<T, BreakerError<E>>
    where
        C: Classify<E> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(BreakerError::Open)?;
        match operation().await {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(e) => {
                permit.record(Outcome::from(classifier.classify(&e)));
                Err(BreakerError::Inner(e))
            }
        }
    }
}
