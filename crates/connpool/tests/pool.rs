//! Checkout, return, waiting, failing fast, failover, breakers, lifetimes and closing, under
//! tokio's paused clock with a manager that injects faults.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Behaviour, Faulty};
use sssonector_connpool::{Balance, BreakerState, ConfigError, Pool, PoolError};
use tokio::time::{advance, sleep};

fn pool(manager: &Faulty, endpoints: usize, max_size: usize) -> Pool<Faulty> {
    let mut builder = Pool::builder(manager.clone())
        .max_size(max_size)
        .checkout_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1));
    for i in 0..endpoints {
        builder = builder.endpoint(i);
    }
    builder.build().unwrap()
}

/// Lets spawned tasks run until they block.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_returned_connection_is_reused() {
    let manager = Faulty::new(1);
    let pool = pool(&manager, 1, 4);
    let conn = pool.get().await.unwrap();
    assert_eq!(conn.endpoint(), 0);
    drop(conn);
    let again = pool.get().await.unwrap();
    drop(again);
    let stats = pool.stats();
    assert_eq!(
        (stats.connects, stats.idle, stats.in_use, stats.size),
        (1, 1, 0, 1)
    );
    assert_eq!(manager.attempts(0), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    let manager = Faulty::new(1);
    let pool = pool(&manager, 1, 1);
    let held = pool.get().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for id in 0..3 {
        let (pool, tx) = (pool.clone(), tx.clone());
        tokio::spawn(async move {
            let conn = pool.get().await.unwrap();
            tx.send(id).unwrap();
            sleep(Duration::from_millis(10)).await;
            drop(conn);
        });
        settle().await; // queue them in order
    }
    assert_eq!(pool.stats().waiters, 3);
    drop(held);
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(rx.recv().await.unwrap());
    }
    assert_eq!(order, [0, 1, 2]);
    assert_eq!(manager.attempts(0), 1, "one connection served everyone");
}

