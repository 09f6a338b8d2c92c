//! Pacing the bytes of any `AsyncRead + AsyncWrite`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::error::{ConfigError, Rejected};
use crate::limiter::{RateLimiter, Reservation};

/// The largest chunk charged at once: small enough that pacing is smooth (a few milliseconds
/// of rate at tens of Mbit/s), large enough that per-chunk costs stay small.
const MAX_CHUNK: u64 = 64 * 1024;

/// The byte budgets one direction of a stream is charged against, with the protocol overhead
/// to add to each payload byte.
///
/// Budgets nest by sharing: give every connection of a tenant a clone of the tenant's limiter,
/// and every connection the global one, and all of them apply. The overhead (default 5 %)
/// accounts for TCP/IP headers, so a "100 Mbit/s" limit means 100 Mbit/s on the wire: payload is
/// charged `× 1.05`.
///
/// # Examples
///
/// ```
/// use sssonector_ratelimit::{Pacing, Quota, RateLimiter};
///
/// let global = RateLimiter::new(Quota::bits_per_second(1_000_000_000)?);
/// let tenant = RateLimiter::new(Quota::bits_per_second(100_000_000)?);
/// let connection = RateLimiter::new(Quota::bits_per_second(20_000_000)?);
/// let upload = Pacing::new(vec![connection, tenant.clone(), global.clone()])?;
/// # Ok::<(), sssonector_ratelimit::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Pacing {
    budgets: Vec<RateLimiter>,
    overhead: f64,
    chunk: u64,
}

impl Pacing {
    /// Charges every budget in `budgets`, with 5 % overhead.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] for an empty list.
    pub fn new(budgets: Vec<RateLimiter>) -> Result<Self, ConfigError> {
        if budgets.is_empty() {
            return Err(ConfigError::NoQuota);
        }
        let mut pacing = Self {
            budgets,
            overhead: 0.05,
            chunk: 1,
        };
        pacing.chunk = pacing.max_chunk();
        Ok(pacing)
    }

    /// Sets the overhead added to each payload byte (0.05 is 5 %).
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] outside `[0, 1]`.
    pub fn overhead(mut self, overhead: f64) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&overhead) {
            return Err(ConfigError::OutOfRange {
                field: "overhead",
                value: overhead,
                min: 0.0,
                max: 1.0,
            });
        }
        self.overhead = overhead;
        self.chunk = self.max_chunk();
        Ok(self)
    }

    /// The budgets charged.
    pub fn budgets(&self) -> &[RateLimiter] {
        &self.budgets
    }

    /// Bytes charged for `payload` bytes.
    #[inline]
    fn cost(&self, payload: u64) -> u64 {
        #[allow(clippy::cast_possible_truncation, reason = "≤ 2 × MAX_CHUNK")]
        let cost = (payload as f64 * (1.0 + self.overhead)).ceil() as u64;
        cost
    }

    /// The largest payload whose cost fits every budget's burst, capped at [`MAX_CHUNK`].
    fn max_chunk(&self) -> u64 {
        let burst = self
            .budgets
            .iter()
            .flat_map(|b| b.quotas())
            .map(|q| q.burst())
            .min()
            .unwrap_or(1);
        #[allow(clippy::cast_possible_truncation, reason = "≤ MAX_CHUNK")]
        let payload = ((burst.min(MAX_CHUNK * 2) as f64) / (1.0 + self.overhead)).floor() as u64;
        payload.clamp(1, MAX_CHUNK)
    }

    /// Reserves `payload` bytes on every budget; the wait is the longest.
    fn reserve(&self, payload: u64) -> Result<(Vec<Reservation>, Duration), Rejected> {
        let cost = self.cost(payload);
        let mut wait = Duration::ZERO;
        let mut reservations = Vec::with_capacity(self.budgets.len());
        for budget in &self.budgets {
            let r = budget.reserve(cost)?;
            wait = wait.max(r.wait);
            reservations.push(r);
        }
        Ok((reservations, wait))
    }
}

