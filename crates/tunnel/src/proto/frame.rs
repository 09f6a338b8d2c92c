//! Frames: the unit of the wire protocol, and their encoding.
//!
//! Every frame is a 4-byte header — the frame type (1 byte) and the payload length (3 bytes,
//! big-endian) — followed by the payload. Integers are big-endian. See `docs/PROTOCOL.md`.

use std::net::IpAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::proto::error::DecodeError;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// The largest payload a 3-byte length can carry.
pub const MAX_PAYLOAD_LIMIT: usize = (1 << 24) - 1;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The ALPN protocol name of this version; TLS refuses a peer that does not offer it.
pub const ALPN: &str = "sssonector/1";

/// What the client asks the session to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// IP packets between TUN devices.
    Tun,
    /// TCP streams to targets on the server's side.
    Forward,
}

/// Capability bits announced in the hello.
pub mod capability {
    /// The peer batches many frames per TLS record.
    pub const BATCHING: u32 = 1 << 0;
    /// The peer sends and accepts per-stream credit (window updates).
    pub const STREAM_CREDIT: u32 = 1 << 1;
    /// The peer sends and accepts segmentation-offload super-packets whole
    /// ([`Frame::GsoPacket`](super::Frame::GsoPacket)); its TUN device splits or takes them.
    pub const GSO: u32 = 1 << 2;
}

/// A tunnel address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelAddress {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix: u8,
}

/// The hello each side sends first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version spoken.
    pub version: u16,
    /// The session mode.
    pub mode: Mode,
    /// The largest IP packet the sender will send or accept.
    pub mtu: u16,
    /// [`capability`] bits; bits this side does not know are ignored.
    pub capabilities: u32,
    /// Tunnel addresses: the server's answer assigns them; a client may ask for some.
    pub addresses: Vec<TunnelAddress>,
    /// The largest frame payload the sender accepts; the peer sends no larger. A hello
    /// without it (an older sender) means [`DEFAULT_MAX_PAYLOAD`].
    pub max_payload: u32,
}

/// The largest payload a peer that does not announce one accepts.
pub const DEFAULT_MAX_PAYLOAD: u32 = 64 * 1024;

/// Frame types from here up are extensions: a receiver that does not know one skips it
/// (and counts it) instead of ending the session, so later versions can add frames that
/// older peers ignore. An unknown type below it is a protocol error.
pub const FIRST_EXTENSION_TYPE: u8 = 0x40;

/// Why a peer ends a stream or the session.
pub type ErrorCode = u16;

/// A frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// Opens the session (both sides, client first).
    Hello(Hello),
    /// One IP packet (TUN mode).
    Packet(Bytes),
    /// A segmentation-offload super-packet (TUN mode, both sides announcing
    /// [`capability::GSO`]): the 10-byte Linux `virtio_net_hdr` its device gave with it, then
    /// up to 64 KiB of IP packet that the receiving device segments (or a receiver splits).
    GsoPacket(Bytes),
    /// Opens a stream to a forwarding rule's target, by rule name.
    StreamOpen {
        /// The stream, chosen by the opener (odd from the client, even from the server).
        id: u32,
        /// The forwarding rule.
        target: String,
    },
    /// Bytes on a stream.
    StreamData {
        /// The stream.
        id: u32,
        /// The bytes.
        data: Bytes,
    },
    /// The sender will send no more on this stream (TCP half-close); it still receives.
    StreamHalfClose {
        /// The stream.
        id: u32,
    },
    /// The stream is over in both directions; a non-zero code is an error (a reset).
    StreamClose {
        /// The stream.
        id: u32,
        /// 0 for a clean close.
        code: ErrorCode,
    },
    /// Grants the peer `bytes` more of sending on a stream (flow control).
    StreamCredit {
        /// The stream.
        id: u32,
        /// Additional bytes the peer may send.
        bytes: u32,
    },
    /// Keepalive: answer with a [`Frame::Pong`] carrying the same value.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// A control message for the session (kind-specific body).
    Control {
        /// The kind of message.
        kind: u16,
        /// Its body.
        body: Bytes,
    },
    /// A fatal error: the connection closes after it.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
    /// A clean goodbye: no more frames follow.
    Goodbye,
    /// A frame of an extension type (at or above [`FIRST_EXTENSION_TYPE`]) this side does
    /// not know; it is ignored.
    Extension {
        /// The frame type.
        kind: u8,
        /// The payload, unread.
        payload: Bytes,
    },
}

