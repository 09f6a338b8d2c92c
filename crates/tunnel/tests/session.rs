//! The session state machine with plain values: two sessions wired back to back, time
//! passed by hand.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sssonector_tunnel::proto::{
    CloseReason, Event, Frame, Hello, Mode, Role, Session, SessionConfig, State, TunnelAddress,
};

fn addr(last: u8) -> TunnelAddress {
    TunnelAddress {
        addr: IpAddr::V4(Ipv4Addr::new(10, 8, 0, last)),
        prefix: 24,
    }
}

fn pair(now: Instant) -> (Session, Session) {
    let client = Session::client(SessionConfig::new(Role::Client, Mode::Tun), now, vec![]);
    let server = Session::server(
        SessionConfig::new(Role::Server, Mode::Tun),
        now,
        Box::new(|_hello| Ok(vec![addr(2)])),
    );
    (client, server)
}

/// Moves bytes both ways until neither side has anything to say.
fn pump(a: &mut Session, b: &mut Session, now: Instant) {
    loop {
        let (ab, ba) = (a.take_output(now), b.take_output(now));
        if ab.is_empty() && ba.is_empty() {
            return;
        }
        b.receive(&ab, now);
        a.receive(&ba, now);
    }
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn the_hello_exchange_assigns_addresses_and_carries_traffic() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    pump(&mut client, &mut server, now);
    assert_eq!(
        (client.state(), server.state()),
        (State::Established, State::Established)
    );
    let Event::Established(hello) = &events(&mut client)[0] else {
        panic!()
    };
    assert_eq!(hello.addresses, [addr(2)]);
    assert!(matches!(events(&mut server)[0], Event::Established(_)));

    let packet = Bytes::from_static(&[0x45, 0, 0, 20]);
    client.send_frame(&Frame::Packet(packet.clone())).unwrap();
    server
        .send_frame(&Frame::Control {
            kind: 1,
            body: Bytes::from_static(b"hi"),
        })
        .unwrap();
    pump(&mut client, &mut server, now);
    assert_eq!(events(&mut server), [Event::Packet(packet)]);
    assert_eq!(
        events(&mut client),
        [Event::Control {
            kind: 1,
            body: Bytes::from_static(b"hi")
        }]
    );
    // Stream frames go through the stream methods, which keep the credit accounting.
    assert!(
        client
            .send_frame(&Frame::StreamHalfClose { id: 1 })
            .is_err()
    );
}

#[test]
fn a_mode_mismatch_ends_both_sides_with_the_reason() {
    let now = Instant::now();
    let mut client = Session::client(SessionConfig::new(Role::Client, Mode::Forward), now, vec![]);
    let mut server = Session::server(
        SessionConfig::new(Role::Server, Mode::Tun),
        now,
        Box::new(|_| Ok(vec![])),
    );
    pump(&mut client, &mut server, now);
    let reason = "mode mismatch: this side is Tun, the peer asked for Forward".to_string();
    assert_eq!(
        events(&mut server),
        [Event::Closed(CloseReason::ProtocolError {
            code: 1,
            message: reason.clone()
        })]
    );
    assert_eq!(
        events(&mut client),
        [Event::Closed(CloseReason::PeerError {
            code: 1,
            message: reason
        })]
    );
    assert_eq!(
        (client.state(), server.state()),
        (State::Closed, State::Closed)
    );
}

#[test]
fn a_server_can_refuse_a_client_in_its_hello_answer() {
    let now = Instant::now();
    let mut client = Session::client(
        SessionConfig::new(Role::Client, Mode::Tun),
        now,
        vec![addr(9)],
    );
    let mut server = Session::server(
        SessionConfig::new(Role::Server, Mode::Tun),
        now,
        Box::new(|hello| Err(format!("address {:?} is taken", hello.addresses[0].addr).into())),
    );
    pump(&mut client, &mut server, now);
    assert!(matches!(
        &events(&mut client)[..],
        [Event::Closed(CloseReason::PeerError { code: 1, message })] if message == "address 10.8.0.9 is taken"
    ));
}

#[test]
fn malformed_bytes_and_early_traffic_close_with_a_code() {
    let now = Instant::now();
    let (_, mut server) = pair(now);
    server.receive(&[0x3d, 0, 0, 0], now);
    assert_eq!(server.malformed(), 1);
    assert!(matches!(
        &events(&mut server)[..],
        [Event::Closed(CloseReason::ProtocolError { code: 2, .. })]
    ));
    // The error frame is what the peer gets.
    let mut out = server.take_output(now);
    assert!(matches!(
        Frame::decode(&mut out, 65_536),
        Ok(Some(Frame::Error { code: 2, .. }))
    ));

    let (_, mut server) = pair(now);
    let mut early = BytesMut::new();
    Frame::Packet(Bytes::from_static(b"x"))
        .encode(&mut early, 65_536)
        .unwrap();
    server.receive(&early, now);
    assert!(matches!(
        &events(&mut server)[..],
        [Event::Closed(CloseReason::ProtocolError { code: 7, message })] if message == "unexpected packet before the hello exchange"
    ));
}

