use std::fmt;
use std::task::{Context, Poll};

use sssonector_core::{BoxError, Classify};
use tower_service::Service;

use crate::middleware::future::ResponseFuture;
use crate::middleware::requests::{CloneAll, CloneRequest};
use crate::middleware::responses::{AcceptAll, ClassifyResponse};
use crate::policy::RetryPolicy;

/// A service that retries failed requests; made by [`RetryLayer`](crate::RetryLayer).
#[derive(Clone, Debug)]
pub struct Retry<S, C, Q = CloneAll, R = AcceptAll> {
    inner: S,
    policy: RetryPolicy<C>,
    requests: Q,
    responses: R,
}

impl<S, C> Retry<S, C> {
    /// Wraps `inner` with `policy`; requests are cloned for retries and every response is final.
    pub fn new(inner: S, policy: RetryPolicy<C>) -> Self {
        Self {
            inner,
            policy,
            requests: CloneAll,
            responses: AcceptAll,
        }
    }
}

impl<S, C, Q, R> Retry<S, C, Q, R> {
    /// Copies requests for retries with `requests` instead (see [`CloneRequest`]).
    pub fn with_requests<Q2>(self, requests: Q2) -> Retry<S, C, Q2, R> {
        Retry {
            inner: self.inner,
            policy: self.policy,
            requests,
            responses: self.responses,
        }
    }

    /// Judges responses with `responses` instead (see [`ClassifyResponse`]).
    pub fn with_responses<R2>(self, responses: R2) -> Retry<S, C, Q, R2> {
        Retry {
            inner: self.inner,
            policy: self.policy,
            requests: self.requests,
            responses,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy<C> {
        &self.policy
    }
}

impl<S, C, Q, R, Req> Service<Req> for Retry<S, C, Q, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + fmt::Display,
    C: Classify<S::Error> + Clone,
    Q: CloneRequest<Req> + Clone,
    R: ClassifyResponse<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, Q, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        // The service that was polled ready goes into the future; the clone stays behind and
        // is polled ready before it is called.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        self.policy.begin();
        let spare = self.requests.clone_request(&request);
        let future = ready.call(request);
        ResponseFuture::new(
            future,
            ready,
            spare,
            &self.policy,
            self.requests.clone(),
            self.responses.clone(),
        )
    }
}
