use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use sssonector_core::{BoxError, Classify};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::error::{AttemptTimedOut, Failure};
use crate::policy::{Attempts, Decision, RetryPolicy};

pin_project! {
    /// The response future of [`Retry`](crate::Retry).
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        request: Req,
        policy: RetryPolicy<C>,
        attempts: Attempts,
        // One timer, boxed at most once per call and reset for each use: it times the attempt
        // in flight (when a timeout applies) and then the backoff wait.
        sleep: Option<Pin<Box<Sleep>>>,
        attempt_timeout: Option<std::time::Duration>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Waiting,
        Readying,
    }
}

impl<S, Req, C> ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        service: S,
        request: Req,
        policy: RetryPolicy<C>,
        attempts: Attempts,
    ) -> Self {
        let attempt_timeout = attempts.attempt_timeout(&policy.shared);
        let sleep = attempt_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        Self {
            state: State::Calling { future },
            service,
            request,
            policy,
            attempts,
            sleep,
            attempt_timeout,
        }
    }
}

fn arm(sleep: &mut Option<Pin<Box<Sleep>>>, after: std::time::Duration) {
    let deadline = Instant::now() + after;
    match sleep {
        Some(s) => s.as_mut().reset(deadline),
        None => *sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + fmt::Display,
    C: Classify<S::Error>,
    Req: Clone,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let failure = match future.poll(cx) {
                        Poll::Ready(Ok(response)) => return Poll::Ready(Ok(response)),
                        Poll::Ready(Err(e)) => Failure::Error(e),
                        Poll::Pending => match (*this.attempt_timeout, this.sleep.as_mut()) {
                            (Some(timeout), Some(sleep)) => {
                                ready!(sleep.as_mut().poll(cx));
                                Failure::TimedOut(timeout)
                            }
                            _ => return Poll::Pending,
                        },
                    };
                    match this.attempts.on_failure(this.policy, &failure) {
                        Decision::Retry(delay) => {
                            arm(this.sleep, delay);
                            this.state.set(State::Waiting);
                        }
                        Decision::GiveUp(_) => {
                            return Poll::Ready(Err(match failure {
                                Failure::Error(e) => e.into(),
                                Failure::TimedOut(timeout) => Box::new(AttemptTimedOut { timeout }),
                            }));
                        }
                    }
                }
                StateProj::Waiting => {
                    if let Some(sleep) = this.sleep.as_mut() {
                        ready!(sleep.as_mut().poll(cx));
                    }
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
                    let future = this.service.call(this.request.clone());
                    *this.attempt_timeout = this.attempts.attempt_timeout(&this.policy.shared);
                    if let Some(timeout) = *this.attempt_timeout {
                        arm(this.sleep, timeout);
                    }
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

impl<S, Req, C> fmt::Debug for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts.made)
            .finish_non_exhaustive()
    }
}
