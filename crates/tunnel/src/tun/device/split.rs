//! Splitting segmentation-offload super-packets into packets, for a peer or a device that
//! does not take them whole.

use std::io;

use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

/// Splits super-packets (`virtio_net_hdr` and IP packet) into packets, completing
/// checksums the kernel left partial: for a peer or a device that does not take them
/// whole.
pub(super) struct Splitter {
    scratch: Vec<u8>,
    /// The packets, also filled by a plain device's batched reads ([`super::read`]).
    pub(super) bufs: Vec<Vec<u8>>,
    pub(super) sizes: Vec<usize>,
}

impl Splitter {
    pub(super) fn new(mtu: usize) -> Self {
        // 64 KiB of segments of at least 512 bytes (a small MSS) each.
        let count = IDEAL_BATCH_SIZE.max(65_536 / 512);
        Self {
            scratch: Vec::with_capacity(65_535),
            bufs: vec![vec![0; mtu.max(1500) + 64]; count],
            sizes: vec![0; count],
        }
    }

    pub(super) fn split(&mut self, raw: &[u8]) -> io::Result<usize> {
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

    pub(super) fn packet(&self, i: usize) -> &[u8] {
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
