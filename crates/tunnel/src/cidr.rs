//! Networks in CIDR form: the server's allowed client networks, address pools, and the
//! networks an access policy grants.

use std::fmt;
use std::net::IpAddr;

/// Why a network did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// No `/prefix`.
    #[error("{0:?} is not a network (for example 10.0.0.0/8)")]
    NoPrefix(String),
    /// What comes before the `/` is not an IP address.
    #[error("{text:?}: {addr:?} is not an IP address")]
    Address {
        /// The text given.
        text: String,
        /// The part before the `/`.
        addr: String,
    },
    /// The prefix is not a number from 0 to the address family's length.
    #[error("{text:?}: the prefix must be 0 to {max}")]
    Prefix {
        /// The text given.
        text: String,
        /// 32 or 128.
        max: u8,
    },
}

/// A network in CIDR form, `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix`; the prefix is clamped to the address family's length.
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Self {
            addr,
            prefix: prefix.min(max),
        }
    }

    /// Whether `ip` is inside the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The address as written: a network's address, or an interface's own in `10.8.0.1/24`.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::NoPrefix(s.to_owned()))?;
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Address {
            text: s.to_owned(),
            addr: addr.to_owned(),
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 =
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix {
                    text: s.to_owned(),
                    max,
                })?;
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_contain_and_print() {
        let net: Cidr = "10.77.0.1/24".parse().unwrap();
        assert_eq!(net.to_string(), "10.77.0.1/24");
        assert_eq!(net.prefix(), 24);
        assert!(net.contains("10.77.0.200".parse().unwrap()));
        assert!(!net.contains("10.78.0.1".parse().unwrap()));
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert!(net.contains("::ffff:10.77.0.9".parse().unwrap()));
        let v6: Cidr = "fd77::/64".parse().unwrap();
        assert!(v6.contains("fd77::1".parse().unwrap()));
        assert!(!v6.contains("10.77.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn malformed_networks_say_what_is_wrong() {
        assert_eq!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::NoPrefix("10.0.0.0".into()))
        );
        let error = "10.0.0/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            error.to_string(),
            r#""10.0.0/8": "10.0.0" is not an IP address"#
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix {
                text: "10.0.0.0/33".into(),
                max: 32
            })
        );
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert!("fd00::/128".parse::<Cidr>().is_ok());
    }
}
