use tower_layer::Layer;

use crate::middleware::requests::CloneAll;
use crate::middleware::responses::AcceptAll;
use crate::middleware::service::Retry;
use crate::policy::RetryPolicy;

/// Retries failed requests of the wrapped service according to a [`RetryPolicy`].
///
/// Each retry sends a copy of the request: by default a clone (`Req: Clone`); with
/// [`requests`](Self::requests) a [`CloneRequest`](crate::CloneRequest) may copy some requests
/// and decline others, whose failure is then final. By default a response (`Ok`) is final;
/// with [`responses`](Self::responses) a [`ClassifyResponse`](crate::ClassifyResponse) can ask
/// for another attempt (an HTTP 503). The inner service must be `Clone` (retries call a clone
/// that is polled ready first). Clones of the layer, and of the services
/// it makes, share the policy's budget and metrics.
///
/// The response error is a `BoxError`: the inner service's error, boxed unchanged, so callers
/// downcast to their own types as without the layer; or
/// [`AttemptTimedOut`](crate::AttemptTimedOut) when the last attempt timed out.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_retry::{Backoff, RetryLayer, RetryPolicy};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = RetryPolicy::builder()
///     .backoff(Backoff::constant(Duration::from_millis(1)))
///     .build()
///     .unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(RetryLayer::new(policy))
///     .service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) });
/// assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer<C, Q = CloneAll, R = AcceptAll> {
    policy: RetryPolicy<C>,
    requests: Q,
    responses: R,
}

impl<C> RetryLayer<C> {
    /// A layer applying `policy`.
    pub fn new(policy: RetryPolicy<C>) -> Self {
        Self {
            policy,
            requests: CloneAll,
            responses: AcceptAll,
        }
    }
}

impl<C, Q, R> RetryLayer<C, Q, R> {
    /// Copies requests for retries with `requests` (a [`CloneRequest`](crate::CloneRequest),
    /// such as a closure `Fn(&Req) -> Option<Req>`), which may decline requests that cannot be
    /// repeated: those are sent once.
    ///
    /// ```
    /// use sssonector_retry::{RetryLayer, RetryPolicy};
    ///
    /// /// A request whose body is either in memory or a stream that can be read only once.
    /// enum Body { Full(Vec<u8>), Stream(std::fs::File) }
    ///
    /// let layer = RetryLayer::new(RetryPolicy::default()).requests(|body: &Body| match body {
    ///     Body::Full(bytes) => Some(Body::Full(bytes.clone())),
    ///     Body::Stream(_) => None,
    /// });
    /// # drop(layer);
    /// ```
    pub fn requests<Q2>(self, requests: Q2) -> RetryLayer<C, Q2, R> {
        RetryLayer {
            policy: self.policy,
            requests,
            responses: self.responses,
        }
    }

    /// Judges responses with `responses` (a [`ClassifyResponse`](crate::ClassifyResponse), such
    /// as a closure `Fn(&Res) -> ResponseVerdict`): a response judged retryable is dropped and
    /// the request sent again under the policy's limits; when the policy gives up, the last
    /// response is returned.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sssonector_retry::{ResponseVerdict, RetryLayer, RetryPolicy};
    ///
    /// struct Reply { status: u16, retry_after: Option<Duration> }
    ///
    /// let layer = RetryLayer::new(RetryPolicy::default()).responses(|reply: &Reply| {
    ///     match (reply.status, reply.retry_after) {
    ///         (503, Some(wait)) => ResponseVerdict::RetryAfter(wait),
    ///         (502 | 503 | 504, _) => ResponseVerdict::Retry,
    ///         _ => ResponseVerdict::Accept,
    ///     }
    /// });
    /// # drop(layer);
    /// ```
    pub fn responses<R2>(self, responses: R2) -> RetryLayer<C, Q, R2> {
        RetryLayer {
            policy: self.policy,
            requests: self.requests,
            responses,
        }
    }
}

impl<S, C: Clone, Q: Clone, R: Clone> Layer<S> for RetryLayer<C, Q, R> {
    type Service = Retry<S, C, Q, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy.clone())
            .with_requests(self.requests.clone())
            .with_responses(self.responses.clone())
    }
}