#[test]
fn a_packet_over_the_mtu_is_a_protocol_error() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    pump(&mut client, &mut server, now);
    events(&mut server);
    client
        .send_frame(&Frame::Packet(Bytes::from(vec![0u8; 1401])))
        .unwrap();
    pump(&mut client, &mut server, now);
    assert!(matches!(
        &events(&mut server)[..],
        [Event::Closed(CloseReason::ProtocolError { code: 7, .. })]
    ));
}

#[test]
fn keepalive_pings_an_idle_peer_and_a_silent_one_is_dropped() {
    let start = Instant::now();
    let (mut client, mut server) = pair(start);
    pump(&mut client, &mut server, start);
    events(&mut client);
    // Idle for the keepalive interval: the client pings, the server answers.
    let t = start + Duration::from_secs(10);
    assert_eq!(client.next_deadline(), Some(t));
    client.tick(t);
    let mut ping = client.take_output(t);
    assert_eq!(
        Frame::decode(&mut ping.clone(), 65_536).unwrap(),
        Some(Frame::Ping(1))
    );
    server.receive(&ping.split(), t);
    client.receive(&server.take_output(t), t);
    assert_eq!(client.state(), State::Established);
    // Now the server goes silent: 30 s after its last word the client gives up.
    let later = t + Duration::from_secs(30);
    client.tick(t + Duration::from_secs(20)); // pings again, no answer
    client.tick(later);
    assert_eq!(events(&mut client), [Event::Closed(CloseReason::DeadPeer)]);
    assert_eq!(client.next_deadline(), None);
}

#[test]
fn a_peer_that_only_listens_is_pinged_however_much_we_send() {
    // One-way traffic: the client sends packets all the time and hears nothing back. Sending
    // proves nothing about the server; after the keepalive interval of silence it asks.
    let start = Instant::now();
    let (mut client, mut server) = pair(start);
    pump(&mut client, &mut server, start);
    events(&mut client);
    for s in 1..10 {
        let t = start + Duration::from_secs(s);
        client.send_packet(&[0x45; 40]).unwrap();
        client.tick(t);
        let out = client.take_output(t);
        server.receive(&out, t);
    }
    let t = start + Duration::from_secs(10);
    assert_eq!(client.next_deadline(), Some(t));
    client.tick(t);
    let mut out = client.take_output(t);
    assert_eq!(
        Frame::decode(&mut out, 65_536).unwrap(),
        Some(Frame::Ping(1))
    );
    // Answered: alive, and the next question comes a keepalive interval later.
    server.receive(&out, t);
    client.receive(&server.take_output(t), t);
    assert_eq!(client.next_deadline(), Some(t + Duration::from_secs(10)));
}

#[test]
fn an_unanswered_ping_leaves_only_the_dead_peer_deadline() {
    // Waiting for a pong, there is nothing to do before the dead-peer deadline: the deadline
    // must not stay in the past (a writer sleeping until it would spin).
    let start = Instant::now();
    let (mut client, mut server) = pair(start);
    pump(&mut client, &mut server, start);
    let t = start + Duration::from_secs(10);
    client.tick(t);
    assert!(!client.take_output(t).is_empty(), "the ping");
    assert_eq!(
        client.next_deadline(),
        Some(start + Duration::from_secs(30))
    );
    client.tick(start + Duration::from_secs(25));
    assert!(client.take_output(t).is_empty(), "one ping at a time");
    assert_eq!(
        client.next_deadline(),
        Some(start + Duration::from_secs(30))
    );
}

#[test]
fn a_hello_that_never_comes_times_out() {
    let now = Instant::now();
    let (_, mut server) = pair(now);
    server.tick(now + Duration::from_secs(9));
    assert_eq!(server.state(), State::Handshaking);
    server.tick(now + Duration::from_secs(10));
    assert_eq!(
        events(&mut server),
        [Event::Closed(CloseReason::HandshakeTimeout)]
    );
}

