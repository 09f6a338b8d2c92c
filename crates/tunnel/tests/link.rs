//! A `Link` over an in-memory transport: packets are batched into few writes, a silent peer is
//! detected by the keepalive, and a clean close reaches both sides.

use std::time::{Duration, Instant};

use sssonector_tunnel::proto::{CloseReason, Session, SessionConfig};
use sssonector_tunnel::{Incoming, Link, LinkConfig};

mod common;

fn configs(keepalive: Duration, dead: Duration) -> (SessionConfig, SessionConfig) {
    let (mut client, mut server) = common::tun_sessions();
    for c in [&mut client, &mut server] {
        c.keepalive = keepalive;
        c.dead_peer_timeout = dead;
    }
    (client, server)
}

async fn pair(keepalive: Duration, dead: Duration) -> (common::LinkEnd, common::LinkEnd) {
    let (client, server) = configs(keepalive, dead);
    common::link_pair(
        (client, LinkConfig::default()),
        (server, LinkConfig::default()),
    )
    .await
}

/// A bare server session driven by hand over `b`: reads the client's hello, answers it, and
/// hands the transport back.
async fn answer_hello(
    mut b: tokio::io::DuplexStream,
    config: SessionConfig,
) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut session = Session::server(config, Instant::now(), Box::new(|_| Ok(Vec::new())));
    let mut buf = vec![0u8; 4096];
    let n = b.read(&mut buf).await.unwrap();
    session.receive(&buf[..n], Instant::now());
    b.write_all(&session.take_output(Instant::now()))
        .await
        .unwrap();
    b
}

fn packet(i: u16) -> Vec<u8> {
    let mut p = vec![0u8; 200];
    p[0] = 0x45;
    p[1..3].copy_from_slice(&i.to_be_bytes());
    p
}

#[tokio::test(flavor = "current_thread")]
async fn queued_packets_go_out_in_one_write() {
    let ((client, _ci), (server, mut si)) =
        pair(Duration::from_secs(10), Duration::from_secs(30)).await;
    let writes_before = client.stats().writes;
    for i in 0..1000 {
        client.send_packet(&packet(i)).await.unwrap();
    }
    for i in 0..1000 {
        match tokio::time::timeout(Duration::from_secs(5), si.recv())
            .await
            .unwrap()
        {
            Some(Incoming::Packet(p)) => assert_eq!(&p[..], &packet(i)[..], "packet {i}"),
            other => panic!("packet {i}: {other:?}"),
        }
    }
    // 1000 packets of 200 bytes queued while the writer waited: one write, one flush.
    let writes = client.stats().writes - writes_before;
    assert!(writes <= 2, "{writes} writes for 1000 packets");
    assert_eq!(server.stats().packets_dropped, 0);
    // Counted each way, on the side that sent and the side that received.
    assert_eq!(client.stats().packets_out, 1000);
    assert_eq!(server.stats().packets_in, 1000);
    assert_eq!(server.stats().packets_out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_by_the_keepalive() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (client_config, server_config) =
        configs(Duration::from_millis(100), Duration::from_millis(400));
    // The server side is a bare session driven by hand: it answers the hello, then goes silent
    // (no pongs) while keeping the connection open.
    let silent = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut b = answer_hello(b, server_config).await;
        // Read and ignore everything from now on.
        let mut buf = vec![0u8; 4096];
        while b.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let (link, _, _incoming) = Link::establish(
        a,
        Session::client(client_config, Instant::now(), Vec::new()),
        LinkConfig::default(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), link.closed())
        .await
        .expect("closed");
    assert_eq!(reason, CloseReason::DeadPeer);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(link.send_packet(&packet(1)).await.is_err());
    silent.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn close_says_goodbye_to_both_sides_and_ends_the_queues() {
    let ((client, mut ci), (server, mut si)) =
        pair(Duration::from_secs(10), Duration::from_secs(30)).await;
    client.close();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap(),
        CloseReason::Goodbye
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), server.closed())
            .await
            .unwrap(),
        CloseReason::Goodbye
    );
    // Both applications see their incoming queues end.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), ci.recv())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), si.recv())
            .await
            .unwrap()
            .is_none()
    );
    assert!(client.open_stream("x").is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn the_router_counts_what_it_forwards_and_what_a_link_refuses() {
    use sssonector_tunnel::tun::Router;
    let ((client, _ci), _server) = pair(Duration::from_secs(10), Duration::from_secs(30)).await;
    let router = Router::new();
    let addr: std::net::IpAddr = "10.8.0.2".parse().unwrap();
    router.insert(addr, client.clone());
    // To the client: carried. Over the session's MTU (1400): refused and counted.
    assert!(router.forward(addr, &packet(1)));
    assert!(router.forward(addr, &vec![0x45u8; 1401]));
    // Nobody holds this address.
    assert!(!router.forward("10.8.0.3".parse().unwrap(), &packet(2)));
    let stats = router.stats();
    assert_eq!((stats.forwarded, stats.refused, stats.routes), (1, 1, 1));
    router.remove(addr);
    assert_eq!(router.stats().routes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_on_a_full_buffer_does_not_stop_dead_peer_detection() {
    // The server answers the hello and then neither reads nor writes (a partition): the
    // client's writes fill the 64 KiB transport and block. The dead-peer deadline must still
    // close the link.
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (client_config, server_config) =
        configs(Duration::from_millis(100), Duration::from_millis(400));
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let b = answer_hello(b, server_config).await;
        // Keep the transport open, unread, until the test ends.
        let _ = hold_rx.await;
        drop(b);
    });
    let (link, _, _incoming) = Link::establish(
        a,
        Session::client(client_config, Instant::now(), Vec::new()),
        LinkConfig::default(),
    )
    .await
    .unwrap();
    let sender = {
        let link = link.clone();
        tokio::spawn(async move {
            // Bounded: 4,000 packets of 200 bytes (800 kB) far exceed the 64 KiB transport.
            for i in 0..4000 {
                if link.send_packet(&packet(i)).await.is_err() {
                    break;
                }
            }
        })
    };
    let started = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), link.closed())
        .await
        .expect("the link noticed the dead peer while its write was stuck");
    assert_eq!(reason, CloseReason::DeadPeer);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    sender.abort();
    drop(hold_tx);
}