/// Frame type bytes on the wire.
mod kind {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const PACKET: u8 = 0x02;
    pub(super) const GSO_PACKET: u8 = 0x03;
    pub(super) const STREAM_OPEN: u8 = 0x10;
    pub(super) const STREAM_DATA: u8 = 0x11;
    pub(super) const STREAM_HALF_CLOSE: u8 = 0x12;
    pub(super) const STREAM_CLOSE: u8 = 0x13;
    pub(super) const STREAM_CREDIT: u8 = 0x14;
    pub(super) const PING: u8 = 0x20;
    pub(super) const PONG: u8 = 0x21;
    pub(super) const CONTROL: u8 = 0x30;
    pub(super) const ERROR: u8 = 0x3e;
    pub(super) const GOODBYE: u8 = 0x3f;
}

impl Frame {
    /// Appends the encoded frame to `out`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLarge`] if the payload exceeds `max_payload` (the same limit the
    /// peer's decoder applies), or a field does not fit its encoding.
    pub fn encode(&self, out: &mut BytesMut, max_payload: usize) -> Result<(), DecodeError> {
        let start = out.len();
        out.put_u32(0); // header, filled in below
        match self {
            Frame::Hello(hello) => {
                out.put_u16(hello.version);
                out.put_u8(match hello.mode {
                    Mode::Tun => 1,
                    Mode::Forward => 2,
                });
                out.put_u16(hello.mtu);
                out.put_u32(hello.capabilities);
                let count = u8::try_from(hello.addresses.len())
                    .map_err(|_| DecodeError::Invalid("more than 255 tunnel addresses"))?;
                out.put_u8(count);
                for a in &hello.addresses {
                    match a.addr {
                        IpAddr::V4(v4) => {
                            out.put_u8(4);
                            out.put_slice(&v4.octets());
                        }
                        IpAddr::V6(v6) => {
                            out.put_u8(6);
                            out.put_slice(&v6.octets());
                        }
                    }
                    out.put_u8(a.prefix);
                }
                out.put_u32(hello.max_payload);
            }
            Frame::Packet(packet) | Frame::GsoPacket(packet) => out.put_slice(packet),
            Frame::StreamOpen { id, target } => {
                out.put_u32(*id);
                out.put_slice(target.as_bytes());
            }
            Frame::StreamData { id, data } => {
                out.put_u32(*id);
                out.put_slice(data);
            }
            Frame::StreamHalfClose { id } => out.put_u32(*id),
            Frame::StreamClose { id, code } => {
                out.put_u32(*id);
                out.put_u16(*code);
            }
            Frame::StreamCredit { id, bytes } => {
                out.put_u32(*id);
                out.put_u32(*bytes);
            }
            Frame::Ping(v) | Frame::Pong(v) => out.put_u64(*v),
            Frame::Control { kind, body } => {
                out.put_u16(*kind);
                out.put_slice(body);
            }
            Frame::Error { code, message } => {
                out.put_u16(*code);
                out.put_slice(message.as_bytes());
            }
            Frame::Goodbye => {}
            Frame::Extension { kind, payload } => {
                if *kind < FIRST_EXTENSION_TYPE {
                    return Err(DecodeError::Invalid(
                        "an extension frame below the extension range",
                    ));
                }
                out.put_slice(payload);
            }
        }
        let len = out.len() - start - HEADER_LEN;
        let limit = max_payload.min(MAX_PAYLOAD_LIMIT);
        if len > limit {
            out.truncate(start);
            return Err(DecodeError::TooLarge { len, max: limit });
        }
        let header = (u32::from(self.kind()) << 24) | u32::try_from(len).unwrap_or(0);
        out[start..start + HEADER_LEN].copy_from_slice(&header.to_be_bytes());
        Ok(())
    }

