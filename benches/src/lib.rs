//! Helpers shared by the benchmarks: one tower call driven to completion with as little harness
//! cost as possible, the same for every contender.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower::Service;

pub mod contenders;

/// Polls `service` ready and calls it, polling with a no-op waker. Every contender here is
/// ready at once and answers on the first poll, so no runtime is involved; if one ever waits,
/// `runtime` finishes the job, so the result is right even then.
#[inline]
pub fn call<S, R>(runtime: &tokio::runtime::Runtime, service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(ready) => ready.expect("benchmark services do not fail"),
        Poll::Pending => runtime
            .block_on(poll_fn(|cx| service.poll_ready(cx)))
            .expect("benchmark services do not fail"),
    }
    let mut future = pin!(service.call(request));
    let result = match future.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => runtime.block_on(future),
    };
    result.expect("benchmark services do not fail")
}

/// A current-thread runtime with timers, entered by benchmarks whose contenders read tokio's
/// clock.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
}

/// Adds one contender to a criterion group: `name` calling `service` once per iteration.
pub fn bench_service<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    runtime: &tokio::runtime::Runtime,
    mut service: S,
) where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.iter(|| call(runtime, &mut service, std::hint::black_box(7)))
    });
}
