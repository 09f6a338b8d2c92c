//! The layer-3 data path: a TUN device on each side, IP packets carried as frames.
//!
//! The server owns one TUN device and an [`AddressPool`]; each client gets addresses from the
//! pool (fixed per identity, or leased and kept for that identity) and the server routes
//! between its own device and the clients by destination ([`Router`]). A client's packets
//! must come from its own addresses: anything else is dropped and counted (no spoofing
//! another client). The client creates its device once, on its first session, and keeps it
//! across reconnects, so connections inside the tunnel survive a short outage.
//!
//! The device side needs Linux and `CAP_NET_ADMIN`; the pool, router and packet parsing are
//! plain code, tested without it.

use std::collections::HashMap;
#[cfg(all(target_os = "linux", feature = "tun"))]
use std::io;
use std::net::IpAddr;
#[cfg(all(target_os = "linux", feature = "tun"))]
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
#[cfg(all(target_os = "linux", feature = "tun"))]
use tokio::sync::{mpsc, watch};

use crate::count::Count;
use crate::link::Link;
#[cfg(all(target_os = "linux", feature = "tun"))]
use crate::link::{Incoming, LinkError};
use crate::proto::TunnelAddress;
use crate::server::Cidr;

/// The source and destination of an IPv4 or IPv6 packet, if it is one.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        _ => None,
    }
}

/// Why the pool could not give an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Every address is in use.
    #[error("address pool {0} is exhausted")]
    Exhausted(Cidr),
    /// The identity's fixed address is held by another session of the same identity.
    #[error("{identity}'s address {addr} is in use by another session")]
    InUse {
        /// The client.
        identity: String,
        /// Its address.
        addr: IpAddr,
    },
    /// A fixed address outside the pool's network.
    #[error("{addr} is not inside the pool {pool}")]
    Outside {
        /// The address.
        addr: IpAddr,
        /// The pool.
        pool: Cidr,
    },
}

/// Tunnel addresses for clients from one network, IPv4 or IPv6.
#[derive(Debug)]
pub struct AddressPool {
    net: Cidr,
    reserved: Vec<IpAddr>,
    fixed: HashMap<String, IpAddr>,
    /// Each identity keeps the address it had, while nobody else needs it.
    leases: HashMap<String, IpAddr>,
    /// Addresses in use: by which identity, and by how many of its sessions (a new session of
    /// an identity takes over the address its old one still holds; see [`lease`]).
    ///
    /// [`lease`]: Self::lease
    in_use: HashMap<IpAddr, (String, usize)>,
}

/// How many addresses of a large (IPv6) pool are considered.
const SCAN_LIMIT: u128 = 65_536;

