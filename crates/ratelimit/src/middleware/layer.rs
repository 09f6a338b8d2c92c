use std::fmt;

use tower_layer::Layer;

use crate::keyed::KeyedLimiter;
use crate::limiter::RateLimiter;
use crate::middleware::service::{KeyedRateLimit, RateLimit};

/// What a rate-limit layer does with a request over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Wait until it is admitted (backpressure). Waiters are served in arrival order.
    Wait,
    /// Fail it at once with [`RateLimited`](crate::RateLimited), which carries `retry_after`.
    Reject,
}

/// Limits the requests of the wrapped service with one [`RateLimiter`].
///
/// Clones of the layer, and the services it makes, share the limiter. In [`Mode::Wait`] the
/// service is not ready until a request is admitted (like `tower::limit::RateLimit`, but with
/// bursts, stacked quotas and fair order); in [`Mode::Reject`] it is always ready and over-limit
/// calls fail with [`RateLimited`](crate::RateLimited) without reaching the inner service.
///
/// # Examples
///
/// ```
/// use sssonector_ratelimit::{Mode, Quota, RateLimitLayer, RateLimited, RateLimiter};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), sssonector_ratelimit::BoxError> {
/// let limiter = RateLimiter::builder().quota(Quota::per_second(10)?.with_burst(1)?).tokio_clock().build()?;
/// let mut svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(limiter, Mode::Reject))
///     .service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
/// assert_eq!(svc.ready().await?.call(1).await?, 1);
/// let err = svc.ready().await?.call(2).await.unwrap_err();
/// assert!(err.downcast_ref::<RateLimited>().is_some());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    mode: Mode,
}

impl RateLimitLayer {
    /// A layer applying `limiter` in `mode`.
    pub fn new(limiter: RateLimiter, mode: Mode) -> Self {
        Self { limiter, mode }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limiter.clone(), self.mode)
    }
}

/// Limits requests per key, the key taken from each request by `extract` (a client address, an
/// API key, a tenant).
///
/// In [`Mode::Wait`] an over-limit request waits in its future, then calls the inner service
/// (which must be `Clone`); in [`Mode::Reject`] it fails with
/// [`RateLimited`](crate::RateLimited).
///
/// # Examples
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use sssonector_ratelimit::{IpGrouping, KeyedLimiter, KeyedRateLimitLayer, Mode, Quota};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), sssonector_ratelimit::BoxError> {
/// let per_ip = KeyedLimiter::<IpAddr>::builder().quota(Quota::per_second(1)?.with_burst(1)?).tokio_clock().build()?;
/// let group = IpGrouping::default();
/// let mut svc = ServiceBuilder::new()
///     .layer(KeyedRateLimitLayer::new(per_ip, move |peer: &SocketAddr| group.key(peer.ip()), Mode::Reject))
///     .service_fn(|peer: SocketAddr| async move { Ok::<_, std::io::Error>(peer.port()) });
/// let a: SocketAddr = "192.0.2.1:1000".parse()?;
/// let b: SocketAddr = "192.0.2.2:1000".parse()?;
/// assert!(svc.ready().await?.call(a).await.is_ok());
/// assert!(svc.ready().await?.call(a).await.is_err());
/// assert!(svc.ready().await?.call(b).await.is_ok());
/// # Ok(()) }
/// ```
pub struct KeyedRateLimitLayer<K, F> {
    limiter: KeyedLimiter<K>,
    extract: F,
    mode: Mode,
}

impl<K, F> KeyedRateLimitLayer<K, F> {
    /// A layer limiting by the key `extract` takes from each request.
    pub fn new(limiter: KeyedLimiter<K>, extract: F, mode: Mode) -> Self {
        Self {
            limiter,
            extract,
            mode,
        }
    }
}

impl<K, F: Clone> Clone for KeyedRateLimitLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            extract: self.extract.clone(),
            mode: self.mode,
        }
    }
}

impl<K, F> fmt::Debug for KeyedRateLimitLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone> Layer<S> for KeyedRateLimitLayer<K, F> {
    type Service = KeyedRateLimit<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit::new(inner, self.limiter.clone(), self.extract.clone(), self.mode)
    }
}
