//! Property test over random operation sequences with injected faults, on a paused clock:
//! in use + idle ≤ max size, per endpoint and overall, and the live connections are exactly
//! those in use and idle, at every step; at the end, after
//! closing, every connection is closed and every count is back to zero.

mod common;

use std::time::Duration;

use common::{Behaviour, Faulty};
use proptest::prelude::*;
use sssonector_connpool::Pool;

#[derive(Debug, Clone)]
enum Op {
    /// Start a get (it may wait); it runs as a task.
    Get,
    /// Return the held connection at this index.
    Return(usize),
    /// Discard (close) the held connection at this index.
    Discard(usize),
    /// Mark the held connection at this index broken, then return it.
    Break(usize),
    /// Change what an endpoint does on connect.
    Set(usize, Behaviour),
    /// Let time pass.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let behaviour = prop_oneof![
        3 => Just(Behaviour::Accept),
        1 => Just(Behaviour::Refuse),
        1 => Just(Behaviour::Hang),
    ];
    prop_oneof![
        4 => Just(Op::Get),
        3 => any::<usize>().prop_map(Op::Return),
        1 => any::<usize>().prop_map(Op::Discard),
        1 => any::<usize>().prop_map(Op::Break),
        1 => (0usize..3, behaviour).prop_map(|(e, b)| Op::Set(e, b)),
        2 => (1u64..3000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/invariants.txt",
            ),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn counts_stay_within_bounds_and_return_to_zero(
        max_size in 1usize..6,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let manager = Faulty::new(3);
            let pool = Pool::builder(manager.clone())
                .endpoint(0)
                .endpoint(1)
                .endpoint(2)
                .max_size(max_size)
                .max_idle_per_endpoint(2)
                .checkout_timeout(Duration::from_secs(2))
                .connect_timeout(Duration::from_millis(500))
                .max_lifetime(Some(Duration::from_secs(5)), 0.2)
                .idle_timeout(Some(Duration::from_secs(3)))
                .build()
                .unwrap();
            let maintenance = tokio::spawn(pool.maintenance(Duration::from_millis(250)));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut held = Vec::new();
            for op in ops {
                match op {
                    Op::Get => {
                        let (pool, tx) = (pool.clone(), tx.clone());
                        tokio::spawn(async move {
                            if let Ok(conn) = pool.get().await {
                                let _ = tx.send(conn);
                            }
                        });
                    }
                    Op::Return(i) if !held.is_empty() => drop(held.swap_remove(i % held.len())),
                    Op::Discard(i) if !held.is_empty() => {
                        let conn: sssonector_connpool::Pooled<Faulty> =
                            held.swap_remove(i % held.len());
                        conn.discard();
                    }
                    Op::Break(i) if !held.is_empty() => {
                        let conn = held.swap_remove(i % held.len());
                        conn.broken.store(true, std::sync::atomic::Ordering::SeqCst);
                        drop(conn);
                    }
                    Op::Set(e, b) => manager.set(e, b),
                    Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    _ => {}
                }
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                while let Ok(conn) = rx.try_recv() {
                    held.push(conn);
                }
                let stats = pool.stats();
                prop_assert!(stats.size <= max_size, "size {} > max {}", stats.size, max_size);
                prop_assert!(stats.in_use + stats.idle <= max_size);
                prop_assert_eq!(stats.in_use, held.len());
                for ep in &stats.endpoints {
                    prop_assert!(ep.open + ep.connecting <= max_size);
                }
                prop_assert_eq!(manager.alive(), stats.in_use + stats.idle);
            }
            // Let every pending get finish (served, failed or timed out), then close.
            for i in 0..3 {
                manager.set(i, Behaviour::Accept);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            while let Ok(conn) = rx.try_recv() {
                held.push(conn);
            }
            drop(held);
            drop(tx);
            tokio::time::timeout(Duration::from_secs(60), pool.close())
                .await
                .expect("close drains");
            maintenance.abort();
            while rx.recv().await.is_some() {}
            let stats = pool.stats();
            prop_assert_eq!((stats.size, stats.in_use, stats.idle, stats.waiters), (0, 0, 0, 0));
            prop_assert_eq!(manager.alive(), 0, "no connection leaked");
            Ok(())
        })?;
    }
}
