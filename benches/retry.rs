//! Retry middleware overhead when no retry happens: the bare service, ours, `tower::retry` and
//! tower-resilience's, in the same criterion group.
//!
//! `cargo xtask bench retry` prints the overhead ratios.

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

fn no_retry(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("retry_no_retry");
    bench_one(&mut group, "bare", &rt, contenders::bare());
    bench_one(&mut group, "ours", &rt, contenders::retry_ours());
    bench_one(
        &mut group,
        "ours-named",
        &rt,
        contenders::retry_ours_named(),
    );
    bench_one(&mut group, "tower-retry", &rt, contenders::retry_tower());
    bench_one(
        &mut group,
        "tower-resilience",
        &rt,
        contenders::retry_tower_resilience(),
    );
    group.finish();
}

criterion_group!(benches, no_retry);
criterion_main!(benches);
