//! Writing to a TUN device: packets and super-packets from a peer.

use std::io;

use bytes::Bytes;
use tun_rs::VIRTIO_NET_HDR_LEN;

use super::split::Splitter;
use super::{Device, SuperPackets};

/// Writes packets to the device straight from where they were received (the link's read
/// buffer): one write each, a device with offload given a zero `virtio_net_hdr` (no
/// segmentation, checksum complete) in front by a gathered write, so nothing is copied or
/// allocated per packet. Packets are not coalesced into super-packets here: a peer with
/// offload sends them whole already, and tun-rs's coalescer copies each packet into a new
/// allocation.
pub(super) struct Writer {
    /// For super-packets to a device without offload.
    splitter: Option<Splitter>,
    to_device: SuperPackets,
}

/// The `virtio_net_hdr` of a packet that needs nothing done.
const PLAIN_HDR: [u8; VIRTIO_NET_HDR_LEN] = [0; VIRTIO_NET_HDR_LEN];

impl Writer {
    pub(super) fn new() -> Self {
        Self {
            splitter: None,
            to_device: SuperPackets::new("to_device"),
        }
    }

    /// Writes a super-packet from the peer: as it is to a device with offload, which
    /// segments it; split into packets otherwise, or when the kernel refuses it whole (a
    /// kind of segmentation this kernel does not know, such as UDP before Linux 6.2).
    pub(super) async fn write_whole(&mut self, device: &Device, raw: &[u8]) {
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

    pub(super) async fn write(&mut self, device: &Device, packets: &[Bytes]) {
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
