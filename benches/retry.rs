//! Retry middleware overhead when no retry happens: the bare service, ours, `tower::retry` and
//! tower-resilience's, in the same criterion group.
//!
//! `cargo xtask bench retry` prints the overhead ratios.

use criterion::{Criterion, criterion_group, criterion_main};
use sssonector_benches::{bench_service, contenders, runtime};

fn no_retry(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("retry_no_retry");
    bench_service(&mut group, "bare", &rt, contenders::bare());
    bench_service(&mut group, "ours", &rt, contenders::retry_ours());
    bench_service(
        &mut group,
        "ours-named",
        &rt,
        contenders::retry_ours_named(),
    );
    bench_service(&mut group, "tower-retry", &rt, contenders::retry_tower());
    bench_service(
        &mut group,
        "tower-resilience",
        &rt,
        contenders::retry_tower_resilience(),
    );
    group.finish();
}

criterion_group!(benches, no_retry);
criterion_main!(benches);
