use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use sssonector_core::{BoxError, RateLimited};
use tokio::time::Sleep;
use tower_service::Service;

use crate::keyed::KeyedLimiter;

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { limited: Option<RateLimited> },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn called(future: F) -> Self {
        Self {
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn rejected(limited: RateLimited) -> Self {
        Self {
            kind: Kind::Rejected {
                limited: Some(limited),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Rejected { limited } => Poll::Ready(Err(Box::new(
                limited
                    .take()
                    .expect("ResponseFuture polled after it completed"),
            ))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`KeyedRateLimit`](crate::KeyedRateLimit).
    pub struct KeyedResponseFuture<S, Req, K>
    where
        S: Service<Req>,
    {
        #[pin]
        state: KeyedState<S, S::Future, Req, K>,
    }
}

pin_project! {
    #[project = KeyedProj]
    enum KeyedState<S, F, Req, K> {
        Called { #[pin] future: F },
        Rejected { limited: Option<RateLimited> },
        Waiting {
            #[pin]
            sleep: Sleep,
            waiting: Option<Waiting<S, Req, K>>,
        },
    }
}

struct Waiting<S, Req, K> {
    service: S,
    request: Req,
    limiter: KeyedLimiter<K>,
    key: K,
}

impl<S, Req, K> KeyedResponseFuture<S, Req, K>
where
    S: Service<Req>,
{
    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            state: KeyedState::Called { future },
        }
    }

    pub(crate) fn rejected(limited: RateLimited) -> Self {
        Self {
            state: KeyedState::Rejected {
                limited: Some(limited),
            },
        }
    }

    pub(crate) fn waiting(
        service: S,
        request: Req,
        limiter: KeyedLimiter<K>,
        key: K,
        wait: Duration,
    ) -> Self {
        Self {
            state: KeyedState::Waiting {
                sleep: tokio::time::sleep(wait),
                waiting: Some(Waiting {
                    service,
                    request,
                    limiter,
                    key,
                }),
            },
        }
    }
}

impl<S, Req, K> Future for KeyedResponseFuture<S, Req, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                KeyedProj::Called { future } => return future.poll(cx).map_err(Into::into),
                KeyedProj::Rejected { limited } => {
                    return Poll::Ready(Err(Box::new(
                        limited
                            .take()
                            .expect("KeyedResponseFuture polled after it completed"),
                    )));
                }
                KeyedProj::Waiting { mut sleep, waiting } => {
                    ready!(sleep.as_mut().poll(cx));
                    let w = waiting.as_mut().expect("waiting state holds the request");
                    match w.limiter.check_key(&w.key) {
                        Err(limited) => {
                            // Another request of the same key got there first: wait again.
                            sleep.reset(tokio::time::Instant::now() + limited.retry_after);
                        }
                        Ok(_) => {
                            let Waiting {
                                mut service,
                                request,
                                ..
                            } = waiting.take().expect("waiting state holds the request");
                            // The service was polled ready before `call` moved it here.
                            let future = service.call(request);
                            this.state.set(KeyedState::Called { future });
                        }
                    }
                }
            }
        }
    }
}

impl<S, Req, K> fmt::Debug for KeyedResponseFuture<S, Req, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedResponseFuture")
            .finish_non_exhaustive()
    }
}
