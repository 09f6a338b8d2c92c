//! `retry` and `retry_notify`, under tokio's paused clock: no test sleeps for real.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::{ProptestConfig, prop_assert, prop_assert_eq, proptest};
use sssonector_core::{BoxError, CircuitOpen, ErrorClass, RateLimited};
use sssonector_retry::{
    Backoff, Failure, GiveUpReason, Jitter, RetryAfterPolicy, RetryBudget, RetryPolicy, retry,
    retry_notify,
};
use tokio::time::Instant;

fn refused() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionRefused)
}

fn constant(ms: u64) -> Backoff {
    Backoff::constant(Duration::from_millis(ms))
}

#[tokio::test(start_paused = true)]
async fn succeeds_after_transient_failures_with_exact_delays() {
    let policy = RetryPolicy::builder()
        .backoff(Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::None))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let value = retry(&policy, || async {
        if calls.fetch_add(1, Ordering::SeqCst) < 3 {
            Err(refused())
        } else {
            Ok("up")
        }
    })
    .await
    .unwrap();
    assert_eq!(value, "up");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // 100 + 200 + 400 ms of backoff, nothing else.
    assert_eq!(start.elapsed(), Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let policy = RetryPolicy::default();
    let calls = AtomicU32::new(0);
    let err = retry(&policy, || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>(io::Error::from(io::ErrorKind::PermissionDenied))
    })
    .await
    .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.reason(), GiveUpReason::Permanent);
    assert_eq!(err.attempts(), 1);
    assert_eq!(
        err.into_error().unwrap().kind(),
        io::ErrorKind::PermissionDenied
    );
}

