//! A template: a TCP echo server on 127.0.0.1 that limits new connections per client address,
//! and a client that shows the limit working.
//!
//! Each client IP (IPv6 grouped by /64) may open 5 connections per second, bursting 2. Two
//! clients connect from different loopback addresses (127.0.0.1 and 127.0.0.2): each gets its
//! own limit, and connections over it are answered with the wait the server asks for, in the
//! words a `Retry-After` header would use, then closed. Run it with
//! `cargo run -p sssonector-examples --example ip_limited_echo`.

#![allow(
    clippy::print_stdout,
    reason = "an example speaks to the person running it"
)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sssonector_core::BoxError;
use sssonector_ratelimit::{IpGrouping, KeyedLimiter, Quota, headers};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let per_ip = KeyedLimiter::<IpAddr>::builder()
        .name("connections")
        .quota(Quota::per_second(5)?.with_burst(2)?)
        .max_keys(100_000)
        .build()?;
    tokio::spawn(serve(listener, per_ip));

    let mut accepted = [0u32; 2];
    let mut refused = [0u32; 2];
    for round in 0..4 {
        for (i, client) in ["127.0.0.1", "127.0.0.2"].iter().enumerate() {
            let source: IpAddr = client.parse()?;
            match echo_once(source, addr, &format!("hello {round}")).await? {
                Ok(echo) => {
                    accepted[i] += 1;
                    println!("{client}: echoed {echo:?}");
                }
                Err(refusal) => {
                    refused[i] += 1;
                    println!("{client}: refused: {refusal}");
                }
            }
        }
    }
    // Each client: the burst of 2 passes, the rest of the quick round are refused.
    println!("accepted {accepted:?}, refused {refused:?}");
    if accepted != [2, 2] || refused != [2, 2] {
        return Err(format!(
            "expected 2 accepted and 2 refused per client, got {accepted:?} / {refused:?}"
        )
        .into());
    }
    // After the refill interval the first client is welcome again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let echo = echo_once("127.0.0.1".parse()?, addr, "after a pause").await?;
    println!("127.0.0.1 after 200 ms: {echo:?}");
    if echo.is_err() {
        return Err("the limit did not refill".into());
    }
    Ok(())
}

/// Connects from `source`, sends one line, and returns the echo or the server's refusal.
async fn echo_once(
    source: IpAddr,
    server: SocketAddr,
    line: &str,
) -> Result<Result<String, String>, BoxError> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).await?;
    if let Some(refusal) = greeting.strip_prefix("refused: ") {
        return Ok(Err(refusal.trim_end().to_owned()));
    }
    write.write_all(format!("{line}\n").as_bytes()).await?;
    let mut echo = String::new();
    reader.read_line(&mut echo).await?;
    Ok(Ok(echo.trim_end().to_owned()))
}

async fn serve(listener: TcpListener, per_ip: KeyedLimiter<IpAddr>) {
    let grouping = IpGrouping::default();
    while let Ok((stream, peer)) = listener.accept().await {
        let verdict = per_ip.check_key(&grouping.key(peer.ip()));
        tokio::spawn(async move {
            let _ = handle(stream, verdict).await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    verdict: Result<sssonector_ratelimit::Admitted, sssonector_ratelimit::RateLimited>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    if let Err(limited) = verdict {
        let message = format!(
            "refused: too many connections, retry after {} s ({:?})\n",
            headers::retry_after(&limited),
            limited.retry_after
        );
        return stream.write_all(message.as_bytes()).await;
    }
    stream.write_all(b"welcome\n").await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        write.write_all(format!("{line}\n").as_bytes()).await?;
    }
    Ok(())
}