#[tokio::test(start_paused = true)]
async fn a_full_pool_times_out_and_leaves_no_waiter_behind() {
    let manager = Faulty::new(1);
    let pool = pool(&manager, 1, 1);
    let _held = pool.get().await.unwrap();
    let err = pool.get().await.unwrap_err();
    assert!(
        matches!(err, PoolError::Timeout(d) if d == Duration::from_secs(5)),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "no connection became free within the checkout timeout of 5s"
    );
    let stats = pool.stats();
    assert_eq!((stats.waiters, stats.timeouts, stats.waits), (0, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failed_connect_reports_the_real_error_at_once() {
    let manager = Faulty::new(1);
    manager.set(0, Behaviour::Refuse);
    let pool = pool(&manager, 1, 2);
    let started = tokio::time::Instant::now();
    let err = pool.get().await.unwrap_err();
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no waiting for a timeout"
    );
    assert_eq!(
        err.to_string(),
        "connecting to endpoint 0 failed: endpoint 0 refused"
    );
    assert_eq!(
        pool.stats().size,
        0,
        "the failed connect gave its place back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_turn_comes_by_a_failure_gets_the_failure() {
    let manager = Faulty::new(1);
    let pool = pool(&manager, 1, 1);
    let held = pool.get().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await })
    };
    settle().await;
    manager.set(0, Behaviour::Refuse);
    held.discard(); // its place goes to the waiter, which connects itself
    let err = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(err, PoolError::Connect { endpoint: 0, .. }),
        "{err}"
    );
    let stats = pool.stats();
    assert_eq!((stats.size, stats.waiters, stats.timeouts), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_fails_over_to_the_next() {
    let manager = Faulty::new(2);
    manager.set(0, Behaviour::Refuse);
    let pool = pool(&manager, 2, 4);
    let conn = pool.get().await.unwrap();
    assert_eq!(conn.endpoint(), 1);
    assert_eq!(pool.stats().connect_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_endpoint_times_out_and_fails_over() {
    let manager = Faulty::new(2);
    manager.set(0, Behaviour::Hang);
    let pool = pool(&manager, 2, 4);
    let started = tokio::time::Instant::now();
    let conn = pool.get().await.unwrap();
    assert_eq!(conn.endpoint(), 1);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "one connect timeout"
    );
    drop(conn);
    manager.set(1, Behaviour::Hang);
    let fresh = pool.get().await.unwrap(); // the idle one: no connect needed
    assert_eq!(fresh.endpoint(), 1);
    fresh.discard();
    let err = pool.get().await.unwrap_err();
    assert!(matches!(err, PoolError::ConnectTimeout { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_breaker_ejects_a_dead_endpoint_and_reinstates_it() {
    let manager = Faulty::new(2);
    manager.set(0, Behaviour::Refuse);
    let pool = pool(&manager, 2, 16);
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(pool.get().await.unwrap());
    }
    assert!(held.iter().all(|c| c.endpoint() == 1));
    // Five consecutive failures open endpoint 0's breaker: no more connects are tried there.
    assert_eq!(manager.attempts(0), 5);
    assert_eq!(pool.stats().endpoints[0].breaker, BreakerState::Open);
    manager.set(0, Behaviour::Accept);
    advance(Duration::from_millis(1100)).await;
    // After the open period a connect is let through, succeeds, and closes the breaker.
    let mut on_zero = 0;
    for _ in 0..4 {
        let conn = pool.get().await.unwrap();
        on_zero += usize::from(conn.endpoint() == 0);
        held.push(conn);
    }
    assert!(on_zero >= 1, "endpoint 0 is back in rotation");
    assert_eq!(pool.stats().endpoints[0].breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_down_is_reported_as_unavailable() {
    let manager = Faulty::new(2);
    manager.set(0, Behaviour::Refuse);
    manager.set(1, Behaviour::Refuse);
    let pool = pool(&manager, 2, 4);
    for _ in 0..5 {
        let err = pool.get().await.unwrap_err();
        assert!(matches!(err, PoolError::Connect { .. }), "{err}");
    }
    let err = pool.get().await.unwrap_err();
    assert!(
        matches!(
            err,
            PoolError::Unavailable {
                retry_after: Some(_)
            }
        ),
        "{err}"
    );
    assert_eq!(pool.stats().size, 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_get_leaks_nothing() {
    let manager = Faulty::new(1);
    manager.set(0, Behaviour::Hang);
    let pool = pool(&manager, 1, 1);
    let attempt = tokio::time::timeout(Duration::from_millis(100), pool.get()).await;
    assert!(attempt.is_err(), "still connecting when cancelled");
    let stats = pool.stats();
    assert_eq!((stats.size, stats.endpoints[0].connecting), (0, 0));
    manager.set(0, Behaviour::Accept);
    drop(pool.get().await.unwrap());
    // A waiter cancelled while queued is skipped when a connection comes back.
    let held = pool.get().await.unwrap();
    let attempt = tokio::time::timeout(Duration::from_millis(100), pool.get()).await;
    assert!(attempt.is_err());
    drop(held);
    let stats = pool.stats();
    assert_eq!((stats.waiters, stats.idle, stats.size), (0, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn broken_and_unhealthy_connections_are_closed() {
    let manager = Faulty::new(1);
    let pool = Pool::builder(manager.clone())
        .endpoint(0)
        .check_on_checkout(true)
        .build()
        .unwrap();
    let conn = pool.get().await.unwrap();
    conn.broken.store(true, Ordering::SeqCst);
    drop(conn);
    assert_eq!((pool.stats().idle, manager.alive()), (0, 0));
    drop(pool.get().await.unwrap());
    manager.fail_checks(0, true);
    let conn = pool.get().await.unwrap(); // the idle one fails its check; a new one is made
    assert_eq!(manager.attempts(0), 3);
    assert_eq!(pool.stats().health_failures, 1);
    drop(conn);
}

#[tokio::test(start_paused = true)]
async fn maintenance_keeps_min_idle_and_closes_idle_and_old_connections() {
    let manager = Faulty::new(2);
    let pool = Pool::builder(manager.clone())
        .endpoint(0)
        .endpoint(1)
        .max_size(10)
        .min_idle_per_endpoint(2)
        .idle_timeout(Some(Duration::from_secs(60)))
        .max_lifetime(Some(Duration::from_secs(600)), 0.1)
        .build()
        .unwrap();
    tokio::spawn(pool.maintenance(Duration::from_secs(1)));
    sleep(Duration::from_millis(1500)).await;
    let stats = pool.stats();
    assert_eq!(
        (stats.idle, stats.endpoints[0].idle, stats.endpoints[1].idle),
        (4, 2, 2)
    );
    // Take six, return them: two extra idle per endpoint (above the minimum) time out.
    let burst: Vec<_> = futures_take(&pool, 6).await;
    drop(burst);
    assert_eq!(pool.stats().idle, 6);
    sleep(Duration::from_secs(62)).await;
    assert_eq!(pool.stats().idle, 4, "back to the minimum");
    // Lifetimes end between 540 and 660 s; the minimum is then made afresh.
    let before = pool.stats().connects;
    sleep(Duration::from_secs(700)).await;
    let stats = pool.stats();
    assert_eq!(stats.idle, 4);
    assert!(
        stats.connects >= before + 4,
        "{} → {}",
        before,
        stats.connects
    );
    assert_eq!(manager.alive(), 4);
}

async fn futures_take(pool: &Pool<Faulty>, n: usize) -> Vec<sssonector_connpool::Pooled<Faulty>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.get().await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn min_idle_backs_off_at_a_failing_endpoint() {
    let manager = Faulty::new(1);
    manager.set(0, Behaviour::Refuse);
    let pool = Pool::builder(manager.clone())
        .endpoint(0)
        .min_idle_per_endpoint(1)
        .replenish_backoff(sssonector_retry::Backoff::exponential(Duration::from_secs(
            1,
        )))
        .breaker(|_| sssonector_breaker::CircuitBreaker::builder().consecutive_failures(1000))
        .build()
        .unwrap();
    tokio::spawn(pool.maintenance(Duration::from_millis(100)));
    sleep(Duration::from_secs(10)).await;
    // Without backoff, 100 attempts; with 1 s, 2 s, 4 s... only a handful.
    let attempts = manager.attempts(0);
    assert!((3..=6).contains(&attempts), "{attempts}");
}

#[tokio::test(start_paused = true)]
async fn resizing_up_serves_waiters_and_down_closes_idle() {
    let manager = Faulty::new(1);
    let pool = pool(&manager, 1, 1);
    let held = pool.get().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| c.endpoint()) })
    };
    settle().await;
    pool.resize(2);
    assert_eq!(waiter.await.unwrap().unwrap(), 0);
    drop(held);
    assert_eq!(pool.stats().idle, 2);
    pool.resize(1);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.size, stats.max_size), (1, 1, 1));
    assert_eq!(manager.alive(), 1);
}

#[tokio::test(start_paused = true)]
async fn closing_fails_waiters_and_drains() {
    let manager = Faulty::new(1);
    let pool = pool(&manager, 1, 1);
    let held = pool.get().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(drop) })
    };
    settle().await;
    let closing = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.close().await })
    };
    settle().await;
    assert!(matches!(waiter.await.unwrap(), Err(PoolError::Closed)));
    assert!(!closing.is_finished(), "a connection is still out");
    drop(held);
    tokio::time::timeout(Duration::from_secs(60), closing)
        .await
        .expect("close resolves once the connection is back")
        .unwrap();
    assert_eq!((pool.stats().size, manager.alive()), (0, 0));
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));
}

