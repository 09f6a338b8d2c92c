//! `RetryLayer` with a response classifier (retrying an `Ok` the service calls a failure) and a
//! request policy (retrying requests that are not `Clone`, declining the ones that cannot be
//! repeated).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sssonector_retry::{Backoff, ResponseVerdict, RetryLayer, RetryPolicy};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

fn policy(retries: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(retries)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .build()
        .unwrap()
}

/// A reply with an HTTP-like status.
#[derive(Debug, PartialEq)]
struct Reply(u16);

fn by_status(reply: &Reply) -> ResponseVerdict {
    match reply.0 {
        503 => ResponseVerdict::Retry,
        429 => ResponseVerdict::RetryAfter(Duration::from_secs(3)),
        _ => ResponseVerdict::Accept,
    }
}

#[tokio::test(start_paused = true)]
async fn a_response_judged_retryable_is_retried_until_one_is_accepted() {
    let (service, mut handle) = mock::pair::<String, Reply>();
    let mut service = RetryLayer::new(policy(3))
        .responses(by_status)
        .layer(service);
    let call =
        tokio::spawn(async move { service.ready().await.unwrap().call("get".to_string()).await });
    for _ in 0..2 {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req, "get");
        send.send_response(Reply(503));
    }
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Reply(200));
    assert_eq!(call.await.unwrap().unwrap(), Reply(200));
}

#[tokio::test(start_paused = true)]
async fn when_the_policy_gives_up_the_last_response_is_returned() {
    let (service, mut handle) = mock::pair::<(), Reply>();
    let mut service = RetryLayer::new(policy(1))
        .responses(by_status)
        .layer(service);
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(()).await });
    for _ in 0..2 {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(Reply(503));
    }
    assert_eq!(call.await.unwrap().unwrap(), Reply(503));
    // Exactly two attempts: nothing further was sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.allow(0);
    // The service is gone with the call: no request is left in the channel.
    assert!(matches!(
        tokio::time::timeout(Duration::from_millis(1), handle.next_request()).await,
        Ok(None) | Err(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_in_a_response_sets_the_wait() {
    let (service, mut handle) = mock::pair::<(), Reply>();
    let mut service = RetryLayer::new(policy(1))
        .responses(by_status)
        .layer(service);
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(()).await });
    let (_, send) = handle.next_request().await.unwrap();
    let refused_at = tokio::time::Instant::now();
    send.send_response(Reply(429));
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(refused_at.elapsed(), Duration::from_secs(3));
    send.send_response(Reply(200));
    assert_eq!(call.await.unwrap().unwrap(), Reply(200));
}

#[tokio::test(start_paused = true)]
async fn errors_still_count_beside_a_response_classifier() {
    let (service, mut handle) = mock::pair::<(), Reply>();
    let mut service = RetryLayer::new(policy(2))
        .responses(by_status)
        .layer(service);
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(()).await });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(io::Error::from(io::ErrorKind::ConnectionReset));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Reply(503));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Reply(204));
    assert_eq!(call.await.unwrap().unwrap(), Reply(204));
}

/// A request that is not `Clone`: a buffered body can be copied, a streamed one cannot.
#[derive(Debug, PartialEq)]
enum Body {
    Full(Vec<u8>),
    Stream(u32),
}

fn copy_buffered(body: &Body) -> Option<Body> {
    match body {
        Body::Full(bytes) => Some(Body::Full(bytes.clone())),
        Body::Stream(_) => None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_is_not_clone_is_retried_through_its_copy_policy() {
    let (service, mut handle) = mock::pair::<Body, &'static str>();
    let mut service = RetryLayer::new(policy(2))
        .requests(copy_buffered)
        .layer(service);
    let call = tokio::spawn(async move {
        service
            .ready()
            .await
            .unwrap()
            .call(Body::Full(b"payload".to_vec()))
            .await
    });
    for _ in 0..2 {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req, Body::Full(b"payload".to_vec()));
        send.send_error(io::Error::from(io::ErrorKind::ConnectionReset));
    }
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, Body::Full(b"payload".to_vec()));
    send.send_response("done");
    assert_eq!(call.await.unwrap().unwrap(), "done");
}

#[test]
fn a_declined_request_is_sent_once_and_its_failure_is_final() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let policy = metrics::with_local_recorder(&recorder, || {
        RetryPolicy::builder()
            .name("streams")
            .max_retries(3)
            .backoff(Backoff::constant(Duration::from_millis(10)))
            .build()
            .unwrap()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let copies = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&copies);
    rt.block_on(async move {
        let (service, mut handle) = mock::pair::<Body, &'static str>();
        let mut service = RetryLayer::new(policy)
            .requests(move |body: &Body| {
                counted.fetch_add(1, Ordering::SeqCst);
                copy_buffered(body)
            })
            .layer(service);
        let call =
            tokio::spawn(async move { service.ready().await.unwrap().call(Body::Stream(7)).await });
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req, Body::Stream(7));
        send.send_error(io::Error::from(io::ErrorKind::ConnectionReset));
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(
            err.downcast_ref::<io::Error>().unwrap().kind(),
            io::ErrorKind::ConnectionReset
        );
        handle.allow(0);
        assert!(
            matches!(
                tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await,
                Ok(None) | Err(_)
            ),
            "a request that could not be copied was sent again"
        );
    });
    assert_eq!(copies.load(Ordering::SeqCst), 1);
    let give_up = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n)
                if n > 0 && key.key().name() == "sssonector_retry_give_ups_total" =>
            {
                Some((
                    key.key()
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect::<Vec<_>>(),
                    n,
                ))
            }
            _ => None,
        })
        .expect("a give-up was counted");
    assert_eq!(give_up.1, 1);
    assert!(give_up.0.contains(&"reason=not_repeatable".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_declined_request_that_succeeds_is_untouched() {
    let (service, mut handle) = mock::pair::<Body, &'static str>();
    let mut service = RetryLayer::new(policy(2))
        .requests(copy_buffered)
        .layer(service);
    let call =
        tokio::spawn(async move { service.ready().await.unwrap().call(Body::Stream(1)).await });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("ok");
    assert_eq!(call.await.unwrap().unwrap(), "ok");
}
