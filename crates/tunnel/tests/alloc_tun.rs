//! The TUN data path does not allocate per packet in steady state, through a real TUN device
//! and TLS on loopback TCP: the device loops of a client carry packets that the kernel routes
//! to the device out over the link, and packets from the link into the device, where the
//! kernel delivers them to a UDP socket. Counted by dhat's heap profiler (the global allocator
//! of this test binary only), with offload on and off.
//!
//! Needs root, `/dev/net/tun` and `ip` (iproute2): the test runs itself again inside a network
//! namespace it creates and removes. Without them it prints why and passes. CI runs as root.
#![cfg(all(target_os = "linux", feature = "tun"))]
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sssonector_tunnel::proto::TunnelAddress;
use sssonector_tunnel::{Incoming, LinkConfig, tun};

mod common;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Set in the copy of this test that runs inside the namespace.
const INSIDE: &str = "SSSONECTOR_ALLOC_TUN_NETNS";

const WARM_UP: usize = 2_000;
const MEASURED: usize = 20_000;
/// Packets in flight at once: well under the device's queue (500), so none is dropped.
const IN_FLIGHT: usize = 64;
const PAYLOAD: usize = 1200;
/// The IPv4 and UDP headers around each payload.
const PACKET: usize = PAYLOAD + 28;

const DEVICE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// Where the device's packets go: an address on its network that nothing holds.
const FAR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

fn missing_prerequisite() -> Option<&'static str> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun");
    }
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ip).then_some("ip (iproute2) is not installed")
}

/// Removes the namespace when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn packets_through_a_tun_device_do_not_allocate_each() {
    if std::env::var_os(INSIDE).is_some() {
        inside_the_namespace();
        return;
    }
    if let Some(why) = missing_prerequisite() {
        println!("skipped: {why}");
        return;
    }
    let ns = Netns(format!("sss-alloc-{}", std::process::id()));
    let added = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap();
    assert!(added.success(), "ip netns add {} failed", ns.0);
    // The link's TLS runs over the namespace's loopback.
    let lo = Command::new("ip")
        .args(["-n", &ns.0, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(lo.success(), "ip -n {} link set lo up failed", ns.0);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "packets_through_a_tun_device_do_not_allocate_each",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    print!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the run inside {} failed", ns.0);
}

fn inside_the_namespace() {
    let (_profiler, runtime) = common::heap_profiler("tun");
    runtime.block_on(async {
        for offload in [true, false] {
            through_a_device(offload).await;
        }
    });
}

async fn through_a_device(offload: bool) {
    let what = if offload { "offload on" } else { "offload off" };
    let name = if offload { "sssalloc1" } else { "sssalloc0" };
    let address = TunnelAddress {
        addr: IpAddr::V4(DEVICE_ADDR),
        prefix: 24,
    };
    let device = tun::open(name, &[address], 1400, offload).unwrap();
    let (client_session, server_session) = common::tun_sessions();
    let ((client, client_incoming), (server, mut server_incoming)) = common::tls_link_pair(
        (client_session, LinkConfig::default()),
        (server_session, LinkConfig::default()),
    )
    .await;
    let (_current_tx, current) = tokio::sync::watch::channel(Some(client.clone()));
    let device_loop = tokio::spawn(tun::client_device_loop(Arc::clone(&device), current, 1400));
    let link_loop = tokio::spawn(tun::client_link_loop(client_incoming, Arc::clone(&device)));

    // Out: a local socket's datagrams, routed by the kernel to the device, then the link.
    let local = UdpSocket::bind((DEVICE_ADDR, 0)).unwrap();
    local.set_nonblocking(true).unwrap();
    let payload = vec![0x5au8; PAYLOAD];
    let mut out = async |count: usize| {
        let mut sent = 0;
        let mut received = 0;
        while received < count {
            while sent < count && sent - received < IN_FLIGHT {
                local.send_to(&payload, (FAR, 9)).unwrap();
                sent += 1;
            }
            match tokio::time::timeout(Duration::from_secs(10), server_incoming.recv()).await {
                // The kernel's own packets (IPv6 router solicitations, reports) pass too.
                Ok(Some(Incoming::Packet(p))) if p.len() != PACKET => continue,
                Ok(Some(Incoming::Packet(_))) => received += 1,
                other => panic!("{what}: packet {received} out: {other:?}"),
            }
        }
    };
    out(WARM_UP).await;
    let before = dhat::HeapStats::get();
    out(MEASURED).await;
    let after = dhat::HeapStats::get();
    check(what, "device to link", before, after);

    // In: packets from the peer, written to the device, delivered to a UDP socket.
    let sink = tokio::net::UdpSocket::bind((DEVICE_ADDR, 0)).await.unwrap();
    let packet = udp_packet(
        FAR,
        DEVICE_ADDR,
        sink.local_addr().unwrap().port(),
        &payload,
    );
    let mut buf = vec![0u8; 2048];
    let mut inward = async |count: usize| {
        let mut sent = 0;
        let mut received = 0;
        while received < count {
            while sent < count && sent - received < IN_FLIGHT {
                server.send_packet(&packet).await.unwrap();
                sent += 1;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), sink.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{what}: packet {received} in: none within 10 s"))
                .unwrap();
            assert_eq!(n, PAYLOAD);
            received += 1;
        }
    };
    inward(WARM_UP).await;
    let before = dhat::HeapStats::get();
    inward(MEASURED).await;
    let after = dhat::HeapStats::get();
    check(what, "link to device", before, after);

    device_loop.abort();
    link_loop.abort();
    client.close();
    server.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.closed()).await;
}

/// Fewer than one allocation per 20 packets, besides three per 16 KiB TLS record (rustls's
/// buffered API: the encrypted record, the received plaintext's copy, the deframer's growth).
fn check(what: &str, direction: &str, before: dhat::HeapStats, after: dhat::HeapStats) {
    let blocks = after.total_blocks - before.total_blocks;
    let bytes = after.total_bytes - before.total_bytes;
    let records = (MEASURED * (PACKET + 8)).div_ceil(16 * 1024) as u64;
    let allowed = MEASURED as u64 / 20 + 3 * records;
    println!(
        "{what}, {direction}: {MEASURED} packets of {PACKET} bytes: {blocks} allocations ({:.4} per packet), {bytes} bytes",
        blocks as f64 / MEASURED as f64
    );
    dhat::assert!(
        blocks < allowed,
        "{what}, {direction}: {blocks} allocations for {MEASURED} packets (allowed {allowed})"
    );
}

/// An IPv4 UDP packet from `src` port 9 to `dst` port `port`, header checksum set (UDP's zero:
/// none, as IPv4 allows).
fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum: u32 = p[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let folded = u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap();
    p[10..12].copy_from_slice(&(!folded).to_be_bytes());
    p[20..22].copy_from_slice(&9u16.to_be_bytes());
    p[22..24].copy_from_slice(&port.to_be_bytes());
    p[24..26].copy_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(payload);
    p
}