impl AddressPool {
    /// Clients get addresses from `net`, never `reserved` ones (the server's own); the
    /// network and (IPv4) broadcast addresses are never given out.
    pub fn new(net: Cidr, reserved: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            net,
            reserved: reserved.into_iter().collect(),
            fixed: HashMap::new(),
            leases: HashMap::new(),
            in_use: HashMap::new(),
        }
    }

    /// The pool's network.
    pub fn network(&self) -> Cidr {
        self.net
    }

    /// Gives `identity` always `addr`.
    ///
    /// # Errors
    ///
    /// `addr` is outside the pool.
    pub fn fix(&mut self, identity: &str, addr: IpAddr) -> Result<(), PoolError> {
        if !self.net.contains(addr) {
            return Err(PoolError::Outside {
                addr,
                pool: self.net,
            });
        }
        self.fixed.insert(identity.to_owned(), addr);
        Ok(())
    }

    /// An address for `identity`: its fixed one; else the one it had before; else the one it
    /// asks for (a client reconnecting after a server restart) if free; else the first free.
    /// An address the identity's older session still holds is shared with the new session
    /// (which replaces it); it is free again once both have released it.
    ///
    /// # Errors
    ///
    /// The pool is exhausted, or the identity's fixed address is in use.
    pub fn lease(
        &mut self,
        identity: &str,
        requested: Option<IpAddr>,
    ) -> Result<IpAddr, PoolError> {
        if let Some(&addr) = self.fixed.get(identity) {
            match self.in_use.get_mut(&addr) {
                // Its own older session still holds it (a roaming client back before the
                // server noticed the old one gone): the new session takes it over.
                Some((holder, sessions)) if holder == identity => *sessions += 1,
                Some(_) => {
                    return Err(PoolError::InUse {
                        identity: identity.to_owned(),
                        addr,
                    });
                }
                None => {
                    self.in_use.insert(addr, (identity.to_owned(), 1));
                }
            }
            return Ok(addr);
        }
        let previous = self.leases.get(identity).copied();
        let candidates = previous.into_iter().chain(requested);
        for addr in candidates {
            if let Some((holder, sessions)) = self.in_use.get_mut(&addr) {
                if holder == identity {
                    *sessions += 1;
                    return Ok(addr);
                }
            }
            if self.available(addr) {
                return Ok(self.take(identity, addr));
            }
        }
        let base = address_bits(self.net.addr());
        let host_bits =
            if self.net.addr().is_ipv4() { 32 } else { 128 } - u32::from(self.net.prefix());
        let size = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
        // First pass: addresses nobody held, so a returning client finds its old one free;
        // second pass: any free address (its old holder will get another).
        for respect_leases in [true, false] {
            for offset in 1..size.min(SCAN_LIMIT) {
                let addr = with_bits(self.net.addr(), base + offset);
                if self.available(addr) && !(respect_leases && self.leased_to_other(identity, addr))
                {
                    self.leases.retain(|_, a| *a != addr);
                    return Ok(self.take(identity, addr));
                }
            }
        }
        Err(PoolError::Exhausted(self.net))
    }

    fn leased_to_other(&self, identity: &str, addr: IpAddr) -> bool {
        // Prefer addresses nobody held, so a returning client finds its old one free.
        self.leases
            .iter()
            .any(|(who, a)| *a == addr && who != identity)
            && self.leases.len() < 1024
    }

    fn available(&self, addr: IpAddr) -> bool {
        let broadcast = match addr {
            IpAddr::V4(v4) => {
                let host = 32 - u32::from(self.net.prefix());
                host > 1
                    && (u32::from(v4) | !(u32::MAX.checked_shl(host).unwrap_or(0))) == u32::from(v4)
            }
            IpAddr::V6(_) => false,
        };
        self.net.contains(addr)
            && address_bits(addr) != address_bits(self.net.addr())
            && !broadcast
            && !self.reserved.contains(&addr)
            && !self.in_use.contains_key(&addr)
            && !self.fixed.values().any(|a| *a == addr)
    }

    fn take(&mut self, identity: &str, addr: IpAddr) -> IpAddr {
        self.in_use.insert(addr, (identity.to_owned(), 1));
        self.leases.insert(identity.to_owned(), addr);
        addr
    }

    /// Returns `addr` to the pool (it stays leased to its identity until someone else needs
    /// it).
    pub fn release(&mut self, addr: IpAddr) {
        if let Some((_, sessions)) = self.in_use.get_mut(&addr) {
            *sessions -= 1;
            if *sessions == 0 {
                self.in_use.remove(&addr);
            }
        }
    }

    /// Addresses in use now.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// Each identity's lease (the address it has, or had and keeps while nobody else needs
    /// it), for saving across a restart; fixed addresses are configuration, not leases.
    pub fn leases(&self) -> impl Iterator<Item = (&str, IpAddr)> + '_ {
        self.leases.iter().map(|(who, addr)| (who.as_str(), *addr))
    }

    /// Remembers that `identity` held `addr` (a lease saved before a restart), so it gets it
    /// back. A lease that no longer fits (outside the pool, reserved, another identity's fixed
    /// address, or already leased) is refused.
    ///
    /// # Errors
    ///
    /// [`PoolError::Outside`] for an address outside the pool, [`PoolError::InUse`] for one
    /// that is not free to lease.
    pub fn restore(&mut self, identity: &str, addr: IpAddr) -> Result<(), PoolError> {
        if !self.net.contains(addr) {
            return Err(PoolError::Outside {
                addr,
                pool: self.net,
            });
        }
        if !self.available(addr) || self.leases.values().any(|a| *a == addr) {
            return Err(PoolError::InUse {
                identity: identity.to_owned(),
                addr,
            });
        }
        self.leases.insert(identity.to_owned(), addr);
        Ok(())
    }
}

fn address_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn with_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::from(u32::try_from(bits).unwrap_or(u32::MAX).to_be_bytes()),
        IpAddr::V6(_) => IpAddr::from(bits.to_be_bytes()),
    }
}

