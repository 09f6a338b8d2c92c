use std::fmt;
use std::task::{Context, Poll};

use sssonector_core::{BoxError, CircuitOpen, Classify};
use tower_service::Service;

use crate::breaker::{CircuitBreaker, Permit};
use crate::middleware::fallback::Fallback;
use crate::middleware::future::ResponseFuture;
use crate::middleware::responses::{AllOk, ClassifyResponse};

/// A service guarded by a circuit breaker; made by
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
pub struct CircuitBreakerService<S, C, F, R = AllOk> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
    fallback: F,
    responses: R,
    /// What `poll_ready` decided for the next call.
    admission: Admission,
}

enum Admission {
    Undecided,
    Admitted(Permit),
    Rejected(CircuitOpen),
}

impl<S, C, F> CircuitBreakerService<S, C, F> {
    /// Wraps `inner`; every response counts as a success.
    pub fn new(inner: S, breaker: CircuitBreaker, classifier: C, fallback: F) -> Self {
        Self {
            inner,
            breaker,
            classifier,
            fallback,
            responses: AllOk,
            admission: Admission::Undecided,
        }
    }
}

impl<S, C, F, R> CircuitBreakerService<S, C, F, R> {
    /// Decides how responses count with `responses` instead.
    pub fn with_responses<R2>(self, responses: R2) -> CircuitBreakerService<S, C, F, R2> {
        CircuitBreakerService {
            inner: self.inner,
            breaker: self.breaker,
            classifier: self.classifier,
            fallback: self.fallback,
            responses,
            admission: self.admission,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

// A clone starts undecided: a permit (a half-open probe slot, perhaps) belongs to the service
// that was polled ready, never to its copies.
impl<S: Clone, C: Clone, F: Clone, R: Clone> Clone for CircuitBreakerService<S, C, F, R> {
    fn clone(&self) -> Self {
        CircuitBreakerService::new(
            self.inner.clone(),
            self.breaker.clone(),
            self.classifier.clone(),
            self.fallback.clone(),
        )
        .with_responses(self.responses.clone())
    }
}

impl<S: fmt::Debug, C: fmt::Debug, F, R> fmt::Debug for CircuitBreakerService<S, C, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<S, C, F, R, Req> Service<Req> for CircuitBreakerService<S, C, F, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Error> + Clone,
    F: Fallback<Req, S::Response>,
    R: ClassifyResponse<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, S::Response, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Admission::Undecided = self.admission {
            self.admission = match self.breaker.try_acquire() {
                Ok(permit) => Admission::Admitted(permit),
                Err(open) => Admission::Rejected(open),
            };
        }
        match self.admission {
            // The call will be answered without the inner service.
            Admission::Rejected(_) => Poll::Ready(Ok(())),
            _ => match self.inner.poll_ready(cx) {
                Poll::Ready(Err(e)) => {
                    // The inner service failed; the permit is dropped uncounted.
                    self.admission = Admission::Undecided;
                    Poll::Ready(Err(e.into()))
                }
                other => other.map_err(Into::into),
            },
        }
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match std::mem::replace(&mut self.admission, Admission::Undecided) {
            Admission::Admitted(mut permit) => {
                // Admitted in `poll_ready`; the call's time starts now.
                permit.start_clock();
                ResponseFuture::called(
                    self.inner.call(request),
                    permit,
                    self.classifier.clone(),
                    self.responses.clone(),
                )
            }
            Admission::Rejected(open) => {
                ResponseFuture::rejected(self.fallback.fallback(request, open))
            }
            Admission::Undecided => {
                panic!(
                    "CircuitBreakerService::call was called before poll_ready returned Ready(Ok)"
                )
            }
        }
    }
}
