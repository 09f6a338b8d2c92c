//! Limiter behaviour under a manual clock or tokio's paused time: no test sleeps for real.

mod common;
use common::tokio_limiter;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::{ProptestConfig, Strategy, prop_assert, proptest};
use sssonector_core::ManualClock;
use sssonector_ratelimit::{AdaptiveRate, ConfigError, KeyedLimiter, Quota, RateLimiter, Rejected};

fn manual(quotas: &[Quota]) -> (RateLimiter, ManualClock) {
    let clock = ManualClock::new();
    let mut b = RateLimiter::builder().clock(Arc::new(clock.clone()));
    for q in quotas {
        b = b.quota(*q);
    }
    (b.build().unwrap(), clock)
}

#[test]
fn stacked_quotas_admit_all_or_charge_none() {
    // 10/s bursting 5, and 12 per minute bursting 12.
    let per_sec = Quota::per_second(10).unwrap().with_burst(5).unwrap();
    let per_min = Quota::per_minute(12).unwrap().with_burst(12).unwrap();
    let (l, clock) = manual(&[per_sec, per_min]);
    for _ in 0..5 {
        l.check().unwrap();
    }
    // The per-second quota refuses; the per-minute one must not have been charged for it.
    let denied = l.check().unwrap_err();
    assert_eq!(denied.retry_after, Duration::from_millis(100));
    clock.advance(Duration::from_secs(1));
    for _ in 0..5 {
        l.check().unwrap();
    }
    clock.advance(Duration::from_secs(1));
    l.check().unwrap();
    l.check().unwrap();
    // 12 admitted in 2 s: the per-minute quota (one unit per 5 s, burst 12) is full until a
    // unit's worth of time has passed since its 60 s of credit were spent: at 5 s.
    let denied = l.check().unwrap_err();
    assert_eq!(denied.retry_after, Duration::from_secs(3), "{denied:?}");
    assert_eq!(denied.remaining, 0);
}