#[tokio::test(start_paused = true)]
async fn new_connections_are_balanced() {
    let manager = Faulty::new(3);
    let build = |balance| {
        Pool::builder(manager.clone())
            .endpoint(0)
            .weighted_endpoint(1, 2)
            .endpoint(2)
            .max_size(20)
            .balance(balance)
            .build()
            .unwrap()
    };
    let rr = build(Balance::RoundRobin);
    let conns = futures_take(&rr, 6).await;
    let eps: Vec<_> = conns.iter().map(|c| c.endpoint()).collect();
    assert_eq!(eps, [0, 1, 2, 0, 1, 2]);
    let weighted = build(Balance::Weighted);
    let conns = futures_take(&weighted, 8).await;
    let on_one = conns.iter().filter(|c| c.endpoint() == 1).count();
    assert_eq!(on_one, 4, "weight 2 of 4");
    let least = build(Balance::LeastConnections);
    let a = least.get().await.unwrap();
    let b = least.get().await.unwrap();
    let c = least.get().await.unwrap();
    assert_eq!([a.endpoint(), b.endpoint(), c.endpoint()], [0, 1, 2]);
    drop(b);
    // Endpoint 1 now has an idle connection and nothing in use: the next goes there.
    assert_eq!(least.get().await.unwrap().endpoint(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_connects_per_second_cap_spaces_new_connections() {
    let manager = Faulty::new(1);
    let pool = Pool::builder(manager.clone())
        .endpoint(0)
        .max_size(50)
        .max_connects_per_second(10)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let conns = futures_take(&pool, 21).await;
    // A burst of one (a tenth of a second's worth), then one every 100 ms.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed <= Duration::from_millis(2100),
        "{elapsed:?}"
    );
    drop(conns);
}

#[tokio::test(start_paused = true)]
async fn the_pool_is_a_tower_service() {
    use tower_service::Service;
    let manager = Faulty::new(1);
    let mut pool = pool(&manager, 1, 2);
    std::future::poll_fn(|cx| pool.poll_ready(cx))
        .await
        .unwrap();
    let conn = pool.call(()).await.unwrap();
    assert_eq!(conn.endpoint(), 0);
}

#[test]
fn invalid_configurations_are_refused() {
    let manager = Faulty::new(2);
    let err = |b: sssonector_connpool::PoolBuilder<Faulty>| b.build().unwrap_err();
    assert_eq!(
        err(Pool::builder(manager.clone())),
        ConfigError::NoEndpoints
    );
    assert_eq!(
        err(Pool::builder(manager.clone()).endpoint(0).max_size(0)),
        ConfigError::ZeroMaxSize
    );
    assert_eq!(
        err(Pool::builder(manager.clone())
            .endpoint(0)
            .endpoint(1)
            .max_size(3)
            .min_idle_per_endpoint(2))
        .to_string(),
        "min_idle (2) per endpoint × 2 endpoints exceeds max_size (3)"
    );
    assert_eq!(
        err(Pool::builder(manager.clone())
            .endpoint(0)
            .min_idle_per_endpoint(3)
            .max_idle_per_endpoint(2)),
        ConfigError::MinIdleAboveMaxIdle {
            min_idle: 3,
            max_idle: 2
        }
    );
    assert_eq!(
        err(Pool::builder(manager.clone()).weighted_endpoint(0, 0)),
        ConfigError::ZeroWeight(0)
    );
    assert_eq!(
        err(Pool::builder(manager.clone())
            .endpoint(0)
            .connect_timeout(Duration::ZERO)),
        ConfigError::ZeroDuration("connect_timeout")
    );
    assert_eq!(
        err(Pool::builder(manager)
            .endpoint(0)
            .max_lifetime(Some(Duration::from_secs(1)), 1.5)),
        ConfigError::Jitter(1.5)
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_past_its_lifetime_is_not_handed_to_a_waiter() {
    // A return hands the connection straight to the oldest waiter without reading the
    // clock; the waiter checks the lifetime and, finding it over, closes it and gets a new
    // one.
    let manager = Faulty::new(1);
    let pool = Pool::builder(manager.clone())
        .max_size(1)
        .checkout_timeout(Duration::from_secs(60))
        .max_lifetime(Some(Duration::from_secs(10)), 0.0)
        .endpoint(0)
        .build()
        .unwrap();
    let first = pool.get().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|conn| conn.age()) }
    });
    settle().await;
    assert_eq!(pool.stats().waiters, 1);
    advance(Duration::from_secs(11)).await;
    drop(first);
    let age = waiter.await.unwrap().unwrap();
    assert!(
        age < Duration::from_secs(1),
        "the waiter got the expired connection ({age:?})"
    );
    settle().await;
    let stats = pool.stats();
    assert_eq!((stats.connects, stats.size, stats.waiters), (2, 1, 0));
    assert_eq!(manager.attempts(0), 2);
}

