//! The tower middleware: [`RetryLayer`], [`Retry`] and [`ResponseFuture`].

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use service::Retry;
