//! A template: copy bytes between two local sockets at a set rate, and print the rate achieved.
//!
//! A sender writes 3 MB through a [`PacedStream`] limited to 8 Mbit/s on the wire (5 % TCP/IP
//! overhead included, so the payload runs at about 7.6 Mbit/s); a receiver on 127.0.0.1 counts
//! what arrives. Run it with `cargo run -p sssonector-examples --example throttled_copy`, or
//! pass a rate in Mbit/s and a size in MB: `... -- 20 10`.

#![allow(
    clippy::print_stdout,
    reason = "an example speaks to the person running it"
)]

use std::time::Instant;

use sssonector_core::BoxError;
use sssonector_ratelimit::{PacedStream, Pacing, Quota, RateLimiter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mbit: u64 = args.next().map_or(Ok(8), |a| a.parse())?;
    let megabytes: u64 = args.next().map_or(Ok(3), |a| a.parse())?;
    let total = megabytes * 1_000_000;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receiver = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(received);
            }
            received += n as u64;
        }
    });

    let limit = RateLimiter::builder()
        .name("upload")
        .quota(Quota::bits_per_second(mbit * 1_000_000)?)
        .build()?;
    let pacing = Pacing::new(vec![limit])?; // 5 % overhead by default
    let socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let mut sender = PacedStream::new(socket, None, Some(pacing));

    let chunk = vec![0x5au8; 128 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next_report = 1_000_000;
    while sent < total {
        let n = usize::try_from(total - sent).map_or(chunk.len(), |left| left.min(chunk.len()));
        sender.write_all(&chunk[..n]).await?;
        sent += n as u64;
        if sent >= next_report {
            let rate = sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6;
            println!(
                "{:>5.1} MB sent, {rate:.2} Mbit/s payload so far",
                sent as f64 / 1e6
            );
            next_report += 1_000_000;
        }
    }
    sender.shutdown().await?;
    let received = receiver.await??;
    let secs = start.elapsed().as_secs_f64();
    let payload = received as f64 * 8.0 / secs / 1e6;
    let expected = mbit as f64 / 1.05;
    println!(
        "copied {received} bytes in {secs:.2} s: {payload:.2} Mbit/s payload, {:.2} Mbit/s with overhead (limit {mbit} Mbit/s)",
        payload * 1.05
    );
    if received != total {
        return Err(format!("received {received} of {total} bytes").into());
    }
    // The initial burst (100 ms of rate) lets short copies run a little fast.
    if payload > expected * 1.15 || payload < expected * 0.9 {
        return Err(format!("payload rate {payload:.2} Mbit/s is far from {expected:.2}").into());
    }
    Ok(())
}
