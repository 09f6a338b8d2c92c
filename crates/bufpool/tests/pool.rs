//! Behaviour of one pool: size classes, returning, freezing, the budget, waiting, trimming.

use std::time::Duration;

use bytes::BufMut;
use sssonector_bufpool::{BufPool, ConfigError, GetError};

fn pool(budget: usize) -> BufPool {
    BufPool::builder()
        .classes([1024, 4096])
        .budget(budget)
        .low_watermark(0)
        .build()
        .unwrap()
}

fn one_class(budget: usize) -> BufPool {
    BufPool::builder()
        .classes([1024])
        .budget(budget)
        .build()
        .unwrap()
}

#[test]
fn picks_the_smallest_class_that_fits() {
    let pool = pool(1 << 20);
    assert_eq!(pool.try_get(0).unwrap().capacity(), 1024);
    assert_eq!(pool.try_get(1024).unwrap().capacity(), 1024);
    assert_eq!(pool.try_get(1025).unwrap().capacity(), 4096);
    let big = pool.try_get(5000).unwrap();
    assert_eq!(big.capacity(), 5000);
    assert_eq!(big.charge(), 5000);
    assert!(big.is_empty());
}

#[test]
fn a_dropped_buffer_is_reused() {
    let pool = pool(1 << 20);
    let mut buf = pool.try_get(100).unwrap();
    buf.put_slice(b"secret");
    let address = buf.as_ptr();
    drop(buf);
    let again = pool.try_get(100).unwrap();
    assert_eq!(again.as_ptr(), address, "the same allocation comes back");
    assert!(again.is_empty(), "a returned buffer is cleared");
    let stats = pool.stats();
    assert_eq!((stats.hits, stats.misses, stats.outstanding), (1, 1, 1));
    drop(again);
    pool.assert_no_outstanding();
    assert_eq!(pool.stats().in_use_bytes, 1024);
}

#[test]
fn frozen_bytes_return_when_the_last_clone_drops() {
    let pool = pool(1 << 20);
    let mut buf = pool.try_get(10).unwrap();
    buf.put_slice(b"hello world");
    let frozen = buf.freeze();
    let hello = frozen.slice(0..5);
    let clone = frozen.clone();
    drop(frozen);
    assert_eq!(pool.stats().outstanding, 1);
    drop(clone);
    assert_eq!(&hello[..], b"hello");
    assert_eq!(pool.stats().outstanding, 1, "a slice keeps the buffer out");
    drop(hello);
    pool.assert_no_outstanding();
    assert_eq!(pool.stats().pooled_bytes, 1024);
}

#[test]
fn frozen_bytes_may_be_dropped_on_another_thread() {
    let pool = pool(1 << 20);
    let mut buf = pool.try_get(10).unwrap();
    buf.put_slice(b"abc");
    let frozen = buf.freeze();
    std::thread::spawn(move || drop(frozen)).join().unwrap();
    pool.assert_no_outstanding();
    assert_eq!(pool.stats().in_use_bytes, 1024);
    // The exiting thread flushed its cache into the shared queue.
    assert_eq!(pool.stats().shared_pooled_bytes, 1024);
}

#[test]
fn the_budget_is_never_exceeded() {
    let pool = pool(4096 + 2048);
    let a = pool.try_get(4096).unwrap();
    let b = pool.try_get(1000).unwrap();
    let c = pool.try_get(1000).unwrap();
    let err = pool.try_get(1000).unwrap_err();
    assert_eq!(
        err,
        GetError::BudgetExhausted {
            requested: 1024,
            in_use: 6144,
            budget: 6144
        }
    );
    assert_eq!(
        err.to_string(),
        "buffer pool budget exhausted: 1024 bytes requested, 6144 of 6144 bytes in use"
    );
    assert_eq!(pool.stats().rejections, 1);
    drop((a, b, c));
    pool.assert_no_outstanding();
}

#[test]
fn a_request_larger_than_the_budget_is_refused_at_once() {
    let pool = pool(8192);
    let err = pool.try_get(10_000).unwrap_err();
    assert_eq!(
        err,
        GetError::TooLarge {
            requested: 10_000,
            budget: 8192
        }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(pool.get(10_000)),
        Err(GetError::TooLarge { .. })
    ));
}

#[test]
fn idle_buffers_of_another_class_make_room() {
    let pool = pool(4096);
    drop(pool.try_get(4096).unwrap()); // one idle 4 KiB buffer, the whole budget
    // Idle in this thread's cache; a get of another class flushes it and frees it.
    let small: Vec<_> = (0..4).map(|_| pool.try_get(1000).unwrap()).collect();
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 4096);
    assert_eq!(stats.evicted, 1);
    drop(small);
    pool.assert_no_outstanding();
}

