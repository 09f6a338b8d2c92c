//! Reading a TUN device: super-packets kept whole, or split, and plain packets.

use std::io;

use tun_rs::VIRTIO_NET_HDR_LEN;

use super::split::Splitter;
use super::{Device, SuperPackets};

/// What one read of the device gave.
pub(super) enum Read {
    /// A segmentation-offload super-packet, whole: `virtio_net_hdr` and IP packet, the
    /// first this many bytes of the read buffer ([`Reader::raw`]).
    Whole(usize),
    /// This many packets ([`Reader::packet`]).
    Packets(usize),
}

/// Reads the device. A device with offload gives super-packets, kept whole
/// ([`Read::Whole`]) for a peer that takes them and split ([`Reader::split`]) for one that
/// does not; other reads are packets. Buffers are allocated once.
pub(super) struct Reader {
    original: Vec<u8>,
    splitter: Splitter,
    pub(super) to_peer: SuperPackets,
}

impl Reader {
    pub(super) fn new(mtu: usize) -> Self {
        Self {
            original: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
            splitter: Splitter::new(mtu),
            to_peer: SuperPackets::new("to_peer"),
        }
    }

    pub(super) async fn read(&mut self, device: &Device) -> io::Result<Read> {
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

    pub(super) fn raw(&self, len: usize) -> &[u8] {
        &self.original[..len]
    }

    /// Splits the super-packet of [`Read::Whole`] into packets; none (logged) if it
    /// will not split.
    pub(super) fn split_or_drop(&mut self, len: usize) -> usize {
        self.to_peer.split.add(1);
        self.splitter
            .split(&self.original[..len])
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "a super-packet from the device would not split");
                0
            })
    }

    pub(super) fn packet(&self, i: usize) -> &[u8] {
        self.splitter.packet(i)
    }
}
