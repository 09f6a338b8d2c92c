use std::fmt;
use std::task::{Context, Poll};

use sssonector_core::{BoxError, Classify};
use tower_service::Service;

use crate::middleware::future::ResponseFuture;
use crate::policy::RetryPolicy;

/// A service that retries failed requests; made by [`RetryLayer`](crate::RetryLayer).
#[derive(Clone, Debug)]
pub struct Retry<S, C> {
    inner: S,
    policy: RetryPolicy<C>,
}

impl<S, C> Retry<S, C> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: RetryPolicy<C>) -> Self {
        Self { inner, policy }
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

impl<S, C, Req> Service<Req> for Retry<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + fmt::Display,
    C: Classify<S::Error> + Clone,
    Req: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

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
        let future = ready.call(request.clone());
        ResponseFuture::new(future, ready, request, &self.policy)
    }
}
