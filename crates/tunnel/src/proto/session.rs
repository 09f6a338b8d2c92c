//! The session state machine, sans IO: bytes and time in, bytes and events out.
//!
//! ```text
//! Handshaking ──hello ok──▶ Established ──goodbye / close()──▶ Draining ──▶ Closed
//!      └──────────── error, timeout, dead peer, malformed frame ───────────────▶ Closed
//! ```
//!
//! The I/O layer feeds received bytes to [`Session::receive`], calls [`Session::tick`] when
//! [`Session::next_deadline`] passes, writes out whatever [`Session::take_output`] returns,
//! and acts on the [`Event`]s. Nothing here reads a clock or touches a socket, so every rule
//! is tested with plain values.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::proto::{
    DecodeError, Frame, Hello, MAX_PAYLOAD_LIMIT, Mode, PROTOCOL_VERSION, TunnelAddress,
};

/// The smallest payload limit a peer may announce (besides its MTU): room for stream opens,
/// credits, errors and goodbyes.
const MIN_PEER_PAYLOAD: usize = 1024;

/// Set in the value of a ping that probes the round trip for window growth, so that its pong
/// is told from a keepalive's.
const PROBE: u64 = 1 << 63;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends the first hello.
    Client,
    /// Answers it.
    Server,
}

/// Error codes sent in [`Frame::Error`] by the session.
pub mod code {
    /// Version or mode mismatch in the hello.
    pub const HELLO_MISMATCH: u16 = 1;
    /// No hello within the handshake timeout.
    pub const HANDSHAKE_TIMEOUT: u16 = 6;
    /// A frame that is not allowed in the current state.
    pub const UNEXPECTED_FRAME: u16 = 7;
    /// The peer sent more on a stream than its credit allowed.
    pub const FLOW_CONTROL: u16 = 8;
    /// Stream close code: the stream is not known (a reset).
    pub const UNKNOWN_STREAM: u16 = 9;
    /// The server's access policy does not permit this peer (or its session limit is
    /// reached); as a stream close code, it does not permit this stream.
    pub const NOT_PERMITTED: u16 = 14;
}

/// Why a server refuses a client's hello: the ERROR code and a reason for the client's log
/// (naming nothing of the server's internals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The ERROR frame's code.
    pub code: u16,
    /// Its message.
    pub reason: String,
}

impl Refusal {
    /// Refused by the server's access policy ([`code::NOT_PERMITTED`]).
    pub fn not_permitted(reason: impl Into<String>) -> Self {
        Self {
            code: code::NOT_PERMITTED,
            reason: reason.into(),
        }
    }
}

impl From<String> for Refusal {
    /// A refusal of the hello itself ([`code::HELLO_MISMATCH`]): an address that cannot be
    /// assigned, say.
    fn from(reason: String) -> Self {
        Self {
            code: code::HELLO_MISMATCH,
            reason,
        }
    }
}

/// Why a stream operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The session is not established.
    #[error("the session is not established")]
    NotEstablished,
    /// No such stream (never opened, or closed).
    #[error("stream {0} is not open")]
    Unknown(u32),
    /// This side already half-closed the stream.
    #[error("stream {0} is closed for sending")]
    SendClosed(u32),
}

