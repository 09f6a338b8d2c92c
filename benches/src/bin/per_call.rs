//! Runs one contender `N` times: `per-call GROUP/NAME N`. `cargo xtask bench` runs it under
//! callgrind at two values of N; the difference divided by the difference in N is the
//! instructions per call, free of start-up cost and of timing noise.

use std::hint::black_box;

use sssonector_benches::{call, contenders, runtime};
use tower::Service;

fn run<S>(runtime: &tokio::runtime::Runtime, mut service: S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_add(call(runtime, &mut service, black_box(7)));
    }
    black_box(sum);
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
        other => {
            eprintln!("unknown contender `{other}`");
            std::process::exit(2);
        }
    }
}
