//! `RetryLayer` semantics with tower-test mocks: readiness, cloning, errors passing through.

use std::io;
use std::time::Duration;

use sssonector_core::BoxError;
use sssonector_retry::{AttemptTimedOut, Backoff, RetryBudget, RetryLayer, RetryPolicy};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(2)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn readiness_passes_through() {
    let (service, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut service = mock::Spawn::new(RetryLayer::new(policy()).layer(service));
    handle.allow(0);
    assert_pending!(service.poll_ready());
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_a_clone_of_the_request() {
    let (service, mut handle) = mock::pair::<String, &'static str>();
    let mut service = RetryLayer::new(policy()).layer(service);
    let call = tokio::spawn(async move {
        service
            .ready()
            .await
            .unwrap()
            .call("hello".to_string())
            .await
    });
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "hello");
    send.send_error(io::Error::from(io::ErrorKind::ConnectionReset));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "hello");
    send.send_response("world");
    assert_eq!(call.await.unwrap().unwrap(), "world");
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_pass_through_unchanged() {
    let (service, mut handle) = mock::pair::<(), ()>();
    let mut service = RetryLayer::new(policy()).layer(service);
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(()).await });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(io::Error::from(io::ErrorKind::InvalidInput));
    let err: BoxError = call.await.unwrap().unwrap_err();
    let io = err
        .downcast_ref::<io::Error>()
        .expect("the inner error, boxed");
    assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
}

#[tokio::test(start_paused = true)]
async fn gives_up_with_the_last_inner_error() {
    let (service, mut handle) = mock::pair::<(), ()>();
    let mut service = RetryLayer::new(policy()).layer(service);
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(()).await });
    for _ in 0..3 {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(io::Error::from(io::ErrorKind::TimedOut));
    }
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::TimedOut
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_clone_to_be_ready() {
    let (service, mut handle) = mock::pair::<(), ()>();
    let mut service = RetryLayer::new(policy()).layer(service);
    handle.allow(1);
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(()).await });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(io::Error::from(io::ErrorKind::ConnectionRefused));
    // No capacity: the retry must not be sent until the service is ready again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!call.is_finished());
    handle.allow(1);
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(());
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_surface_as_a_marker_error() {
    let (service, mut handle) = mock::pair::<(), ()>();
    let policy = RetryPolicy::builder()
        .max_retries(1)
        .backoff(Backoff::constant(Duration::from_millis(5)))
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut service = RetryLayer::new(policy).layer(service);
    let start = tokio::time::Instant::now();
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(()).await });
    // Hold both requests' responders without answering.
    let first = handle.next_request().await.unwrap();
    let second = handle.next_request().await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err.downcast_ref::<AttemptTimedOut>().map(|e| e.timeout),
        Some(Duration::from_millis(100))
    );
    assert_eq!(start.elapsed(), Duration::from_millis(205));
    drop((first, second));
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_budget() {
    let budget = RetryBudget::new(0.0, 0).unwrap();
    let policy = RetryPolicy::builder()
        .budget(budget)
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .build()
        .unwrap();
    let (service, mut handle) = mock::pair::<(), ()>();
    let service = RetryLayer::new(policy).layer(service);
    let mut a = service.clone();
    let call = tokio::spawn(async move { a.ready().await.unwrap().call(()).await });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(io::Error::from(io::ErrorKind::ConnectionRefused));
    // An empty budget: no retry, the error comes straight back.
    assert!(call.await.unwrap().is_err());
    assert!(handle.next_request().now_or_never_is_none());
}

trait NowOrNever {
    fn now_or_never_is_none(self) -> bool;
}

impl<F: std::future::Future> NowOrNever for F {
    fn now_or_never_is_none(self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(self);
        fut.as_mut().poll(&mut cx).is_pending()
    }
}
