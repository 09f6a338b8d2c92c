//! Circuit breaker overhead in the closed state: the bare service, ours and
//! tower-resilience's, in the same criterion group.
//!
//! `cargo xtask bench breaker` prints the overhead ratios.

use criterion::{Criterion, criterion_group, criterion_main};
use sssonector_benches::{bench_service, contenders, runtime};

fn closed(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("breaker_closed");
    bench_service(&mut group, "bare", &rt, contenders::bare());
    bench_service(&mut group, "ours", &rt, contenders::breaker_ours());
    bench_service(
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
    bench_service(&mut group, "bare", &rt, contenders::bare());
    bench_service(&mut group, "ours", &rt, contenders::breaker_ours_rate());
    bench_service(
        &mut group,
        "tower-resilience",
        &rt,
        contenders::breaker_tower_resilience_rate(),
    );
    group.finish();
}

criterion_group!(benches, closed, closed_rate_window);
criterion_main!(benches);
