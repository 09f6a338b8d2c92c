//! The breaker's state machine, driven by a manual clock: no test sleeps.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::{
    Just, ProptestConfig, Strategy, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use sssonector_breaker::{
    BreakerError, BreakerRegistry, Cause, CircuitBreaker, ConfigError, Outcome, State, Window,
};
use sssonector_core::{ErrorClass, ManualClock};

fn clocked(clock: &ManualClock) -> sssonector_breaker::BreakerBuilder {
    CircuitBreaker::builder().clock(Arc::new(clock.clone()))
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire().expect("admitted").failure();
}

fn succeed(b: &CircuitBreaker) {
    b.try_acquire().expect("admitted").success();
}

#[test]
fn trips_on_consecutive_failures_and_recovers_through_half_open() {
    let clock = ManualClock::new();
    let b = clocked(&clock).build().unwrap();
    for _ in 0..4 {
        fail(&b);
    }
    succeed(&b); // resets the run
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Closed);
    fail(&b);
    assert_eq!(b.state(), State::Open);

    let open = b.try_acquire().unwrap_err();
    assert_eq!(open.retry_after, Some(Duration::from_secs(30)));
    clock.advance(Duration::from_secs(12));
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Some(Duration::from_secs(18))
    );

    clock.advance(Duration::from_secs(18));
    let probe = b.try_acquire().expect("a probe after the open period");
    assert_eq!(b.state(), State::HalfOpen);
    assert!(b.try_acquire().is_err(), "one probe at a time by default");
    probe.success();
    assert_eq!(b.state(), State::HalfOpen, "two successes are needed");
    succeed(&b);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_failed_probe_reopens() {
    let clock = ManualClock::new();
    let b = clocked(&clock).consecutive_failures(1).build().unwrap();
    fail(&b);
    clock.advance(Duration::from_secs(30));
    fail(&b);
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Some(Duration::from_secs(30))
    );
}

#[test]
fn failure_rate_over_a_count_window_waits_for_the_minimum() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .window(Window::Count(10))
        .minimum_calls(6)
        .build()
        .unwrap();
    // 2 successes, then failures: at 3 failures of 5 calls the minimum is not yet reached.
    succeed(&b);
    succeed(&b);
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Closed);
    fail(&b); // 4 of 6
    assert_eq!(b.state(), State::Open);
}

#[test]
fn count_window_forgets_old_outcomes() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(0)
        .failure_rate(0.6)
        .window(Window::Count(5))
        .minimum_calls(5)
        .build()
        .unwrap();
    for _ in 0..2 {
        fail(&b);
    }
    for _ in 0..50 {
        succeed(&b);
    }
    assert_eq!(b.stats().window_failures, 0);
    assert_eq!(b.stats().window_calls, 5);
    for _ in 0..2 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Closed);
    fail(&b); // 3 of the last 5
    assert_eq!(b.state(), State::Open);
}

#[test]
fn time_window_ages_failures_out() {
    let clock = ManualClock::new();
    let b = clocked(&clock)
        .consecutive_failures(0)
        .failure_rate(0.5)
        .window(Window::Time {
            span: Duration::from_secs(10),
            buckets: 10,
        })
        .minimum_calls(4)
        .build()
        .unwrap();
    fail(&b);
    fail(&b);
    fail(&b);
    clock.advance(Duration::from_secs(11));
    // The three failures have left the window: 1 failure in 4 calls is below 50 %.
    succeed(&b);
    succeed(&b);
    succeed(&b);
    fail(&b);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().window_calls, 4);
    fail(&b); // 2 of 5
    assert_eq!(b.state(), State::Closed);
    fail(&b); // 3 of 6
    assert_eq!(b.state(), State::Open);
}

#[test]
fn slow_calls_trip_and_slow_probes_reopen() {
    let clock = ManualClock::new();
    let b = clocked(&clock)
        .consecutive_failures(0)
        .slow_calls(Duration::from_millis(500), 0.5)
        .window(Window::Count(4))
        .minimum_calls(4)
        .success_threshold(1)
        .build()
        .unwrap();
    let slow_success = |b: &CircuitBreaker| {
        let permit = b.try_acquire().unwrap();
        clock.advance(Duration::from_millis(600));
        permit.success();
    };
    succeed(&b);
    succeed(&b);
    slow_success(&b);
    assert_eq!(b.state(), State::Closed);
    slow_success(&b); // 2 slow of 4
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_secs(30));
    slow_success(&b);
    assert_eq!(b.state(), State::Open, "a slow probe means not recovered");
    clock.advance(Duration::from_secs(30));
    succeed(&b);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn ignored_outcomes_count_neither_way() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    fail(&b);
    b.try_acquire()
        .unwrap()
        .record(Outcome::from(ErrorClass::Ignored));
    fail(&b);
    assert_eq!(
        b.state(),
        State::Open,
        "the ignored call did not break the run"
    );
}