#[test]
fn weighted_costs_and_insufficient_capacity() {
    let (l, _clock) = manual(&[Quota::per_second(100).unwrap().with_burst(10).unwrap()]);
    assert_eq!(l.check_n(7).unwrap().remaining(), 3);
    match l.check_n(4).unwrap_err() {
        Rejected::Limited(limited) => assert_eq!(limited.remaining, 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        l.check_n(11).unwrap_err(),
        Rejected::InsufficientCapacity {
            requested: 11,
            burst: 10
        }
    );
    assert_eq!(
        l.check_n(11).unwrap_err().to_string(),
        "a cost of 11 can never be admitted: the burst is 10"
    );
}

#[test]
fn rate_changes_keep_the_debt() {
    let (l, clock) = manual(&[Quota::per_second(10).unwrap().with_burst(1).unwrap()]);
    l.check().unwrap();
    assert!(l.check().is_err());
    // Ten times faster: the one unit owed now costs 10 ms instead of 100 ms.
    l.set_quota(0, Quota::per_second(100).unwrap().with_burst(1).unwrap())
        .unwrap();
    let denied = l.check().unwrap_err();
    assert_eq!(denied.retry_after, Duration::from_millis(10));
    clock.advance(Duration::from_millis(10));
    l.check().unwrap();
    assert_eq!(
        l.set_quota(3, Quota::per_second(1).unwrap()),
        Err(ConfigError::NoQuota)
    );
}

#[test]
fn adaptive_rate_stays_between_floor_and_ceiling() {
    let (l, _clock) = manual(&[Quota::per_second(500).unwrap()]);
    let mut control = AdaptiveRate::new(l.clone(), 100.0, 1000.0).unwrap();
    for _ in 0..50 {
        control.observe(1.0);
    }
    assert_eq!(control.rate(), 100.0);
    assert!((l.quotas()[0].per_second_f64() - 100.0).abs() < 0.01);
    for _ in 0..50 {
        control.observe(0.0);
    }
    assert_eq!(control.rate(), 1000.0);
    assert!(AdaptiveRate::new(l, 10.0, 5.0).is_err());
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    let limiter = tokio_limiter(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    limiter.check().unwrap();
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (l, order) = (limiter.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            l.until_ready().await;
            order.lock().push((i, tokio::time::Instant::now()));
        }));
        // Let the task start waiting before the next one is spawned.
        tokio::task::yield_now().await;
    }
    // A plain check cannot jump the queue.
    assert!(limiter.check().is_err());
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock();
    let ids: Vec<_> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    // One every 100 ms.
    for pair in order.windows(2) {
        assert_eq!(pair[1].1 - pair[0].1, Duration::from_millis(100));
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_gives_its_place_back() {
    let limiter = tokio_limiter(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    limiter.check().unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(10), limiter.until_ready()).await;
    assert!(waited.is_err());
    // The abandoned reservation was refunded: the next unit is 90 ms away, not 190 ms.
    let denied = limiter.check().unwrap_err();
    assert_eq!(denied.retry_after, Duration::from_millis(90));
    assert!(matches!(
        limiter.until_n_ready(2).await,
        Err(Rejected::InsufficientCapacity { .. })
    ));
}

/// A keyed limiter of `u32` keys on `clock`.
fn keyed_on(
    clock: &ManualClock,
    quota: Quota,
    max_keys: usize,
    shards: usize,
) -> KeyedLimiter<u32> {
    KeyedLimiter::builder()
        .quota(quota)
        .max_keys(max_keys)
        .shards(shards)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

#[test]
fn keyed_limits_are_independent_and_the_cap_holds() {
    let clock = ManualClock::new();
    let l = keyed_on(
        &clock,
        Quota::per_second(1).unwrap().with_burst(1).unwrap(),
        100,
        4,
    );
    l.check_key(&1).unwrap();
    assert!(l.check_key(&1).is_err());
    l.check_key(&2).unwrap();
    for k in 0..10_000 {
        let _ = l.check_key(&k);
        assert!(l.len() <= 100);
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(l.retain_recent(), l.max_keys().min(100));
    assert_eq!(l.len(), 0);
}

/// When every tracked key is still limited, a flood of new keys evicts those closest to full
/// capacity: a key that used its whole burst keeps its state (and stays limited) through a
/// flood of keys that each used one unit.
#[test]
fn a_flood_evicts_the_keys_closest_to_full_capacity() {
    let clock = ManualClock::new();
    let l = keyed_on(
        &clock,
        Quota::per_hour(10).unwrap().with_burst(10).unwrap(),
        64,
        1,
    );
    for _ in 0..10 {
        l.check_key(&0).unwrap();
    }
    assert!(l.check_key(&0).is_err());
    for k in 1..10_000 {
        clock.advance(Duration::from_millis(1));
        l.check_key(&k).unwrap();
        assert!(l.len() <= 64);
    }
    assert!(
        l.check_key(&0).is_err(),
        "the most limited key was evicted and started afresh"
    );
    assert_eq!(l.remaining(&0), 0);
}

#[test]
fn metrics_count_admitted_and_limited() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let l = metrics::with_local_recorder(&recorder, || {
        RateLimiter::builder()
            .name("api")
            .quota(Quota::per_second(1).unwrap().with_burst(1).unwrap())
            .build()
            .unwrap()
    });
    l.check().unwrap();
    let _ = l.check();
    let _ = l.check();
    let counters: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(k, _, _, v)| match v {
            DebugValue::Counter(n) => Some((k.key().name().to_string(), n)),
            _ => None,
        })
        .collect();
    assert!(counters.contains(&("sssonector_ratelimit_admitted_total".into(), 1)));
    assert!(counters.contains(&("sssonector_ratelimit_limited_total".into(), 2)));
}

/// Runs `(advance ms, cost, key)` operations against a keyed limiter with `cap` keys over
/// `shards` shards, checking after each that tracked keys stay within the cap and, when
/// `exact`, that every key's admitted units stay within rate × elapsed + burst.
fn run_keyed(
    ops: &[(u64, u64, u32)],
    rate: u64,
    burst: u64,
    cap: usize,
    shards: usize,
    exact: bool,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let clock = ManualClock::new();
    let l = keyed_on(
        &clock,
        Quota::per_second(rate).unwrap().with_burst(burst).unwrap(),
        cap,
        shards,
    );
    let mut admitted = std::collections::HashMap::<u32, u64>::new();
    let mut elapsed_ms = 0u64;
    for &(advance, cost, key) in ops {
        clock.advance(Duration::from_millis(advance));
        elapsed_ms += advance;
        if l.check_key_n(&key, cost).is_ok() {
            *admitted.entry(key).or_default() += cost;
        }
        prop_assert!(l.len() <= cap, "{} keys tracked, cap {}", l.len(), cap);
        if exact {
            let bound = rate as f64 * elapsed_ms as f64 / 1000.0 + burst as f64;
            for (k, n) in &admitted {
                prop_assert!(
                    *n as f64 <= bound + 1e-9,
                    "key {} admitted {} > {}",
                    k,
                    n,
                    bound
                );
            }
        }
    }
    Ok(())
}

/// Operations: advance the clock by some milliseconds, then ask for some units.
fn ops() -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((0u64..300, 1u64..6), 1..300)
}