/// Flow-control and close state of one stream.
#[derive(Debug)]
struct Stream {
    /// Bytes the peer still lets us send.
    send_credit: u64,
    /// Bytes we still let the peer send.
    recv_allowed: u64,
    /// Bytes the application consumed since we last granted credit.
    consumed: u64,
    /// This stream's receive window: the configured one, grown while the peer fills it
    /// within one round trip.
    window: u64,
    /// Bytes received during the current window probe.
    probe_bytes: u64,
    sent_half_close: bool,
    received_half_close: bool,
}

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Client or server.
    pub role: Role,
    /// The mode this side wants (client) or allows (server).
    pub mode: Mode,
    /// The largest IP packet this side sends or accepts.
    pub mtu: u16,
    /// The largest frame payload accepted.
    pub max_payload: usize,
    /// How long the hello exchange may take.
    pub handshake_timeout: Duration,
    /// How often to ping an idle peer.
    pub keepalive: Duration,
    /// How long a silent peer is given before the session is closed.
    pub dead_peer_timeout: Duration,
    /// Each stream's first credit window, in bytes, each way: the most a side may have in
    /// flight on one stream before the other grants more (bounded memory per stream).
    pub stream_window: u32,
    /// The largest a stream's receive window grows to. A window doubles each round trip in
    /// which the peer sends at least half of it while the application keeps up, so a
    /// stream over a long path is limited by the path, not by the window. Equal to
    /// `stream_window`, windows stay fixed.
    pub max_stream_window: u32,
    /// The most all of a session's receive windows together may grow to beyond their first
    /// windows' size, in bytes: the memory one connection may hold for streams whose
    /// applications fall behind.
    pub receive_budget: u64,
    /// Announce [`capability::GSO`](crate::proto::capability::GSO): this side takes
    /// segmentation-offload super-packets whole. Give `max_payload` room for one (64 KiB and
    /// the 10-byte header). Off by default.
    pub gso: bool,
}

impl SessionConfig {
    /// Defaults: MTU 1400, 64 KiB frames, 10 s handshake, ping every 10 s, dead after 30 s,
    /// stream windows of 256 KiB growing to 16 MiB within 32 MiB per session.
    pub fn new(role: Role, mode: Mode) -> Self {
        Self {
            role,
            mode,
            mtu: 1400,
            max_payload: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
            dead_peer_timeout: Duration::from_secs(30),
            stream_window: 256 * 1024,
            max_stream_window: 16 * 1024 * 1024,
            receive_budget: 32 * 1024 * 1024,
            gso: false,
        }
    }
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the hello exchange to finish.
    Handshaking,
    /// Carrying traffic.
    Established,
    /// A goodbye was sent or received; finishing up.
    Draining,
    /// Over; the connection should be closed.
    Closed,
}

/// What the session tells the I/O layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The hello exchange succeeded: the peer's hello (for a client, with its assigned
    /// tunnel addresses).
    Established(Hello),
    /// An IP packet from the peer.
    Packet(Bytes),
    /// A segmentation-offload super-packet from the peer: the `virtio_net_hdr`, then the IP
    /// packet (only when this side announced GSO).
    GsoPacket(Bytes),
    /// The peer opened a stream to a forwarding rule.
    StreamOpened {
        /// The stream.
        id: u32,
        /// The rule.
        target: String,
    },
    /// Bytes on a stream.
    StreamData {
        /// The stream.
        id: u32,
        /// The bytes.
        data: Bytes,
    },
    /// The peer will send no more on the stream.
    StreamHalfClosed {
        /// The stream.
        id: u32,
    },
    /// The peer closed the stream (a non-zero code is a reset).
    StreamClosed {
        /// The stream.
        id: u32,
        /// 0 for a clean close.
        code: u16,
    },
    /// The peer granted more sending credit on a stream.
    StreamCredit {
        /// The stream.
        id: u32,
        /// Additional bytes.
        bytes: u32,
    },
    /// A control message.
    Control {
        /// Its kind.
        kind: u16,
        /// Its body.
        body: Bytes,
    },
    /// The session is over, and why.
    Closed(CloseReason),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A clean goodbye.
    Goodbye,
    /// The peer sent an error frame.
    PeerError {
        /// Its code.
        code: u16,
        /// Its message.
        message: String,
    },
    /// This side found a protocol error and told the peer.
    ProtocolError {
        /// The code sent.
        code: u16,
        /// The message sent.
        message: String,
    },
    /// The peer was silent past the dead-peer timeout.
    DeadPeer,
    /// The hello exchange did not finish in time.
    HandshakeTimeout,
}

/// Chooses the tunnel addresses a server assigns to a client from the client's hello, or
/// refuses the client.
pub type Assign = Box<dyn FnMut(&Hello) -> Result<Vec<TunnelAddress>, Refusal> + Send>;

