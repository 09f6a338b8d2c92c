//! Many tasks on a multi-thread runtime taking, freezing, passing around and dropping buffers
//! under a budget small enough that they wait for each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BufMut;
use sssonector_bufpool::BufPool;

#[test]
fn many_tasks_under_a_tight_budget() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let pool = BufPool::builder()
        .classes([2048, 16 * 1024, 64 * 1024])
        .budget(512 * 1024)
        .thread_cache_bytes(64 * 1024)
        .build()
        .unwrap();
    const TASKS: usize = 64;
    const ROUNDS: usize = 300;
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        // A monitor samples the accounting while the tasks run.
        let monitor = {
            let (pool, peak, done) = (pool.clone(), peak.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let in_use = pool.stats().in_use_bytes;
                    peak.fetch_max(in_use, Ordering::Relaxed);
                    assert!(in_use <= 512 * 1024, "budget exceeded: {in_use}");
                    tokio::task::yield_now().await;
                }
            })
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
        // A consumer drops frozen buffers on whatever thread it runs on.
        let consumer = tokio::spawn(async move {
            let mut received = 0usize;
            while let Some(bytes) = rx.recv().await {
                received += bytes.len();
            }
            received
        });
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (pool, tx) = (pool.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let mut sent = 0usize;
                for round in 0..ROUNDS {
                    let len = [100, 1500, 9000, 40_000, 70_000][(t + round) % 5];
                    let mut buf = pool.get(len).await.expect("every size fits the budget");
                    let fill = len.min(buf.capacity());
                    buf.put_bytes(u8::try_from(t % 251).unwrap(), fill);
                    if round % 3 == 0 {
                        sent += buf.len();
                        tx.send(buf.freeze()).await.unwrap();
                    } else {
                        tokio::task::yield_now().await;
                        drop(buf);
                    }
                }
                sent
            }));
        }
        drop(tx);
        let mut sent = 0;
        for task in tasks {
            sent += tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("no task is stuck waiting for memory")
                .unwrap();
        }
        let received = consumer.await.unwrap();
        assert_eq!(sent, received);
        done.store(true, Ordering::Relaxed);
        monitor.await.unwrap();
    });
    drop(runtime); // worker threads exit and flush their caches
    pool.assert_no_outstanding();
    let stats = pool.stats();
    assert_eq!(stats.thread_cached_bytes, 0);
    assert_eq!(stats.in_use_bytes, stats.shared_pooled_bytes);
    assert!(
        stats.waits > 0,
        "the budget was tight enough to make tasks wait"
    );
    assert!(peak.load(Ordering::Relaxed) > 0);
}
