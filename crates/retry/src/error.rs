//! Errors: why a retry loop gave up, and invalid configuration.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// Why a retry loop stopped trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The classifier said the error is permanent (or to be ignored).
    Permanent,
    /// Every allowed attempt was made.
    Exhausted,
    /// The next attempt could not start, or finish, before the total deadline.
    Deadline,
    /// The shared retry budget had no retry left.
    Budget,
    /// The error asked for a wait the policy does not honour (see
    /// [`RetryAfterPolicy`](crate::RetryAfterPolicy)).
    RetryAfter,
    /// The request could not be copied for another attempt (its
    /// [`CloneRequest`](crate::CloneRequest) declined).
    NotRepeatable,
}

impl GiveUpReason {
    /// A short lowercase name, used as the `reason` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Permanent => "permanent",
            GiveUpReason::Exhausted => "exhausted",
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::Budget => "budget",
            GiveUpReason::RetryAfter => "retry_after",
            GiveUpReason::NotRepeatable => "not_repeatable",
        }
    }

    pub(crate) const ALL: [GiveUpReason; 6] = [
        GiveUpReason::Permanent,
        GiveUpReason::Exhausted,
        GiveUpReason::Deadline,
        GiveUpReason::Budget,
        GiveUpReason::RetryAfter,
        GiveUpReason::NotRepeatable,
    ];

    fn describe(self) -> &'static str {
        match self {
            GiveUpReason::Permanent => "error is not retryable",
            GiveUpReason::Exhausted => "attempts exhausted",
            GiveUpReason::Deadline => "deadline reached",
            GiveUpReason::Budget => "retry budget exhausted",
            GiveUpReason::RetryAfter => "requested wait not honoured",
            GiveUpReason::NotRepeatable => "request cannot be repeated",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// How one attempt failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure<E> {
    /// The operation returned an error.
    Error(E),
    /// The attempt did not finish within its timeout (the per-attempt timeout or what was left
    /// of the total deadline).
    TimedOut(Duration),
}

impl<E> Failure<E> {
    /// The operation's error, if the attempt did not time out.
    pub fn error(&self) -> Option<&E> {
        match self {
            Failure::Error(e) => Some(e),
            Failure::TimedOut(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(e) => e.fmt(f),
            Failure::TimedOut(d) => write!(f, "attempt timed out after {d:?}"),
        }
    }
}

/// The error of [`retry`](crate::retry): why it gave up, after how many attempts, and the last
/// failure.
#[derive(Debug)]
pub struct RetryError<E> {
    reason: GiveUpReason,
    attempts: u32,
    last: Failure<E>,
}

impl<E> RetryError<E> {
    pub(crate) fn new(reason: GiveUpReason, attempts: u32, last: Failure<E>) -> Self {
        Self {
            reason,
            attempts,
            last,
        }
    }

    /// Why the loop stopped.
    pub fn reason(&self) -> GiveUpReason {
        self.reason
    }

    /// How many attempts were made, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's failure.
    pub fn last(&self) -> &Failure<E> {
        &self.last
    }

    /// The last attempt's failure, by value.
    pub fn into_last(self) -> Failure<E> {
        self.last
    }

    /// The last error the operation returned, unless the last attempt timed out.
    pub fn into_error(self) -> Option<E> {
        match self.last {
            Failure::Error(e) => Some(e),
            Failure::TimedOut(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "gave up after {} attempt{plural} ({}): {}",
            self.attempts, self.reason, self.last
        )
    }
}

impl<E: Error + 'static> Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.last {
            Failure::Error(e) => Some(e),
            Failure::TimedOut(_) => None,
        }
    }
}

/// The tower layer's error when the last attempt timed out.
///
/// Other failures are passed through as the inner service's error, boxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("attempt timed out after {timeout:?}")]
#[non_exhaustive]
pub struct AttemptTimedOut {
    /// How long the attempt was allowed.
    pub timeout: Duration,
}

/// A retry policy or budget that cannot work as configured.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The backoff multiplier is below 1.0, infinite or not a number.
    #[error("backoff multiplier must be a finite number of at least 1.0, got {0}")]
    Multiplier(f64),
    /// The backoff cap is shorter than the first delay.
    #[error("backoff max delay {max:?} is shorter than the initial delay {initial:?}")]
    MaxBelowInitial {
        /// The configured cap.
        max: Duration,
        /// The configured first delay.
        initial: Duration,
    },
    /// Proportional jitter outside `[0, 1]`.
    #[error("proportional jitter must be between 0.0 and 1.0, got {0}")]
    JitterRatio(f64),
    /// A zero per-attempt timeout or deadline would fail every call.
    #[error("{field} must be longer than zero")]
    ZeroDuration {
        /// The field at fault.
        field: &'static str,
    },
    /// The retry budget's ratio is negative or not a number.
    #[error("retry budget ratio must be a finite number of at least 0.0, got {0}")]
    BudgetRatio(f64),
    /// The retry budget's window is shorter than a millisecond.
    #[error("retry budget window must be at least 1ms, got {0:?}")]
    BudgetWindow(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_reason_attempts_and_cause() {
        let err = RetryError::new(
            GiveUpReason::Exhausted,
            4,
            Failure::Error(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        );
        assert_eq!(
            err.to_string(),
            "gave up after 4 attempts (attempts exhausted): connection refused"
        );
        assert!(err.source().is_some());
        let timed_out: RetryError<std::io::Error> = RetryError::new(
            GiveUpReason::Deadline,
            1,
            Failure::TimedOut(Duration::from_secs(2)),
        );
        assert_eq!(
            timed_out.to_string(),
            "gave up after 1 attempt (deadline reached): attempt timed out after 2s"
        );
        assert!(timed_out.into_error().is_none());
    }
}
