//! Size-classed byte buffers under a global byte budget, returned to the pool on drop.
//!
//! A [`BufPool`] hands out [`PooledBuf`]s: empty buffers with the capacity of the smallest
//! size class that fits the request, used as [`BytesMut`](bytes::BytesMut). Dropping one
//! returns it to the pool; so does freezing it into [`Bytes`](bytes::Bytes) and dropping the
//! last clone. Every buffer the pool owns, idle or handed out, counts against one byte
//! budget that is never exceeded: [`BufPool::try_get`] refuses with
//! [`GetError::BudgetExhausted`] and [`BufPool::get`] waits until memory comes back.
//!
//! - Fast path: a per-thread cache in front of lock-free shared queues; a get and a drop on
//!   one thread take no lock and no atomic read-modify-write.
//! - Trimming: [`BufPool::trim`] (or the [`BufPool::maintenance`] task) frees idle buffers
//!   that stayed unused for a whole period, above a low watermark. Buffers that grew past
//!   their class are freed on return.
//! - Monitoring: [`BufPool::stats`] and the `metrics` facade (hits, misses, pooled and
//!   outstanding bytes, waits, rejections), and [`BufPool::assert_no_outstanding`] for leak
//!   checks in tests.
//!
//! # Example
//!
//! ```
//! use bytes::BufMut;
//! use sssonector_bufpool::BufPool;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = BufPool::builder()
//!     .classes([2048, 16 * 1024, 64 * 1024])
//!     .budget(1 << 20)
//!     .build()?;
//!
//! let mut packet = pool.get(1500).await?; // waits if the budget is used up
//! assert_eq!(packet.capacity(), 2048);
//! packet.put_slice(b"an IP packet");
//! let frame = packet.freeze();            // zero-copy `Bytes`
//! drop(frame);                            // ...and the buffer is back in the pool
//!
//! let stats = pool.stats();
//! assert_eq!(stats.outstanding, 0);
//! assert_eq!(stats.pooled_bytes, 2048);
//! # Ok(())
//! # }
//! ```

mod buf;
mod class;
mod config;
mod error;
mod local;
mod pool;
mod stats;

pub use buf::PooledBuf;
pub use config::{BufPoolBuilder, DEFAULT_CLASSES};
pub use error::{ConfigError, GetError};
pub use pool::BufPool;
pub use stats::Stats;
