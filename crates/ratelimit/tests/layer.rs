//! The tower layers with tower-test mocks.

mod common;
use common::tokio_limiter;

use std::net::IpAddr;
use std::time::Duration;

use sssonector_ratelimit::{
    KeyedLimiter, KeyedRateLimitLayer, Mode, Quota, RateLimitLayer, RateLimited, RateLimiter,
};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

fn one_per_100ms() -> RateLimiter {
    tokio_limiter(Quota::per_second(10).unwrap().with_burst(1).unwrap())
}

#[tokio::test(start_paused = true)]
async fn wait_mode_is_not_ready_until_admitted() {
    let (svc, mut handle) = mock::pair::<(), ()>();
    handle.allow(10);
    let mut svc = mock::Spawn::new(RateLimitLayer::new(one_per_100ms(), Mode::Wait).layer(svc));
    assert_ready_ok!(svc.poll_ready());
    drop(svc.call(()));
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn reject_mode_fails_fast_without_calling_the_inner_service() {
    let (svc, mut handle) = mock::pair::<(), ()>();
    handle.allow(0);
    let mut svc = RateLimitLayer::new(one_per_100ms(), Mode::Reject).layer(svc);
    handle.allow(1);
    let call = tokio::spawn({
        let mut svc = svc.clone();
        async move { svc.ready().await.unwrap().call(()).await }
    });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(());
    call.await.unwrap().unwrap();
    // Over the limit: ready at once (even though the inner service is not), then rejected.
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert!(limited.retry_after <= Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_clone_waits_for_its_own_turn() {
    let (svc, mut handle) = mock::pair::<(), ()>();
    handle.allow(10);
    let layer = RateLimitLayer::new(one_per_100ms(), Mode::Wait);
    let mut a = mock::Spawn::new(layer.layer(svc));
    assert_ready_ok!(a.poll_ready());
    let mut b = mock::Spawn::new(a.get_ref().clone());
    assert_pending!(b.poll_ready(), "the clone has no admission of its own");
    // Dropping a waiting clone gives its place back.
    drop(b);
    drop(a.call(()));
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_ready_ok!(a.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn keyed_wait_delays_only_the_busy_key() {
    let limiter = KeyedLimiter::<IpAddr>::builder()
        .quota(Quota::per_second(1).unwrap().with_burst(1).unwrap())
        .tokio_clock()
        .build()
        .unwrap();
    let svc = tower::service_fn(|ip: IpAddr| async move {
        Ok::<_, std::io::Error>((ip, tokio::time::Instant::now()))
    });
    let mut svc = KeyedRateLimitLayer::new(limiter, |ip: &IpAddr| *ip, Mode::Wait).layer(svc);
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    let start = tokio::time::Instant::now();
    svc.ready().await.unwrap().call(a).await.unwrap();
    let second_a = svc.ready().await.unwrap().call(a);
    let first_b = svc.ready().await.unwrap().call(b);
    let (second_a, first_b) = tokio::join!(second_a, first_b);
    assert_eq!(first_b.unwrap().1 - start, Duration::ZERO);
    assert_eq!(second_a.unwrap().1 - start, Duration::from_secs(1));
}
