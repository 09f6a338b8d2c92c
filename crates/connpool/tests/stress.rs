//! Many tasks on a multi-thread runtime against endpoints that flap between accepting,
//! refusing and hanging: nothing deadlocks, nothing leaks.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Behaviour, Faulty};
use sssonector_connpool::{Balance, Pool, PoolError};

#[test]
fn flapping_endpoints_under_load() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let manager = Faulty::new(3);
    runtime.block_on(async {
        let pool = Pool::builder(manager.clone())
            .endpoint(0)
            .endpoint(1)
            .endpoint(2)
            .max_size(6)
            .min_idle_per_endpoint(1)
            .max_idle_per_endpoint(2)
            .balance(Balance::PowerOfTwoChoices)
            .checkout_timeout(Duration::from_millis(300))
            .connect_timeout(Duration::from_millis(20))
            .max_lifetime(Some(Duration::from_millis(200)), 0.5)
            .breaker(|i| {
                sssonector_breaker::CircuitBreaker::builder()
                    .name(format!("stress-{i}"))
                    .consecutive_failures(3)
                    .open_duration(Duration::from_millis(30))
            })
            .build()
            .unwrap();
        let maintenance = tokio::spawn(pool.maintenance(Duration::from_millis(10)));
        let stop = Arc::new(AtomicBool::new(false));
        // Endpoints change behaviour every few milliseconds.
        let flapper = {
            let (manager, stop) = (manager.clone(), stop.clone());
            tokio::spawn(async move {
                let mut step = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let behaviour = [
                        Behaviour::Accept,
                        Behaviour::Accept,
                        Behaviour::Accept,
                        Behaviour::Refuse,
                        Behaviour::Hang,
                    ][(step / 3) % 5];
                    manager.set(step % 3, behaviour);
                    step += 1;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        };
        let mut tasks = Vec::new();
        for t in 0..48 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                for round in 0..60 {
                    match pool.get().await {
                        Ok(conn) => {
                            ok += 1;
                            if (t + round) % 7 == 0 {
                                conn.discard();
                            } else {
                                // Hold it a moment, as a request would, so the run spans
                                // many changes of the endpoints' behaviour.
                                tokio::time::sleep(Duration::from_micros(500)).await;
                                drop(conn);
                            }
                        }
                        Err(PoolError::Unavailable { retry_after }) => {
                            // As a client would: wait until a breaker lets a probe through.
                            failed += 1;
                            let wait = retry_after.unwrap_or(Duration::from_millis(5));
                            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
                        }
                        Err(
                            PoolError::Connect { .. }
                            | PoolError::ConnectTimeout { .. }
                            | PoolError::Timeout(_),
                        ) => failed += 1,
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                (ok, failed)
            }));
        }
        let (mut served, mut failed) = (0, 0);
        for task in tasks {
            let (ok, err) = tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("no task is stuck")
                .unwrap();
            served += ok;
            failed += err;
        }
        eprintln!("served {served}, failed {failed}");
        assert!(served > 0, "connections were served despite the flapping");
        assert!(failed > 0, "the faults were felt");
        stop.store(true, Ordering::Relaxed);
        flapper.await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), pool.close())
            .await
            .expect("close drains");
        maintenance.await.unwrap();
        let stats = pool.stats();
        assert_eq!(
            (stats.size, stats.in_use, stats.idle, stats.waiters),
            (0, 0, 0, 0)
        );
        for ep in &stats.endpoints {
            assert_eq!((ep.open, ep.connecting), (0, 0));
        }
    });
    drop(runtime);
    assert_eq!(manager.alive(), 0, "every connection was closed");
}