#[test]
fn goodbye_closes_both_sides_cleanly() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    pump(&mut client, &mut server, now);
    events(&mut client);
    events(&mut server);
    client.close();
    assert_eq!(client.state(), State::Draining);
    assert!(
        client
            .send_frame(&Frame::Packet(Bytes::from_static(b"x")))
            .is_err(),
        "no traffic while draining"
    );
    pump(&mut client, &mut server, now);
    assert_eq!(events(&mut server), [Event::Closed(CloseReason::Goodbye)]);
    assert_eq!(events(&mut client), [Event::Closed(CloseReason::Goodbye)]);
}

fn forward_pair(now: Instant, window: u32) -> (Session, Session) {
    let config = |role| {
        let mut c = SessionConfig::new(role, Mode::Forward);
        c.stream_window = window;
        c.max_payload = 1024;
        c
    };
    let mut client = Session::client(config(Role::Client), now, vec![]);
    let mut server = Session::server(config(Role::Server), now, Box::new(|_| Ok(vec![])));
    pump(&mut client, &mut server, now);
    events(&mut client);
    events(&mut server);
    (client, server)
}

#[test]
fn a_stream_sends_no_more_than_its_credit_and_gets_more_as_data_is_consumed() {
    let now = Instant::now();
    let (mut client, mut server) = forward_pair(now, 4096);
    let id = client.open_stream("web").unwrap();
    assert_eq!(id, 1, "client streams are odd");
    let payload = Bytes::from(vec![7u8; 10_000]);
    assert_eq!(
        client.send_stream(id, &payload).unwrap(),
        4096,
        "the window, no more"
    );
    assert_eq!(client.send_stream(id, &payload.slice(4096..)).unwrap(), 0);
    pump(&mut client, &mut server, now);
    let received: usize = events(&mut server)
        .into_iter()
        .map(|e| match e {
            Event::StreamOpened { id: 1, target } => {
                assert_eq!(target, "web");
                0
            }
            Event::StreamData { id: 1, data } => {
                assert!(data.len() <= 1020, "frames within the maximum payload");
                data.len()
            }
            other => panic!("unexpected {other:?}"),
        })
        .sum();
    assert_eq!(received, 4096);
    // The server's application consumes it: credit flows back, and sending resumes.
    server.consumed(id, 4096);
    pump(&mut client, &mut server, now);
    assert_eq!(
        events(&mut client),
        [Event::StreamCredit { id, bytes: 4096 }]
    );
    assert_eq!(
        client.send_stream(id, &payload.slice(4096..)).unwrap(),
        4096
    );
}

#[test]
fn a_peer_that_ignores_credit_is_stopped() {
    let now = Instant::now();
    let (mut client, mut server) = forward_pair(now, 1000);
    let id = client.open_stream("web").unwrap();
    pump(&mut client, &mut server, now);
    events(&mut server);
    // Forge more data than the window, bypassing the client's accounting.
    let mut forged = BytesMut::new();
    Frame::StreamData {
        id,
        data: Bytes::from(vec![0u8; 1001]),
    }
    .encode(&mut forged, 65_536)
    .unwrap();
    server.receive(&forged, now);
    assert!(matches!(
        &events(&mut server)[..],
        [Event::Closed(CloseReason::ProtocolError { code: 8, .. })]
    ));
}

#[test]
fn half_close_each_way_then_the_stream_is_gone() {
    let now = Instant::now();
    let (mut client, mut server) = forward_pair(now, 4096);
    let id = client.open_stream("db").unwrap();
    client.half_close(id).unwrap();
    assert!(
        client
            .send_stream(id, &Bytes::from_static(b"late"))
            .is_err()
    );
    pump(&mut client, &mut server, now);
    assert_eq!(
        events(&mut server),
        [
            Event::StreamOpened {
                id,
                target: "db".into()
            },
            Event::StreamHalfClosed { id }
        ]
    );
    // The server can still answer, then half-closes too.
    assert_eq!(
        server
            .send_stream(id, &Bytes::from_static(b"reply"))
            .unwrap(),
        5
    );
    server.half_close(id).unwrap();
    pump(&mut client, &mut server, now);
    assert_eq!(
        events(&mut client),
        [
            Event::StreamData {
                id,
                data: Bytes::from_static(b"reply")
            },
            Event::StreamHalfClosed { id }
        ]
    );
    assert_eq!((client.open_streams(), server.open_streams()), (0, 0));
}