#[tokio::test(start_paused = true)]
async fn default_policy_makes_four_attempts() {
    let policy = RetryPolicy::default();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = retry(&policy, || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>(refused())
    })
    .await
    .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(err.reason(), GiveUpReason::Exhausted);
    assert_eq!(err.attempts(), 4);
    // Default backoff: 100, 200, 400 ms, each ±20 %.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(560) && waited <= Duration::from_millis(840),
        "{waited:?}"
    );
    assert_eq!(
        err.to_string(),
        "gave up after 4 attempts (attempts exhausted): connection refused"
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_stops_waits_that_would_pass_it() {
    let policy = RetryPolicy::builder()
        .max_retries(100)
        .backoff(constant(300))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = retry(&policy, || async { Err::<(), _>(refused()) })
        .await
        .unwrap_err();
    // Attempts at 0, 300, 600 and 900 ms; a wait to 1200 ms would pass the deadline.
    assert_eq!(err.reason(), GiveUpReason::Deadline);
    assert_eq!(err.attempts(), 4);
    assert_eq!(start.elapsed(), Duration::from_millis(900));
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_an_attempt_in_flight() {
    let policy = RetryPolicy::builder()
        .backoff(constant(10))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = retry(&policy, std::future::pending::<Result<(), io::Error>>)
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.reason(), GiveUpReason::Deadline);
    assert!(matches!(err.last(), Failure::TimedOut(d) if *d == Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_are_transient_and_retried() {
    let policy = RetryPolicy::builder()
        .max_retries(2)
        .backoff(constant(50))
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let value = retry(&policy, || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                std::future::pending::<()>().await;
            }
            Ok::<_, io::Error>(n)
        }
    })
    .await
    .unwrap();
    assert_eq!(value, 2);
    assert_eq!(start.elapsed(), Duration::from_millis(200 + 50 + 200 + 50));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_or_fails_fast() {
    let open = || -> BoxError { Box::new(CircuitOpen::new(Some(Duration::from_secs(2)))) };

    for (policy, expect_wait, expect_ok) in [
        (RetryAfterPolicy::Honor, Some(Duration::from_secs(2)), true),
        (
            RetryAfterPolicy::HonorUpTo(Duration::from_secs(3)),
            Some(Duration::from_secs(2)),
            true,
        ),
        (
            RetryAfterPolicy::Ignore,
            Some(Duration::from_millis(10)),
            true,
        ),
        (
            RetryAfterPolicy::HonorUpTo(Duration::from_secs(1)),
            None,
            false,
        ),
        (RetryAfterPolicy::FailFast, None, false),
    ] {
        let p = RetryPolicy::builder()
            .backoff(constant(10))
            .retry_after(policy)
            .build()
            .unwrap();
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = retry(&p, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(open())
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(result.is_ok(), expect_ok, "{policy:?}");
        match expect_wait {
            Some(wait) => assert_eq!(start.elapsed(), wait, "{policy:?}"),
            None => {
                let err = result.unwrap_err();
                assert_eq!(err.reason(), GiveUpReason::RetryAfter, "{policy:?}");
                assert_eq!(err.attempts(), 1);
                assert!(
                    err.into_error()
                        .unwrap()
                        .downcast_ref::<CircuitOpen>()
                        .is_some()
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_asked_for_past_the_deadline_gives_up_at_once() {
    let policy = RetryPolicy::builder()
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = retry(&policy, || async {
        Err::<(), BoxError>(Box::new(RateLimited::new(Duration::from_secs(5))))
    })
    .await
    .unwrap_err();
    assert_eq!(err.reason(), GiveUpReason::Deadline);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn budget_is_shared_and_counts_retries_waiting_in_backoff() {
    // No floor, one retry per two calls.
    let budget = RetryBudget::new(0.5, 0).unwrap();
    let policy = RetryPolicy::builder()
        .max_retries(10)
        .backoff(constant(100))
        .budget(budget.clone())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    // Ten concurrent calls that always fail: five retries in all, then the budget is empty.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let policy = policy.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                retry(&policy, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Err::<(), _>(refused())
                })
                .await
                .unwrap_err()
            })
        })
        .collect();
    let mut reasons = Vec::new();
    for t in tasks {
        reasons.push(t.await.unwrap().reason());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10 + 5);
    assert!(reasons.iter().all(|r| *r == GiveUpReason::Budget));
    assert_eq!(budget.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn hooks_see_every_retry() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    let policy = RetryPolicy::builder()
        .name("hooked")
        .max_retries(2)
        .backoff(Backoff::exponential(Duration::from_millis(10)).jitter(Jitter::None))
        .on_retry(move |event| {
            assert_eq!(event.policy, "hooked");
            assert_eq!(event.class, ErrorClass::Transient);
            hook_seen
                .lock()
                .unwrap()
                .push((event.attempt, event.delay, event.failure.to_string()));
        })
        .build()
        .unwrap();
    let mut notified = Vec::new();
    let _ = retry_notify(
        &policy,
        || async { Err::<(), _>(refused()) },
        |failure, delay| notified.push((failure.error().map(io::Error::kind), delay)),
    )
    .await;
    let ms = Duration::from_millis;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (1, ms(10), "connection refused".to_string()),
            (2, ms(20), "connection refused".to_string())
        ]
    );
    assert_eq!(
        notified,
        vec![
            (Some(io::ErrorKind::ConnectionRefused), ms(10)),
            (Some(io::ErrorKind::ConnectionRefused), ms(20))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_cancels_the_attempt() {
    struct Guard(Arc<AtomicU32>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicU32::new(0));
    let policy = RetryPolicy::default();
    let d = dropped.clone();
    let outcome = tokio::time::timeout(
        Duration::from_secs(1),
        retry(&policy, move || {
            let guard = Guard(d.clone());
            async move {
                let _guard = guard;
                std::future::pending::<Result<(), io::Error>>().await
            }
        }),
    )
    .await;
    assert!(outcome.is_err());
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn metrics_count_attempts_retries_and_give_ups() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let policy = metrics::with_local_recorder(&recorder, || {
        RetryPolicy::builder()
            .name("metered")
            .max_retries(2)
            .backoff(constant(1))
            .build()
            .unwrap()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = retry(&policy, || async { Err::<(), _>(refused()) }).await;
    });
    let counters: Vec<(String, Vec<String>, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) if n > 0 => Some((
                key.key().name().to_string(),
                key.key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect(),
                n,
            )),
            _ => None,
        })
        .collect();
    let find = |name: &str| counters.iter().find(|c| c.0 == name).cloned();
    assert_eq!(find("sssonector_retry_attempts_total").unwrap().2, 3);
    assert_eq!(find("sssonector_retry_retries_total").unwrap().2, 2);
    let give_up = find("sssonector_retry_give_ups_total").unwrap();
    assert_eq!(give_up.2, 1);
    assert!(give_up.1.contains(&"reason=exhausted".to_string()));
    assert!(give_up.1.contains(&"policy=metered".to_string()));
}

proptest! {
    #![proptest_config(config(64))]

    /// Whatever the outcomes, attempts never exceed max_retries + 1, a success ends the loop,
    /// and the loop stops at the first permanent error.
    #[test]
    fn attempts_never_exceed_the_limit(
        max_retries in 0u32..8,
        outcomes in proptest::collection::vec(0u8..3, 1..20),
        seed: u64,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let policy = RetryPolicy::builder()
            .max_retries(max_retries)
            .seed(seed)
            .build()
            .unwrap();
        let calls = AtomicU32::new(0);
        let result = rt.block_on(retry(&policy, || {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            let outcome = outcomes.get(n).copied().unwrap_or(0);
            async move {
                match outcome {
                    0 => Err(refused()),
                    1 => Err(io::Error::from(io::ErrorKind::InvalidInput)),
                    _ => Ok(n),
                }
            }
        }));
        let made = calls.load(Ordering::SeqCst);
        prop_assert!(made <= max_retries + 1);
        // The expected run: stop at the first success or permanent error, or at the limit.
        let mut expected = 0;
        for i in 0..=(max_retries as usize) {
            expected += 1;
            match outcomes.get(i).copied().unwrap_or(0) {
                0 => continue,
                _ => break,
            }
        }
        prop_assert_eq!(made, expected);
        if let Err(e) = result {
            prop_assert_eq!(e.attempts(), made);
        }
    }
}

/// Proptest settings: `cases` cases, failures saved beside the crate (integration tests have no
/// lib.rs for proptest to find) so they are replayed first on every later run.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/retry_fn.txt",
            ),
        )),
        ..ProptestConfig::with_cases(cases)
    }
}
