//! The pool as a tower service: a connector in a stack.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::conn::Pooled;
use crate::error::PoolError;
use crate::manager::Manager;
use crate::pool::Pool;

/// The future of [`Pool`]'s `Service::call`.
pub type GetFuture<M> =
    Pin<Box<dyn Future<Output = Result<Pooled<M>, PoolError<<M as Manager>::Error>>> + Send>>;

/// A pool is a service from `()` to a pooled connection, so it can sit at the bottom of a
/// tower stack (with timeouts, retries or a breaker above it). It is always ready: waiting
/// for a connection happens in the future, bounded by the checkout timeout.
impl<M: Manager> tower_service::Service<()> for Pool<M> {
    type Response = Pooled<M>;
    type Error = PoolError<M::Error>;
    type Future = GetFuture<M>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let pool = self.clone();
        Box::pin(async move { pool.get().await })
    }
}
