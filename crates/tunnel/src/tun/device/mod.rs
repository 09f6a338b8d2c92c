//! TUN devices (tun-rs, tokio) and the loops that carry packets between a device and links:
//! reading (super-packets kept whole or split), writing (straight from the link's read buffer),
//! and the server's routing of what its clients send.

use bytes::Bytes;
use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{PacketFilter, Router, addresses};
use crate::count::Count;
use crate::link::{Incoming, Link, LinkError};
use crate::proto::TunnelAddress;

mod read;
mod split;
mod write;

use read::{Read, Reader};
use split::Splitter;
use write::Writer;

/// A TUN device (tun-rs, tokio).
pub type Device = tun_rs::AsyncDevice;

/// Creates TUN device `name` (empty: the kernel picks) with `addresses` and `mtu`, up.
/// With `offload`, the device takes and gives TCP/UDP segmentation offload super-packets
/// (`IFF_VNET_HDR`, `TUNSETOFFLOAD`): one read returns up to 64 KiB, carried whole to a peer
/// that takes super-packets and split for one that does not, and a peer's super-packets are
/// written whole. A kernel that refuses offload gets a plain device, with a warning.
///
/// # Errors
///
/// No permission (needs `CAP_NET_ADMIN`), no `/dev/net/tun`, or the name is taken.
pub fn open(
    name: &str,
    addresses: &[TunnelAddress],
    mtu: u16,
    offload: bool,
) -> io::Result<Arc<Device>> {
    let build = |offload: bool| {
        let mut builder = tun_rs::DeviceBuilder::new().mtu(mtu).offload(offload);
        if !name.is_empty() {
            builder = builder.name(name);
        }
        for a in addresses {
            builder = match a.addr {
                IpAddr::V4(v4) => builder.ipv4(v4, a.prefix, None),
                IpAddr::V6(v6) => builder.ipv6(v6, a.prefix),
            };
        }
        builder.build_async()
    };
    let device = match build(offload) {
        Err(e) if offload => {
            tracing::warn!(device = name, error = %e, "TUN offload refused; using a plain device");
            build(false)
        }
        other => other,
    }
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot create TUN device {name:?}: {e} (needs root or CAP_NET_ADMIN and /dev/net/tun)"
            ),
        )
    })?;
    tracing::info!(
        device = name,
        tcp_offload = device.tcp_gso(),
        udp_offload = device.udp_gso(),
        "TUN device created"
    );
    Ok(Arc::new(device))
}

/// Segmentation-offload super-packets on one path, `to_peer` (read from the device, sent
/// on a link) or `to_device` (from a link, written to the device): how many went whole and
/// how many were split into packets, as `sssonector_tun_super_packets_total{path, how}`.
struct SuperPackets {
    pub(super) whole: Count,
    pub(super) split: Count,
}

impl SuperPackets {
    pub(super) fn new(path: &'static str) -> Self {
        let count = |how: &'static str| {
            Count::new(metrics::counter!(
                "sssonector_tun_super_packets_total", "path" => path, "how" => how
            ))
        };
        Self {
            whole: count("whole"),
            split: count("split"),
        }
    }
}

/// Sends what one device read gave on `link`: a super-packet whole when the link takes
/// them, else its packets.
async fn send_read(reader: &mut Reader, read: Read, link: &mut Option<Link>) {
    let n = match read {
        Read::Whole(len) => {
            if let Some(l) = link.as_ref().filter(|l| l.gso()) {
                match l.send_gso_packet(reader.raw(len)).await {
                    Ok(()) => {
                        reader.to_peer.whole.add(1);
                        return;
                    }
                    Err(LinkError::Packet(_)) => {}
                    Err(_) => {
                        *link = None;
                        return;
                    }
                }
            }
            reader.split_or_drop(len)
        }
        Read::Packets(n) => n,
    };
    for i in 0..n {
        send_from_device(link, reader.packet(i)).await;
    }
}