/// A TUN data-path counter, published as `sssonector_tun_packets_total{outcome}`.
fn tun_count(outcome: &'static str) -> Count {
    Count::new(metrics::counter!("sssonector_tun_packets_total", "outcome" => outcome))
}

/// Counters of the TUN data path.
#[derive(Debug)]
struct RouterCounters {
    no_route: Count,
    spoofed: Count,
    forwarded: Count,
    refused: Count,
    denied: Count,
}

impl Default for RouterCounters {
    fn default() -> Self {
        Self {
            no_route: tun_count("no_route"),
            spoofed: tun_count("spoofed"),
            forwarded: tun_count("forwarded"),
            denied: tun_count("denied"),
            refused: tun_count("refused"),
        }
    }
}

/// A snapshot of the router's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Packets to an address no client holds.
    pub no_route: u64,
    /// Packets from a client with a source address not its own.
    pub spoofed: u64,
    /// Packets sent on to a client.
    pub forwarded: u64,
    /// Packets a client's link refused or dropped: over the MTU its session settled on,
    /// its outbound buffer full, or the link closing.
    pub refused: u64,
    /// Routes (client addresses) now.
    pub routes: usize,
    /// Packets a [`PacketFilter`] refused (an access policy).
    pub denied: u64,
}

/// Where a client's packet is headed, as a [`PacketFilter`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// Another client of this server (client-to-client traffic).
    Client,
    /// The server's side of the tunnel: the server itself or the networks behind it.
    Server,
}

/// Decides, per packet, whether a client may send to a destination address; `false` drops
/// the packet and counts it as denied. It runs in the client's own link task, so it may keep
/// state (a cached copy of a policy, say) without locking.
pub type PacketFilter = Box<dyn FnMut(IpAddr, Destination) -> bool + Send>;

/// Which link each client address lives on.
#[derive(Debug, Default)]
pub struct Router {
    routes: RwLock<HashMap<IpAddr, Link>>,
    counters: RouterCounters,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `addr` to `link`.
    pub fn insert(&self, addr: IpAddr, link: Link) {
        self.routes.write().insert(addr, link);
    }

    /// Removes the route for `addr`.
    pub fn remove(&self, addr: IpAddr) {
        self.routes.write().remove(&addr);
    }

    /// Removes the route for `addr` if it still goes to `link` (a newer session of the same
    /// client may have taken the address over).
    pub fn remove_link(&self, addr: IpAddr, link: &Link) {
        let mut routes = self.routes.write();
        if routes.get(&addr).is_some_and(|l| l.same(link)) {
            routes.remove(&addr);
        }
    }

    /// The link of the client holding `addr`.
    pub fn route(&self, addr: IpAddr) -> Option<Link> {
        self.routes.read().get(&addr).cloned()
    }

    /// Whether a client holds `addr`.
    pub fn has_route(&self, addr: IpAddr) -> bool {
        self.routes.read().contains_key(&addr)
    }

    /// Sends `packet` to the client holding `dst` if `allow` says so: `None` when no client
    /// holds it, `Some(true)` when sent on (or refused by that client's full link), and
    /// `Some(false)` when `allow` refused it (counted as denied).
    pub fn forward_if(
        &self,
        dst: IpAddr,
        packet: &[u8],
        allow: impl FnOnce() -> bool,
    ) -> Option<bool> {
        self.send_if(dst, allow, |link| {
            link.try_send_packet(packet).unwrap_or(false)
        })
    }

    /// Sends `packet` to the client holding its destination; `false` when none does.
    pub fn forward(&self, dst: IpAddr, packet: &[u8]) -> bool {
        self.forward_if(dst, packet, || true).is_some()
    }

    /// [`forward_if`](Self::forward_if) with the sending step given: `send` offers the
    /// packet to the client's link, `true` if it was taken. A slow client loses its own
    /// packets (counted as refused), not everyone's.
    fn send_if(
        &self,
        dst: IpAddr,
        allow: impl FnOnce() -> bool,
        send: impl FnOnce(&Link) -> bool,
    ) -> Option<bool> {
        let routes = self.routes.read();
        let link = routes.get(&dst)?;
        if !allow() {
            self.counters.denied.add(1);
            return Some(false);
        }
        let counter = if send(link) {
            &self.counters.forwarded
        } else {
            &self.counters.refused
        };
        counter.add(1);
        Some(true)
    }

