//! Address pools: the addresses a server gives its clients, fixed per identity or leased and
//! kept for it, saved and restored across restarts.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

use crate::cidr::Cidr;
use crate::proto::TunnelAddress;

/// Why the pool could not give an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
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
    pub fn fix(&mut self, identity: &str, addr: IpAddr) -> Result<(), LeaseError> {
        if !self.net.contains(addr) {
            return Err(LeaseError::Outside {
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
    ) -> Result<IpAddr, LeaseError> {
        if let Some(&addr) = self.fixed.get(identity) {
            match self.in_use.get_mut(&addr) {
                // Its own older session still holds it (a roaming client back before the
                // server noticed the old one gone): the new session takes it over.
                Some((holder, sessions)) if holder == identity => *sessions += 1,
                Some(_) => {
                    return Err(LeaseError::InUse {
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
        Err(LeaseError::Exhausted(self.net))
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
    /// [`LeaseError::Outside`] for an address outside the pool, [`LeaseError::InUse`] for one
    /// that is not free to lease.
    pub fn restore(&mut self, identity: &str, addr: IpAddr) -> Result<(), LeaseError> {
        if !self.net.contains(addr) {
            return Err(LeaseError::Outside {
                addr,
                pool: self.net,
            });
        }
        if !self.available(addr) || self.leases.values().any(|a| *a == addr) {
            return Err(LeaseError::InUse {
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
    ) -> Result<Vec<TunnelAddress>, LeaseError> {
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
    pub fn restore(&self, identity: &str, addr: IpAddr) -> Result<(), LeaseError> {
        let mut pools = self.pools.lock();
        let pool = pools
            .iter_mut()
            .find(|p| p.network().contains(addr))
            .ok_or(LeaseError::Outside {
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
            Err(LeaseError::Exhausted(net("10.8.0.0/30")))
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