/// Routes what one device read gave to the client holding its destination: whole to a
/// client that takes super-packets, else split.
fn route_read(reader: &mut Reader, read: Read, router: &Router) {
    let n = match read {
        Read::Whole(len) => {
            let Some((_, dst)) = addresses(&reader.raw(len)[VIRTIO_NET_HDR_LEN..]) else {
                return;
            };
            let Some(link) = router.route(dst) else {
                router.counters.no_route.add(1);
                return;
            };
            if link.gso() {
                reader.to_peer.whole.add(1);
                let counter = match link.try_send_gso_packet(reader.raw(len)) {
                    Ok(true) => &router.counters.forwarded,
                    Ok(false) | Err(_) => &router.counters.refused,
                };
                counter.add(1);
                return;
            }
            reader.split_or_drop(len)
        }
        Read::Packets(n) => n,
    };
    for i in 0..n {
        let packet = reader.packet(i);
        let Some((_, dst)) = addresses(packet) else {
            continue;
        };
        if !router.forward(dst, packet) {
            router.counters.no_route.add(1);
        }
    }
}

/// Takes the next packets from `incoming`: waits for one, then takes whatever else is
/// already queued, up to a batch or a super-packet, which ends the batch (and comes after
/// it, in order). `None` when the queue has ended.
async fn next_batch(
    incoming: &mut mpsc::Receiver<Incoming>,
    batch: &mut Vec<Bytes>,
) -> Option<Option<Bytes>> {
    batch.clear();
    let first = incoming.recv().await?;
    let mut item = Some(first);
    while let Some(next) = item {
        match next {
            Incoming::Packet(packet) => batch.push(packet),
            Incoming::GsoPacket(raw) => return Some(Some(raw)),
            _ => {}
        }
        if batch.len() >= IDEAL_BATCH_SIZE {
            break;
        }
        item = incoming.try_recv().ok();
    }
    Some(None)
}

/// Server: reads packets from the device and sends each to the client holding its
/// destination. Runs until the device fails.
///
/// # Errors
///
/// Reading the device failed.
pub async fn server_device_loop(
    device: Arc<Device>,
    router: Arc<Router>,
    mtu: u16,
) -> io::Result<()> {
    let mut reader = Reader::new(usize::from(mtu));
    loop {
        let read = reader.read(&device).await?;
        route_read(&mut reader, read, &router);
    }
}

/// Server: carries one client's packets to the device, or straight to another client.
/// Packets from addresses not in `own` are dropped (anti-spoofing). Returns when the
/// link's incoming queue ends.
pub async fn server_link_loop(
    incoming: mpsc::Receiver<Incoming>,
    own: Vec<IpAddr>,
    device: Arc<Device>,
    router: Arc<Router>,
) {
    server_link_loop_filtered(incoming, own, device, router, None).await;
}

/// [`server_link_loop`], with each packet's destination first put to `filter` (an access
/// policy: which networks and whether other clients this client may reach). Denied
/// packets are dropped and counted in [`RouterStats::denied`](super::RouterStats::denied).
pub async fn server_link_loop_filtered(
    mut incoming: mpsc::Receiver<Incoming>,
    own: Vec<IpAddr>,
    device: Arc<Device>,
    router: Arc<Router>,
    mut filter: Option<PacketFilter>,
) {
    let mut writer = Writer::new();
    let mut batch = Vec::with_capacity(IDEAL_BATCH_SIZE);
    let mut splitter = None;
    let to_peer = SuperPackets::new("to_peer");
    while let Some(whole) = next_batch(&mut incoming, &mut batch).await {
        // To another client: sent on here; to the server: kept for the device.
        batch.retain(|packet| {
            router.route_from_client(packet, &own, filter.as_mut(), |link| {
                link.try_send_packet(packet).unwrap_or(false)
            })
        });
        writer.write(&device, &batch).await;
        if let Some(raw) = whole {
            let ip = &raw[VIRTIO_NET_HDR_LEN.min(raw.len())..];
            let to_device = router.route_from_client(ip, &own, filter.as_mut(), |link| {
                send_whole(link, &raw, &mut splitter, &to_peer)
            });
            if to_device {
                writer.write_whole(&device, &raw).await;
            }
        }
    }
}