    /// Where a packet from a client goes, by its addresses: dropped if its source is not one
    /// of the client's `own` (counted as spoofed); sent to the client holding its destination
    /// by `send`, if `filter` grants it; or `true`, for the server's own device, if `filter`
    /// grants that. Whatever a filter refuses is counted as denied. One route lookup decides
    /// both where the packet goes and which grant it needs.
    #[cfg(all(target_os = "linux", feature = "tun"))]
    fn route_from_client(
        &self,
        ip: &[u8],
        own: &[IpAddr],
        filter: Option<&mut PacketFilter>,
        send: impl FnOnce(&Link) -> bool,
    ) -> bool {
        let Some((src, dst)) = addresses(ip) else {
            return false;
        };
        if !own.contains(&src) {
            self.counters.spoofed.add(1);
            return false;
        }
        let Some(filter) = filter else {
            return self.send_if(dst, || true, send).is_none();
        };
        match self.send_if(dst, || filter(dst, Destination::Client), send) {
            Some(_) => false,
            None if filter(dst, Destination::Server) => true,
            None => {
                self.counters.denied.add(1);
                false
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            no_route: self.counters.no_route.get(),
            spoofed: self.counters.spoofed.get(),
            forwarded: self.counters.forwarded.get(),
            refused: self.counters.refused.get(),
            routes: self.routes.read().len(),
            denied: self.counters.denied.get(),
        }
    }
}

#[cfg(all(target_os = "linux", feature = "tun"))]
pub use device::*;

#[cfg(all(target_os = "linux", feature = "tun"))]
mod client;
#[cfg(all(target_os = "linux", feature = "tun"))]
pub use client::{Client, OnDeviceError, Prepared};

#[cfg(all(target_os = "linux", feature = "tun"))]
mod device {
    use bytes::Bytes;
    use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

    use super::*;

    /// A TUN device (tun-rs, tokio).
    pub type Device = tun_rs::AsyncDevice;

    /// Creates TUN device `name` (empty: the kernel picks) with `addresses` and `mtu`, up.
    /// With `offload`, the device takes and gives TCP/UDP segmentation offload super-packets
    /// (`IFF_VNET_HDR`, `TUNSETOFFLOAD`): one read returns up to 64 KiB that is split into
    /// packets here, and packets written together are coalesced (GRO) into few writes. A
    /// kernel that refuses offload gets a plain device, with a warning.
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
        whole: Count,
        split: Count,
    }

    impl SuperPackets {
        fn new(path: &'static str) -> Self {
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

    /// What one read of the device gave.
    enum Read {
        /// A segmentation-offload super-packet, whole: `virtio_net_hdr` and IP packet, the
        /// first this many bytes of the read buffer ([`Reader::raw`]).
        Whole(usize),
        /// This many packets ([`Reader::packet`]).
        Packets(usize),
    }

    /// Reads the device. A device with offload gives super-packets, kept whole
    /// ([`Read::Whole`]) for a peer that takes them and split ([`Reader::split`]) for one that
    /// does not; other reads are packets. Buffers are allocated once.
    struct Reader {
        original: Vec<u8>,
        splitter: Splitter,
        to_peer: SuperPackets,
    }

    impl Reader {
        fn new(mtu: usize) -> Self {
            Self {
                original: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
                splitter: Splitter::new(mtu),
                to_peer: SuperPackets::new("to_peer"),
            }
        }

        async fn read(&mut self, device: &Device) -> io::Result<Read> {
            if !device.tcp_gso() {
                let n = device
                    .recv_multiple(
                        &mut self.original,
                        &mut self.splitter.bufs,
                        &mut self.splitter.sizes,
                        0,
                    )
                    .await?;
                return Ok(Read::Packets(n));
            }
            let n = device.recv(&mut self.original).await?;
            let raw = &self.original[..n];
            if n > VIRTIO_NET_HDR_LEN && raw[1] != 0 {
                return Ok(Read::Whole(n));
            }
            self.splitter.split(raw).map(Read::Packets)
        }

        fn raw(&self, len: usize) -> &[u8] {
            &self.original[..len]
        }

        /// Splits the super-packet of [`Read::Whole`] into packets; none (logged) if it
        /// will not split.
        fn split_or_drop(&mut self, len: usize) -> usize {
            self.to_peer.split.add(1);
            self.splitter
                .split(&self.original[..len])
                .unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "a super-packet from the device would not split");
                    0
                })
        }

