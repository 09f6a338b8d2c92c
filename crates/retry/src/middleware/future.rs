use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use sssonector_core::{BoxError, Classify};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::error::{AttemptTimedOut, Failure};
use crate::plan::Plan;
use crate::policy::{Attempts, Decision, RetryPolicy, Shared, resolve_plan};

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
        classifier: C,
        plan: &'static Plan,
        extras: Extras,
    }
}

/// What only some calls need, kept in one field whose drop is a single branch when empty.
///
/// A call under an unnamed policy with no budget, hook or timeout that succeeds at once touches
/// neither: no shared memory, no allocation, and (measured) no out-of-line drop call, which is
/// what keeps the layer's overhead at `tower::retry`'s.
struct Extras {
    /// The policy's shared state (name, metrics, budget, hook, seeded jitter), if it has any.
    shared: Option<Arc<Shared>>,
    /// Retry bookkeeping, allocated when the first attempt fails, or at the start when a
    /// deadline or attempt timeout must be timed.
    retrying: Option<Box<Retrying>>,
}

impl Drop for Extras {
    #[inline]
    fn drop(&mut self) {
        if self.shared.is_some() || self.retrying.is_some() {
            drop_extras(self.shared.take(), self.retrying.take());
        }
    }
}

#[inline(never)]
fn drop_extras(shared: Option<Arc<Shared>>, retrying: Option<Box<Retrying>>) {
    drop((shared, retrying));
}

struct Retrying {
    attempts: Attempts,
    // One timer, reset for each use: it times the attempt in flight (when a timeout applies)
    // and then the backoff wait.
    sleep: Option<Pin<Box<Sleep>>>,
    attempt_timeout: Option<Duration>,
}

impl Retrying {
    fn new(attempts: Attempts, timeout: Option<Duration>) -> Box<Self> {
        let mut retrying = Box::new(Retrying {
            attempts,
            sleep: None,
            attempt_timeout: None,
        });
        retrying.time_attempt(timeout);
        retrying
    }

    /// Arms the timer for the attempt starting now, if it has a timeout.
    fn time_attempt(&mut self, timeout: Option<Duration>) {
        self.attempt_timeout = timeout;
        if let Some(timeout) = timeout {
            self.arm(timeout);
        }
    }

    fn arm(&mut self, after: Duration) {
        let deadline = Instant::now() + after;
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
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
    #[inline]
    pub(crate) fn new(future: S::Future, service: S, request: Req, policy: &RetryPolicy<C>) -> Self
    where
        C: Clone,
    {
        let retrying = policy.is_timed().then(|| {
            let attempts = Attempts::new(policy.plan());
            let timeout = attempts.attempt_timeout(policy.plan());
            Retrying::new(attempts, timeout)
        });
        Self {
            state: State::Calling { future },
            service,
            request,
            classifier: policy.classifier.clone(),
            plan: policy.interned_plan(),
            extras: Extras {
                shared: policy.shared.clone(),
                retrying,
            },
        }
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let failure = match future.poll(cx) {
                        Poll::Ready(Ok(response)) => return Poll::Ready(Ok(response)),
                        Poll::Ready(Err(e)) => Failure::Error(e),
                        Poll::Pending => match this.extras.retrying.as_mut() {
                            Some(r) => match (r.attempt_timeout, r.sleep.as_mut()) {
                                (Some(timeout), Some(sleep)) => {
                                    ready!(sleep.as_mut().poll(cx));
                                    Failure::TimedOut(timeout)
                                }
                                _ => return Poll::Pending,
                            },
                            None => return Poll::Pending,
                        },
                    };
                    let shared = this.extras.shared.as_deref();
                    let plan = resolve_plan(this.plan, shared);
                    let retrying = this
                        .extras
                        .retrying
                        .get_or_insert_with(|| Retrying::new(Attempts::new(plan), None));
                    match retrying
                        .attempts
                        .on_failure(plan, shared, &*this.classifier, &failure)
                    {
                        Decision::Retry(delay) => {
                            retrying.arm(delay);
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
                    if let Some(sleep) =
                        this.extras.retrying.as_mut().and_then(|r| r.sleep.as_mut())
                    {
                        ready!(sleep.as_mut().poll(cx));
                    }
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
                    let future = this.service.call(this.request.clone());
                    let plan = resolve_plan(this.plan, this.extras.shared.as_deref());
                    if let Some(retrying) = this.extras.retrying.as_mut() {
                        let timeout = retrying.attempts.attempt_timeout(plan);
                        retrying.time_attempt(timeout);
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
            .field(
                "attempts",
                &self.extras.retrying.as_ref().map_or(1, |r| r.attempts.made),
            )
            .finish_non_exhaustive()
    }
}
