//! Buffer pool costs: get, a one-byte write and drop of a 16 KiB buffer from our pool beside
//! lockfree-object-pool, object-pool and a fresh `BytesMut`, on one thread and two.
//!
//! `cargo xtask bench bufpool` prints the ratios.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sssonector_benches::contenders;

fn one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("bufpool_16k_1t");
    let ours = contenders::bufpool_ours();
    group.bench_function("ours", |b| {
        b.iter(|| black_box(contenders::bufpool_ours_op(&ours)))
    });
    let lockfree = contenders::bufpool_lockfree();
    group.bench_function("lockfree-object-pool", |b| {
        b.iter(|| black_box(contenders::bufpool_lockfree_op(&lockfree)))
    });
    let lockfree_owned = contenders::bufpool_lockfree_owned();
    group.bench_function("lockfree-object-pool-owned", |b| {
        b.iter(|| black_box(contenders::bufpool_lockfree_owned_op(&lockfree_owned)))
    });
    let object_pool = contenders::bufpool_object_pool();
    group.bench_function("object-pool", |b| {
        b.iter(|| black_box(contenders::bufpool_object_pool_op(&object_pool)))
    });
    group.bench_function("fresh-bytesmut", |b| {
        b.iter(|| black_box(contenders::bufpool_fresh_op()))
    });
    group.finish();
}

/// Runs `op` on two threads for `iters` operations in all and returns the wall time, so the
/// time per operation falls as the contender scales. The threads live for the whole batch, so
/// per-thread caches warm up once per batch, as they would in a server.
/// One contender's operation, shared by the threads that run it.
type Op = Arc<dyn Fn() -> u64 + Send + Sync>;

fn two_threads(iters: u64, op: Op) -> Duration {
    let per_thread = iters.div_ceil(2);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let op = op.clone();
            s.spawn(move || {
                for _ in 0..per_thread {
                    black_box(op());
                }
            });
        }
    });
    start.elapsed()
}

fn two(c: &mut Criterion) {
    let mut group = c.benchmark_group("bufpool_16k_2t");
    let contenders: [(&str, Op); 5] = [
        ("ours", {
            let pool = contenders::bufpool_ours();
            Arc::new(move || contenders::bufpool_ours_op(&pool))
        }),
        ("lockfree-object-pool", {
            let pool = contenders::bufpool_lockfree();
            Arc::new(move || contenders::bufpool_lockfree_op(&pool))
        }),
        ("lockfree-object-pool-owned", {
            let pool = contenders::bufpool_lockfree_owned();
            Arc::new(move || contenders::bufpool_lockfree_owned_op(&pool))
        }),
        ("object-pool", {
            let pool = contenders::bufpool_object_pool();
            Arc::new(move || contenders::bufpool_object_pool_op(&pool))
        }),
        ("fresh-bytesmut", Arc::new(contenders::bufpool_fresh_op)),
    ];
    for (name, op) in contenders {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| two_threads(iters, op.clone()))
        });
    }
    group.finish();
}

criterion_group!(benches, one_thread, two);
criterion_main!(benches);