        fn packet(&self, i: usize) -> &[u8] {
            self.splitter.packet(i)
        }
    }

    /// Splits super-packets (`virtio_net_hdr` and IP packet) into packets, completing
    /// checksums the kernel left partial: for a peer or a device that does not take them
    /// whole.
    struct Splitter {
        scratch: Vec<u8>,
        bufs: Vec<Vec<u8>>,
        sizes: Vec<usize>,
    }

    impl Splitter {
        fn new(mtu: usize) -> Self {
            // 64 KiB of segments of at least 512 bytes (a small MSS) each.
            let count = IDEAL_BATCH_SIZE.max(65_536 / 512);
            Self {
                scratch: Vec::with_capacity(65_535),
                bufs: vec![vec![0; mtu.max(1500) + 64]; count],
                sizes: vec![0; count],
            }
        }

        fn split(&mut self, raw: &[u8]) -> io::Result<usize> {
            let hdr = VirtioNetHdr::decode(raw)?;
            self.scratch.clear();
            self.scratch.extend_from_slice(&raw[VIRTIO_NET_HDR_LEN..]);
            let input = &mut self.scratch;
            let Some(&first) = input.first() else {
                return Err(io::Error::other("an empty packet"));
            };
            if hdr.gso_type == 0 {
                if hdr.flags & 1 != 0 {
                    complete_checksum(input, hdr.csum_start, hdr.csum_offset)?;
                }
                let buf = &mut self.bufs[0];
                if input.len() > buf.len() {
                    buf.resize(input.len(), 0);
                }
                buf[..input.len()].copy_from_slice(input);
                self.sizes[0] = input.len();
                return Ok(1);
            }
            let mut hdr = hdr;
            // The kernel's header length can cover a whole first segment on a forwarding
            // path: recompute it from the transport header, as tun-rs does on its reads.
            let start = usize::from(hdr.csum_start);
            hdr.hdr_len = if hdr.gso_type & 0x7f == tun_rs::VIRTIO_NET_HDR_GSO_UDP_L4 {
                hdr.csum_start.saturating_add(8)
            } else {
                let offset = input
                    .get(start + 12)
                    .ok_or_else(|| io::Error::other("a super-packet shorter than its headers"))?;
                hdr.csum_start.saturating_add(u16::from(offset >> 4) * 4)
            };
            // Segments as large as this super-packet's (a link MTU above the one these
            // buffers were made for): the buffers grow once.
            let segment = usize::from(hdr.hdr_len) + usize::from(hdr.gso_size);
            if self.bufs[0].len() < segment {
                for buf in &mut self.bufs {
                    buf.resize(segment, 0);
                }
            }
            gso_split(
                input,
                hdr,
                &mut self.bufs,
                &mut self.sizes,
                0,
                first >> 4 == 6,
            )
        }

        fn packet(&self, i: usize) -> &[u8] {
            &self.bufs[i][..self.sizes[i]]
        }
    }

    /// Fills in a checksum the kernel left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the
    /// one's-complement sum from `start` on, stored at `start + offset`, whose field already
    /// holds the pseudo-header's sum.
    fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> io::Result<()> {
        let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
        if at + 2 > packet.len() || start > at {
            return Err(io::Error::other("a checksum offset beyond the packet"));
        }
        let mut sum: u64 = 0;
        for chunk in packet[start..].chunks(2) {
            let word = if chunk.len() == 2 {
                u16::from_be_bytes([chunk[0], chunk[1]])
            } else {
                u16::from_be_bytes([chunk[0], 0])
            };
            sum += u64::from(word);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let folded = u16::try_from(sum).unwrap_or(u16::MAX);
        packet[at..at + 2].copy_from_slice(&(!folded).to_be_bytes());
        Ok(())
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

    /// Writes packets to the device straight from where they were received (the link's read
    /// buffer): one write each, a device with offload given a zero `virtio_net_hdr` (no
    /// segmentation, checksum complete) in front by a gathered write, so nothing is copied or
    /// allocated per packet. Packets are not coalesced into super-packets here: a peer with
    /// offload sends them whole already, and tun-rs's coalescer copies each packet into a new
    /// allocation.
    struct Writer {
        /// For super-packets to a device without offload.
        splitter: Option<Splitter>,
        to_device: SuperPackets,
    }

    /// The `virtio_net_hdr` of a packet that needs nothing done.
    const PLAIN_HDR: [u8; VIRTIO_NET_HDR_LEN] = [0; VIRTIO_NET_HDR_LEN];

    impl Writer {
        fn new() -> Self {
            Self {
                splitter: None,
                to_device: SuperPackets::new("to_device"),
            }
        }

        /// Writes a super-packet from the peer: as it is to a device with offload, which
        /// segments it; split into packets otherwise, or when the kernel refuses it whole (a
        /// kind of segmentation this kernel does not know, such as UDP before Linux 6.2).
        async fn write_whole(&mut self, device: &Device, raw: &[u8]) {
            if device.tcp_gso() {
                match device.send(raw).await {
                    Ok(_) => {
                        self.to_device.whole.add(1);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "the device refused a super-packet whole; splitting it");
                    }
                }
            }
            self.to_device.split.add(1);
            let splitter = self.splitter.get_or_insert_with(|| Splitter::new(1500));
            let n = match splitter.split(raw) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "a super-packet from the peer would not split");
                    return;
                }
            };
            for i in 0..n {
                if let Err(e) = device.send(splitter.packet(i)).await {
                    tracing::debug!(error = %e, "TUN write failed");
                }
            }
        }

        async fn write(&mut self, device: &Device, packets: &[Bytes]) {
            let offload = device.tcp_gso();
            for packet in packets {
                let written = if offload {
                    device
                        .send_vectored(&[io::IoSlice::new(&PLAIN_HDR), io::IoSlice::new(packet)])
                        .await
                } else {
                    device.send(packet).await
                };
                if let Err(e) = written {
                    tracing::debug!(error = %e, "TUN write failed");
                }
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
    /// packets are dropped and counted in [`RouterStats::denied`].
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

        fn fold(mut sum: u64) -> u16 {
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            u16::try_from(sum).unwrap()
        }

        fn sum(bytes: &[u8]) -> u64 {
            bytes
                .chunks(2)
                .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
                .sum()
        }

        #[test]
        fn a_partial_checksum_is_completed_over_the_rest_of_the_packet() {
            // 20 bytes of IP header, then a UDP header and an odd-length body; the checksum
            // field holds the pseudo-header's sum, as the kernel leaves it.
            let mut packet: Vec<u8> = (0..20u8).chain([0, 53, 0, 53, 0, 13, 0, 0]).collect();
            packet.extend_from_slice(b"hello");
            let pseudo: u16 = 0x1234;
            packet[26..28].copy_from_slice(&pseudo.to_be_bytes());
            complete_checksum(&mut packet, 20, 6).unwrap();
            let stored = u16::from_be_bytes([packet[26], packet[27]]);
            let mut without = packet[20..].to_vec();
            without[6..8].copy_from_slice(&[0, 0]);
            // What a receiver checks: pseudo-header, segment, checksum sum to all ones.
            assert_eq!(
                fold(sum(&without) + u64::from(pseudo) + u64::from(stored)),
                0xffff
            );
            assert!(complete_checksum(&mut packet, 20, 100).is_err());
        }

        #[test]
        fn a_tcp_super_packet_splits_into_segments_of_its_size() {
            let payload: Vec<u8> = (0..3000u32)
                .map(|i| u8::try_from(i % 251).unwrap())
                .collect();
            let mut ip = vec![0u8; 40];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(40 + 3000u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&[10, 77, 0, 2]);
            ip[16..20].copy_from_slice(&[10, 77, 0, 1]);
            ip[24..28].copy_from_slice(&1000u32.to_be_bytes()); // sequence number
            ip[32] = 5 << 4; // data offset: 20 bytes
            ip[33] = 0x18; // PSH, ACK
            ip.extend_from_slice(&payload);
            let hdr = VirtioNetHdr {
                flags: 1,
                gso_type: tun_rs::VIRTIO_NET_HDR_GSO_TCPV4,
                // As the kernel can give it on a forwarding path: the whole first segment.
                hdr_len: 1040,
                gso_size: 1000,
                csum_start: 20,
                csum_offset: 16,
            };
            let mut raw = vec![0u8; VIRTIO_NET_HDR_LEN];
            hdr.encode(&mut raw).unwrap();
            raw.extend_from_slice(&ip);
            let mut splitter = Splitter::new(1400);
            assert_eq!(splitter.split(&raw).unwrap(), 3);
            for (i, first) in [(0, 1000u32), (1, 2000), (2, 3000)] {
                let segment = splitter.packet(i);
                assert_eq!(segment.len(), 1040, "segment {i}");
                assert_eq!(u16::from_be_bytes([segment[2], segment[3]]), 1040);
                let seq = u32::from_be_bytes([segment[24], segment[25], segment[26], segment[27]]);
                assert_eq!(seq, first);
                assert_eq!(&segment[40..], &payload[1000 * i..1000 * (i + 1)]);
            }
            // Segments larger than the buffers were made for (an MTU of 9000 on the path).
            let mut big = raw.clone();
            big[4..6].copy_from_slice(&3000u16.to_le_bytes());
            assert_eq!(splitter.split(&big).unwrap(), 1);
            assert_eq!(splitter.packet(0).len(), 3040);
            // Not a super-packet's worth of bytes: refused, not a panic.
            assert!(splitter.split(&raw[..VIRTIO_NET_HDR_LEN + 30]).is_err());
            assert!(splitter.split(&raw[..4]).is_err());
        }
    }
}

