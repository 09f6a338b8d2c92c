//! Port forwarding end to end on loopback, without root: a client and a server over mutual
//! TLS, 100 concurrent forwarded connections to an echo target, every payload checked by
//! sha256, half-close respected both ways.
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sssonector_bufpool::BufPool;
use sssonector_tunnel::LinkConfig;
use sssonector_tunnel::client::{Endpoint, Reconnect};
use sssonector_tunnel::forward::{self, Targets};
use sssonector_tunnel::proto::{Mode, Role, Session, SessionConfig};
use sssonector_tunnel::server::{AcceptOptions, Server, accept_stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::ServerName;

/// Echoes each connection until the client half-closes, then closes its side.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

struct Tunnel {
    /// The client's local port for rule "echo".
    local: SocketAddr,
    server: Server,
    server_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    pool: BufPool,
}

async fn tunnel(target: SocketAddr) -> Tunnel {
    tunnel_with(target, &[], 16).await
}

/// A forwarding server on `listener` whose rule "echo" goes to `target`.
fn spawn_server(
    pki: &common::Pki,
    listener: TcpListener,
    max_clients: usize,
    target: SocketAddr,
    pool: &BufPool,
) -> Server {
    let server = Server::new(max_clients);
    let stack = accept_stack(pki.server.clone(), &AcceptOptions::default()).unwrap();
    let targets = Targets::new([("echo".to_owned(), target.to_string())], pool.clone());
    let serving = server.clone();
    tokio::spawn(async move {
        let tracker = serving.clone();
        serving
            .serve(listener, stack, move |handshaken| {
                let targets = targets.clone();
                let tracker = tracker.clone();
                async move {
                    let handshaken_serial = handshaken.identity.serial.clone();
                    let session = Session::server(
                        SessionConfig::new(Role::Server, Mode::Forward),
                        std::time::Instant::now(),
                        Box::new(|_| Ok(Vec::new())),
                    );
                    let Ok((link, _, incoming)) = sssonector_tunnel::Link::establish(
                        handshaken.tls,
                        session,
                        LinkConfig::default(),
                    )
                    .await
                    else {
                        return;
                    };
                    tracker.track(&link, &handshaken_serial);
                    tokio::spawn(forward::serve_link(incoming, targets));
                    link.closed().await;
                }
            })
            .await;
    });
    server
}

/// A tunnel whose client tries `dead` endpoints before the live server, which serves at most
/// `max_clients`.
async fn tunnel_with(target: SocketAddr, dead: &[SocketAddr], max_clients: usize) -> Tunnel {
    let pki = common::pki();
    let pool = BufPool::builder().budget(64 << 20).build().unwrap();

    // Server.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let server = spawn_server(&pki, listener, max_clients, target, &pool);

    // Client.
    let servers: Vec<SocketAddr> = dead.iter().copied().chain([server_addr]).collect();
    let (local, _reconnect, stop) =
        spawn_client(&pki, &servers, Some(Duration::from_secs(30)), &pool).await;
    Tunnel {
        local,
        server,
        server_addr,
        stop,
        pool,
    }
}

/// A forwarding client for rule "echo" over `servers` (first to last); returns its local
/// port, its reconnect loop and its stop switch.
async fn spawn_client(
    pki: &common::Pki,
    servers: &[SocketAddr],
    failback: Option<Duration>,
    pool: &BufPool,
) -> (SocketAddr, Arc<Reconnect>, tokio::sync::watch::Sender<bool>) {
    let endpoints = servers
        .iter()
        .map(|addr| {
            Endpoint::new(
                &addr.to_string(),
                ServerName::try_from("localhost").unwrap(),
                pki.client.clone(),
                Duration::from_secs(5),
            )
            .unwrap()
        })
        .collect();
    let reconnect = Arc::new(Reconnect::new(endpoints, LinkConfig::default()).failback(failback));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    tokio::spawn(forward::listen(
        local,
        "echo".into(),
        vec![reconnect.current()],
        pool.clone(),
        Duration::from_secs(10),
    ));
    let runner = Arc::clone(&reconnect);
    tokio::spawn(async move {
        runner
            .run(
                || {
                    Session::client(
                        SessionConfig::new(Role::Client, Mode::Forward),
                        std::time::Instant::now(),
                        Vec::new(),
                    )
                },
                |link, _, _incoming| async move {
                    link.closed().await;
                },
                stop_rx,
            )
            .await;
    });
    (local_addr, reconnect, stop)
}

/// Writes `data`, half-closes, and reads everything back until the far side closes.
async fn round_trip(local: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let mut socket = tokio::net::TcpStream::connect(local).await.unwrap();
    let (mut r, mut w) = socket.split();
    let write = async {
        w.write_all(&data).await.unwrap();
        // Half-close: the echo target sees end-of-file only if the tunnel carries it.
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::with_capacity(data.len());
    let read = r.read_to_end(&mut back);
    let ((), read) = tokio::join!(write, read);
    read.unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_streams_arrive_intact() {
    let target = echo_server().await;
    let tunnel = tunnel(target).await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let local = tunnel.local;
            // Sizes from 1 byte to ~1 MiB, so windows fill and credit flows.
            let len = 1 + (i * 10_007) % (1 << 20);
            tokio::spawn(async move {
                let data = common::payload(i, len);
                let want = common::sha256(&data);
                let back = tokio::time::timeout(Duration::from_secs(60), round_trip(local, data))
                    .await
                    .expect("stream finished in time");
                assert_eq!(back.len(), len, "stream {i}: length");
                assert_eq!(common::sha256(&back), want, "stream {i}: sha256");
                len
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!(
        "100 streams, {} bytes each way, in {:?}",
        total,
        started.elapsed()
    );
    assert_eq!(
        tunnel.server.stats().sessions,
        1,
        "all streams share one session"
    );
    tunnel.stop.send_replace(true);
    assert_eq!(tunnel.server.shutdown(Duration::from_secs(5)).await, 0);
    let _ = &tunnel.pool;
}

/// An idle forwarded connection holds no pooled buffer: 1,200 of them open at once (each
/// would pin two 64 KiB buffers, 150 MiB against a 64 MiB budget, if a read took its buffer
/// before data came) leave the pool nearly empty, and a new connection still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_no_buffers() {
    const IDLE: usize = 1_200;
    let target = echo_server().await;
    let tunnel = tunnel(target).await;
    let mut open = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let attempt = async {
            let mut socket = tokio::net::TcpStream::connect(tunnel.local).await.unwrap();
            socket.write_all(b"x").await.unwrap();
            let mut back = [0u8; 1];
            socket.read_exact(&mut back).await.unwrap();
            socket
        };
        let socket = tokio::time::timeout(Duration::from_secs(20), attempt)
            .await
            .unwrap_or_else(|_| panic!("connection {i} stalled: {:?}", tunnel.pool.stats()));
        open.push(socket);
    }
    let held = tunnel.pool.stats().outstanding;
    assert!(
        held < 64,
        "{IDLE} idle connections hold {held} buffers: {:?}",
        tunnel.pool.stats()
    );
    let back = tokio::time::timeout(
        Duration::from_secs(20),
        round_trip(tunnel.local, vec![9u8; 100_000]),
    )
    .await
    .expect("a new connection got through");
    assert_eq!(back, vec![9u8; 100_000]);
    drop(open);
    tunnel.stop.send_replace(true);
    let _ = tunnel.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_lets_the_far_side_answer_after_eof() {
    // A target that reads to end-of-file first, then answers: only works if the client's
    // half-close reaches it while its own direction stays open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        socket.read_to_end(&mut request).await.unwrap();
        socket
            .write_all(format!("got {} bytes", request.len()).as_bytes())
            .await
            .unwrap();
        socket.shutdown().await.unwrap();
    });
    let tunnel = tunnel(target).await;
    let back = tokio::time::timeout(
        Duration::from_secs(20),
        round_trip(tunnel.local, vec![7; 300_000]),
    )
    .await
    .unwrap();
    assert_eq!(back, b"got 300000 bytes");
    tunnel.stop.send_replace(true);
}

/// Reads `socket` to its end: the bytes, and how it ended (`Ok` for an end-of-file).
async fn read_until_end(socket: &mut tokio::net::TcpStream) -> (usize, std::io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        match socket.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got += n,
            Err(e) => return (got, Err(e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_rule_and_dead_target_reset_the_stream() {
    // The target refuses connections: the server resets the stream, and the client's local
    // connection is reset too, not ended as if the target had answered nothing.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let tunnel = tunnel(dead).await;
    // The reset may come before the connect or the write completes: a failed connect or
    // write is as good an answer as a failed read, if it is a reset.
    let early = match tokio::net::TcpStream::connect(tunnel.local).await {
        Ok(mut local) => match local.write_all(b"hello").await {
            Ok(()) => Ok(local),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let mut local = match early {
        Ok(local) => local,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
            tunnel.stop.send_replace(true);
            return;
        }
    };
    let (got, end) = tokio::time::timeout(Duration::from_secs(20), read_until_end(&mut local))
        .await
        .expect("the local connection was not closed");
    assert_eq!(got, 0);
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    tunnel.stop.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_aborts_mid_transfer_resets_the_local_connection() {
    // The target sends part of a reply and aborts (a TCP reset): the local application must
    // not read an end-of-file and take the truncated reply for a whole one.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(&vec![7u8; 300_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        socket.set_zero_linger().unwrap();
        drop(socket);
    });
    let tunnel = tunnel(target).await;
    let mut local = tokio::net::TcpStream::connect(tunnel.local).await.unwrap();
    let (got, end) = tokio::time::timeout(Duration::from_secs(20), read_until_end(&mut local))
        .await
        .expect("the local connection was not closed");
    assert!(got <= 300_000, "{got}");
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "after {got} bytes"
    );
    tunnel.stop.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_application_that_aborts_resets_the_target_connection() {
    // The other way: the local application sends part of an upload and aborts; the target
    // reads a reset, not an end-of-file.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = ended_tx.send(read_until_end(&mut socket).await);
    });
    let tunnel = tunnel(target).await;
    let mut local = tokio::net::TcpStream::connect(tunnel.local).await.unwrap();
    local.write_all(&vec![5u8; 300_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    local.set_zero_linger().unwrap();
    drop(local);
    let (got, end) = tokio::time::timeout(Duration::from_secs(20), ended_rx)
        .await
        .expect("the target connection was not closed")
        .unwrap();
    assert!(got <= 300_000, "{got}");
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "after {got} bytes"
    );
    tunnel.stop.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fails_over_past_dead_servers() {
    let target = echo_server().await;
    // Two addresses nothing listens on, then the live server.
    let dead: Vec<SocketAddr> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let tunnel = tunnel_with(target, &dead, 16).await;
    let back = tokio::time::timeout(
        Duration::from_secs(20),
        round_trip(tunnel.local, b"failover".to_vec()),
    )
    .await
    .expect("connected through the third endpoint");
    assert_eq!(back, b"failover");
    tunnel.stop.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_at_max_clients_refuses_the_next() {
    let target = echo_server().await;
    let first = tunnel_with(target, &[], 1).await;
    let back = tokio::time::timeout(
        Duration::from_secs(20),
        round_trip(first.local, b"one".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(back, b"one");
    // A second connection to the same server: accepted by TCP, then closed at once.
    let mut second = tokio::net::TcpStream::connect(first.server_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let stats = first.server.stats();
    assert_eq!((stats.connected, stats.refused_full), (1, 1), "{stats:?}");
    first.stop.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_client_that_goes_away_stops_the_far_sender() {
    // The target streams without end (a big download). The local client reads a little and
    // disconnects: the reset must reach the server, which closes the target connection,
    // so the target's writes fail instead of filling a dead stream.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let chunk = vec![9u8; 64 * 1024];
        let mut sent = 0u64;
        // Bounded: at most 4 GiB, far more than the windows and buffers in between.
        while sent < 4 << 30 {
            if socket.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        let _ = stopped_tx.send(sent);
    });
    let tunnel = tunnel(target).await;
    let mut local = tokio::net::TcpStream::connect(tunnel.local).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < 1 << 20 {
        got += local.read(&mut buf).await.unwrap();
    }
    drop(local);
    let sent = tokio::time::timeout(Duration::from_secs(10), stopped_rx)
        .await
        .expect("the target was cut off")
        .unwrap();
    // What the target wrote beyond what was read is bounded by the buffers on the way
    // (socket buffers, credit window, queued output), not by the download's size.
    assert!(sent < 64 << 20, "{sent} bytes sent into a dead stream");
    tunnel.stop.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_moves_back_to_the_first_server_once_it_answers() {
    let target = echo_server().await;
    let pool = BufPool::builder().budget(64 << 20).build().unwrap();
    let pki = common::pki();
    // The first server is down when the client starts; the second is up.
    let first = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let second_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = second_listener.local_addr().unwrap();
    let _second = spawn_server(&pki, second_listener, 16, target, &pool);
    let (local, reconnect, stop) = spawn_client(
        &pki,
        &[first, second],
        Some(Duration::from_millis(200)),
        &pool,
    )
    .await;
    let on = |want: SocketAddr| {
        let reconnect = Arc::clone(&reconnect);
        async move {
            while reconnect.server() != Some(want.to_string()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), on(second))
        .await
        .expect("connected to the second server");
    assert_eq!(
        round_trip(local, b"on the second".to_vec()).await,
        b"on the second"
    );

    // The first server comes up: the client probes it and moves back.
    let _first = spawn_server(
        &pki,
        TcpListener::bind(first).await.unwrap(),
        16,
        target,
        &pool,
    );
    tokio::time::timeout(Duration::from_secs(10), on(first))
        .await
        .expect("moved back to the first server");
    assert_eq!(
        round_trip(local, b"on the first".to_vec()).await,
        b"on the first"
    );
    stop.send_replace(true);
}