/// Offers a client's super-packet to another client's `link`: whole if it takes them,
/// else split, every segment offered even after one is refused; `true` if all was taken.
fn send_whole(
    link: &Link,
    raw: &[u8],
    splitter: &mut Option<Splitter>,
    to_peer: &SuperPackets,
) -> bool {
    if link.gso() {
        to_peer.whole.add(1);
        return link.try_send_gso_packet(raw).unwrap_or(false);
    }
    to_peer.split.add(1);
    let splitter = splitter.get_or_insert_with(|| Splitter::new(1500));
    match splitter.split(raw) {
        Ok(n) => {
            let mut all = true;
            for i in 0..n {
                all &= link.try_send_packet(splitter.packet(i)).unwrap_or(false);
            }
            all
        }
        Err(_) => false,
    }
}

/// Client: reads packets from the device and sends them on whatever link is current
/// (waiting while its outbound buffer is full; dropping while there is none). Runs until
/// the device fails.
///
/// # Errors
///
/// Reading the device failed.
pub async fn client_device_loop(
    device: Arc<Device>,
    mut current: watch::Receiver<Option<Link>>,
    mtu: u16,
) -> io::Result<()> {
    let mut reader = Reader::new(usize::from(mtu));
    let mut link = current.borrow_and_update().clone();
    loop {
        let read = reader.read(&device).await?;
        if current.has_changed().unwrap_or(false) {
            link = current.borrow_and_update().clone();
        }
        send_read(&mut reader, read, &mut link).await;
    }
}

/// Sends one packet the device read on `link`. A packet larger than the session's MTU (a
/// new session agreed a smaller one than the device has) is dropped and counted, and the
/// link kept; a closed link is let go until the next one.
pub(crate) async fn send_from_device(link: &mut Option<Link>, packet: &[u8]) {
    let Some(l) = link.as_ref() else { return };
    match l.send_packet(packet).await {
        Ok(()) => {}
        Err(LinkError::Packet(_)) => {
            metrics::counter!("sssonector_tun_packets_total", "outcome" => "too_large")
                .increment(1);
        }
        Err(_) => *link = None,
    }
}

/// Client: writes the link's packets to the device until the link's queue ends.
pub async fn client_link_loop(mut incoming: mpsc::Receiver<Incoming>, device: Arc<Device>) {
    let mut writer = Writer::new();
    let mut batch = Vec::with_capacity(IDEAL_BATCH_SIZE);
    while let Some(whole) = next_batch(&mut incoming, &mut batch).await {
        writer.write(&device, &batch).await;
        if let Some(raw) = whole {
            writer.write_whole(&device, &raw).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_packet_over_the_sessions_mtu_is_dropped_alone() {
        use crate::LinkConfig;
        use crate::proto::{Mode, Role, Session, SessionConfig};
        use std::time::Instant;
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut client_config = SessionConfig::new(Role::Client, Mode::Tun);
        client_config.mtu = 1400;
        let mut server_config = SessionConfig::new(Role::Server, Mode::Tun);
        server_config.mtu = 1300;
        let client = Link::establish(
            a,
            Session::client(client_config, Instant::now(), Vec::new()),
            LinkConfig::default(),
        );
        let server = Link::establish(
            b,
            Session::server(server_config, Instant::now(), Box::new(|_| Ok(Vec::new()))),
            LinkConfig::default(),
        );
        let (client, server) = tokio::join!(client, server);
        let (client, _, _ci) = client.unwrap();
        let (server, _, mut incoming) = server.unwrap();
        let mut link = Some(client.clone());
        // The device's MTU is 1400; this session agreed 1300.
        let mut big = vec![0x45u8; 1400];
        big[1] = 1;
        send_from_device(&mut link, &big).await;
        assert!(
            link.is_some(),
            "one oversized packet does not drop the link"
        );
        let small = vec![0x45u8; 1200];
        send_from_device(&mut link, &small).await;
        match tokio::time::timeout(std::time::Duration::from_secs(5), incoming.recv()).await {
            Ok(Some(Incoming::Packet(p))) => assert_eq!(p.len(), 1200),
            other => panic!("{other:?}"),
        }
        // A closed link is let go.
        client.close();
        server.closed().await;
        client.closed().await;
        send_from_device(&mut link, &small).await;
        assert!(link.is_none());
    }
}
