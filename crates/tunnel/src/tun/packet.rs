//! What the data path reads from an IP packet's header.

use std::net::IpAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
