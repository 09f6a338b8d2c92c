//! A template: a client that sends requests through a connection pool over two local echo
//! servers, one of which dies halfway through; traffic fails over to the other, and the pool's
//! statistics are printed.
//!
//! Run it with `cargo run -p sssonector-examples --example pooled_failover`.

#![allow(
    clippy::print_stdout,
    reason = "an example speaks to the person running it"
)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sssonector_connpool::{Balance, Manager, Pool, PoolError};
use sssonector_core::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Opens TCP connections; a connection whose peer has closed reads as end-of-file, which is
/// how both the health check and the return test notice a dead server.
struct Tcp;

fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,                                            // end of file
        Ok(_) => true,                                            // stray bytes: unusable
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false, // open and quiet
        Err(_) => true,
    }
}

impl Manager for Tcp {
    type Endpoint = SocketAddr;
    type Connection = TcpStream;
    type Error = io::Error;

    async fn connect(&self, addr: &SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn check(&self, stream: &mut TcpStream) -> io::Result<()> {
        if peer_closed(stream) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer closed",
            ));
        }
        Ok(())
    }

    fn is_broken(&self, stream: &mut TcpStream) -> bool {
        peer_closed(stream)
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// An echo server that stops (closing every connection) when `stop` turns true.
async fn echo_server(stop: watch::Receiver<bool>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut stop_accepting = stop.clone();
        loop {
            let (mut socket, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(_) => return,
                },
                () = stopped(&mut stop_accepting) => return, // the listener is dropped
            };
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    tokio::select! {
                        read = socket.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => if socket.write_all(&buf[..n]).await.is_err() { return },
                        },
                        () = stopped(&mut stop) => return, // the connection is closed
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// One request: a line out, the same line back.
async fn request(pool: &Pool<Tcp>, n: u32) -> Result<usize, BoxError> {
    let message = format!("request {n:05}\n");
    for attempt in 0..3 {
        let mut conn = match pool.get().await {
            Ok(conn) => conn,
            Err(e @ PoolError::Unavailable { .. }) if attempt < 2 => {
                println!("  request {n}: {e}; retrying");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let endpoint = conn.endpoint();
        let mut reply = vec![0u8; message.len()];
        let exchange = async {
            conn.write_all(message.as_bytes()).await?;
            conn.read_exact(&mut reply).await?;
            io::Result::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(1), exchange).await {
            Ok(Ok(())) if reply == message.as_bytes() => return Ok(endpoint),
            _ => {
                // The server went away under us: close this connection and try again.
                conn.discard();
            }
        }
    }
    Err(format!("request {n} failed three times").into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let (stop_a, a_stopped) = watch::channel(false);
    let (stop_b, b_stopped) = watch::channel(false);
    let a = echo_server(a_stopped).await?;
    let b = echo_server(b_stopped).await?;
    println!("echo servers on {a} (endpoint 0) and {b} (endpoint 1)");

    let pool = Pool::builder(Tcp)
        .name("echo")
        .endpoint(a)
        .endpoint(b)
        .max_size(8)
        .min_idle_per_endpoint(2)
        .balance(Balance::RoundRobin)
        .check_on_checkout(true)
        .health_check_interval(Some(Duration::from_millis(100)))
        .connect_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_secs(2))
        .build()?;
    tokio::spawn(pool.maintenance(Duration::from_millis(100)));

    let mut per_endpoint = [0u32; 2];
    for n in 0..400 {
        if n == 200 {
            println!("-- stopping endpoint 1 --");
            stop_b.send(true)?;
            // Meanwhile the pool's upkeep tries to keep two warm connections to it, and fails.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let endpoint = request(&pool, n).await?;
        per_endpoint[endpoint] += 1;
        if n == 199 || n == 399 {
            let stats = pool.stats();
            println!(
                "after {} requests: endpoint 0 served {}, endpoint 1 served {}; \
                 {} connects, {} connect failures, {} failed health checks; breakers {:?}/{:?}",
                n + 1,
                per_endpoint[0],
                per_endpoint[1],
                stats.connects,
                stats.connect_failures,
                stats.health_failures,
                stats.endpoints[0].breaker,
                stats.endpoints[1].breaker,
            );
        }
    }
    let stats = pool.stats();
    println!(
        "pool: {} open ({} idle, {} in use) of {}; endpoint 0: {} open, endpoint 1: {} open",
        stats.size,
        stats.idle,
        stats.in_use,
        stats.max_size,
        stats.endpoints[0].open,
        stats.endpoints[1].open
    );
    if per_endpoint[1] == 0 || per_endpoint[0] < 200 {
        return Err("traffic did not fail over as expected".into());
    }
    pool.close().await;
    drop(stop_a);
    Ok(())
}
