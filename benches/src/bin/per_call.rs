//! Runs one contender `N` times: `per-call GROUP/NAME N`. `cargo xtask bench` runs it under
//! callgrind with collection switched on only inside `measured`, after a warm-up call has done
//! every one-time initialisation (clock calibration, lazy statics), so the count divided by `N`
//! is instructions per call: exact and repeatable.

use std::hint::black_box;

use sssonector_benches::{call, contenders, runtime};
use tower::Service;

/// The measured loop; callgrind collects inside it only (`--toggle-collect=*measured*`).
#[inline(never)]
fn measured(n: u64, op: &mut dyn FnMut(u64) -> u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(op(black_box(i)));
    }
    sum
}

fn run_op(n: u64, mut op: impl FnMut(u64) -> u64) {
    black_box(op(0));
    black_box(measured(n, &mut op));
}

fn run<S>(runtime: &tokio::runtime::Runtime, mut service: S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    run_op(n, |_| call(runtime, &mut service, black_box(7)));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(n)) = (args.next(), args.next().and_then(|n| n.parse().ok())) else {
        eprintln!("usage: per-call GROUP/NAME N");
        std::process::exit(2);
    };
    let rt = runtime();
    let _guard = rt.enter();
    match name.as_str() {
        "bare" => run(&rt, contenders::bare(), n),
        "retry/ours" => run(&rt, contenders::retry_ours(), n),
        "retry/ours-named" => run(&rt, contenders::retry_ours_named(), n),
        "retry/tower-retry" => run(&rt, contenders::retry_tower(), n),
        "retry/tower-resilience" => run(&rt, contenders::retry_tower_resilience(), n),
        "breaker/ours" => run(&rt, contenders::breaker_ours(), n),
        "breaker/tower-resilience" => run(&rt, contenders::breaker_tower_resilience(), n),
        "breaker-rate/ours" => run(&rt, contenders::breaker_ours_rate(), n),
        "breaker-rate/tower-resilience" => run(&rt, contenders::breaker_tower_resilience_rate(), n),
        "ratelimit-check/ours" => {
            let l = contenders::ratelimit_ours();
            run_op(n, |_| u64::from(l.check().is_ok()));
        }
        "ratelimit-check/governor" => {
            let l = contenders::ratelimit_governor();
            run_op(n, |_| u64::from(l.check().is_ok()));
        }
        "ratelimit-keyed/ours" => {
            let l = contenders::keyed_ours();
            run_op(n, |i| u64::from(l.check_key(&(i % 1024)).is_ok()));
        }
        "ratelimit-keyed/governor" => {
            let l = contenders::keyed_governor();
            run_op(n, |i| u64::from(l.check_key(&(i % 1024)).is_ok()));
        }
        "ratelimit-layer/bare" => run(&rt, contenders::bare(), n),
        "ratelimit-layer/ours" => run(&rt, contenders::ratelimit_layer_ours(), n),
        "ratelimit-layer/ours-wait" => run(&rt, contenders::ratelimit_layer_ours_wait(), n),
        "ratelimit-layer/tower-limit" => run(&rt, contenders::ratelimit_layer_tower(), n),
        "ratelimit-layer/tower-resilience" => {
            run(&rt, contenders::ratelimit_layer_tower_resilience(), n);
        }
        "bufpool/ours" => {
            let pool = contenders::bufpool_ours();
            run_op(n, |_| contenders::bufpool_ours_op(&pool));
        }
        "bufpool/lockfree-object-pool" => {
            let pool = contenders::bufpool_lockfree();
            run_op(n, |_| contenders::bufpool_lockfree_op(&pool));
        }
        "bufpool/lockfree-object-pool-owned" => {
            let pool = contenders::bufpool_lockfree_owned();
            run_op(n, |_| contenders::bufpool_lockfree_owned_op(&pool));
        }
        "bufpool/object-pool" => {
            let pool = contenders::bufpool_object_pool();
            run_op(n, |_| contenders::bufpool_object_pool_op(&pool));
        }
        "bufpool/fresh-bytesmut" => run_op(n, |_| contenders::bufpool_fresh_op()),
        other => {
            eprintln!("unknown contender `{other}`");
            std::process::exit(2);
        }
    }
}
