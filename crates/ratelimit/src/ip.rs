//! Grouping client addresses into rate-limit keys.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::ConfigError;

/// Maps a client address to the key it is limited under: IPv4 by its /32 and IPv6 by its /64
/// by default, so a client rotating through the addresses of its IPv6 subnet (every host gets a
/// /64) counts once. IPv4-mapped IPv6 addresses are treated as IPv4.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use sssonector_ratelimit::IpGrouping;
///
/// let group = IpGrouping::default();
/// let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
/// let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
/// assert_eq!(group.key(a), group.key(b));
/// assert_eq!(group.key(a).to_string(), "2001:db8:1:2::");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpGrouping {
    v4_prefix: u8,
    v6_prefix: u8,
}

impl Default for IpGrouping {
    fn default() -> Self {
        Self {
            v4_prefix: 32,
            v6_prefix: 64,
        }
    }
}

impl IpGrouping {
    /// Groups IPv4 by `/v4_prefix` and IPv6 by `/v6_prefix`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] for a prefix longer than the address.
    pub fn new(v4_prefix: u8, v6_prefix: u8) -> Result<Self, ConfigError> {
        check_prefix("v4_prefix", v4_prefix, 32)?;
        check_prefix("v6_prefix", v6_prefix, 128)?;
        Ok(Self {
            v4_prefix,
            v6_prefix,
        })
    }

    /// The key `addr` is limited under: its network address at the configured prefix.
    pub fn key(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => IpAddr::V4(mask_v4(v4, self.v4_prefix)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(mask_v4(v4, self.v4_prefix)),
                None => IpAddr::V6(mask_v6(v6, self.v6_prefix)),
            },
        }
    }
}

fn check_prefix(field: &'static str, prefix: u8, bits: u8) -> Result<(), ConfigError> {
    if prefix <= bits {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value: f64::from(prefix),
            min: 0.0,
            max: f64::from(bits),
        })
    }
}

fn mask_v4(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) & mask)
}

fn mask_v6(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(u128::from(addr) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let g = IpGrouping::new(24, 48).unwrap();
        assert_eq!(
            g.key("198.51.100.77".parse().unwrap()).to_string(),
            "198.51.100.0"
        );
        assert_eq!(
            g.key("2001:db8:aa:bb::1".parse().unwrap()).to_string(),
            "2001:db8:aa::"
        );
        assert_eq!(
            IpGrouping::default()
                .key("::ffff:192.0.2.9".parse().unwrap())
                .to_string(),
            "192.0.2.9"
        );
        let all = IpGrouping::new(0, 0).unwrap();
        assert_eq!(all.key("192.0.2.9".parse().unwrap()).to_string(), "0.0.0.0");
        assert!(IpGrouping::new(33, 64).is_err());
    }
}