#[test]
fn a_grown_buffer_is_freed_on_return() {
    let pool = pool(1 << 20);
    let mut buf = pool.try_get(1024).unwrap();
    buf.put_slice(&[7; 3000]); // grows past its class
    drop(buf);
    let stats = pool.stats();
    assert_eq!(stats.dropped_on_return, 1);
    assert_eq!(stats.in_use_bytes, 0);
    pool.assert_no_outstanding();
}

#[test]
fn a_buffer_advanced_in_place_is_reclaimed() {
    let pool = pool(1 << 20);
    let mut buf = pool.try_get(1024).unwrap();
    buf.put_slice(&[1; 600]);
    drop(buf.split_to(600)); // the split part is gone: the allocation is unique again
    drop(buf);
    let stats = pool.stats();
    assert_eq!(stats.dropped_on_return, 0);
    assert_eq!(stats.pooled_bytes, 1024);
    assert_eq!(pool.try_get(1024).unwrap().capacity(), 1024);
}

#[test]
fn a_buffer_whose_split_part_lives_on_is_freed() {
    let pool = pool(1 << 20);
    let mut buf = pool.try_get(1024).unwrap();
    buf.put_slice(&[1; 600]);
    let head = buf.split_to(600);
    drop(buf);
    assert_eq!(pool.stats().dropped_on_return, 1);
    assert_eq!(pool.stats().in_use_bytes, 0);
    assert_eq!(head.len(), 600);
}

#[test]
fn thread_caches_can_be_disabled() {
    let pool = BufPool::builder()
        .classes([1024])
        .budget(4096)
        .thread_cache_bytes(0)
        .build()
        .unwrap();
    drop(pool.try_get(1).unwrap());
    let stats = pool.stats();
    assert_eq!(stats.thread_cached_bytes, 0);
    assert_eq!(stats.shared_pooled_bytes, 1024);
}

/// A thread's cache holds its share (here 3 buffers) and hands back the newest first; one
/// more return goes to the shared queue.
#[test]
fn a_thread_cache_holds_its_share_newest_first() {
    let pool = BufPool::builder()
        .classes([1024])
        .budget(1 << 20)
        .thread_cache_bytes(3 * 1024)
        .build()
        .unwrap();
    let bufs: Vec<_> = (0..4).map(|_| pool.try_get(1).unwrap()).collect();
    let addresses: Vec<_> = bufs.iter().map(|b| b.as_ptr()).collect();
    drop(bufs); // returned in order: 0, 1, 2 cached, 3 to the shared queue
    let stats = pool.stats();
    assert_eq!(stats.thread_cached_bytes, 3 * 1024);
    assert_eq!(stats.shared_pooled_bytes, 1024);
    let again: Vec<_> = (0..4).map(|_| pool.try_get(1).unwrap()).collect();
    let order: Vec<_> = again
        .iter()
        .map(|b| addresses.iter().position(|&a| a == b.as_ptr()).unwrap())
        .collect();
    assert_eq!(order, [2, 1, 0, 3]);
    assert_eq!(pool.stats().hits, 4);
    drop(again);
    pool.assert_no_outstanding();
}

/// Only as many threads get a cache as leave one buffer of the largest class outside all
/// caches; a thread past that caches nothing, and its returns go to the shared queue.
#[test]
fn threads_past_the_cache_limit_use_the_shared_queue() {
    // Room for (4 KiB − 1 KiB) / 2 KiB = 1 thread with a cache of 2 KiB.
    let pool = BufPool::builder()
        .classes([1024])
        .budget(4096)
        .thread_cache_bytes(2048)
        .build()
        .unwrap();
    drop(pool.try_get(1).unwrap());
    assert_eq!(pool.stats().thread_cached_bytes, 1024);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..3 {
                drop(pool.try_get(1).unwrap());
                let stats = pool.stats();
                assert_eq!(stats.thread_cached_bytes, 1024, "only the first thread's");
                assert_eq!(stats.shared_pooled_bytes, 1024);
            }
        });
    });
    assert_eq!(pool.stats().in_use_bytes, 2048);
    pool.assert_no_outstanding();
}

