//! Injectable time sources.
//!
//! Every time-based decision in the workspace (backoff, windows, open durations, expiry) reads
//! the time through [`Clock`], so tests drive it by hand with [`ManualClock`] (or tokio's paused
//! time through `TokioClock`) and run in microseconds without sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of monotonic time.
///
/// Implementations must never go backwards. They are shared between threads, so they are
/// `Send + Sync`.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// A clock shared by reference counting, the form the crates store.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's monotonic clock ([`Instant::now`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Tokio's clock ([`tokio::time::Instant::now`]).
///
/// Under `tokio::time::pause` it advances only when the runtime auto-advances or a test calls
/// `tokio::time::advance`, so logic that also sleeps on tokio timers stays consistent with it.
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokioClock;

#[cfg(feature = "tokio")]
impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now() - start, Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    origin: Instant,
    offset_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at the current real instant, which it never leaves on its own.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_nanos
            .fetch_add(duration_to_nanos(by), Ordering::SeqCst);
    }

    /// How far the clock has been advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.origin + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

/// A clock with a fixed origin, reading time as whole nanoseconds since that origin.
///
/// Times as `u64` fit in atomics, which is how lock-free state (open-until deadlines, window
/// buckets) stores them. 2^64 nanoseconds is about 584 years, so the count does not overflow.
#[derive(Clone, Debug)]
pub struct Timeline {
    source: Source,
    origin: Instant,
}

#[derive(Clone, Debug)]
enum Source {
    Clock(SharedClock),
    #[cfg(feature = "quanta")]
    Fast {
        clock: quanta::Clock,
        origin: u64,
    },
}

impl Timeline {
    /// A timeline whose origin is `clock`'s current instant.
    pub fn new(clock: SharedClock) -> Self {
        let origin = clock.now();
        Self {
            source: Source::Clock(clock),
            origin,
        }
    }

    /// A timeline on the processor's time-stamp counter (through `quanta`), which reads in a
    /// few nanoseconds where [`Instant::now`] takes 20 or more. It follows real time only: tests
    /// that pause tokio's clock use [`Timeline::new`] with `TokioClock` instead.
    #[cfg(feature = "quanta")]
    pub fn fast() -> Self {
        let clock = quanta::Clock::new();
        let raw = clock.raw();
        Self {
            origin: Instant::now(),
            source: Source::Fast { clock, origin: raw },
        }
    }

    /// Nanoseconds since the origin.
    #[inline]
    pub fn now_nanos(&self) -> u64 {
        match &self.source {
            Source::Clock(clock) => {
                duration_to_nanos(clock.now().saturating_duration_since(self.origin))
            }
            #[cfg(feature = "quanta")]
            Source::Fast { clock, origin } => clock.delta_as_nanos(*origin, clock.raw()),
        }
    }

    /// The instant `nanos` after the origin.
    pub fn instant_at(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

/// Converts a duration to nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        let t0 = a.now();
        b.advance(Duration::from_millis(250));
        assert_eq!(a.now() - t0, Duration::from_millis(250));
        assert_eq!(a.elapsed(), Duration::from_millis(250));
    }

    #[test]
    fn timeline_counts_from_its_origin() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        let timeline = Timeline::new(Arc::new(clock.clone()));
        assert_eq!(timeline.now_nanos(), 0);
        clock.advance(Duration::from_micros(7));
        assert_eq!(timeline.now_nanos(), 7_000);
        assert_eq!(timeline.instant_at(7_000), clock.now());
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let t0 = TokioClock.now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(TokioClock.now() - t0, Duration::from_secs(3));
    }

    #[test]
    fn saturating_conversion() {
        assert_eq!(duration_to_nanos(Duration::MAX), u64::MAX);
        assert_eq!(duration_to_nanos(Duration::from_nanos(12)), 12);
    }
}
