//! State kept in Redis and shared by several servers: keyed limits ([`RedisLimiter`]) and
//! blocks that escalate after repeated strikes ([`RedisBlocklist`]).
//!
//! Both run server-side Lua scripts on Redis's own clock (`TIME`), so servers whose clocks
//! differ still agree, and both talk to Redis through a [`RedisStore`]: one multiplexed,
//! pipelined connection from the `redis` crate that reconnects by itself, with a deadline on
//! every command. A store names its Redis by URL — `redis://[user:password@]host[:port][/db]`,
//! or `rediss://` for TLS — so AUTH (including ACL users), SELECT and host names work as
//! they do in every other Redis client.

mod blocklist;
mod limiter;
mod store;

pub use blocklist::{Block, BlockWatch, RedisBlocklist, RedisBlocklistBuilder, Strike};
pub use limiter::{RedisLimiter, RedisLimiterBuilder};
pub use store::{RedisStore, RedisStoreBuilder, StoreError};

use std::time::Duration;

/// What to do when Redis cannot be reached or answers with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit the request: availability over strictness.
    Open,
    /// Refuse the request as if limited, asking the caller to retry after the given time.
    Closed(Duration),
}
