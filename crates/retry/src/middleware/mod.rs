//! The tower middleware: [`RetryLayer`], [`Retry`] and [`ResponseFuture`], with the policies
//! for requests ([`CloneRequest`]) and responses ([`ClassifyResponse`]).

mod future;
mod layer;
mod requests;
mod responses;
mod service;

pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use requests::{CloneAll, CloneRequest};
pub use responses::{AcceptAll, ClassifyResponse, ResponseVerdict};
pub use service::Retry;
