//! A link's counters reach the `metrics` facade: what `Link::stats` says, the metrics say,
//! including packets dropped on the way out. (Its own test binary: it installs the process's
//! recorder.)

#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sssonector_tunnel::LinkConfig;
use sssonector_tunnel::proto::{Mode, Role, SessionConfig};

mod common;

#[tokio::test(flavor = "current_thread")]
async fn link_counters_feed_the_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("the only recorder in this binary");

    // A small outbound buffer, so that packets queued faster than the writer runs are dropped.
    let small = LinkConfig {
        max_pending: 4096,
        ..LinkConfig::default()
    };
    let (client_session, server_session) = common::tun_sessions();
    let ((client, _client_in), (server, _server_in)) = common::link_pair(
        (client_session, small),
        (server_session, LinkConfig::default()),
    )
    .await;

    let mut packet = vec![0u8; 1000];
    packet[0] = 0x45;
    // The writer cannot run between these on a current-thread runtime.
    let queued = (0..20)
        .filter(|_| client.try_send_packet(&packet).unwrap())
        .count();
    assert!(queued < 20, "some packets are dropped");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (c, s) = (client.stats(), server.stats());
    assert_eq!(c.packets_dropped, 20 - queued as u64);
    // One snapshot: taking one resets the counters it reports.
    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str| {
        snapshot
            .iter()
            .find(|(key, _, _, _)| key.key().name() == name)
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                other => panic!("{name}: {other:?}"),
            })
            .unwrap_or(0)
    };
    // Two links in this process; the metrics carry no per-link label, so they hold the sum.
    assert_eq!(
        counter("sssonector_tunnel_packets_dropped_total"),
        c.packets_dropped + s.packets_dropped
    );
    assert_eq!(
        counter("sssonector_tunnel_bytes_sent_total"),
        c.bytes_out + s.bytes_out
    );
    assert_eq!(
        counter("sssonector_tunnel_bytes_received_total"),
        c.bytes_in + s.bytes_in
    );
    assert_eq!(
        counter("sssonector_tunnel_writes_total"),
        c.writes + s.writes
    );
    assert!(c.bytes_out > 0 && s.bytes_in > 0);

    // Receive windows grow with a stream that fills them, and the gauge follows; it comes
    // back to 0 when the links close.
    let gauge = || {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, _, _, _)| {
                key.key().name() == "sssonector_tunnel_receive_window_grown_bytes"
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Gauge(g) => g.into_inner(),
                other => panic!("{other:?}"),
            })
    };
    let ((client, server), (local, stream)) = common::forward_stream().await;
    let (_r, mut writer) = local.into_split();
    let (mut reader, _w) = stream.into_split();
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let total = 32 << 20;
    let send = async {
        for _ in 0..total / chunk.len() {
            writer.send(chunk.clone()).await.unwrap();
        }
    };
    let receive = async {
        let mut got = 0;
        while got < total {
            let n = reader.recv().await.unwrap().unwrap().len();
            reader.consumed(n);
            got += n;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(send, receive)
    })
    .await
    .expect("32 MiB through the stream within 60 s");
    let grown = server.stats().window_grown;
    println!(
        "after 32 MiB: the receiver's window grew by {grown} bytes (first window {})",
        SessionConfig::new(Role::Server, Mode::Forward).stream_window
    );
    assert!(grown > 0, "{:?}", server.stats());
    let published = gauge().expect("the gauge is published");
    assert_eq!(published, (grown + client.stats().window_grown) as f64);
    client.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.closed()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server.closed()).await;
    // A snapshot resets what it reports: the gauge's changes since the last one add up.
    let after = gauge().unwrap_or(0.0);
    assert_eq!(
        published + after,
        0.0,
        "closed links give their growth back"
    );
}