/// One end of a tunnel connection, sans IO.
pub struct Session {
    config: SessionConfig,
    state: State,
    started: Instant,
    last_received: Instant,
    ping_outstanding: Option<u64>,
    next_ping: u64,
    inbound: BytesMut,
    outbound: BytesMut,
    /// A written output buffer given back ([`Session::recycle_output`]), used for the next
    /// output so that steady traffic swaps two buffers instead of allocating.
    spare: Option<BytesMut>,
    events: VecDeque<Event>,
    assign: Option<Assign>,
    /// Frames decoded in error: counted for the metrics.
    malformed: u64,
    /// Extension frames of types this side does not know, skipped.
    ignored: u64,
    /// The largest payload sent: this side's own limit until the peer's hello says its own.
    send_limit: usize,
    /// The capability bits of the peer's hello.
    peer_capabilities: u32,
    streams: HashMap<u32, Stream>,
    next_stream: u32,
    /// What stream windows have grown by beyond the first window, summed over open streams:
    /// bounded by [`SessionConfig::receive_budget`].
    grown: u64,
    /// The value of the window probe in flight: a ping whose pong ends one round trip.
    probe: Option<u64>,
    /// The streams that received data during the probe.
    probed: Vec<u32>,
    close_reason: Option<CloseReason>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.config.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A client session: its hello is queued at once.
    pub fn client(config: SessionConfig, now: Instant, requested: Vec<TunnelAddress>) -> Self {
        let mut session = Self::new(config, now, None);
        let hello = session.hello(requested);
        session.send(&Frame::Hello(hello));
        session
    }

    /// A server session; `assign` picks the client's tunnel addresses (or refuses, with the
    /// reason sent to the client).
    pub fn server(config: SessionConfig, now: Instant, assign: Assign) -> Self {
        Self::new(config, now, Some(assign))
    }

    fn new(config: SessionConfig, now: Instant, assign: Option<Assign>) -> Self {
        Self {
            config: config.clone(),
            state: State::Handshaking,
            started: now,
            last_received: now,
            ping_outstanding: None,
            next_ping: 1,
            inbound: BytesMut::new(),
            outbound: BytesMut::new(),
            spare: None,
            events: VecDeque::new(),
            next_stream: match config.role {
                Role::Client => 1,
                Role::Server => 2,
            },
            assign,
            malformed: 0,
            ignored: 0,
            send_limit: config.max_payload,
            peer_capabilities: 0,
            streams: HashMap::new(),
            grown: 0,
            probe: None,
            probed: Vec::new(),
            close_reason: None,
        }
    }