/// One direction's pacing state: bytes paid for and not yet moved, and a pending wait.
struct Pacer {
    pacing: Option<Pacing>,
    prepaid: u64,
    /// Reservations being waited out; refunded if the stream is dropped first.
    pending: Vec<Reservation>,
    pending_bytes: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Pacer {
    fn new(pacing: Option<Pacing>) -> Self {
        Self {
            pacing,
            prepaid: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            sleep: None,
        }
    }

    /// Ready with how many bytes may move now (at most `want`), once they are paid for.
    fn poll_allowance(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let Some(pacing) = &self.pacing else {
            return Poll::Ready(Ok(want));
        };
        loop {
            if self.prepaid > 0 {
                let n = usize::try_from(self.prepaid)
                    .unwrap_or(usize::MAX)
                    .min(want);
                return Poll::Ready(Ok(n));
            }
            if !self.pending.is_empty() {
                if let Some(sleep) = self.sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                }
                for r in self.pending.drain(..) {
                    r.complete();
                }
                self.prepaid = self.pending_bytes;
                continue;
            }
            if want == 0 {
                return Poll::Ready(Ok(0));
            }
            // Charge before moving: at most one chunk, so pacing stays smooth.
            let payload = (want as u64).min(pacing.chunk);
            let (reservations, wait) = pacing
                .reserve(payload)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.pending = reservations;
            self.pending_bytes = payload;
            if !wait.is_zero() {
                let deadline = tokio::time::Instant::now() + wait;
                match self.sleep.as_mut() {
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
            } else if let Some(sleep) = self.sleep.as_mut() {
                sleep.as_mut().reset(tokio::time::Instant::now());
            }
        }
    }

    fn spent(&mut self, n: usize) {
        if self.pacing.is_some() {
            self.prepaid = self.prepaid.saturating_sub(n as u64);
        }
    }
}

pin_project! {
    /// A stream whose reads and writes are paced independently by byte budgets.
    ///
    /// Bytes are charged before they move, one chunk at a time, so traffic is smooth rather
    /// than bursty; reads never take more from the inner stream than was paid for. Waiting
    /// writers and readers are served in arrival order across every stream sharing a budget.
    ///
    /// # Examples
    ///
    /// ```
    /// use sssonector_ratelimit::{PacedStream, Pacing, Quota, RateLimiter};
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Under paused time the limiter reads tokio's clock; in production leave the default.
/// let limiter = RateLimiter::builder().quota(Quota::bytes_per_second(1_000_000)?).tokio_clock().build()?;
/// let upload = Pacing::new(vec![limiter])?.overhead(0.0)?;
    /// let mut stream = PacedStream::new(tokio::io::sink(), None, Some(upload));
    /// let start = tokio::time::Instant::now();
    /// stream.write_all(&vec![0u8; 2_000_000]).await?;
    /// // 2 MB at 1 MB/s, less the 100 ms burst.
    /// assert!(start.elapsed() >= std::time::Duration::from_millis(1_850));
    /// # Ok(()) }
    /// ```
    pub struct PacedStream<S> {
        #[pin]
        inner: S,
        read: Pacer,
        write: Pacer,
    }
}

impl<S> PacedStream<S> {
    /// Wraps `inner`, pacing reads with `read` and writes with `write` (`None` leaves a
    /// direction unpaced).
    pub fn new(inner: S, read: Option<Pacing>, write: Option<Pacing>) -> Self {
        Self {
            inner,
            read: Pacer::new(read),
            write: Pacer::new(write),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream. Bytes paid for and not yet moved are forfeited.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for PacedStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacedStream")
            .field("inner", &self.inner)
            .field("read", &self.read.pacing)
            .field("write", &self.write.pacing)
            .finish()
    }
}

impl<S: AsyncRead> AsyncRead for PacedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let allowed = ready!(this.read.poll_allowance(cx, buf.remaining()))?;
        if allowed == buf.remaining() {
            let before = buf.filled().len();
            ready!(this.inner.poll_read(cx, buf))?;
            this.read.spent(buf.filled().len() - before);
            return Poll::Ready(Ok(()));
        }
        // Read at most what was paid for into the front of the unfilled space.
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(allowed));
        ready!(this.inner.poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.advance(n);
        this.read.spent(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for PacedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let allowed = ready!(this.write.poll_allowance(cx, buf.len()))?;
        let n = ready!(this.inner.poll_write(cx, &buf[..allowed]))?;
        this.write.spent(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
