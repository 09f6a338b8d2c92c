use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use sssonector_core::{BoxError, Classify};

use crate::breaker::{Outcome, Permit};
use crate::middleware::responses::{AllOk, ClassifyResponse};

pin_project! {
    /// The response future of [`CircuitBreakerService`](crate::CircuitBreakerService).
    ///
    /// Dropping it before completion counts nothing and frees a half-open probe slot.
    pub struct ResponseFuture<Fut, C, Res, R = AllOk> {
        #[pin]
        kind: Kind<Fut, Res>,
        permit: Option<Permit>,
        classifier: Option<(C, R)>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<Fut, Res> {
        Called { #[pin] future: Fut },
        Rejected { result: Option<Result<Res, BoxError>> },
    }
}

impl<Fut, C, Res, R> ResponseFuture<Fut, C, Res, R> {
    #[inline]
    pub(crate) fn called(future: Fut, permit: Permit, classifier: C, responses: R) -> Self {
        Self {
            kind: Kind::Called { future },
            permit: Some(permit),
            classifier: Some((classifier, responses)),
        }
    }

    pub(crate) fn rejected(result: Result<Res, BoxError>) -> Self {
        Self {
            kind: Kind::Rejected {
                result: Some(result),
            },
            permit: None,
            classifier: None,
        }
    }
}

impl<Fut, C, Res, E, R> Future for ResponseFuture<Fut, C, Res, R>
where
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<E>,
    R: ClassifyResponse<Res>,
{
    type Output = Result<Res, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = this.permit.take() {
                    match &result {
                        Ok(response) => permit.record(
                            this.classifier
                                .as_ref()
                                .map_or(Outcome::Success, |(_, r)| r.outcome(response)),
                        ),
                        Err(e) => {
                            let class = this
                                .classifier
                                .as_ref()
                                .map(|(c, _)| c.classify(e))
                                .unwrap_or(sssonector_core::ErrorClass::Transient);
                            permit.record(Outcome::from(class));
                        }
                    }
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { result } => Poll::Ready(
                result
                    .take()
                    .expect("ResponseFuture polled after it completed"),
            ),
        }
    }
}

impl<Fut, C, Res, R> fmt::Debug for ResponseFuture<Fut, C, Res, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("admitted", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