proptest! {
    #![proptest_config(config(128))]

    /// Over any request sequence, each quota admits at most rate × elapsed + burst.
    #[test]
    fn never_admits_more_than_rate_times_elapsed_plus_burst(
        ops in ops(),
        rate in 1u64..200,
        burst in 5u64..50,
        rate2 in 1u64..50,
        burst2 in 5u64..100,
        stacked: bool,
    ) {
        let q1 = Quota::per_second(rate).unwrap().with_burst(burst).unwrap();
        let q2 = Quota::per_second(rate2).unwrap().with_burst(burst2).unwrap();
        let quotas: Vec<Quota> = if stacked { vec![q1, q2] } else { vec![q1] };
        let (l, clock) = manual(&quotas);
        let mut admitted = 0u64;
        let mut elapsed_ms = 0u64;
        for (advance, cost) in ops {
            clock.advance(Duration::from_millis(advance));
            elapsed_ms += advance;
            if l.check_n(cost).is_ok() {
                admitted += cost;
            }
            for q in &quotas {
                let bound = q.count() as f64 * elapsed_ms as f64 / 1000.0 + q.burst() as f64;
                prop_assert!(admitted as f64 <= bound + 1e-9, "admitted {} > bound {} for {:?}", admitted, bound, q);
            }
        }
    }

    /// Under a flood of keys larger than the cap, tracked keys never exceed it. (Eviction may
    /// drop the least limited key's state, so the per-key bound is checked below, with room.)
    #[test]
    fn keyed_cap_holds_under_a_flood(
        ops in proptest::collection::vec((0u64..300, 1u64..4, 0u32..40), 1..300),
        rate in 1u64..100,
        burst in 3u64..20,
        cap in 1usize..30,
    ) {
        run_keyed(&ops, rate, burst, cap, 4, false)?;
    }

    /// With room for every key, no state is ever lost: the per-key bound holds exactly.
    #[test]
    fn keyed_bound_without_eviction(
        ops in proptest::collection::vec((0u64..300, 1u64..4, 0u32..8), 1..300),
        rate in 1u64..100,
        burst in 3u64..20,
    ) {
        run_keyed(&ops, rate, burst, 64, 1, true)?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_never_exceed_the_burst() {
    // A limiter that refills once an hour: whatever the interleaving, exactly the burst passes.
    let limiter = tokio_limiter(Quota::per_hour(1).unwrap().with_burst(1000).unwrap());
    let admitted = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (l, admitted) = (limiter.clone(), admitted.clone());
            tokio::spawn(async move {
                for _ in 0..1000 {
                    if l.check().is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 1000);
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/limiter.txt",
            ),
        )),
        ..ProptestConfig::with_cases(cases)
    }
}