    /// Encodes an IP packet frame straight from a slice: the same bytes as
    /// `Frame::Packet(Bytes::copy_from_slice(packet)).encode(..)` without the intermediate
    /// buffer, for the data path.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLarge`] when the packet exceeds `max_payload`.
    pub fn encode_packet(
        packet: &[u8],
        out: &mut BytesMut,
        max_payload: usize,
    ) -> Result<(), DecodeError> {
        Self::encode_raw(kind::PACKET, packet, out, max_payload)
    }

    /// [`encode_packet`](Self::encode_packet) for a [`Frame::GsoPacket`]: `raw` is the
    /// `virtio_net_hdr` and the super-packet.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLarge`] when `raw` exceeds `max_payload`.
    pub fn encode_gso_packet(
        raw: &[u8],
        out: &mut BytesMut,
        max_payload: usize,
    ) -> Result<(), DecodeError> {
        Self::encode_raw(kind::GSO_PACKET, raw, out, max_payload)
    }

    fn encode_raw(
        kind: u8,
        packet: &[u8],
        out: &mut BytesMut,
        max_payload: usize,
    ) -> Result<(), DecodeError> {
        let limit = max_payload.min(MAX_PAYLOAD_LIMIT);
        if packet.len() > limit {
            return Err(DecodeError::TooLarge {
                len: packet.len(),
                max: limit,
            });
        }
        let header = (u32::from(kind) << 24) | u32::try_from(packet.len()).unwrap_or(0);
        out.reserve(HEADER_LEN + packet.len());
        out.put_u32(header);
        out.put_slice(packet);
        Ok(())
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::Packet(_) => kind::PACKET,
            Frame::GsoPacket(_) => kind::GSO_PACKET,
            Frame::StreamOpen { .. } => kind::STREAM_OPEN,
            Frame::StreamData { .. } => kind::STREAM_DATA,
            Frame::StreamHalfClose { .. } => kind::STREAM_HALF_CLOSE,
            Frame::StreamClose { .. } => kind::STREAM_CLOSE,
            Frame::StreamCredit { .. } => kind::STREAM_CREDIT,
            Frame::Ping(_) => kind::PING,
            Frame::Pong(_) => kind::PONG,
            Frame::Control { .. } => kind::CONTROL,
            Frame::Error { .. } => kind::ERROR,
            Frame::Goodbye => kind::GOODBYE,
            Frame::Extension { kind, .. } => *kind,
        }
    }

    /// Decodes one frame from the front of `buf`, consuming it. `Ok(None)`: more bytes are
    /// needed (nothing is consumed). Never panics, whatever the bytes.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a frame that can never be valid; the connection should be closed
    /// with [`DecodeError::code`].
    pub fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let kind = u8::try_from(header >> 24).unwrap_or(0);
        let len = usize::try_from(header & 0x00ff_ffff).unwrap_or(usize::MAX);
        let limit = max_payload.min(MAX_PAYLOAD_LIMIT);
        if len > limit {
            return Err(DecodeError::TooLarge { len, max: limit });
        }
        if buf.len() < HEADER_LEN + len {
            // Make room for the whole frame at once, not a little per read.
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let mut payload = buf.split_to(len).freeze();
        Self::parse(kind, &mut payload).map(Some)
    }

    fn parse(kind: u8, p: &mut Bytes) -> Result<Frame, DecodeError> {
        let frame = match kind {
            kind::HELLO => {
                let version = take_u16(p, "hello")?;
                let mode = match take_u8(p, "hello")? {
                    1 => Mode::Tun,
                    2 => Mode::Forward,
                    _ => return Err(DecodeError::Invalid("unknown mode in hello")),
                };
                let mtu = take_u16(p, "hello")?;
                let capabilities = take_u32(p, "hello")?;
                let count = take_u8(p, "hello")?;
                let mut addresses = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let (addr, max_prefix) = match take_u8(p, "hello address")? {
                        4 => {
                            let octets: [u8; 4] = take_array(p, "hello address")?;
                            (IpAddr::from(octets), 32)
                        }
                        6 => {
                            let octets: [u8; 16] = take_array(p, "hello address")?;
                            (IpAddr::from(octets), 128)
                        }
                        _ => return Err(DecodeError::Invalid("unknown address family in hello")),
                    };
                    let prefix = take_u8(p, "hello address")?;
                    if prefix > max_prefix {
                        return Err(DecodeError::Invalid("prefix longer than the address"));
                    }
                    addresses.push(TunnelAddress { addr, prefix });
                }
                // Fields added after the address list are read if present; anything after
                // the fields this side knows is a later version's, and is skipped.
                let max_payload = if p.len() >= 4 {
                    take_u32(p, "hello")?
                } else {
                    DEFAULT_MAX_PAYLOAD
                };
                p.clear();
                Frame::Hello(Hello {
                    version,
                    mode,
                    mtu,
                    capabilities,
                    addresses,
                    max_payload,
                })
            }
            kind::PACKET => Frame::Packet(std::mem::take(p)),
            kind::GSO_PACKET => Frame::GsoPacket(std::mem::take(p)),
            kind::STREAM_OPEN => {
                let id = take_u32(p, "stream open")?;
                let target = String::from_utf8(p.to_vec())
                    .map_err(|_| DecodeError::Invalid("stream target is not UTF-8"))?;
                p.clear();
                Frame::StreamOpen { id, target }
            }
            kind::STREAM_DATA => {
                let id = take_u32(p, "stream data")?;
                Frame::StreamData {
                    id,
                    data: std::mem::take(p),
                }
            }
            kind::STREAM_HALF_CLOSE => Frame::StreamHalfClose {
                id: take_u32(p, "stream half-close")?,
            },
            kind::STREAM_CLOSE => Frame::StreamClose {
                id: take_u32(p, "stream close")?,
                code: take_u16(p, "stream close")?,
            },
            kind::STREAM_CREDIT => Frame::StreamCredit {
                id: take_u32(p, "stream credit")?,
                bytes: take_u32(p, "stream credit")?,
            },
            kind::PING => Frame::Ping(take_u64(p, "ping")?),
            kind::PONG => Frame::Pong(take_u64(p, "pong")?),
            kind::CONTROL => Frame::Control {
                kind: take_u16(p, "control")?,
                body: std::mem::take(p),
            },
            kind::ERROR => {
                let code = take_u16(p, "error")?;
                let message = String::from_utf8_lossy(p).into_owned();
                p.clear();
                Frame::Error { code, message }
            }
            kind::GOODBYE => Frame::Goodbye,
            other if other >= FIRST_EXTENSION_TYPE => Frame::Extension {
                kind: other,
                payload: std::mem::take(p),
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        if !p.is_empty() {
            return Err(DecodeError::TrailingBytes(p.len()));
        }
        Ok(frame)
    }
}

fn take_array<const N: usize>(p: &mut Bytes, what: &'static str) -> Result<[u8; N], DecodeError> {
    if p.len() < N {
        return Err(DecodeError::Truncated(what));
    }
    let mut out = [0u8; N];
    p.copy_to_slice(&mut out);
    Ok(out)
}

fn take_u8(p: &mut Bytes, what: &'static str) -> Result<u8, DecodeError> {
    take_array::<1>(p, what).map(|[b]| b)
}

fn take_u16(p: &mut Bytes, what: &'static str) -> Result<u16, DecodeError> {
    take_array(p, what).map(u16::from_be_bytes)
}

fn take_u32(p: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    take_array(p, what).map(u32::from_be_bytes)
}

fn take_u64(p: &mut Bytes, what: &'static str) -> Result<u64, DecodeError> {
    take_array(p, what).map(u64::from_be_bytes)
}