#[test]
fn half_open_admits_at_most_the_probe_limit_and_frees_dropped_slots() {
    let clock = ManualClock::new();
    let b = clocked(&clock)
        .consecutive_failures(1)
        .half_open_probes(3)
        .success_threshold(3)
        .build()
        .unwrap();
    fail(&b);
    clock.advance(Duration::from_secs(30));
    let permits: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert!(b.try_acquire().is_err());
    assert_eq!(b.stats().probes_in_flight, 3);
    let mut permits = permits.into_iter();
    drop(permits.next()); // a cancelled probe frees its slot and counts nothing
    assert_eq!(b.stats().probes_in_flight, 2);
    let extra = b.try_acquire().unwrap();
    for p in permits {
        p.success();
    }
    assert_eq!(b.state(), State::HalfOpen);
    extra.success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn open_periods_grow_with_jitter_and_reset_on_close() {
    let clock = ManualClock::new();
    let b = clocked(&clock)
        .consecutive_failures(1)
        .success_threshold(1)
        .open_duration(Duration::from_secs(1))
        .open_backoff(2.0, Duration::from_secs(5))
        .build()
        .unwrap();
    let mut periods = Vec::new();
    fail(&b);
    for _ in 0..5 {
        let wait = b.try_acquire().unwrap_err().retry_after.unwrap();
        periods.push(wait.as_secs());
        clock.advance(wait);
        fail(&b); // the probe fails, reopening with a longer period
    }
    assert_eq!(periods, vec![1, 2, 4, 5, 5]);
    clock.advance(Duration::from_secs(5));
    succeed(&b);
    fail(&b);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Some(Duration::from_secs(1))
    );

    let jittered = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(10))
        .open_jitter(0.2)
        .build()
        .unwrap();
    // Many trips: every period lies within ±20 %, and they are spread, not all equal.
    let mut waits = Vec::new();
    for _ in 0..50 {
        fail(&jittered);
        let wait = jittered.try_acquire().unwrap_err().retry_after.unwrap();
        assert!(
            wait >= Duration::from_secs(8) && wait <= Duration::from_secs(12),
            "{wait:?}"
        );
        waits.push(wait);
        jittered.reset();
    }
    assert!(waits.iter().any(|w| *w < Duration::from_secs(9)));
    assert!(waits.iter().any(|w| *w > Duration::from_secs(11)));
}

#[test]
fn manual_overrides() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    b.force_open();
    assert_eq!(b.state(), State::ForcedOpen);
    assert_eq!(b.try_acquire().unwrap_err().retry_after, None);
    b.force_closed();
    for _ in 0..10 {
        fail(&b);
    }
    assert_eq!(b.state(), State::ForcedClosed);
    b.reset();
    assert_eq!(b.state(), State::Closed);
    fail(&b);
    assert_eq!(b.state(), State::Open);
    b.reset();
    succeed(&b);
}

#[test]
fn state_changes_reach_the_callback_in_order() {
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let b = clocked(&clock)
        .name("events")
        .consecutive_failures(2)
        .success_threshold(1)
        .on_state_change(move |c| {
            assert_eq!(c.breaker, "events");
            s.lock().unwrap().push((c.from, c.to, c.cause));
        })
        .build()
        .unwrap();
    fail(&b);
    fail(&b);
    clock.advance(Duration::from_secs(30));
    succeed(&b);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (State::Closed, State::Open, Cause::ConsecutiveFailures(2)),
            (State::Open, State::HalfOpen, Cause::OpenPeriodEnded),
            (State::HalfOpen, State::Closed, Cause::ProbesSucceeded(1)),
        ]
    );
}

