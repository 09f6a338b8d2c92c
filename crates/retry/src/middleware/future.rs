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
use crate::middleware::requests::{CloneAll, CloneRequest};
use crate::middleware::responses::{AcceptAll, ClassifyResponse, ResponseVerdict};
use crate::plan::Plan;
use crate::policy::{Attempts, Decision, RetryPolicy, Shared, resolve_plan};

pin_project! {
    /// The response future of [`Retry`](crate::Retry).
    pub struct ResponseFuture<S, Req, C, Q = CloneAll, R = AcceptAll>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        // The copy the next attempt sends; `None` when the request could not be copied.
        spare: Option<Req>,
        classifier: C,
        requests: Q,
        responses: R,
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

/// How an attempt ended when it did not simply succeed.
enum Ended<T, E> {
    Failed(Failure<E>),
    /// A response its classifier asked to retry, with the wait it asked for.
    Refused(T, Option<Duration>),
}

impl<S, Req, C, Q, R> ResponseFuture<S, Req, C, Q, R>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn new(
        future: S::Future,
        service: S,
        spare: Option<Req>,
        policy: &RetryPolicy<C>,
        requests: Q,
        responses: R,
    ) -> Self
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
            spare,
            classifier: policy.classifier.clone(),
            requests,
            responses,
            plan: policy.interned_plan(),
            extras: Extras {
                shared: policy.shared.clone(),
                retrying,
            },
        }
    }
}

impl<S, Req, C, Q, R> Future for ResponseFuture<S, Req, C, Q, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + fmt::Display,
    C: Classify<S::Error>,
    Q: CloneRequest<Req>,
    R: ClassifyResponse<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let ended = match future.poll(cx) {
                        Poll::Ready(Ok(response)) => match this.responses.verdict(&response) {
                            ResponseVerdict::Accept => return Poll::Ready(Ok(response)),
                            ResponseVerdict::Retry => Ended::Refused(response, None),
                            ResponseVerdict::RetryAfter(wait) => {
                                Ended::Refused(response, Some(wait))
                            }
                        },
                        Poll::Ready(Err(e)) => Ended::Failed(Failure::Error(e)),
                        Poll::Pending => match this.extras.retrying.as_mut() {
                            Some(r) => match (r.attempt_timeout, r.sleep.as_mut()) {
                                (Some(timeout), Some(sleep)) => {
                                    ready!(sleep.as_mut().poll(cx));
                                    Ended::Failed(Failure::TimedOut(timeout))
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
                    let repeatable = this.spare.is_some();
                    let decision = match &ended {
                        Ended::Failed(failure) => retrying.attempts.on_failure(
                            plan,
                            shared,
                            &*this.classifier,
                            failure,
                            repeatable,
                        ),
                        Ended::Refused(_, wait) => retrying
                            .attempts
                            .on_response(plan, shared, *wait, repeatable),
                    };
                    match (decision, ended) {
                        (Decision::Retry(delay), _) => {
                            retrying.arm(delay);
                            this.state.set(State::Waiting);
                        }
                        // The last response is what the service said: the caller gets it.
                        (Decision::GiveUp(_), Ended::Refused(response, _)) => {
                            return Poll::Ready(Ok(response));
                        }
                        (Decision::GiveUp(_), Ended::Failed(failure)) => {
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
                    let request = this
                        .spare
                        .take()
                        .expect("a retry is decided only when a copy of the request is kept");
                    *this.spare = this.requests.clone_request(&request);
                    let future = this.service.call(request);
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

impl<S, Req, C, Q, R> fmt::Debug for ResponseFuture<S, Req, C, Q, R>
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