#[test]
fn trimming_frees_what_stayed_idle_for_a_whole_period() {
    let pool = BufPool::builder()
        .classes([1024])
        .budget(1 << 20)
        .thread_cache_bytes(0)
        .low_watermark(2048)
        .build()
        .unwrap();
    let bufs: Vec<_> = (0..10).map(|_| pool.try_get(1).unwrap()).collect();
    drop(bufs);
    assert_eq!(pool.stats().pooled_bytes, 10 * 1024);
    // The first trim starts the period: nothing has been idle for one yet.
    assert_eq!(pool.trim(), 0);
    // Six are used during the period; four stayed idle throughout.
    let busy: Vec<_> = (0..6).map(|_| pool.try_get(1).unwrap()).collect();
    drop(busy);
    assert_eq!(pool.trim(), 4 * 1024);
    // Idle for another whole period: down to the low watermark, no further.
    assert_eq!(pool.trim(), 4 * 1024);
    assert_eq!(pool.trim(), 0);
    let stats = pool.stats();
    assert_eq!(stats.pooled_bytes, 2048);
    assert_eq!(stats.trimmed, 8);
    assert_eq!(stats.in_use_bytes, 2048);
}

#[test]
fn dropping_the_last_handle_frees_idle_buffers() {
    let pool = pool(1 << 20);
    let clone = pool.clone();
    let out = pool.try_get(1).unwrap();
    drop(pool.try_get(2000).unwrap());
    drop(pool);
    let stats = clone.stats();
    assert_eq!(stats.in_use_bytes, 1024 + 4096);
    let observer = clone.clone();
    drop(clone);
    drop(observer);
    // The handle-less buffer is freed when it returns; nothing to observe but no panic.
    drop(out);
}

#[test]
fn the_leak_check_names_what_is_outstanding() {
    let pool = BufPool::builder().name("leaky").build().unwrap();
    let kept = pool.try_get(100).unwrap();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.assert_no_outstanding();
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert_eq!(
        message,
        "buffer pool `leaky`: 1 buffers (2048 bytes) still outstanding"
    );
    drop(kept);
    pool.assert_no_outstanding();
}

#[test]
fn invalid_configurations_are_refused() {
    let err = |b: sssonector_bufpool::BufPoolBuilder| b.build().unwrap_err();
    assert_eq!(err(BufPool::builder().classes([])), ConfigError::NoClasses);
    assert_eq!(
        err(BufPool::builder().classes([0, 10])),
        ConfigError::ZeroClass
    );
    assert_eq!(
        err(BufPool::builder().classes([10, 20, 10])),
        ConfigError::DuplicateClass(10)
    );
    assert_eq!(
        err(BufPool::builder().classes([1024]).budget(100)),
        ConfigError::BudgetTooSmall {
            budget: 100,
            largest: 1024
        }
    );
    assert_eq!(err(BufPool::builder().name("")), ConfigError::EmptyName);
    assert_eq!(
        err(BufPool::builder().classes(1..40)).to_string(),
        "39 size classes given, at most 32 are supported"
    );
}

/// One class of 1 KiB, a budget of two, and room for one buffer in one thread's cache.
fn one_cached(budget: usize) -> BufPool {
    BufPool::builder()
        .classes([1024])
        .budget(budget)
        .thread_cache_bytes(1024)
        .build()
        .unwrap()
}

#[tokio::test]
async fn get_waits_for_memory_to_come_back() {
    let pool = one_cached(2048);
    let a = pool.try_get(1024).unwrap();
    let b = pool.try_get(1024).unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get(1024).await.map(|buf| buf.capacity()) })
    };
    // Let the waiter register, then return memory.
    while pool.stats().waiting == 0 {
        tokio::task::yield_now().await;
    }
    drop(a);
    // While someone waits, a return skips this thread's cache: the waiter can have it.
    assert_eq!(pool.stats().thread_cached_bytes, 0);
    assert_eq!(pool.stats().shared_pooled_bytes, 1024);
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is woken")
        .unwrap()
        .unwrap();
    assert_eq!(got, 1024);
    assert_eq!(pool.stats().waits, 1);
    assert_eq!(pool.stats().waiting, 0);
    // Nobody waits any more: returns are cached by their thread again.
    drop(b);
    assert_eq!(pool.stats().thread_cached_bytes, 1024);
    pool.assert_no_outstanding();
}

#[tokio::test]
async fn waiters_coming_and_going_leave_the_thread_caches_working() {
    let pool = one_cached(2048);
    let held = (pool.try_get(1).unwrap(), pool.try_get(1).unwrap());
    // Two waiters overlap, then both give up.
    let first = tokio::time::timeout(Duration::from_millis(20), pool.get(1));
    let second = tokio::time::timeout(Duration::from_millis(30), pool.get(1));
    let (first, second) = tokio::join!(first, second);
    assert!(
        first.is_err() && second.is_err(),
        "no memory: both time out"
    );
    assert_eq!(pool.stats().waiting, 0);
    drop(held);
    assert_eq!(pool.stats().thread_cached_bytes, 1024);
    let again = pool.try_get(1).unwrap();
    assert_eq!(pool.stats().thread_cached_bytes, 0, "served from the cache");
    drop(again);
    pool.assert_no_outstanding();
}

