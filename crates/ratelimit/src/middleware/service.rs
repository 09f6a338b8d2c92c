use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use sssonector_core::{BoxError, RateLimited};
use tokio::time::Sleep;
use tower_service::Service;

use crate::keyed::KeyedLimiter;
use crate::limiter::{RateLimiter, Reservation};
use crate::middleware::future::{KeyedResponseFuture, ResponseFuture};
use crate::middleware::layer::Mode;

/// A service limited by one [`RateLimiter`]; made by
/// [`RateLimitLayer`](crate::RateLimitLayer).
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
    mode: Mode,
    admission: Admission,
}

enum Admission {
    Undecided,
    /// A reservation being waited out (wait mode).
    Waiting(Reservation, Pin<Box<Sleep>>),
    Admitted(Option<Reservation>),
    Rejected(RateLimited),
}

impl<S> RateLimit<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limiter: RateLimiter, mode: Mode) -> Self {
        Self {
            inner,
            limiter,
            mode,
            admission: Admission::Undecided,
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

// A clone starts undecided: an admission (or a place in the queue) belongs to the service that
// was polled ready. Dropping a waiting reservation refunds it.
impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.limiter.clone(), self.mode)
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.admission {
                Admission::Undecided => {
                    self.admission = match self.mode {
                        Mode::Reject => match self.limiter.check() {
                            Ok(_) => Admission::Admitted(None),
                            Err(limited) => Admission::Rejected(limited),
                        },
                        Mode::Wait => {
                            let reservation = self.limiter.reserve(1)?;
                            if reservation.wait.is_zero() {
                                Admission::Admitted(Some(reservation))
                            } else {
                                let sleep = Box::pin(tokio::time::sleep(reservation.wait));
                                Admission::Waiting(reservation, sleep)
                            }
                        }
                    };
                }
                Admission::Waiting(_, sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    let Admission::Waiting(reservation, _) =
                        std::mem::replace(&mut self.admission, Admission::Undecided)
                    else {
                        unreachable!("matched Waiting above")
                    };
                    self.admission = Admission::Admitted(Some(reservation));
                }
                Admission::Rejected(_) => return Poll::Ready(Ok(())),
                Admission::Admitted(_) => return self.inner.poll_ready(cx).map_err(Into::into),
            }
        }
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match std::mem::replace(&mut self.admission, Admission::Undecided) {
            Admission::Admitted(reservation) => {
                if let Some(r) = reservation {
                    r.complete();
                }
                ResponseFuture::called(self.inner.call(request))
            }
            Admission::Rejected(limited) => ResponseFuture::rejected(limited),
            Admission::Undecided | Admission::Waiting(..) => {
                panic!("RateLimit::call was called before poll_ready returned Ready(Ok)")
            }
        }
    }
}

/// A service limited per key; made by [`KeyedRateLimitLayer`](crate::KeyedRateLimitLayer).
pub struct KeyedRateLimit<S, K, F> {
    inner: S,
    limiter: KeyedLimiter<K>,
    extract: F,
    mode: Mode,
}

impl<S, K, F> KeyedRateLimit<S, K, F> {
    /// Wraps `inner`.
    pub fn new(inner: S, limiter: KeyedLimiter<K>, extract: F, mode: Mode) -> Self {
        Self {
            inner,
            limiter,
            extract,
            mode,
        }
    }
}

impl<S: Clone, K, F: Clone> Clone for KeyedRateLimit<S, K, F> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.limiter.clone(),
            self.extract.clone(),
            self.mode,
        )
    }
}

impl<S: fmt::Debug, K, F> fmt::Debug for KeyedRateLimit<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, Req> Service<Req> for KeyedRateLimit<S, K, F>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = KeyedResponseFuture<S, Req, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.extract)(&request);
        match self.limiter.check_key(&key) {
            Ok(_) => KeyedResponseFuture::called(self.inner.call(request)),
            Err(limited) => match self.mode {
                Mode::Reject => KeyedResponseFuture::rejected(limited),
                Mode::Wait => {
                    // The ready service goes with the waiting request; a clone stays behind.
                    let clone = self.inner.clone();
                    let ready = std::mem::replace(&mut self.inner, clone);
                    KeyedResponseFuture::waiting(
                        ready,
                        request,
                        self.limiter.clone(),
                        key,
                        limited.retry_after,
                    )
                }
            },
        }
    }
}