#[test]
fn a_reset_reaches_the_peer_and_data_for_a_dead_stream_is_reset() {
    let now = Instant::now();
    let (mut client, mut server) = forward_pair(now, 4096);
    let id = client.open_stream("web").unwrap();
    pump(&mut client, &mut server, now);
    events(&mut server);
    server.close_stream(id, 5);
    pump(&mut client, &mut server, now);
    assert_eq!(events(&mut client), [Event::StreamClosed { id, code: 5 }]);
    // Data the client had in flight for it is answered with a reset, not a session error.
    let mut late = BytesMut::new();
    Frame::StreamData {
        id,
        data: Bytes::from_static(b"x"),
    }
    .encode(&mut late, 65_536)
    .unwrap();
    server.receive(&late, now);
    assert_eq!(server.state(), State::Established);
    let mut out = server.take_output(now);
    assert_eq!(
        Frame::decode(&mut out, 65_536).unwrap(),
        Some(Frame::StreamClose { id, code: 9 })
    );
}

#[test]
fn both_sides_settle_on_the_smaller_mtu() {
    let now = Instant::now();
    let mut client_config = SessionConfig::new(Role::Client, Mode::Tun);
    client_config.mtu = 1500;
    let mut server_config = SessionConfig::new(Role::Server, Mode::Tun);
    server_config.mtu = 1300;
    let mut client = Session::client(client_config, now, vec![]);
    let mut server = Session::server(server_config, now, Box::new(|_| Ok(vec![addr(2)])));
    pump(&mut client, &mut server, now);
    // The server's answer carries 1300, and the client adopts it.
    let hello = events(&mut client)
        .into_iter()
        .find_map(|e| match e {
            Event::Established(hello) => Some(hello),
            _ => None,
        })
        .unwrap();
    assert_eq!(hello.mtu, 1300);
    assert_eq!((client.mtu(), server.mtu()), (1300, 1300));
    // The client refuses to send what the server would refuse to take.
    assert!(client.send_packet(&[0u8; 1400]).is_err());
    assert!(client.send_packet(&[0u8; 1300]).is_ok());

    // The other way round: the client's smaller MTU binds the server too.
    let mut client_config = SessionConfig::new(Role::Client, Mode::Tun);
    client_config.mtu = 1280;
    let mut client = Session::client(client_config, now, vec![]);
    let (_, mut server) = pair(now);
    pump(&mut client, &mut server, now);
    assert_eq!((client.mtu(), server.mtu()), (1280, 1280));
    assert!(server.send_packet(&[0u8; 1281]).is_err());
}

#[test]
fn extension_frames_are_skipped_and_counted_in_every_state() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    // Before the hello exchange...
    let mut out = BytesMut::new();
    Frame::Extension {
        kind: 0x40,
        payload: Bytes::from_static(b"later"),
    }
    .encode(&mut out, 65_536)
    .unwrap();
    server.receive(&out, now);
    assert_eq!(server.state(), State::Handshaking);
    pump(&mut client, &mut server, now);
    assert_eq!(server.state(), State::Established);
    // ...and after it, between real traffic.
    Frame::Extension {
        kind: 0xfe,
        payload: Bytes::new(),
    }
    .encode(&mut out, 65_536)
    .unwrap();
    client.receive(&out, now);
    assert_eq!(client.state(), State::Established);
    assert_eq!((server.ignored_frames(), client.ignored_frames()), (1, 2));
    assert_eq!(server.malformed() + client.malformed(), 0);
}

#[test]
fn each_side_sends_no_larger_than_the_peer_accepts() {
    let now = Instant::now();
    let config = |role, max_payload| {
        let mut c = SessionConfig::new(role, Mode::Forward);
        c.max_payload = max_payload;
        c
    };
    // The server accepts 2 KiB payloads; the client would send 64 KiB ones.
    let mut client = Session::client(config(Role::Client, 65_536), now, vec![]);
    let mut server = Session::server(config(Role::Server, 2048), now, Box::new(|_| Ok(vec![])));
    pump(&mut client, &mut server, now);
    assert_eq!((client.send_limit(), server.send_limit()), (2048, 2048));
    assert_eq!(
        client.peer_capabilities() & sssonector_tunnel::proto::capability::STREAM_CREDIT,
        sssonector_tunnel::proto::capability::STREAM_CREDIT
    );
    let id = client.open_stream("web").unwrap();
    client
        .send_stream(id, &Bytes::from(vec![1u8; 10_000]))
        .unwrap();
    // The server decodes every frame with its own 2 KiB limit: no protocol error.
    pump(&mut client, &mut server, now);
    assert_eq!(server.state(), State::Established);
    assert_eq!(server.malformed(), 0);
}