#[test]
fn metrics_show_state_and_outcomes() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let b = metrics::with_local_recorder(&recorder, || {
        CircuitBreaker::builder()
            .name("metered")
            .consecutive_failures(1)
            .build()
            .unwrap()
    });
    succeed(&b);
    fail(&b);
    let _ = b.try_acquire();
    let values: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            (key.key().name().to_string(), labels, value)
        })
        .collect();
    let get = |name: &str, label: &str| {
        values
            .iter()
            .find(|(n, l, _)| n == name && (label.is_empty() || l.iter().any(|x| x == label)))
            .map(|(_, _, v)| v)
    };
    assert_eq!(
        get("sssonector_breaker_state", ""),
        Some(&DebugValue::Gauge(1.0.into()))
    );
    assert_eq!(
        get("sssonector_breaker_calls_total", "outcome=success"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        get("sssonector_breaker_calls_total", "outcome=failure"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        get("sssonector_breaker_calls_total", "outcome=rejected"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        get("sssonector_breaker_transitions_total", "to=open"),
        Some(&DebugValue::Counter(1))
    );
}

#[test]
fn configuration_errors_name_the_setting() {
    let err = |b: sssonector_breaker::BreakerBuilder| b.build().unwrap_err().to_string();
    assert_eq!(
        err(CircuitBreaker::builder().consecutive_failures(0)),
        "no trip condition: set consecutive_failures above 0, a failure_rate or slow_calls"
    );
    assert_eq!(
        err(CircuitBreaker::builder().failure_rate(1.5)),
        "failure_rate must be above 0.0 and at most 1.0, got 1.5"
    );
    assert_eq!(
        err(CircuitBreaker::builder().half_open_probes(0)),
        "half_open_probes must be greater than zero"
    );
    assert_eq!(
        err(CircuitBreaker::builder().open_jitter(-0.1)),
        "open_jitter must be between 0.0 and 1.0, got -0.1"
    );
    assert_eq!(
        err(CircuitBreaker::builder()
            .failure_rate(0.5)
            .window(Window::Count(0))),
        "window must be greater than zero"
    );
    assert!(matches!(
        CircuitBreaker::builder()
            .open_duration(Duration::from_secs(10))
            .open_backoff(2.0, Duration::from_secs(1))
            .build(),
        Err(ConfigError::OpenMaxBelowDuration { .. })
    ));
}

#[test]
fn registry_is_bounded_and_keeps_open_breakers() {
    let registry = BreakerRegistry::new(
        CircuitBreaker::builder()
            .name("pool")
            .consecutive_failures(1),
        3,
    )
    .unwrap();
    let open = registry.get(&"a".to_string());
    fail(&open);
    registry.get(&"b".to_string());
    registry.get(&"c".to_string());
    for i in 0..100 {
        registry.get(&format!("flood-{i}"));
        assert!(registry.len() <= 3);
    }
    // The open breaker was older than every closed one, but closed ones go first.
    let states = registry.states();
    assert!(
        states.contains(&("a".to_string(), State::Open)),
        "{states:?}"
    );
    assert_eq!(registry.get(&"a".to_string()).state(), State::Open);
    assert!(registry.remove(&"a".to_string()).is_some());
    assert!(BreakerRegistry::<String>::new(CircuitBreaker::builder(), 0).is_err());
}

#[tokio::test]
async fn call_runs_nothing_when_open() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let r = b
        .call(|| async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("boom")
        })
        .await;
    assert_eq!(r.unwrap_err().into_inner(), Some("boom"));
    let r = b
        .call(|| async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, &str>(())
        })
        .await;
    assert!(matches!(r, Err(BreakerError::Open(_))));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_honours_the_breakers_retry_after() {
    use sssonector_core::{BoxError, TokioClock};
    use sssonector_retry::{Backoff, RetryPolicy, retry};

    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .success_threshold(1)
        .open_duration(Duration::from_secs(2))
        .clock(Arc::new(TokioClock))
        .build()
        .unwrap();
    let policy = RetryPolicy::builder()
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .build()
        .unwrap();
    let attempts = AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let value = retry(&policy, || async {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        breaker
            .call(|| async move { if n == 0 { Err("refused") } else { Ok(n) } })
            .await
            .map_err(|e| -> BoxError {
                match e {
                    BreakerError::Open(open) => Box::new(open),
                    other => other.to_string().into(),
                }
            })
    })
    .await
    .unwrap();
    // Attempt 0 fails and trips the breaker. Attempt 1, 10 ms later, is rejected with the
    // 1.99 s left of the open period; the retry waits exactly that instead of hammering the
    // open circuit every 10 ms, and attempt 2 is the probe that succeeds.
    assert_eq!(value, 2);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[test]
fn half_open_never_exceeds_the_probe_limit_under_concurrency() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let b = clocked(&clock)
        .consecutive_failures(1)
        .half_open_probes(3)
        .success_threshold(1_000_000)
        .build()
        .unwrap();
    fail(&b);
    clock.advance(Duration::from_secs(30));
    let in_flight = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let admitted = Arc::new(AtomicU32::new(0));
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (b, in_flight, peak, admitted) =
                    (b.clone(), in_flight.clone(), peak.clone(), admitted.clone());
                tokio::spawn(async move {
                    for _ in 0..500 {
                        if let Ok(permit) = b.try_acquire() {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            admitted.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            permit.success();
                        } else {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(
        admitted.load(Ordering::SeqCst) > 3,
        "probes were admitted and released"
    );
    assert_eq!(b.stats().probes_in_flight, 0);
}

#[test]
fn closed_state_counts_are_exact_under_concurrency() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(0)
        .failure_rate(1.0)
        .window(Window::Count(1000))
        .build()
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    let p = b.try_acquire().unwrap();
                    if i % 2 == 0 { p.success() } else { p.failure() }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = b.stats();
    assert_eq!(stats.window_calls, 1000);
    assert_eq!(
        b.state(),
        State::Closed,
        "a 50 % failure rate never reaches 100 %"
    );
}

// ---- Reference model ----

#[derive(Clone, Copy, Debug)]
enum Op {
    Call(Outcome),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Call(Outcome::Success)),
        4 => Just(Op::Call(Outcome::Failure)),
        1 => Just(Op::Call(Outcome::Ignored)),
        2 => (0u64..40).prop_map(Op::Advance),
    ]
}

/// A plain, obviously correct model of a breaker with a consecutive trip and a failure-rate
/// trip over a count window, sequential calls only.
struct Model {
    state: State,
    consecutive: u32,
    window: std::collections::VecDeque<bool>,
    open_until: u64,
    successes: u32,
    now: u64,
    consecutive_limit: u32,
    rate: f64,
    window_size: usize,
    minimum: usize,
    open_secs: u64,
    success_threshold: u32,
}

impl Model {
    /// Returns whether the call was admitted.
    fn call(&mut self, outcome: Outcome) -> bool {
        if self.state == State::Open {
            if self.now < self.open_until {
                return false;
            }
            self.state = State::HalfOpen;
            self.successes = 0;
        }
        match self.state {
            State::HalfOpen => match outcome {
                Outcome::Failure => self.open(),
                Outcome::Success => {
                    self.successes += 1;
                    if self.successes >= self.success_threshold {
                        self.state = State::Closed;
                        self.consecutive = 0;
                        self.window.clear();
                    }
                }
                _ => {}
            },
            State::Closed => {
                if outcome == Outcome::Ignored {
                    return true;
                }
                let failed = outcome == Outcome::Failure;
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                self.window.push_back(failed);
                if self.window.len() > self.window_size {
                    self.window.pop_front();
                }
                let failures = self.window.iter().filter(|f| **f).count();
                let rate_trip = failed
                    && self.window.len() >= self.minimum
                    && failures as f64 / self.window.len() as f64 >= self.rate;
                if (failed && self.consecutive >= self.consecutive_limit) || rate_trip {
                    self.open();
                }
            }
            _ => unreachable!(),
        }
        true
    }

    fn open(&mut self) {
        self.state = State::Open;
        self.open_until = self.now + self.open_secs;
        self.consecutive = 0;
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// The breaker admits and rejects exactly as the model does, and reports the same state.
    #[test]
    fn matches_the_reference_model(
        ops in proptest::collection::vec(op(), 1..300),
        consecutive_limit in 1u32..6,
        rate in 0.2f64..1.0,
        window_size in 1usize..12,
        minimum in 1usize..12,
        open_secs in 1u64..60,
        success_threshold in 1u32..4,
    ) {
        let clock = ManualClock::new();
        let b = clocked(&clock)
            .consecutive_failures(consecutive_limit)
            .failure_rate(rate)
            .window(Window::Count(u32::try_from(window_size).unwrap()))
            .minimum_calls(u32::try_from(minimum).unwrap())
            .open_duration(Duration::from_secs(open_secs))
            .success_threshold(success_threshold)
            .build()
            .unwrap();
        let mut model = Model {
            state: State::Closed,
            consecutive: 0,
            window: Default::default(),
            open_until: 0,
            successes: 0,
            now: 0,
            consecutive_limit,
            rate,
            window_size,
            minimum,
            open_secs,
            success_threshold,
        };
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Advance(secs) => {
                    clock.advance(Duration::from_secs(secs));
                    model.now += secs;
                }
                Op::Call(outcome) => {
                    let expected = model.call(outcome);
                    let actual = match b.try_acquire() {
                        Ok(permit) => { permit.record(outcome); true }
                        Err(_) => false,
                    };
                    prop_assert_eq!(actual, expected, "op {} admission", i);
                    prop_assert_eq!(b.state(), model.state, "op {} state", i);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum ProbeOp {
    Acquire,
    Release(usize),
    Succeed(usize),
    Fail(usize),
    Advance(u64),
}

fn probe_op() -> impl Strategy<Value = ProbeOp> {
    prop_oneof![
        4 => Just(ProbeOp::Acquire),
        2 => (0usize..8).prop_map(ProbeOp::Release),
        2 => (0usize..8).prop_map(ProbeOp::Succeed),
        1 => (0usize..8).prop_map(ProbeOp::Fail),
        1 => (0u64..40).prop_map(ProbeOp::Advance),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever permits are taken, dropped, or recorded, and however time moves, the permits
    /// held from one half-open period never exceed the probe limit.
    #[test]
    fn half_open_never_admits_more_than_its_probe_limit(
        ops in proptest::collection::vec(probe_op(), 1..200),
        limit in 1u32..5,
        threshold in 1u32..6,
    ) {
        let clock = ManualClock::new();
        // Counts half-open periods, so each permit can be tagged with the period it belongs to.
        let periods = Arc::new(AtomicU32::new(0));
        let p = periods.clone();
        let b = clocked(&clock)
            .consecutive_failures(1)
            .half_open_probes(limit)
            .success_threshold(threshold)
            .open_duration(Duration::from_secs(10))
            .on_state_change(move |c| {
                if c.to == State::HalfOpen {
                    p.fetch_add(1, Ordering::SeqCst);
                }
            })
            .build()
            .unwrap();
        fail(&b);
        let mut held: Vec<(u32, sssonector_breaker::Permit)> = Vec::new();
        for op in ops {
            match op {
                ProbeOp::Acquire => {
                    if let Ok(permit) = b.try_acquire() {
                        held.push((periods.load(Ordering::SeqCst), permit));
                    }
                }
                ProbeOp::Release(i) if i < held.len() => drop(held.remove(i)),
                ProbeOp::Succeed(i) if i < held.len() => held.remove(i).1.success(),
                ProbeOp::Fail(i) if i < held.len() => held.remove(i).1.failure(),
                ProbeOp::Advance(secs) => clock.advance(Duration::from_secs(secs)),
                _ => {}
            }
            if b.state() == State::HalfOpen {
                let current = periods.load(Ordering::SeqCst);
                let probes = held
                    .iter()
                    .filter(|(period, p)| *period == current && p.state() == State::HalfOpen)
                    .count();
                prop_assert!(probes <= limit as usize, "{} probes held, limit {}", probes, limit);
                prop_assert_eq!(b.stats().probes_in_flight as usize, probes);
            }
        }
    }
}

/// Proptest settings: `cases` cases, failures saved beside the crate (integration tests have no
/// lib.rs for proptest to find) so they are replayed first on every later run.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/breaker.txt",
            ),
        )),
        ..ProptestConfig::with_cases(cases)
    }
}

#[test]
fn a_probe_that_never_reports_does_not_hold_the_circuit_half_open() {
    let clock = ManualClock::new();
    let b = clocked(&clock)
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(10))
        .half_open_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    fail(&b);
    clock.advance(Duration::from_secs(10));
    // The one probe slot goes to a call that hangs: its permit is never recorded.
    let hung = b.try_acquire().expect("a probe");
    assert_eq!(b.state(), State::HalfOpen);
    clock.advance(Duration::from_secs(4));
    assert!(b.try_acquire().is_err(), "the slot is still taken");
    // Past the half-open wait the circuit opens again, and probes afresh after the open
    // duration; the hung probe's late outcome counts for nothing.
    clock.advance(Duration::from_secs(1));
    let open = b.try_acquire().unwrap_err();
    assert_eq!(b.state(), State::Open);
    assert_eq!(open.retry_after, Some(Duration::from_secs(10)));
    clock.advance(Duration::from_secs(10));
    let probe = b.try_acquire().expect("a fresh probe");
    hung.failure();
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "the stale probe's failure is ignored"
    );
    probe.success();
    succeed(&b);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_large_registry_stays_bounded_across_its_shards_and_keeps_what_is_in_use() {
    let registry = BreakerRegistry::new(
        CircuitBreaker::builder()
            .name("big")
            .consecutive_failures(1),
        20_000,
    )
    .unwrap();
    let open = registry.get(&"tripped".to_string());
    fail(&open);
    let hot = "hot".to_string();
    for i in 0..100_000 {
        registry.get(&format!("flood-{i}"));
        if i % 1000 == 0 {
            // Used all along: never the least recently used.
            registry.get(&hot);
        }
    }
    assert!(registry.len() <= 20_000, "{}", registry.len());
    assert!(
        registry.len() > 18_000,
        "evicting in batches keeps most: {}",
        registry.len()
    );
    let states = registry.states();
    assert!(states.contains(&("tripped".to_string(), State::Open)));
    assert!(states.iter().any(|(k, _)| *k == hot));
}
