//! `CircuitBreakerLayer` semantics with tower-test mocks.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use sssonector_breaker::{CircuitBreaker, CircuitBreakerLayer, State};
use sssonector_core::{BoxError, CircuitOpen, ErrorClass, ManualClock};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

fn breaker(clock: &ManualClock) -> CircuitBreaker {
    CircuitBreaker::builder()
        .consecutive_failures(1)
        .success_threshold(1)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn readiness_passes_through_while_closed() {
    let clock = ManualClock::new();
    let (svc, mut handle) = mock::pair::<(), ()>();
    let mut svc = mock::Spawn::new(CircuitBreakerLayer::new(breaker(&clock)).layer(svc));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test]
async fn open_rejects_without_calling_the_inner_service() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let (svc, mut handle) = mock::pair::<(), ()>();
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(svc);

    let call = tokio::spawn({
        let mut svc = svc.clone();
        async move { svc.ready().await.unwrap().call(()).await }
    });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(io::Error::from(io::ErrorKind::ConnectionRefused));
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(b.state(), State::Open);

    // Even with the inner service not ready, a rejection is ready at once.
    handle.allow(0);
    let err: BoxError = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.retry_after, Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn fallback_answers_rejected_requests() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    b.force_open();
    let (svc, _handle) = mock::pair::<&'static str, String>();
    let mut svc = CircuitBreakerLayer::new(b)
        .fallback(
            |req: &'static str, open: CircuitOpen| -> Result<String, BoxError> {
                Ok(format!("cached {req} ({open})"))
            },
        )
        .layer(svc);
    let answer = svc.ready().await.unwrap().call("key").await.unwrap();
    assert_eq!(answer, "cached key (circuit open)");
}

#[tokio::test]
async fn a_clone_starts_without_the_probe_slot_and_dropping_frees_it() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let (svc, mut handle) = mock::pair::<(), ()>();
    handle.allow(10);
    let layer = CircuitBreakerLayer::new(b.clone());
    let mut first = mock::Spawn::new(layer.layer(svc));
    b.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(30));

    // `first` takes the single half-open probe slot in poll_ready.
    assert_ready_ok!(first.poll_ready());
    assert_eq!(b.stats().probes_in_flight, 1);
    let mut second = mock::Spawn::new(first.get_ref().clone());
    assert_ready_ok!(second.poll_ready());
    let err = second.call(()).await.unwrap_err();
    assert!(
        err.downcast_ref::<CircuitOpen>().is_some(),
        "the clone has no slot of its own"
    );

    // Dropping the service that holds the slot frees it.
    drop(first);
    assert_eq!(b.stats().probes_in_flight, 0);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test]
async fn ignored_errors_do_not_trip() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let (svc, mut handle) = mock::pair::<(), ()>();
    let mut svc = CircuitBreakerLayer::new(b.clone())
        .classifier(
            |e: &BoxError| match e.downcast_ref::<io::Error>().map(io::Error::kind) {
                Some(io::ErrorKind::NotFound) => ErrorClass::Ignored,
                _ => ErrorClass::Transient,
            },
        )
        .layer(svc);
    for _ in 0..3 {
        let call = tokio::spawn({
            let mut svc = svc.clone();
            async move { svc.ready().await.unwrap().call(()).await }
        });
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(io::Error::from(io::ErrorKind::NotFound));
        assert!(call.await.unwrap().is_err());
    }
    assert_eq!(b.state(), State::Closed);
    let _ = svc.ready().await.unwrap();
}

#[tokio::test]
async fn cancelled_calls_count_nothing() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let (svc, mut handle) = mock::pair::<(), ()>();
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(svc);
    let fut = svc.ready().await.unwrap().call(());
    let (_, _send) = handle.next_request().await.unwrap();
    drop(fut);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().consecutive_failures, 0);
}

#[test]
#[should_panic(expected = "called before poll_ready")]
fn calling_without_readiness_panics_with_the_contract() {
    let clock = ManualClock::new();
    let (svc, _handle) = mock::pair::<(), ()>();
    let mut svc = CircuitBreakerLayer::new(breaker(&clock)).layer(svc);
    drop(svc.call(()));
}

#[tokio::test]
async fn time_waiting_for_readiness_is_not_call_time() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .consecutive_failures(100)
        .slow_calls(Duration::from_millis(500), 0.5)
        .minimum_calls(2)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let (svc, mut handle) = mock::pair::<(), ()>();
    let mut svc = mock::Spawn::new(CircuitBreakerLayer::new(b.clone()).layer(svc));
    for _ in 0..4 {
        // Admitted, then 2 s waiting for the inner service to be ready...
        handle.allow(0);
        assert_pending!(svc.poll_ready());
        clock.advance(Duration::from_secs(2));
        handle.allow(1);
        assert_ready_ok!(svc.poll_ready());
        // ...then a call that answers at once: not a slow call.
        let response = svc.call(());
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(());
        response.await.unwrap();
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "readiness waits counted as slow calls"
    );
}

#[tokio::test]
async fn a_response_can_count_as_a_failure() {
    use sssonector_breaker::Outcome;
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let (svc, mut handle) = mock::pair::<(), u16>();
    // An "HTTP status" of 503 is a failure; other responses are successes.
    let mut svc = mock::Spawn::new(
        CircuitBreakerLayer::new(b.clone())
            .responses(|status: &u16| {
                if *status == 503 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            })
            .layer(svc),
    );
    handle.allow(2);
    assert_ready_ok!(svc.poll_ready());
    let ok = svc.call(());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(200);
    assert_eq!(ok.await.unwrap(), 200);
    assert_eq!(b.state(), State::Closed);
    assert_ready_ok!(svc.poll_ready());
    let unavailable = svc.call(());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(503);
    // The caller still gets the response; the breaker counted it as a failure.
    assert_eq!(unavailable.await.unwrap(), 503);
    assert_eq!(b.state(), State::Open);
}
