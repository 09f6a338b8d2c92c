//! Rate limiter costs: our `check()` beside governor's direct limiter, our keyed check beside
//! governor's keyed limiter at one and two threads, and the tower layer's overhead beside
//! `tower::limit::RateLimit` and tower-resilience's rate limiter.
//!
//! `cargo xtask bench ratelimit` prints the ratios.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sssonector_benches::{bench_service, contenders, runtime};

/// Distinct keys cycled through, like client addresses.
const KEYS: u64 = 1024;

fn direct(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("ratelimit_check");
    let ours = contenders::ratelimit_ours();
    group.bench_function("ours", |b| b.iter(|| black_box(ours.check().is_ok())));
    let governor = contenders::ratelimit_governor();
    group.bench_function("governor", |b| {
        b.iter(|| black_box(governor.check().is_ok()))
    });
    group.finish();
}

/// Runs `op(key)` on `threads` threads for `iters` operations in all; the wall time is what
/// criterion records, so per-operation time falls as threads scale.
fn threaded(threads: u64, iters: u64, op: Arc<dyn Fn(u64) -> bool + Send + Sync>) -> Duration {
    let per_thread = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = op.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    black_box(op((i * 7 + t * 131) % KEYS));
                }
            });
        }
    });
    start.elapsed()
}

fn keyed(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    for threads in [1u64, 2] {
        let mut group = c.benchmark_group(format!("ratelimit_keyed_{threads}t"));
        let ours = contenders::keyed_ours();
        let ours: Arc<dyn Fn(u64) -> bool + Send + Sync> =
            Arc::new(move |k| ours.check_key(&k).is_ok());
        group.bench_function("ours", |b| {
            b.iter_custom(|iters| threaded(threads, iters, ours.clone()))
        });
        let governor = contenders::keyed_governor();
        let governor: Arc<dyn Fn(u64) -> bool + Send + Sync> =
            Arc::new(move |k| governor.check_key(&k).is_ok());
        group.bench_function("governor", |b| {
            b.iter_custom(|iters| threaded(threads, iters, governor.clone()))
        });
        group.finish();
    }
}

fn layer(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("ratelimit_layer");
    bench_service(&mut group, "bare", &rt, contenders::bare());
    bench_service(&mut group, "ours", &rt, contenders::ratelimit_layer_ours());
    bench_service(
        &mut group,
        "ours-wait",
        &rt,
        contenders::ratelimit_layer_ours_wait(),
    );
    bench_service(
        &mut group,
        "tower-limit",
        &rt,
        contenders::ratelimit_layer_tower(),
    );
    bench_service(
        &mut group,
        "tower-resilience",
        &rt,
        contenders::ratelimit_layer_tower_resilience(),
    );
    group.finish();
}

criterion_group!(benches, direct, keyed, layer);
criterion_main!(benches, clock_benches);

fn clocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("clocks");
    group.bench_function("std_instant", |b| b.iter(|| black_box(Instant::now())));
    group.bench_function("tokio_instant", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    group.finish();
}
criterion_group!(clock_benches, clocks);