/// Leases shared between sessions: the server's [`AddressPool`]s behind one lock.
#[derive(Debug, Default)]
pub struct Pools {
    pools: Mutex<Vec<AddressPool>>,
}

impl Pools {
    /// One pool per address family in use.
    pub fn new(pools: Vec<AddressPool>) -> Self {
        Self {
            pools: Mutex::new(pools),
        }
    }

    /// One address from each pool for `identity`, with the pool's prefix, honouring the
    /// client's requests where free. All or nothing.
    ///
    /// # Errors
    ///
    /// A pool could not give an address (the reason is sent to the client).
    pub fn lease(
        &self,
        identity: &str,
        requested: &[TunnelAddress],
    ) -> Result<Vec<TunnelAddress>, PoolError> {
        let mut pools = self.pools.lock();
        let mut leased = Vec::new();
        for i in 0..pools.len() {
            let want = requested
                .iter()
                .map(|t| t.addr)
                .find(|a| pools[i].network().contains(*a));
            match pools[i].lease(identity, want) {
                Ok(addr) => leased.push(TunnelAddress {
                    addr,
                    prefix: pools[i].network().prefix(),
                }),
                Err(e) => {
                    for t in &leased {
                        for pool in pools.iter_mut() {
                            pool.release(t.addr);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(leased)
    }

    /// Every pool's leases, for saving across a restart.
    pub fn leases(&self) -> Vec<(String, IpAddr)> {
        let pools = self.pools.lock();
        let mut all: Vec<(String, IpAddr)> = pools
            .iter()
            .flat_map(|p| p.leases().map(|(who, addr)| (who.to_owned(), addr)))
            .collect();
        all.sort();
        all
    }

    /// Restores a saved lease into the pool whose network holds it.
    ///
    /// # Errors
    ///
    /// No pool holds the address, or it is not free to lease.
    pub fn restore(&self, identity: &str, addr: IpAddr) -> Result<(), PoolError> {
        let mut pools = self.pools.lock();
        let pool = pools
            .iter_mut()
            .find(|p| p.network().contains(addr))
            .ok_or(PoolError::Outside {
                addr,
                pool: Cidr::new(addr, 0),
            })?;
        pool.restore(identity, addr)
    }

    /// Returns a session's addresses.
    pub fn release(&self, addresses: &[TunnelAddress]) {
        let mut pools = self.pools.lock();
        for t in addresses {
            for pool in pools.iter_mut() {
                pool.release(t.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn saved_leases_come_back_after_a_restart() {
        let mut before = AddressPool::new(net("10.8.0.0/24"), ["10.8.0.1".parse().unwrap()]);
        let alice = before.lease("alice", None).unwrap();
        let bob = before.lease("bob", None).unwrap();
        let saved: Vec<(String, IpAddr)> =
            before.leases().map(|(w, a)| (w.to_owned(), a)).collect();
        let mut after = AddressPool::new(net("10.8.0.0/24"), ["10.8.0.1".parse().unwrap()]);
        for (who, addr) in &saved {
            after.restore(who, *addr).unwrap();
        }
        // Bob comes back first, asking for nothing: he still gets his own, not alice's.
        assert_eq!(after.lease("bob", None).unwrap(), bob);
        assert_eq!(after.lease("alice", None).unwrap(), alice);
        // A lease that no longer fits is refused.
        assert!(after.restore("carol", "10.9.0.5".parse().unwrap()).is_err());
        assert!(after.restore("carol", alice).is_err());
        assert!(after.restore("carol", "10.8.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn leases_skip_reserved_network_and_broadcast_and_stick_per_identity() {
        let mut pool = AddressPool::new(net("10.8.0.0/30"), ["10.8.0.1".parse().unwrap()]);
        // /30: .0 network, .1 server, .3 broadcast: only .2 is left.
        let a = pool.lease("alice", None).unwrap();
        assert_eq!(a, "10.8.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            pool.lease("bob", None),
            Err(PoolError::Exhausted(net("10.8.0.0/30")))
        );
        pool.release(a);
        assert_eq!(pool.lease("alice", None).unwrap(), a);
        // Leased to alice but free: bob may have it once nothing else is left.
        pool.release(a);
        assert_eq!(pool.lease("bob", None).unwrap(), a);
        pool.release(a);
        assert_eq!(pool.lease("alice", None).unwrap(), a);
    }

    #[test]
    fn fixed_and_requested_addresses() {
        let mut pool = AddressPool::new(net("10.8.0.0/24"), ["10.8.0.1".parse().unwrap()]);
        pool.fix("alice", "10.8.0.50".parse().unwrap()).unwrap();
        assert!(pool.fix("eve", "10.9.0.1".parse().unwrap()).is_err());
        assert_eq!(
            pool.lease("alice", None).unwrap(),
            "10.8.0.50".parse::<IpAddr>().unwrap()
        );
        // A second session of the same fixed identity shares it (it replaces the first).
        assert_eq!(
            pool.lease("alice", None).unwrap(),
            "10.8.0.50".parse::<IpAddr>().unwrap()
        );
        // Nobody else gets alice's fixed address, even when asking for it.
        let bob = pool
            .lease("bob", Some("10.8.0.50".parse().unwrap()))
            .unwrap();
        assert_ne!(bob, "10.8.0.50".parse::<IpAddr>().unwrap());
        // A free requested address is honoured.
        let carol = pool
            .lease("carol", Some("10.8.0.77".parse().unwrap()))
            .unwrap();
        assert_eq!(carol, "10.8.0.77".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv6_pools_work() {
        let mut pool = AddressPool::new(net("fd00:8::/64"), ["fd00:8::1".parse().unwrap()]);
        assert_eq!(
            pool.lease("alice", None).unwrap(),
            "fd00:8::2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            pool.lease("bob", None).unwrap(),
            "fd00:8::3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn packet_addresses() {
        let mut v4 = vec![0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 8, 0, 2]);
        v4[16..20].copy_from_slice(&[10, 8, 0, 1]);
        assert_eq!(
            addresses(&v4),
            Some(("10.8.0.2".parse().unwrap(), "10.8.0.1".parse().unwrap()))
        );
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[23] = 2;
        v6[39] = 1;
        assert_eq!(
            addresses(&v6),
            Some(("::2".parse().unwrap(), "::1".parse().unwrap()))
        );
        assert_eq!(addresses(&[0x45; 10]), None);
        assert_eq!(addresses(&[]), None);
        assert_eq!(addresses(&[0x10; 60]), None);
    }

    #[cfg(all(target_os = "linux", feature = "tun"))]
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

    #[test]
    fn a_new_session_of_an_identity_takes_over_the_address_its_old_one_holds() {
        let mut pool = AddressPool::new(net("10.8.0.0/24"), []);
        let first = pool.lease("roamer", None).unwrap();
        // The old session has not ended yet; the new one gets the same address.
        assert_eq!(pool.lease("roamer", None).unwrap(), first);
        assert_ne!(pool.lease("other", Some(first)).unwrap(), first);
        // The old session ends: the address stays with the new one.
        pool.release(first);
        assert_ne!(pool.lease("third", Some(first)).unwrap(), first);
        pool.release(first);
        assert_eq!(
            pool.lease("fourth", Some(first)).unwrap(),
            first,
            "free once both ended"
        );
        // The same for a fixed address.
        let mut fixed = AddressPool::new(net("10.9.0.0/24"), []);
        let addr: IpAddr = "10.9.0.50".parse().unwrap();
        fixed.fix("roamer", addr).unwrap();
        assert_eq!(fixed.lease("roamer", None).unwrap(), addr);
        assert_eq!(fixed.lease("roamer", None).unwrap(), addr);
    }
}
