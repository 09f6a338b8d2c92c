//! A template: a flaky TCP service behind retry and circuit-breaker layers.
//!
//! A local "ping" server on 127.0.0.1 answers `pong`, then drops every connection for 800 ms,
//! then recovers. The client sends one request every 50 ms through
//!
//! ```text
//! Retry (backoff with jitter, honours the breaker's retry_after)
//!   └─ CircuitBreaker (opens after 3 consecutive failures, probes after 300 ms)
//!        └─ TCP ping service
//! ```
//!
//! and prints every retry and every state change. The request caught by the outage is retried
//! through it: three failures open the breaker, the retry waits out each open period instead of
//! hammering the server, a failed probe reopens it for longer, and the first probe after the
//! recovery closes it. It exits non-zero unless the breaker opened, closed again, and every
//! request finally succeeded. Run it with
//! `cargo run -p sssonector-examples --example retry_breaker_tcp`.

#![allow(
    clippy::print_stdout,
    reason = "an example speaks to the person running it"
)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sssonector_breaker::{CircuitBreaker, CircuitBreakerLayer, State};
use sssonector_core::BoxError;
use sssonector_retry::{Backoff, Jitter, RetryAfterPolicy, RetryLayer, RetryPolicy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// Requests sent in all; the outage starts with request `OUTAGE_AT` and lasts `OUTAGE_FOR`.
const REQUESTS: u32 = 30;
const OUTAGE_AT: u32 = 8;
const OUTAGE_FOR: Duration = Duration::from_millis(800);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let at = move || format!("{:>6.0} ms", started.elapsed().as_secs_f64() * 1000.0);

    // The flaky server: while `failing` is set it closes each connection without answering.
    let failing = Arc::new(AtomicBool::new(false));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, failing.clone()));

    let opened = Arc::new(AtomicU32::new(0));
    let closed = Arc::new(AtomicU32::new(0));
    let (o, c) = (opened.clone(), closed.clone());
    let breaker = CircuitBreaker::builder()
        .name("ping")
        .consecutive_failures(3)
        .open_duration(Duration::from_millis(300))
        .open_backoff(2.0, Duration::from_secs(2))
        .open_jitter(0.1)
        .success_threshold(1)
        .on_state_change(move |change| {
            println!(
                "{} breaker {}: {} -> {} ({}){}",
                at(),
                change.breaker,
                change.from,
                change.to,
                change.cause,
                change
                    .open_for
                    .map(|d| format!(", open for {d:?}"))
                    .unwrap_or_default()
            );
            match change.to {
                State::Open => o.fetch_add(1, Ordering::SeqCst),
                State::Closed => c.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        })
        .build()?;

    let policy = RetryPolicy::builder()
        .name("ping")
        .max_retries(8)
        .backoff(
            Backoff::exponential(Duration::from_millis(20))
                .max_delay(Duration::from_millis(500))
                .jitter(Jitter::Equal),
        )
        .retry_after(RetryAfterPolicy::HonorUpTo(Duration::from_secs(2)))
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(1))
        .on_retry(move |event| {
            println!(
                "{} retry: attempt {} failed ({}), next in {:?}",
                at(),
                event.attempt,
                event.failure,
                event.delay
            );
        })
        .build()?;

    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(service_fn(move |n: u32| ping(addr, n)));

    let mut succeeded = 0;
    for n in 0..REQUESTS {
        if n == OUTAGE_AT {
            println!("{} server: drops every connection for {OUTAGE_FOR:?}", at());
            failing.store(true, Ordering::SeqCst);
            let failing = failing.clone();
            tokio::spawn(async move {
                tokio::time::sleep(OUTAGE_FOR).await;
                failing.store(false, Ordering::SeqCst);
                println!("{} server: recovered", at());
            });
        }
        match client.ready().await?.call(n).await {
            Ok(reply) => {
                succeeded += 1;
                println!("{} request {n}: {reply}", at());
            }
            Err(e) => println!("{} request {n} failed: {e}", at()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (opened, closed) = (opened.load(Ordering::SeqCst), closed.load(Ordering::SeqCst));
    println!(
        "\n{succeeded}/{REQUESTS} requests succeeded; breaker opened {opened}x, closed {closed}x, now {}",
        breaker.state()
    );
    if opened == 0 || closed == 0 || breaker.state() != State::Closed {
        return Err("expected the breaker to open during the outage and close after it".into());
    }
    if succeeded < REQUESTS {
        return Err(format!("only {succeeded} of {REQUESTS} requests succeeded").into());
    }
    Ok(())
}

/// Sends `ping N` and reads the reply line; a connection closed without a reply is an
/// `UnexpectedEof`, which the default classifier treats as transient.
async fn ping(addr: SocketAddr, n: u32) -> io::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("ping {n}\n").as_bytes()).await?;
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        ));
    }
    Ok(line.trim_end().to_owned())
}

async fn serve(listener: TcpListener, failing: Arc<AtomicBool>) {
    while let Ok((stream, _)) = listener.accept().await {
        let failing = failing.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            if failing.load(Ordering::SeqCst) {
                return; // drop the connection without a reply
            }
            let reply = line.trim_end().replacen("ping", "pong", 1);
            let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
        });
    }
}
