use tower_layer::Layer;

use crate::middleware::service::Retry;
use crate::policy::RetryPolicy;

/// Retries failed requests of the wrapped service according to a [`RetryPolicy`].
///
/// Requests must be `Clone` (each attempt sends a clone) and the inner service must be `Clone`
/// (retries call a clone that is polled ready first). Clones of the layer, and of the services
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
pub struct RetryLayer<C> {
    policy: RetryPolicy<C>,
}

impl<C> RetryLayer<C> {
    /// A layer applying `policy`.
    pub fn new(policy: RetryPolicy<C>) -> Self {
        Self { policy }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy.clone())
    }
}