#[tokio::test(flavor = "current_thread")]
async fn unread_stream_data_past_the_links_bound_resets_that_stream_only() {
    use bytes::Bytes;
    use sssonector_tunnel::proto::{Mode, Role};
    let forward = |role| SessionConfig::new(role, Mode::Forward);
    let bounded = LinkConfig {
        max_buffered: 32 * 1024,
        ..LinkConfig::default()
    };
    let ((client, _ci), (server, mut incoming)) = common::link_pair(
        (forward(Role::Client), LinkConfig::default()),
        (forward(Role::Server), bounded),
    )
    .await;
    let mut accept =
        async || match tokio::time::timeout(Duration::from_secs(5), incoming.recv()).await {
            Ok(Some(Incoming::Stream { stream, .. })) => stream,
            other => panic!("{other:?}"),
        };
    let (_r, mut flood) = client.open_stream("flood").unwrap().into_split();
    let (mut stalled, _w) = accept().await.into_split();
    // 40 KiB in 1 KiB frames to a stream whose application does not read: past 32 KiB the
    // stream is reset, and the memory it held is given back.
    for _ in 0..40 {
        if flood.send(Bytes::from(vec![1u8; 1024])).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    let end = loop {
        assert!(Instant::now() < deadline, "no reset after {got} bytes");
        match stalled.recv().await {
            Ok(Some(data)) => got += data.len(),
            other => break other,
        }
    };
    assert!(
        matches!(end, Err(sssonector_tunnel::LinkError::Reset { code, .. }) if code == sssonector_tunnel::stream_code::BUSY),
        "{end:?} after {got} bytes"
    );
    assert!(got <= 32 * 1024, "{got}");
    assert_eq!(server.stats().buffered, 0);
    // The link and its other streams carry on.
    let (_r2, mut other) = client.open_stream("other").unwrap().into_split();
    let (mut served, _w2) = accept().await.into_split();
    other.send(Bytes::from_static(b"still fine")).await.unwrap();
    assert_eq!(
        served.recv().await.unwrap().unwrap(),
        Bytes::from_static(b"still fine")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn unread_data_is_given_back_when_its_reader_goes() {
    use bytes::Bytes;
    let ((_client, server), (local, stream)) = common::forward_stream().await;
    let (_r, mut writer) = local.into_split();
    for _ in 0..8 {
        writer.send(Bytes::from(vec![1u8; 1000])).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().buffered < 8000 {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        tokio::task::yield_now().await;
    }
    drop(stream);
    assert_eq!(
        server.stats().buffered,
        0,
        "dropped unread data is no longer counted"
    );
}
