//! The tower middleware: [`CircuitBreakerLayer`], [`CircuitBreakerService`] and
//! [`ResponseFuture`], with an optional [`Fallback`].

mod fallback;
mod future;
mod layer;
mod responses;
mod service;

pub use fallback::{Fallback, NoFallback};
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use responses::{AllOk, ClassifyResponse};
pub use service::CircuitBreakerService;
