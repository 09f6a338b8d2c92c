//! One error-classification trait for the retry crate and the circuit breaker.
//!
//! A retry policy asks "will trying again help?"; a breaker asks "is this a failure of the
//! dependency?". One answer, [`ErrorClass`], serves both, so a single classifier configures a
//! whole stack.

use std::error::Error;
use std::io;
use std::time::Duration;

use crate::BoxError;
use crate::rejection::find_rejection;

/// How an error should be treated by retry policies and circuit breakers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The dependency failed in a way that may pass: retried, and counted as a breaker failure.
    Transient,
    /// Trying again will not help: not retried, but counted as a breaker failure.
    Permanent,
    /// Not the dependency's fault (a caller error, an expected "not found"): neither retried nor
    /// counted for or against the breaker.
    Ignored,
}

impl ErrorClass {
    /// Whether a retry policy may try again after this error.
    #[inline]
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient)
    }

    /// Whether a circuit breaker counts this error as a failure.
    #[inline]
    pub fn is_failure(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::Permanent)
    }
}

/// Decides how errors of type `E` are treated.
///
/// Closures `Fn(&E) -> ErrorClass` implement it, so a one-off classifier is a line.
///
/// # Examples
///
/// ```
/// use sssonector_core::{Classify, ErrorClass};
///
/// #[derive(Debug)]
/// enum ApiError { Unavailable, BadRequest }
///
/// let classifier = |e: &ApiError| match e {
///     ApiError::Unavailable => ErrorClass::Transient,
///     ApiError::BadRequest => ErrorClass::Ignored,
/// };
/// assert!(classifier.classify(&ApiError::Unavailable).is_retryable());
/// assert!(!classifier.classify(&ApiError::BadRequest).is_failure());
/// ```
pub trait Classify<E: ?Sized> {
    /// How `error` should be treated.
    fn classify(&self, error: &E) -> ErrorClass;

    /// How long the error says to wait before trying again, if it says (a breaker's or rate
    /// limiter's rejection does).
    fn retry_after(&self, error: &E) -> Option<Duration> {
        let _ = error;
        None
    }
}

impl<E: ?Sized, F> Classify<E> for F
where
    F: Fn(&E) -> ErrorClass,
{
    fn classify(&self, error: &E) -> ErrorClass {
        self(error)
    }
}

/// The workspace's default classifier, for `std::io::Error` and [`BoxError`].
///
/// - A [`CircuitOpen`](crate::CircuitOpen) or [`RateLimited`](crate::RateLimited) anywhere in
///   the error chain is transient and carries its `retry_after`.
/// - An `io::Error` is classified by kind (see [`classify_io_kind`]).
/// - Anything else is transient: an unknown error is retried, within the policy's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl Classify<io::Error> for DefaultClassifier {
    fn classify(&self, error: &io::Error) -> ErrorClass {
        if error.get_ref().and_then(|e| find_rejection(e)).is_some() {
            return ErrorClass::Transient;
        }
        classify_io_kind(error.kind())
    }

    fn retry_after(&self, error: &io::Error) -> Option<Duration> {
        error
            .get_ref()
            .and_then(|e| find_rejection(e))
            .and_then(|r| r.retry_after())
    }
}

impl Classify<dyn Error + Send + Sync> for DefaultClassifier {
    fn classify(&self, error: &(dyn Error + Send + Sync + 'static)) -> ErrorClass {
        classify_dyn(error)
    }

    fn retry_after(&self, error: &(dyn Error + Send + Sync + 'static)) -> Option<Duration> {
        find_rejection(error).and_then(|r| r.retry_after())
    }
}

impl Classify<BoxError> for DefaultClassifier {
    fn classify(&self, error: &BoxError) -> ErrorClass {
        classify_dyn(error.as_ref())
    }

    fn retry_after(&self, error: &BoxError) -> Option<Duration> {
        find_rejection(error.as_ref()).and_then(|r| r.retry_after())
    }
}

fn classify_dyn(error: &(dyn Error + 'static)) -> ErrorClass {
    if find_rejection(error).is_some() {
        return ErrorClass::Transient;
    }
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return classify_io_kind(io.kind());
        }
        current = err.source();
    }
    ErrorClass::Transient
}

/// Every error is transient: retried within limits, and counted as a breaker failure.
///
/// The default for the circuit breaker, which works with any error type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnyError;

impl<E: ?Sized> Classify<E> for AnyError {
    #[inline]
    fn classify(&self, _error: &E) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// Classifies an I/O error kind.
///
/// Network and resource conditions that can clear by themselves (refused, reset, timed out,
/// unreachable, interrupted) are transient; errors in what the caller asked for (not found,
/// permission denied, invalid input or data, unsupported) are permanent. Kinds this function does
/// not know are transient.
pub fn classify_io_kind(kind: io::ErrorKind) -> ErrorClass {
    use io::ErrorKind::*;
    match kind {
        NotFound | PermissionDenied | AlreadyExists | InvalidInput | InvalidData | Unsupported
        | OutOfMemory | IsADirectory | NotADirectory | ReadOnlyFilesystem | InvalidFilename
        | DirectoryNotEmpty | FileTooLarge | ArgumentListTooLong | CrossesDevices
        | TooManyLinks | NotSeekable | ExecutableFileBusy => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CircuitOpen, RateLimited};

    #[test]
    fn io_kinds() {
        let c = DefaultClassifier;
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::TimedOut,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::Interrupted,
            io::ErrorKind::UnexpectedEof,
        ] {
            assert_eq!(
                c.classify(&io::Error::from(kind)),
                ErrorClass::Transient,
                "{kind:?}"
            );
        }
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::InvalidInput,
            io::ErrorKind::InvalidData,
            io::ErrorKind::NotFound,
        ] {
            assert_eq!(
                c.classify(&io::Error::from(kind)),
                ErrorClass::Permanent,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn boxed_errors_find_io_kinds_and_rejections() {
        let c = DefaultClassifier;
        let denied: BoxError = Box::new(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(c.classify(&denied), ErrorClass::Permanent);
        assert_eq!(c.retry_after(&denied), None);

        let limited: BoxError = Box::new(RateLimited::new(Duration::from_millis(30)));
        assert_eq!(c.classify(&limited), ErrorClass::Transient);
        assert_eq!(c.retry_after(&limited), Some(Duration::from_millis(30)));

        let open = io::Error::other(CircuitOpen::new(Some(Duration::from_secs(4))));
        assert_eq!(c.classify(&open), ErrorClass::Transient);
        assert_eq!(c.retry_after(&open), Some(Duration::from_secs(4)));

        let unknown: BoxError = "something odd".into();
        assert_eq!(c.classify(&unknown), ErrorClass::Transient);
    }

    #[test]
    fn classes_answer_both_questions() {
        assert!(ErrorClass::Transient.is_retryable() && ErrorClass::Transient.is_failure());
        assert!(!ErrorClass::Permanent.is_retryable() && ErrorClass::Permanent.is_failure());
        assert!(!ErrorClass::Ignored.is_retryable() && !ErrorClass::Ignored.is_failure());
        assert_eq!(AnyError.classify(&()), ErrorClass::Transient);
    }
}
