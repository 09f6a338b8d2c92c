//! The sssonector tunnel: a layer-3 VPN and port forwarder over mutual TLS.
//!
//! - [`proto`], the wire protocol, sans IO: length-prefixed typed frames that encode into a
//!   buffer and decode from one, never panicking on malformed input, and the session state
//!   machine that takes bytes and time and returns bytes and events.
//! - [`Link`]: a session driven over a transport (TLS over TCP), with packets, streams
//!   ([`TunnelStream`]) and control messages for the rest of the program.
//! - [`client`] and [`server`]: the TLS connection stacks (tower services) that establish links;
//!   [`transport`] tunes their TCP sockets.
//! - [`forward`]: port forwarding, local connections carried as streams; [`tun`]: the layer-3
//!   data path between TUN devices, with address pools and the server's router.
//!
//! # Example
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use sssonector_tunnel::proto::Frame;
//!
//! let mut wire = BytesMut::new();
//! Frame::StreamData { id: 1, data: Bytes::from_static(b"hello") }.encode(&mut wire, 65_536)?;
//! Frame::Ping(7).encode(&mut wire, 65_536)?;
//!
//! let first = Frame::decode(&mut wire, 65_536)?;
//! assert_eq!(first, Some(Frame::StreamData { id: 1, data: Bytes::from_static(b"hello") }));
//! assert_eq!(Frame::decode(&mut wire, 65_536)?, Some(Frame::Ping(7)));
//! assert_eq!(Frame::decode(&mut wire, 65_536)?, None); // needs more bytes
//! # Ok::<(), sssonector_tunnel::proto::DecodeError>(())
//! ```

mod cidr;
pub mod client;
mod count;
pub mod forward;
mod link;
pub mod proto;
pub mod server;
mod stream;
pub mod transport;
pub mod tun;

pub use cidr::{Cidr, CidrError};
pub use link::{EstablishError, Incoming, Link, LinkConfig, LinkError, LinkStats, stream_code};
pub use stream::{ResetHandle, StreamReader, StreamWriter, TunnelStream};
pub use transport::TcpTuning;