#[test]
fn a_hello_the_session_cannot_work_with_is_refused_by_name() {
    let now = Instant::now();
    let refused = |hello: Hello| {
        let mut server = Session::server(
            SessionConfig::new(Role::Server, Mode::Forward),
            now,
            Box::new(|_| Ok(vec![])),
        );
        let mut out = BytesMut::new();
        Frame::Hello(hello).encode(&mut out, 65_536).unwrap();
        server.receive(&out, now);
        match events(&mut server).as_slice() {
            [Event::Closed(CloseReason::ProtocolError { code: 1, message })] => message.clone(),
            other => panic!("{other:?}"),
        }
    };
    let hello = Hello {
        version: 1,
        mode: Mode::Forward,
        mtu: 1400,
        capabilities: sssonector_tunnel::proto::capability::STREAM_CREDIT,
        addresses: Vec::new(),
        max_payload: 65_536,
    };
    let tiny = refused(Hello {
        max_payload: 100,
        ..hello.clone()
    });
    assert!(tiny.contains("100 bytes"), "{tiny}");
    let no_credit = refused(Hello {
        capabilities: sssonector_tunnel::proto::capability::BATCHING,
        ..hello
    });
    assert!(no_credit.contains("per-stream credit"), "{no_credit}");
}

fn gso_pair(now: Instant, client_gso: bool, server_gso: bool) -> (Session, Session) {
    let config = |role, gso| {
        let mut c = SessionConfig::new(role, Mode::Tun);
        c.gso = gso;
        c.max_payload = 96 * 1024;
        c
    };
    let mut client = Session::client(config(Role::Client, client_gso), now, vec![]);
    let mut server = Session::server(
        config(Role::Server, server_gso),
        now,
        Box::new(|_| Ok(vec![addr(2)])),
    );
    pump(&mut client, &mut server, now);
    events(&mut client);
    events(&mut server);
    (client, server)
}

/// A super-packet as a TUN device with offload reads it: `virtio_net_hdr` (TCP over IPv4,
/// segments of `gso_size`), then `len` bytes of IP packet.
fn super_packet(gso_type: u8, gso_size: u16, len: usize) -> Vec<u8> {
    let mut raw = vec![0u8; 10 + len];
    raw[0] = 1; // needs checksum
    raw[1] = gso_type;
    raw[2..4].copy_from_slice(&40u16.to_le_bytes());
    raw[4..6].copy_from_slice(&gso_size.to_le_bytes());
    raw[6..8].copy_from_slice(&20u16.to_le_bytes());
    raw[8..10].copy_from_slice(&16u16.to_le_bytes());
    raw[10] = 0x45;
    raw
}

#[test]
fn super_packets_go_whole_only_when_both_sides_announce_them() {
    let now = Instant::now();
    let (mut client, mut server) = gso_pair(now, true, true);
    assert!(client.gso() && server.gso());
    let raw = super_packet(1, 1360, 60_000);
    client.send_gso_packet(&raw).unwrap();
    pump(&mut client, &mut server, now);
    assert_eq!(
        events(&mut server),
        [Event::GsoPacket(Bytes::from(raw.clone()))]
    );

    // One side without: neither sends them (the caller splits), and the session goes on.
    for (c, s) in [(true, false), (false, true)] {
        let (mut client, mut server) = gso_pair(now, c, s);
        assert!(!client.gso() && !server.gso());
        assert!(client.send_gso_packet(&raw).is_err());
        assert!(server.send_gso_packet(&raw).is_err());
        assert_eq!(client.state(), State::Established);
    }
}

#[test]
fn a_super_packet_the_receiver_did_not_ask_for_or_cannot_take_is_a_protocol_error() {
    let now = Instant::now();
    for (server_gso, raw, expected) in [
        (false, super_packet(1, 1360, 3000), "did not announce GSO"),
        (
            true,
            super_packet(1, 1500, 3000),
            "segments of 1500 bytes (MTU 1400)",
        ),
        (true, super_packet(1, 0, 3000), "segments of 0 bytes"),
        (
            true,
            super_packet(0, 1360, 3000),
            "unknown segmentation type 0",
        ),
        (true, super_packet(1, 1360, 8), "too short"),
    ] {
        let (mut client, mut server) = gso_pair(now, true, server_gso);
        // Past the client's own check: the frame as a peer that ignores the rules would send.
        let mut wire = BytesMut::new();
        sssonector_tunnel::proto::Frame::encode_gso_packet(&raw, &mut wire, 96 * 1024).unwrap();
        server.receive(&wire, now);
        match events(&mut server).as_slice() {
            [Event::Closed(CloseReason::ProtocolError { message, .. })] => {
                assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            }
            other => panic!("expected a protocol error with {expected:?}, got {other:?}"),
        }
        drop(client.take_output(now));
    }
}
