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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::proto::{DecodeError, Frame, Hello, Mode, PROTOCOL_VERSION, TunnelAddress};

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
}

impl SessionConfig {
    /// Defaults: MTU 1400, 64 KiB frames, 10 s handshake, ping every 10 s, dead after 30 s.
    pub fn new(role: Role, mode: Mode) -> Self {
        Self {
            role,
            mode,
            mtu: 1400,
            max_payload: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
            dead_peer_timeout: Duration::from_secs(30),
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

/// Chooses the tunnel addresses a server assigns to a client from the client's hello.
pub type Assign = Box<dyn FnMut(&Hello) -> Result<Vec<TunnelAddress>, String> + Send>;

/// One end of a tunnel connection, sans IO.
pub struct Session {
    config: SessionConfig,
    state: State,
    started: Instant,
    last_received: Instant,
    last_sent: Instant,
    ping_outstanding: Option<u64>,
    next_ping: u64,
    inbound: BytesMut,
    outbound: BytesMut,
    events: VecDeque<Event>,
    assign: Option<Assign>,
    /// Frames decoded in error: counted for the metrics.
    malformed: u64,
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
            config,
            state: State::Handshaking,
            started: now,
            last_received: now,
            last_sent: now,
            ping_outstanding: None,
            next_ping: 1,
            inbound: BytesMut::new(),
            outbound: BytesMut::new(),
            events: VecDeque::new(),
            assign,
            malformed: 0,
        }
    }

    fn hello(&self, addresses: Vec<TunnelAddress>) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            mode: self.config.mode,
            mtu: self.config.mtu,
            capabilities: crate::proto::capability::BATCHING
                | crate::proto::capability::STREAM_CREDIT,
            addresses,
        }
    }

    /// Where the session is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Malformed frames received (each one closed the session).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Queues a frame for the peer (traffic is refused unless established).
    ///
    /// # Errors
    ///
    /// The frame is too large for the peer, or the session is not established.
    pub fn send_frame(&mut self, frame: &Frame) -> Result<(), DecodeError> {
        if self.state != State::Established {
            return Err(DecodeError::Invalid("the session is not established"));
        }
        frame.encode(&mut self.outbound, self.config.max_payload)
    }

    fn send(&mut self, frame: &Frame) {
        // Frames the session makes itself are small; they always fit.
        let _ = frame.encode(&mut self.outbound, crate::proto::MAX_PAYLOAD_LIMIT);
    }

    /// Bytes to write to the connection (empty if none).
    pub fn take_output(&mut self, now: Instant) -> BytesMut {
        if !self.outbound.is_empty() {
            self.last_sent = now;
        }
        self.outbound.split()
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

    /// Feeds bytes received from the connection.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.last_received = now;
        self.ping_outstanding = None;
        self.inbound.extend_from_slice(bytes);
        loop {
            match Frame::decode(&mut self.inbound, self.config.max_payload) {
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
            (State::Established | State::Draining, Frame::Pong(_)) => {}
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
        match self.config.role {
            Role::Client => {
                self.state = State::Established;
                self.events.push_back(Event::Established(hello));
            }
            Role::Server => {
                let assigned = match self.assign.as_mut().map(|assign| assign(&hello)) {
                    Some(Ok(addresses)) => addresses,
                    Some(Err(reason)) => return self.fail(code::HELLO_MISMATCH, reason),
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
            Frame::StreamOpen { id, target } => Event::StreamOpened { id, target },
            Frame::StreamData { id, data } => Event::StreamData { id, data },
            Frame::StreamHalfClose { id } => Event::StreamHalfClosed { id },
            Frame::StreamClose { id, code } => Event::StreamClosed { id, code },
            Frame::StreamCredit { id, bytes } => Event::StreamCredit { id, bytes },
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
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// When [`tick`](Self::tick) must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Handshaking => Some(self.started + self.config.handshake_timeout),
            State::Established | State::Draining => Some(
                (self.last_received + self.config.dead_peer_timeout)
                    .min(self.last_sent.max(self.last_received) + self.config.keepalive),
            ),
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
                    && now >= self.last_sent.max(self.last_received) + self.config.keepalive
                {
                    let value = self.next_ping;
                    self.next_ping += 1;
                    self.ping_outstanding = Some(value);
                    self.send(&Frame::Ping(value));
                    self.last_sent = now;
                }
            }
        }
    }
}

fn name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Packet(_) => "packet",
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