#[tokio::test(start_paused = true)]
async fn a_caller_back_in_the_queue_still_times_out_at_its_own_deadline() {
    let manager = Faulty::new(1);
    let pool = Pool::builder(manager.clone())
        .endpoint(0)
        .max_size(1)
        .checkout_timeout(Duration::from_secs(1))
        .check_on_checkout(true)
        .build()
        .unwrap();
    let held = pool.get().await.unwrap();
    let start = tokio::time::Instant::now();
    // Three callers queue 100 ms apart: deadlines at 1.0, 1.1 and 1.2 s.
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let result = pool.get().await.map(drop);
            (result, start.elapsed())
        })
    };
    settle().await;
    advance(Duration::from_millis(100)).await;
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let second = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let conn = pool.get().await;
            let _ = hold_rx.await; // keeps whatever it got
            drop(conn);
        })
    };
    settle().await;
    advance(Duration::from_millis(100)).await;
    let third = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(drop) })
    };
    settle().await;
    assert_eq!(pool.stats().waiters, 3);
    // The returned connection fails its check at the first caller; the freed slot goes to the
    // second, which connects and keeps it; the first queues again, behind the third.
    manager.fail_checks(0, true);
    drop(held);
    settle().await;
    manager.fail_checks(0, false);
    let (result, waited) = first.await.unwrap();
    assert!(matches!(result, Err(PoolError::Timeout(_))), "{result:?}");
    assert_eq!(
        waited,
        Duration::from_secs(1),
        "timed out at its own deadline"
    );
    assert!(third.await.unwrap().is_err());
    drop(hold_tx);
    second.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_health_check_round_leaves_the_other_idle_connections_available() {
    let manager = Faulty::new(1);
    let pool = Pool::builder(manager.clone())
        .endpoint(0)
        .max_size(4)
        .idle_timeout(Some(Duration::from_secs(60)))
        .health_check_interval(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let three = futures_take(&pool, 3).await;
    drop(three);
    assert_eq!(pool.stats().idle, 3);
    manager.slow_checks(Duration::from_secs(2));
    tokio::spawn(pool.maintenance(Duration::from_millis(500)));
    // A check round is under way (each check takes 2 s): a caller gets an idle connection,
    // not a new one.
    sleep(Duration::from_millis(1500)).await;
    let during = pool.get().await.unwrap();
    assert_eq!(manager.attempts(0), 3, "served from the idle set");
    drop(during);
    // Checks are not uses: connections idle past the timeout still close (bar the minimum).
    manager.slow_checks(Duration::ZERO);
    sleep(Duration::from_secs(70)).await;
    assert_eq!(
        pool.stats().idle,
        0,
        "idle connections timed out despite their checks"
    );
}