    fn hello(&self, addresses: Vec<TunnelAddress>) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            mode: self.config.mode,
            mtu: self.config.mtu,
            capabilities: crate::proto::capability::BATCHING
                | crate::proto::capability::STREAM_CREDIT
                | if self.config.gso {
                    crate::proto::capability::GSO
                } else {
                    0
                },
            addresses,
            max_payload: u32::try_from(self.config.max_payload.min(MAX_PAYLOAD_LIMIT))
                .unwrap_or(u32::MAX),
        }
    }

    /// The MTU in use: after the hello exchange, the smaller of the two sides'.
    pub fn mtu(&self) -> u16 {
        self.config.mtu
    }

    /// Where the session is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// Malformed frames received (each one closed the session).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Extension frames of unknown types received and skipped.
    pub fn ignored_frames(&self) -> u64 {
        self.ignored
    }

    /// The capability bits the peer announced (0 before its hello).
    pub fn peer_capabilities(&self) -> u32 {
        self.peer_capabilities
    }

    /// Whether super-packets go whole both ways: both sides announced
    /// [`capability::GSO`](crate::proto::capability::GSO).
    pub fn gso(&self) -> bool {
        self.config.gso && self.peer_capabilities & crate::proto::capability::GSO != 0
    }

    /// The largest frame payload this side sends: the smaller of its own limit and the
    /// peer's, once the peer's hello has said it.
    pub fn send_limit(&self) -> usize {
        self.send_limit
    }

    /// Queues an IP packet or a control message for the peer. Streams use
    /// [`open_stream`](Self::open_stream) and [`send_stream`](Self::send_stream).
    ///
    /// # Errors
    ///
    /// The frame is too large for the peer, is of another kind, or the session is not
    /// established.
    pub fn send_frame(&mut self, frame: &Frame) -> Result<(), DecodeError> {
        if self.state != State::Established {
            return Err(DecodeError::Invalid("the session is not established"));
        }
        if !matches!(frame, Frame::Packet(_) | Frame::Control { .. }) {
            // (Super-packets go through send_gso_packet, which checks the capability.)
            // Streams have flow control and keepalive has timers: their methods keep the
            // session's accounting right.
            return Err(DecodeError::Invalid(
                "only packets and control messages are sent as raw frames",
            ));
        }
        frame.encode(&mut self.outbound, self.send_limit)
    }

    /// Queues an IP packet, copied from `packet` into the outbound buffer with no other
    /// allocation.
    ///
    /// # Errors
    ///
    /// The packet is larger than the MTU, or the session is not established.
    pub fn send_packet(&mut self, packet: &[u8]) -> Result<(), DecodeError> {
        if self.state != State::Established {
            return Err(DecodeError::Invalid("the session is not established"));
        }
        if packet.len() > usize::from(self.config.mtu) {
            return Err(DecodeError::TooLarge {
                len: packet.len(),
                max: usize::from(self.config.mtu),
            });
        }
        Frame::encode_packet(packet, &mut self.outbound, self.send_limit)
    }

    /// Queues a segmentation-offload super-packet whole: `raw` is the 10-byte
    /// `virtio_net_hdr` and the IP packet, as a TUN device with offload reads them.
    ///
    /// # Errors
    ///
    /// Either side did not announce GSO ([`gso`](Self::gso)), `raw` is larger than the peer
    /// accepts, or the session is not established. Send the packets one by one instead.
    pub fn send_gso_packet(&mut self, raw: &[u8]) -> Result<(), DecodeError> {
        if self.state != State::Established {
            return Err(DecodeError::Invalid("the session is not established"));
        }
        if !self.gso() {
            return Err(DecodeError::Invalid("the peer does not take super-packets"));
        }
        Frame::encode_gso_packet(raw, &mut self.outbound, self.send_limit)
    }

    fn send(&mut self, frame: &Frame) {
        // Frames the session makes itself are small; they always fit.
        let _ = frame.encode(&mut self.outbound, crate::proto::MAX_PAYLOAD_LIMIT);
    }

    /// Opens a stream to forwarding rule `target`; ids are odd from the client, even from the
    /// server.
    ///
    /// # Errors
    ///
    /// [`StreamError::NotEstablished`].
    pub fn open_stream(&mut self, target: &str) -> Result<u32, StreamError> {
        if self.state != State::Established {
            return Err(StreamError::NotEstablished);
        }
        let id = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        self.new_stream(id);
        self.send(&Frame::StreamOpen {
            id,
            target: target.to_owned(),
        });
        Ok(id)
    }

    fn new_stream(&mut self, id: u32) {
        let window = u64::from(self.config.stream_window);
        self.streams.insert(
            id,
            Stream {
                send_credit: window,
                recv_allowed: window,
                consumed: 0,
                window,
                probe_bytes: 0,
                sent_half_close: false,
                received_half_close: false,
            },
        );
    }

    /// Sends as much of `data` on stream `id` as its credit allows, in frames no larger than
    /// the maximum; returns how many bytes were taken. Send the rest after the peer grants
    /// more ([`Event::StreamCredit`]).
    ///
    /// # Errors
    ///
    /// The session is not established, the stream is unknown, or it was half-closed.
    pub fn send_stream(&mut self, id: u32, data: &Bytes) -> Result<usize, StreamError> {
        if self.state != State::Established {
            return Err(StreamError::NotEstablished);
        }
        let stream = self.streams.get_mut(&id).ok_or(StreamError::Unknown(id))?;
        if stream.sent_half_close {
            return Err(StreamError::SendClosed(id));
        }
        let allowed = usize::try_from(stream.send_credit)
            .unwrap_or(usize::MAX)
            .min(data.len());
        stream.send_credit -= allowed as u64;
        let chunk = self.send_limit.saturating_sub(4).max(1);
        let mut offset = 0;
        while offset < allowed {
            let end = (offset + chunk).min(allowed);
            self.send(&Frame::StreamData {
                id,
                data: data.slice(offset..end),
            });
            offset = end;
        }
        Ok(allowed)
    }

    /// Reports that the application consumed `bytes` received on stream `id`; once half the
    /// window has been consumed, credit for it is granted to the peer.
    pub fn consumed(&mut self, id: u32, bytes: usize) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let half = (stream.window / 2).max(1);
        stream.consumed += bytes as u64;
        if stream.consumed >= half && !stream.received_half_close {
            let grant = stream.consumed;
            stream.consumed = 0;
            stream.recv_allowed += grant;
            self.send(&Frame::StreamCredit {
                id,
                bytes: u32::try_from(grant).unwrap_or(u32::MAX),
            });
        }
    }

    /// This side sends no more on stream `id` (TCP half-close); it still receives.
    ///
    /// # Errors
    ///
    /// The stream is unknown.
    pub fn half_close(&mut self, id: u32) -> Result<(), StreamError> {
        let stream = self.streams.get_mut(&id).ok_or(StreamError::Unknown(id))?;
        if !stream.sent_half_close {
            stream.sent_half_close = true;
            let done = stream.received_half_close;
            self.send(&Frame::StreamHalfClose { id });
            if done {
                self.remove_stream(id);
            }
        }
        Ok(())
    }

    /// Ends stream `id` both ways; a non-zero `code` is a reset.
    pub fn close_stream(&mut self, id: u32, code: u16) {
        if self.remove_stream(id) {
            self.send(&Frame::StreamClose { id, code });
        }
    }

    /// Forgets stream `id`, giving back what its window grew by; whether it was open.
    fn remove_stream(&mut self, id: u32) -> bool {
        match self.streams.remove(&id) {
            Some(stream) => {
                let first = u64::from(self.config.stream_window);
                self.grown = self
                    .grown
                    .saturating_sub(stream.window.saturating_sub(first));
                true
            }
            None => false,
        }
    }

    /// What the open streams' receive windows have grown by beyond the first window, summed:
    /// the part of [`SessionConfig::receive_budget`] in use.
    pub fn window_grown(&self) -> u64 {
        self.grown
    }

    /// The receive window of stream `id` now, if it is open.
    pub fn stream_window(&self, id: u32) -> Option<u64> {
        self.streams.get(&id).map(|s| s.window)
    }

    /// A probe's pong came back: one round trip has passed since counting began. A stream
    /// whose peer sent at least half its window in that time, while the application kept up
    /// (at most half the window waits unread), was limited by the window — credit comes back
    /// in halves of it — so it doubles, within the largest window and the session's budget,
    /// and the growth is granted at once.
    fn on_probe_answered(&mut self) {
        self.probe = None;
        let first = u64::from(self.config.stream_window);
        let max = u64::from(self.config.max_stream_window).max(first);
        let budget = self.config.receive_budget;
        for id in self.probed.drain(..) {
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            let received = std::mem::take(&mut stream.probe_bytes);
            let unread = stream
                .window
                .saturating_sub(stream.recv_allowed + stream.consumed);
            if stream.received_half_close
                || received * 2 < stream.window
                || unread > stream.window / 2
            {
                continue;
            }
            let growth = stream
                .window
                .min(max.saturating_sub(stream.window))
                .min(budget.saturating_sub(self.grown))
                .min(u64::from(u32::MAX));
            if growth == 0 {
                continue;
            }
            stream.window += growth;
            stream.recv_allowed += growth;
            self.grown += growth;
            let _ = Frame::StreamCredit {
                id,
                bytes: u32::try_from(growth).unwrap_or(u32::MAX),
            }
            .encode(&mut self.outbound, crate::proto::MAX_PAYLOAD_LIMIT);
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes to write to the connection (empty if none). Give the buffer back with
    /// [`recycle_output`](Self::recycle_output) once written. (`now` is not used: no timer
    /// depends on what was sent, only on what was heard.)
    pub fn take_output(&mut self, _now: Instant) -> BytesMut {
        if self.outbound.is_empty() {
            return BytesMut::new();
        }
        let next = self.spare.take().unwrap_or_default();
        std::mem::replace(&mut self.outbound, next)
    }

    /// Takes back a buffer from [`take_output`](Self::take_output) after it was written, to
    /// hold later output: no allocation per write in steady state.
    pub fn recycle_output(&mut self, mut buf: BytesMut) {
        if buf.capacity() > 0 && self.spare.is_none() {
            buf.clear();
            self.spare = Some(buf);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Starts a clean shutdown: a goodbye is queued, and the session closes once written.
    pub fn close(&mut self) {
        if matches!(self.state, State::Established | State::Handshaking) {
            self.send(&Frame::Goodbye);
            self.state = State::Draining;
        }
    }

    /// Bytes queued for the connection and not yet taken: the I/O layer holds back new
    /// packets while this is high, so the outbound buffer stays bounded.
    pub fn pending_output(&self) -> usize {
        self.outbound.len()
    }

    /// Feeds bytes received from the connection.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        let mut inbound = std::mem::take(&mut self.inbound);
        inbound.extend_from_slice(bytes);
        self.receive_from(&mut inbound, now);
        self.inbound = inbound;
    }

    /// Decodes every whole frame at the front of `buf`, the caller's read buffer, leaving a
    /// partial frame in it for the next read. Packets and stream data are handed on as slices
    /// of `buf`, without a copy: read the connection straight into `buf` (for example with
    /// `read_buf`), call this, and read again.
    pub fn receive_from(&mut self, buf: &mut BytesMut, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.last_received = now;
        self.ping_outstanding = None;
        loop {
            match Frame::decode(buf, self.config.max_payload) {
                Ok(Some(frame)) => self.on_frame(frame),
                Ok(None) => break,
                Err(error) => {
                    self.malformed += 1;
                    self.fail(error.code(), error.to_string());
                    break;
                }
            }
            if self.state == State::Closed {
                break;
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        match (self.state, frame) {
            // A later version's frame: skipped, in any state.
            (_, Frame::Extension { .. }) => self.ignored += 1,
            (State::Handshaking, Frame::Hello(hello)) => self.on_hello(hello),
            (_, Frame::Error { code, message }) => {
                self.finish(CloseReason::PeerError { code, message });
            }
            (_, Frame::Goodbye) => {
                if self.state != State::Draining {
                    self.send(&Frame::Goodbye);
                }
                self.finish(CloseReason::Goodbye);
            }
            (State::Established | State::Draining, Frame::Ping(v)) => self.send(&Frame::Pong(v)),
            (State::Established | State::Draining, Frame::Pong(v)) => {
                if self.probe == Some(v) {
                    self.on_probe_answered();
                }
            }
            (State::Established | State::Draining, frame) => self.on_traffic(frame),
            (_, other) => self.fail(
                code::UNEXPECTED_FRAME,
                format!("unexpected {} before the hello exchange", name(&other)),
            ),
        }
    }

    fn on_hello(&mut self, hello: Hello) {
        if hello.version != PROTOCOL_VERSION {
            return self.fail(
                code::HELLO_MISMATCH,
                format!(
                    "protocol version mismatch: this side speaks {PROTOCOL_VERSION}, the peer {}",
                    hello.version
                ),
            );
        }
        if hello.mode != self.config.mode {
            return self.fail(
                code::HELLO_MISMATCH,
                format!(
                    "mode mismatch: this side is {:?}, the peer asked for {:?}",
                    self.config.mode, hello.mode
                ),
            );
        }
        if hello.mtu < 576 {
            return self.fail(
                code::HELLO_MISMATCH,
                format!("MTU {} is below the IPv4 minimum of 576", hello.mtu),
            );
        }
        // Both sides use the smaller MTU: neither sends a packet the other refuses. The
        // server's answer carries it; a client sizes its TUN device by it.
        self.config.mtu = self.config.mtu.min(hello.mtu);
        let peer_limit = usize::try_from(hello.max_payload).unwrap_or(usize::MAX);
        // A TUN peer must take whole packets; any peer, the session's own small frames.
        let floor = match self.config.mode {
            Mode::Tun => usize::from(self.config.mtu).max(MIN_PEER_PAYLOAD),
            Mode::Forward => MIN_PEER_PAYLOAD,
        };
        if peer_limit < floor {
            return self.fail(
                code::HELLO_MISMATCH,
                format!(
                    "the peer accepts payloads of {peer_limit} bytes, below the {floor} a session needs"
                ),
            );
        }
        if self.config.mode == Mode::Forward
            && hello.capabilities & crate::proto::capability::STREAM_CREDIT == 0
        {
            return self.fail(
                code::HELLO_MISMATCH,
                "forward mode needs per-stream credit, which the peer does not announce".into(),
            );
        }
        self.send_limit = self.config.max_payload.min(peer_limit);
        self.peer_capabilities = hello.capabilities;
        match self.config.role {
            Role::Client => {
                self.state = State::Established;
                self.events.push_back(Event::Established(hello));
            }
            Role::Server => {
                let assigned = match self.assign.as_mut().map(|assign| assign(&hello)) {
                    Some(Ok(addresses)) => addresses,
                    Some(Err(refusal)) => return self.fail(refusal.code, refusal.reason),
                    None => Vec::new(),
                };
                let reply = self.hello(assigned);
                self.send(&Frame::Hello(reply));
                self.state = State::Established;
                self.events.push_back(Event::Established(hello));
            }
        }
    }

    fn on_traffic(&mut self, frame: Frame) {
        let event = match frame {
            Frame::Packet(p) => {
                if p.len() > usize::from(self.config.mtu) {
                    return self.fail(
                        code::UNEXPECTED_FRAME,
                        format!(
                            "packet of {} bytes exceeds the MTU {}",
                            p.len(),
                            self.config.mtu
                        ),
                    );
                }
                Event::Packet(p)
            }
            Frame::GsoPacket(raw) => {
                if let Err(why) = check_gso(&raw, self.config.gso, self.config.mtu) {
                    return self.fail(code::UNEXPECTED_FRAME, why);
                }
                Event::GsoPacket(raw)
            }
            Frame::StreamOpen { id, target } => {
                let peers = match self.config.role {
                    Role::Client => id % 2 == 0,
                    Role::Server => id % 2 == 1,
                };
                if !peers || self.streams.contains_key(&id) {
                    return self.fail(
                        code::UNEXPECTED_FRAME,
                        format!("stream {id} cannot be opened by the peer"),
                    );
                }
                self.new_stream(id);
                Event::StreamOpened { id, target }
            }
            Frame::StreamData { id, data } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    // Data for a stream we reset or never knew: reset it, keep the session.
                    self.send(&Frame::StreamClose {
                        id,
                        code: code::UNKNOWN_STREAM,
                    });
                    return;
                };
                if stream.received_half_close || data.len() as u64 > stream.recv_allowed {
                    return self.fail(
                        code::FLOW_CONTROL,
                        format!("stream {id}: data beyond the credit granted or after half-close"),
                    );
                }
                stream.recv_allowed -= data.len() as u64;
                let growable = stream.window < u64::from(self.config.max_stream_window);
                if self.probe.is_none() && growable && self.grown < self.config.receive_budget {
                    // Measure one round trip, from this data to the pong's arrival: what a
                    // window-limited peer sends in it is its whole window.
                    let value = PROBE | self.next_ping;
                    self.next_ping += 1;
                    self.probe = Some(value);
                    let _ = Frame::Ping(value)
                        .encode(&mut self.outbound, crate::proto::MAX_PAYLOAD_LIMIT);
                }
                if self.probe.is_some() {
                    if stream.probe_bytes == 0 {
                        self.probed.push(id);
                    }
                    stream.probe_bytes += data.len() as u64;
                }
                Event::StreamData { id, data }
            }
            Frame::StreamHalfClose { id } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    return;
                };
                stream.received_half_close = true;
                if stream.sent_half_close {
                    self.remove_stream(id);
                }
                Event::StreamHalfClosed { id }
            }
            Frame::StreamClose { id, code } => {
                if !self.remove_stream(id) {
                    return;
                }
                Event::StreamClosed { id, code }
            }
            Frame::StreamCredit { id, bytes } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    return;
                };
                stream.send_credit += u64::from(bytes);
                Event::StreamCredit { id, bytes }
            }
            Frame::Control { kind, body } => Event::Control { kind, body },
            other => {
                return self.fail(
                    code::UNEXPECTED_FRAME,
                    format!("unexpected {} after the hello exchange", name(&other)),
                );
            }
        };
        self.events.push_back(event);
    }

    fn fail(&mut self, code: u16, message: String) {
        self.send(&Frame::Error {
            code,
            message: message.clone(),
        });
        self.finish(CloseReason::ProtocolError { code, message });
    }

    fn finish(&mut self, reason: CloseReason) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.close_reason = Some(reason.clone());
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// When [`tick`](Self::tick) must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Handshaking => Some(self.started + self.config.handshake_timeout),
            State::Established | State::Draining => {
                let dead = self.last_received + self.config.dead_peer_timeout;
                Some(match self.ping_outstanding {
                    // The ping's answer, or the dead-peer deadline: nothing to do before.
                    Some(_) => dead,
                    None => dead.min(self.last_received + self.config.keepalive),
                })
            }
        }
    }

    /// Handles time passing: handshake timeout, keepalive pings, dead-peer detection.
    pub fn tick(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Handshaking => {
                if now >= self.started + self.config.handshake_timeout {
                    self.send(&Frame::Error {
                        code: code::HANDSHAKE_TIMEOUT,
                        message: "no hello within the handshake timeout".into(),
                    });
                    self.finish(CloseReason::HandshakeTimeout);
                }
            }
            State::Established | State::Draining => {
                if now >= self.last_received + self.config.dead_peer_timeout {
                    self.finish(CloseReason::DeadPeer);
                } else if self.ping_outstanding.is_none()
                    && now >= self.last_received + self.config.keepalive
                {
                    // Silent for the keepalive interval, however much we send: ask. (Sending
                    // proves nothing about the peer; only hearing from it does.)
                    let value = self.next_ping;
                    self.next_ping += 1;
                    self.ping_outstanding = Some(value);
                    self.send(&Frame::Ping(value));
                }
            }
        }
    }
}

