//! Connection pool throughput: tasks taking a connection, yielding once while holding it, and
//! giving it back, through our pool, deadpool and bb8 — pool of 8 with 8 and with 32 tasks on a
//! two-worker runtime, and with 32 tasks when every tenth connection comes back broken and must
//! be replaced.
//!
//! `cargo xtask bench connpool` prints the ratios.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sssonector_benches::contenders::connpool::{self as cp, run};

fn group(c: &mut Criterion, name: &str, tasks: u64, faults: bool) {
    let rt = cp::runtime();
    let mut group = c.benchmark_group(name);
    group.measurement_time(Duration::from_secs(4));

    let ours = cp::ours(faults);
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let pool = ours.clone();
            run(&rt, tasks, iters, move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("connection");
                    tokio::task::yield_now().await;
                    black_box(*conn);
                }
            })
        })
    });

    let dead = cp::deadpool(faults);
    group.bench_function("deadpool", |b| {
        b.iter_custom(|iters| {
            let pool = dead.clone();
            run(&rt, tasks, iters, move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("connection");
                    tokio::task::yield_now().await;
                    black_box(*conn);
                }
            })
        })
    });

    let bb8 = rt.block_on(cp::bb8(faults));
    group.bench_function("bb8", |b| {
        b.iter_custom(|iters| {
            let pool = bb8.clone();
            run(&rt, tasks, iters, move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("connection");
                    tokio::task::yield_now().await;
                    black_box(*conn);
                }
            })
        })
    });
    group.finish();
}

fn pools(c: &mut Criterion) {
    group(c, "connpool_8x8", 8, false);
    group(c, "connpool_8x32", 32, false);
    group(c, "connpool_8x32_faults", 32, true);
}

criterion_group!(benches, pools);
criterion_main!(benches);
