//! Circuit breaker overhead in the closed state: the bare service, ours and
//! tower-resilience's, in the same criterion group.
//!
//! `cargo xtask bench breaker` prints the overhead ratios.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use sssonector_benches::{call, contenders, runtime};
use tower::Service;

fn bench_one<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    rt: &tokio::runtime::Runtime,
    mut svc: S,
) where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| b.iter(|| call(rt, &mut svc, black_box(7))));
}

fn closed(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("breaker_closed");
    bench_one(&mut group, "bare", &rt, contenders::bare());
    bench_one(&mut group, "ours", &rt, contenders::breaker_ours());
    bench_one(
        &mut group,
        "tower-resilience",
        &rt,
        contenders::breaker_tower_resilience(),
    );
    group.finish();
}

fn closed_rate_window(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("breaker_closed_rate_window");
    bench_one(&mut group, "bare", &rt, contenders::bare());
    bench_one(&mut group, "ours", &rt, contenders::breaker_ours_rate());
    bench_one(
        &mut group,
        "tower-resilience",
        &rt,
        contenders::breaker_tower_resilience_rate(),
    );
    group.finish();
}

criterion_group!(benches, closed, closed_rate_window);
criterion_main!(benches);
