//! The data path does not allocate per packet in steady state: packets through a pair of
//! links, over an in-memory pipe and over TLS on loopback TCP, counted by dhat's heap
//! profiler (the global allocator of this test binary only). One test, so that the two runs
//! do not count each other's allocations.
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

use std::time::Duration;

use sssonector_tunnel::{Incoming, LinkConfig};

mod common;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const WARM_UP: usize = 5_000;
const MEASURED: usize = 50_000;

#[test]
fn packets_in_steady_state_do_not_allocate_each() {
    let (_profiler, runtime) = common::heap_profiler("packets");
    runtime.block_on(async {
        let (client_session, server_session) = common::tun_sessions();
        let pair = common::tls_link_pair(
            (client_session, LinkConfig::default()),
            (server_session, LinkConfig::default()),
        )
        .await;
        // rustls's buffered API allocates about three times per 16 KiB record: the encrypted
        // record, the received plaintext's copy, and the deframer buffer's regrowth.
        steady_state("TLS on loopback TCP", pair, 3).await;
        let (client_session, server_session) = common::tun_sessions();
        let pair = common::link_pair(
            (client_session, LinkConfig::default()),
            (server_session, LinkConfig::default()),
        )
        .await;
        steady_state("an in-memory pipe", pair, 0).await;
    });
}

/// Packets through `pair` after a warm-up: fewer than one allocation per 20 packets, besides
/// `per_record` for each 16 KiB TLS record the packets fill. Then a trickle of undelivered packets, which must hold small read buffers.
async fn steady_state(
    transport: &str,
    ((client, _client_incoming), (_server, mut incoming)): (common::LinkEnd, common::LinkEnd),
    per_record: u64,
) {
    {
        let packet = vec![0x45u8; 1400];

        // Sends `count` packets and receives them all, a window of 200 in flight (as a TUN
        // reader and writer would), dropping each as it is delivered.
        let mut run = async |count: usize| {
            let mut sent = 0;
            let mut received = 0;
            while received < count {
                while sent < count && sent - received < 200 {
                    client.send_packet(&packet).await.unwrap();
                    sent += 1;
                }
                match tokio::time::timeout(Duration::from_secs(10), incoming.recv()).await {
                    Ok(Some(Incoming::Packet(p))) => assert_eq!(p.len(), 1400),
                    other => panic!("packet {received}: {other:?}"),
                }
                received += 1;
            }
        };
        run(WARM_UP).await;
        let before = dhat::HeapStats::get();
        run(MEASURED).await;
        let after = dhat::HeapStats::get();
        let blocks = after.total_blocks - before.total_blocks;
        let bytes = after.total_bytes - before.total_bytes;
        let records = (MEASURED * 1408).div_ceil(16 * 1024) as u64;
        println!(
            "{transport}: {MEASURED} packets of 1400 bytes: {blocks} allocations ({:.4} per packet), {bytes} bytes",
            blocks as f64 / MEASURED as f64
        );
        // Buffers are reused; what allocation remains comes per read or write batch (a
        // buffer still shared with undelivered packets cannot be reclaimed) or per TLS
        // record, not per packet.
        let allowed = MEASURED as u64 / 20 + per_record * records;
        dhat::assert!(
            blocks < allowed,
            "{transport}: {blocks} allocations for {MEASURED} packets (allowed {allowed})"
        );

        // A trickle: packets one at a time, each read on its own, all left undelivered in
        // the incoming queue. Each keeps its read buffer alive, so the reads must be small
        // when the traffic is (not 256 KiB apiece: that would be 125 MiB here).
        const TRICKLE: usize = 500;
        let before = dhat::HeapStats::get();
        for _ in 0..TRICKLE {
            client.send_packet(&packet).await.unwrap();
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        let held = dhat::HeapStats::get()
            .curr_bytes
            .saturating_sub(before.curr_bytes);
        println!("{transport}: {TRICKLE} undelivered packets read one by one hold {held} bytes");
        dhat::assert!(
            held < TRICKLE * 48 * 1024,
            "{held} bytes held by {TRICKLE} packets"
        );
        let mut delivered = 0;
        while let Ok(Incoming::Packet(_)) = incoming.try_recv() {
            delivered += 1;
        }
        dhat::assert_eq!(delivered, TRICKLE);
    }
}