/// Bytes of the Linux `virtio_net_hdr` in front of a super-packet.
const VIRTIO_HEADER_LEN: usize = 10;

/// What a super-packet from the peer must be: announced by this side, a header and at least
/// an IP header, segments no larger than the MTU.
fn check_gso(raw: &[u8], announced: bool, mtu: u16) -> Result<(), String> {
    if !announced {
        return Err("gso packet, but this side did not announce GSO".into());
    }
    if raw.len() < VIRTIO_HEADER_LEN + 20 {
        return Err(format!("gso packet of {} bytes is too short", raw.len()));
    }
    // TCP over IPv4 (1) or IPv6 (4), or UDP (5), perhaps with the ECN bit (0x80): a frame
    // that segments nothing is sent as a packet.
    let gso_type = raw[1];
    if !matches!(gso_type & 0x7f, 1 | 4 | 5) {
        return Err(format!(
            "gso packet of unknown segmentation type {gso_type}"
        ));
    }
    // Little-endian, as the kernel writes it on the hosts this runs on.
    let gso_size = u16::from_le_bytes([raw[4], raw[5]]);
    if gso_size == 0 || gso_size > mtu {
        return Err(format!(
            "gso packet with segments of {gso_size} bytes (MTU {mtu})"
        ));
    }
    if raw.len() > VIRTIO_HEADER_LEN + 65_535 {
        return Err(format!("gso packet of {} bytes exceeds 64 KiB", raw.len()));
    }
    Ok(())
}

fn name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Extension { .. } => "extension",
        Frame::Packet(_) => "packet",
        Frame::GsoPacket(_) => "gso packet",
        Frame::StreamOpen { .. } => "stream open",
        Frame::StreamData { .. } => "stream data",
        Frame::StreamHalfClose { .. } => "stream half-close",
        Frame::StreamClose { .. } => "stream close",
        Frame::StreamCredit { .. } => "stream credit",
        Frame::Ping(_) => "ping",
        Frame::Pong(_) => "pong",
        Frame::Control { .. } => "control",
        Frame::Error { .. } => "error",
        Frame::Goodbye => "goodbye",
    }
}
