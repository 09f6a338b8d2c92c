//! Retrying any async operation.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use sssonector_core::Classify;

use crate::error::{Failure, RetryError};
use crate::policy::{Decision, RetryPolicy};

/// Runs `operation` until it succeeds or `policy` gives up.
///
/// `operation` is called once per attempt and returns a fresh future each time. Dropping the
/// returned future cancels the attempt in flight and any wait.
///
/// # Errors
///
/// A [`RetryError`] saying why the policy gave up, how many attempts were made, and the last
/// failure.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use sssonector_retry::{retry, Backoff, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = RetryPolicy::builder()
///     .backoff(Backoff::constant(Duration::from_millis(1)))
///     .build()
///     .unwrap();
/// let calls = AtomicU32::new(0);
/// let answer = retry(&policy, || async {
///     if calls.fetch_add(1, Ordering::SeqCst) < 2 {
///         Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
///     } else {
///         Ok(42)
///     }
/// })
/// .await
/// .unwrap();
/// assert_eq!((answer, calls.load(Ordering::SeqCst)), (42, 3));
/// # }
/// ```
pub async fn retry<C, F, Fut, T, E>(
    policy: &RetryPolicy<C>,
    operation: F,
) -> Result<T, RetryError<E>>
where
    C: Classify<E>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: fmt::Display,
{
    retry_notify(policy, operation, |_, _| {}).await
}

/// Like [`retry`], calling `notify` with each failure and the wait chosen before each retry.
///
/// Unlike the policy's `on_retry` hook, `notify` is per call, sees the typed error and may
/// borrow local state.
///
/// # Errors
///
/// As [`retry`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_retry::{retry_notify, Backoff, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = RetryPolicy::builder()
///     .max_retries(2)
///     .backoff(Backoff::constant(Duration::from_millis(1)))
///     .build()
///     .unwrap();
/// let mut seen = Vec::new();
/// let result: Result<(), _> = retry_notify(
///     &policy,
///     || async { Err(std::io::Error::from(std::io::ErrorKind::TimedOut)) },
///     |failure, delay| seen.push((failure.to_string(), delay)),
/// )
/// .await;
/// assert_eq!(result.unwrap_err().attempts(), 3);
/// assert_eq!(seen.len(), 2);
/// # }
/// ```
pub async fn retry_notify<C, F, Fut, T, E, N>(
    policy: &RetryPolicy<C>,
    mut operation: F,
    mut notify: N,
) -> Result<T, RetryError<E>>
where
    C: Classify<E>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: fmt::Display,
    N: FnMut(&Failure<E>, Duration),
{
    let mut attempts = policy.start();
    loop {
        let failure = match attempts.attempt_timeout(policy.plan()) {
            None => match operation().await {
                Ok(value) => return Ok(value),
                Err(e) => Failure::Error(e),
            },
            Some(timeout) => match tokio::time::timeout(timeout, operation()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => Failure::Error(e),
                Err(_) => Failure::TimedOut(timeout),
            },
        };
        let made = attempts.made;
        match attempts.on_failure(
            policy.plan(),
            policy.shared.as_deref(),
            &policy.classifier,
            &failure,
            true,
        ) {
            Decision::Retry(delay) => {
                notify(&failure, delay);
                tokio::time::sleep(delay).await;
            }
            Decision::GiveUp(reason) => return Err(RetryError::new(reason, made, failure)),
        }
    }
}
