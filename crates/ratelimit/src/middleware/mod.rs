//! The tower middleware: [`RateLimitLayer`] (one limit for every request) and
//! [`KeyedRateLimitLayer`] (a limit per key taken from the request), each waiting or rejecting.

mod future;
mod layer;
mod service;

pub use future::{KeyedResponseFuture, ResponseFuture};
pub use layer::{KeyedRateLimitLayer, Mode, RateLimitLayer};
pub use service::{KeyedRateLimit, RateLimit};
