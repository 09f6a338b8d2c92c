//! Pooled, health-checked connections to one or more endpoints, with failover.
//!
//! A [`Pool`] keeps connections made by your [`Manager`] to a list of endpoints, under one
//! global size limit. [`Pool::get`] hands out an idle connection or opens a new one, spreading
//! new connections over endpoints by a [`Balance`] strategy; a connect that fails moves on to
//! the next endpoint, and each endpoint has a circuit breaker that ejects it after repeated
//! failures and lets a probe through later. When the pool is full, callers wait in a
//! first-come, first-served queue with a deadline, and a caller whose turn comes because a
//! connect failed tries to connect itself, so it gets the real error, not a timeout.
//!
//! [`Pool::maintenance`] keeps a minimum of warm connections per endpoint, closes idle and
//! old ones (lifetimes carry jitter, so they do not all expire at once), runs periodic health
//! checks and publishes metrics.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use sssonector_connpool::{Balance, Manager, Pool};
//!
//! /// Connections are just numbers here; a real manager opens sockets.
//! struct Counter;
//!
//! impl Manager for Counter {
//!     type Endpoint = &'static str;
//!     type Connection = String;
//!     type Error = Infallible;
//!
//!     async fn connect(&self, endpoint: &&'static str) -> Result<String, Infallible> {
//!         Ok(format!("connection to {endpoint}"))
//!     }
//!
//!     async fn check(&self, _: &mut String) -> Result<(), Infallible> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder(Counter)
//!     .endpoint("a.example:443")
//!     .endpoint("b.example:443")
//!     .max_size(8)
//!     .balance(Balance::LeastConnections)
//!     .checkout_timeout(Duration::from_secs(2))
//!     .build()?;
//! tokio::spawn(pool.maintenance(Duration::from_secs(1)));
//!
//! let first = pool.get().await?;
//! let second = pool.get().await?;
//! assert_ne!(first.endpoint(), second.endpoint()); // spread over both
//! drop(first);                                      // back to the pool
//! assert_eq!(pool.stats().idle, 1);
//! # Ok(())
//! # }
//! ```

mod balance;
mod config;
mod conn;
mod error;
mod lock;
mod manager;
mod pool;
mod service;
mod stats;

pub use balance::Balance;
pub use config::PoolBuilder;
pub use conn::Pooled;
pub use error::{ConfigError, PoolError};
pub use manager::Manager;
pub use pool::Pool;
pub use service::GetFuture;
pub use sssonector_breaker::State as BreakerState;
pub use stats::{EndpointStats, Stats};
