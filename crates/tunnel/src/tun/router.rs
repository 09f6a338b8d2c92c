//! The server's router: which client each tunnel address lives on, and where a packet from a
//! client may go.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::RwLock;

#[cfg(all(target_os = "linux", feature = "tun"))]
use super::addresses;
use crate::count::Count;
use crate::link::Link;

/// A TUN data-path counter, published as `sssonector_tun_packets_total{outcome}`.
fn tun_count(outcome: &'static str) -> Count {
    Count::new(metrics::counter!("sssonector_tun_packets_total", "outcome" => outcome))
}

/// Counters of the TUN data path.
#[derive(Debug)]
pub(super) struct RouterCounters {
    pub(super) no_route: Count,
    pub(super) spoofed: Count,
    pub(super) forwarded: Count,
    pub(super) refused: Count,
    pub(super) denied: Count,
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
    pub(super) counters: RouterCounters,
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
    pub(super) fn route_from_client(
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
