use sssonector_core::AnyError;
use tower_layer::Layer;

use crate::breaker::CircuitBreaker;
use crate::middleware::fallback::NoFallback;
use crate::middleware::responses::AllOk;
use crate::middleware::service::CircuitBreakerService;

/// Guards the wrapped service with a [`CircuitBreaker`].
///
/// Clones of the layer, and every service it makes, share the one breaker, so a whole pool of
/// connections to one endpoint trips together.
///
/// Admission is decided in `poll_ready`: a rejected call still reports ready, and `call` then
/// returns [`CircuitOpen`](sssonector_core::CircuitOpen) (or the fallback's answer) without
/// touching the inner service. The error type is `BoxError`; the inner service's errors pass
/// through boxed but unchanged.
///
/// # Examples
///
/// ```
/// use sssonector_breaker::{CircuitBreaker, CircuitBreakerLayer};
/// use sssonector_core::{BoxError, CircuitOpen};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::builder().consecutive_failures(2).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) });
///
/// for _ in 0..2 {
///     let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
///     assert_eq!(err.to_string(), "down");
/// }
/// let err: BoxError = svc.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(err.downcast_ref::<CircuitOpen>().is_some());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = AnyError, F = NoFallback, R = AllOk> {
    breaker: CircuitBreaker,
    classifier: C,
    fallback: F,
    responses: R,
}

impl CircuitBreakerLayer {
    /// A layer counting every error of the inner service as a failure, with no fallback.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: AnyError,
            fallback: NoFallback,
            responses: AllOk,
        }
    }
}

impl<C, F, R> CircuitBreakerLayer<C, F, R> {
    /// Uses `classifier` to decide which errors count as failures.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2, F, R> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
            fallback: self.fallback,
            responses: self.responses,
        }
    }

    /// Answers rejected requests with `fallback` instead of an error.
    pub fn fallback<F2>(self, fallback: F2) -> CircuitBreakerLayer<C, F2, R> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier: self.classifier,
            fallback,
            responses: self.responses,
        }
    }

    /// Uses `responses` (a [`ClassifyResponse`](crate::ClassifyResponse), such as a closure
    /// `Fn(&Response) -> Outcome`) to decide how successful responses count: an HTTP 503 can
    /// be a failure. By default every response is a success.
    pub fn responses<R2>(self, responses: R2) -> CircuitBreakerLayer<C, F, R2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier: self.classifier,
            fallback: self.fallback,
            responses,
        }
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C: Clone, F: Clone, R: Clone> Layer<S> for CircuitBreakerLayer<C, F, R> {
    type Service = CircuitBreakerService<S, C, F, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(
            inner,
            self.breaker.clone(),
            self.classifier.clone(),
            self.fallback.clone(),
        )
        .with_responses(self.responses.clone())
    }
}