#[tokio::test]
async fn a_waiter_for_another_class_gets_room_by_eviction() {
    let pool = pool(4096);
    let small: Vec<_> = (0..4).map(|_| pool.try_get(1).unwrap()).collect();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get(4096).await.map(|buf| buf.capacity()) })
    };
    while pool.stats().waiting == 0 {
        tokio::task::yield_now().await;
    }
    drop(small); // returns go to the shared queue while someone waits; the waiter evicts them
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is woken")
        .unwrap()
        .unwrap();
    assert_eq!(got, 4096);
    pool.assert_no_outstanding();
}

#[tokio::test]
async fn a_cancelled_waiter_leaves_nothing_behind() {
    let pool = one_class(1024);
    let held = pool.try_get(1).unwrap();
    let attempt = tokio::time::timeout(Duration::from_millis(20), pool.get(1)).await;
    assert!(attempt.is_err(), "no memory: the get is still waiting");
    assert_eq!(pool.stats().waiting, 0);
    drop(held);
    assert_eq!(pool.try_get(1).unwrap().capacity(), 1024);
}

#[tokio::test(start_paused = true)]
async fn maintenance_trims_and_stops_with_the_pool() {
    let pool = BufPool::builder()
        .classes([1024])
        .budget(1 << 20)
        .thread_cache_bytes(0)
        .low_watermark(0)
        .build()
        .unwrap();
    drop((0..4).map(|_| pool.try_get(1).unwrap()).collect::<Vec<_>>());
    let task = tokio::spawn(pool.maintenance(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        pool.stats().pooled_bytes,
        0,
        "idle for a whole period: trimmed"
    );
    drop(pool);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("maintenance ends when the pool closes")
        .unwrap();
}

#[test]
fn metrics_carry_the_pool_name_and_its_figures() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = BufPool::builder()
        .name("metered")
        .classes([1024])
        .budget(2048)
        .build()
        .unwrap();
    let held = pool.try_get(1).unwrap();
    drop(pool.try_get(1).unwrap());
    let _hit = pool.try_get(1).map(drop);
    let _hit = pool.try_get(1).map(drop);
    metrics::with_local_recorder(&recorder, || pool.publish_metrics());
    let values: Vec<(String, Vec<String>, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            (key.key().name().to_string(), labels, value)
        })
        .collect();
    let get = |name: &str| {
        values
            .iter()
            .find(|(n, labels, _)| n == name && labels == &["pool=metered".to_string()])
            .map(|(_, _, v)| v)
            .unwrap_or_else(|| panic!("{name} not recorded: {values:?}"))
    };
    let stats = pool.stats();
    assert_eq!(
        get("sssonector_bufpool_misses_total"),
        &DebugValue::Counter(stats.misses)
    );
    assert_eq!(
        get("sssonector_bufpool_hits_total"),
        &DebugValue::Counter(stats.hits)
    );
    assert_eq!(
        get("sssonector_bufpool_outstanding_buffers"),
        &DebugValue::Gauge(1.0.into())
    );
    assert_eq!(
        get("sssonector_bufpool_outstanding_bytes"),
        &DebugValue::Gauge(1024.0.into())
    );
    assert_eq!(
        get("sssonector_bufpool_budget_bytes"),
        &DebugValue::Gauge(2048.0.into())
    );
    assert_eq!(stats.misses, 2);
    drop(held);
}

/// A buffer kept in a thread-local of the user's, dropped while the thread exits.
mod teardown {
    use std::cell::RefCell;

    use sssonector_bufpool::PooledBuf;

    thread_local! {
        pub(super) static KEPT: RefCell<Option<PooledBuf>> = const { RefCell::new(None) };
    }
}

#[test]
fn buffers_cached_by_an_exiting_thread_go_back_to_the_pool() {
    let pool = BufPool::default();
    // Before and after this crate's own thread-local is set up: thread-local destructors run
    // in reverse order of first use, so one of these buffers is dropped after the thread's
    // caches are gone.
    for kept_first in [false, true] {
        let pool2 = pool.clone();
        std::thread::spawn(move || {
            let keep = || {
                let buf = pool2.try_get(1500).unwrap();
                teardown::KEPT.with(|k| *k.borrow_mut() = Some(buf));
            };
            if kept_first {
                keep();
            }
            drop(pool2.try_get(1500).unwrap()); // cached by this thread
            if !kept_first {
                keep();
            }
        })
        .join()
        .unwrap();
        let stats = pool.stats();
        assert_eq!(stats.thread_cached_bytes, 0, "kept first: {kept_first}");
        assert!(stats.shared_pooled_bytes > 0);
        pool.assert_no_outstanding();
    }
}
