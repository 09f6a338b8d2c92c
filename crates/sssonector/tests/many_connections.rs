//! 10,000 forwarded connections open at once through one client connection: every one is
//! served (the per-connection stream cap's default is large enough), and the client's status
//! page counts them. Bounded: 10,000 connections, two minutes at most.
//!
//! Each process stays under the 20,000 open files a process may have here: the test holds the
//! 10,000 local connections, the client and the server 10,000 each, and the echo target — this
//! same test binary run again as a child — the 10,000 it accepts.
#![allow(
    clippy::print_stdout,
    reason = "the figures go to the test's output; the child prints its address for the parent"
)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{Process, address_after, forward_pair, rss_kib};
use common::{TempDir, pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECTIONS: usize = 10_000;
/// Connects in flight at once (below the listen backlog of 1024).
const IN_FLIGHT: usize = 256;
const CHILD: &str = "SSSONECTOR_TEST_ECHO_CHILD";

/// Echoes every connection on `listener` until the connection closes.
async fn echo(listener: tokio::net::TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = socket.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// Run as a child (with `SSSONECTOR_TEST_ECHO_CHILD` set): prints the echo target's address,
/// then serves until its standard input closes. Run as a test: checks that the echo target
/// echoes, in process.
#[test]
fn echo_target_child() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(echo(listener));
        if std::env::var_os(CHILD).is_some() {
            println!("listening {addr}");
            tokio::task::spawn_blocking(|| {
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
            })
            .await
            .unwrap();
            return;
        }
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        socket.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    });
}

fn echo_child() -> (Process, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "echo_target_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    for next in BufReader::new(stdout).lines() {
        let next = next.unwrap();
        // libtest may print the test's name on the same line first.
        if let Some((_, addr)) = next.split_once("listening ") {
            line = addr.trim().to_owned();
            break;
        }
    }
    (Process(child), line.parse().unwrap())
}

#[test]
fn ten_thousand_connections_through_one_client_connection() {
    let tmp = TempDir::new("many");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["alice"]);
    let (_echo, target) = echo_child();
    let (server, client, ready) = forward_pair(
        &dir,
        target,
        "",
        "alice",
        "connections = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let local = address_after(&ready, "echo on ");
    let admin = address_after(&ready, "admin on ");

    let before = [rss_kib(&client), rss_kib(&server)];
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (served, failures) = runtime.block_on(async {
        let deadline = Duration::from_secs(120);
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tasks = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            let permit = std::sync::Arc::clone(&gate).acquire_owned().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let attempt = async {
                    let mut socket = tokio::net::TcpStream::connect(local).await?;
                    let message = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
                    socket.write_all(&message).await?;
                    let mut back = [0u8; 4];
                    socket.read_exact(&mut back).await?;
                    drop(permit);
                    if back == message {
                        Ok(socket)
                    } else {
                        Err(std::io::Error::other("wrong echo"))
                    }
                };
                tokio::time::timeout(deadline, attempt)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            }));
        }
        let mut open = Vec::with_capacity(CONNECTIONS);
        let mut failures = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(socket) => open.push(socket),
                Err(e) => failures.push(e.to_string()),
            }
        }
        // Every served connection is still open here: the client counts them all at once.
        let status = common::http::get(admin, "/status");
        let after = [rss_kib(&client), rss_kib(&server)];
        for (name, (b, a)) in ["client", "server"].iter().zip(before.iter().zip(after)) {
            println!(
                "{name}: RSS {b} KiB idle, {a} KiB with {} connections open ({:.1} KiB each)",
                open.len(),
                (a.saturating_sub(*b)) as f64 / open.len().max(1) as f64
            );
        }
        (open.len(), (failures, status))
    });
    let (failures, status) = failures;
    println!(
        "{served} of {CONNECTIONS} connections served at once in {:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}\nclient log:\n{}",
        failures.len(),
        failures.first(),
        std::fs::read_to_string(dir.join("client.log")).unwrap_or_default()
    );
    assert_eq!(served, CONNECTIONS);
    assert!(
        status.contains(&format!("\"streams_open\": {CONNECTIONS}")),
        "{status}"
    );
    // The client's status names the server by its certificate.
    assert!(status.contains("\"name\": \"localhost\""), "{status}");
    drop(tmp);
}
