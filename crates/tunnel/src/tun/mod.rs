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

mod packet;
mod pool;
mod router;

#[cfg(all(target_os = "linux", feature = "tun"))]
mod client;
#[cfg(all(target_os = "linux", feature = "tun"))]
mod device;

pub use packet::addresses;
pub use pool::{AddressPool, LeaseError, Pools};
pub use router::{Destination, PacketFilter, Router, RouterStats};

#[cfg(all(target_os = "linux", feature = "tun"))]
pub use client::{Client, OnDeviceError, Prepared};
#[cfg(all(target_os = "linux", feature = "tun"))]
pub use device::*;
