//! A [`Session`] driven over a real connection: one task reads and decodes, one writes and
//! keeps time, and handles let the rest of the program send packets and open streams.
//!
//! ```text
//!  transport ──read_buf──▶ reader task ──Session::receive_from──▶ events ──▶ Incoming / streams
//!  transport ◀─write_all── writer task ◀──Session::take_output── packets, stream data, pings
//! ```
//!
//! Writes are batched: the writer takes everything queued since its last write (many frames,
//! often many packets) and writes it with one `write_all` and one flush, so a busy link makes
//! few system calls and large TLS records. Memory is bounded on both sides: stream data by
//! each stream's credit window, packets by [`LinkConfig::max_pending`] (senders wait, or
//! [`Link::try_send_packet`] drops and counts), and incoming work by a bounded queue.
//!
//! Metrics (the `metrics` facade): `sssonector_tunnel_bytes_received_total`,
//! `sssonector_tunnel_bytes_sent_total`, `sssonector_tunnel_writes_total`,
//! `sssonector_tunnel_packets_dropped_total`, `sssonector_tunnel_packets_total` by `direction`
//! (`received`, `sent`), `sssonector_tunnel_streams_opened_total`,
//! `sssonector_tunnel_streams_refused_total` by `reason` (`max_streams`, `queue_full`),
//! `sssonector_tunnel_receive_window_grown_bytes` (a gauge: what stream receive windows have
//! grown by beyond their first window, over all links), and
//! `sssonector_tunnel_sessions_closed_total` by
//! `reason` (`goodbye`, `dead_peer`, `handshake_timeout`, `protocol_error` — a malformed or
//! unexpected frame —, `peer_error`, `transport`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use sssonector_ratelimit::{PacedStream, Pacing};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};

use crate::count::Count;
use crate::proto::{CloseReason, Event, Hello, Session, State, StreamError};
use crate::stream::TunnelStream;
use sssonector_core::Throttle;

/// Stream close codes used by the I/O layer (the session's own are in
/// [`proto::session_code`](crate::proto::session_code)).
pub mod stream_code {
    /// The local end went away before finishing the stream.
    pub const CANCELLED: u16 = 10;
    /// The far side has no forwarding rule of that name.
    pub const UNKNOWN_TARGET: u16 = 11;
    /// The far side could not connect to the rule's target.
    pub const CONNECT_FAILED: u16 = 12;
    /// The far side is too busy to take another stream.
    pub const BUSY: u16 = 13;
    /// The far side's access policy does not permit this stream (the same value as the
    /// session's [`NOT_PERMITTED`](crate::proto::session_code::NOT_PERMITTED)).
    pub const NOT_PERMITTED: u16 = crate::proto::session_code::NOT_PERMITTED;
}

/// Link settings.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The most bytes read from the transport per call (256 KiB by default: larger reads mean
    /// larger batches of frames per lock and per wake-up; 64 KiB carried a quarter less).
    /// Each read asks for twice what the last one got, from 16 KiB up to this.
    pub read_buffer: usize,
    /// Queued output above which packet senders wait (1 MiB by default).
    pub max_pending: usize,
    /// Incoming packets and stream opens queued for the application before new ones are
    /// dropped (packets) or refused (streams); 1024 by default.
    pub incoming_queue: usize,
    /// The most streams open at once on this link (16,384 by default: an idle stream costs
    /// a few hundred bytes, and one client connection serves 10,000 forwarded connections).
    pub max_streams: usize,
    /// Paces what the link reads from its transport (a byte-rate limit from the ratelimit
    /// crate, TCP/IP overhead counted); `None` for no limit. Clones share their budget.
    pub read_pacing: Option<Pacing>,
    /// Paces what the link writes.
    pub write_pacing: Option<Pacing>,
    /// The most memory stream data received but not yet read by the application may hold on
    /// this link, across all streams (64 MiB by default). Small frames are copied out of the
    /// read buffer and count their size; a stream keeps at most one frame in the read buffer
    /// itself, counted as a whole read buffer. A frame that would go past the bound resets its
    /// stream (code `BUSY`), counted as refused with reason `buffered`.
    pub max_buffered: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            read_buffer: 256 * 1024,
            max_pending: 1024 * 1024,
            incoming_queue: 1024,
            max_streams: 16_384,
            read_pacing: None,
            write_pacing: None,
            max_buffered: 64 << 20,
        }
    }
}

/// What arrives on a link for the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// An IP packet.
    Packet(Bytes),
    /// A segmentation-offload super-packet: the 10-byte `virtio_net_hdr`, then the IP
    /// packet; write it to a TUN device with offload as it is, or split it.
    GsoPacket(Bytes),
    /// The peer opened a stream to a forwarding rule.
    Stream {
        /// The rule's name.
        target: String,
        /// The stream.
        stream: TunnelStream,
    },
    /// A control message.
    Control {
        /// Its kind.
        kind: u16,
        /// Its body.
        body: Bytes,
    },
}

/// Why an operation on a link or stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The link is closed.
    #[error("the tunnel connection is closed")]
    Closed,
    /// The session refused the stream operation.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The peer reset the stream with this code.
    #[error("the peer reset stream {id} (code {code})")]
    Reset {
        /// The stream.
        id: u32,
        /// Its close code.
        code: u16,
    },
    /// Too many streams are open on this link.
    #[error("too many streams open on this tunnel connection ({0})")]
    TooManyStreams(usize),
    /// A packet was larger than the session's MTU or frame limit.
    #[error("packet refused: {0}")]
    Packet(String),
}

/// The link's counters, for [`Link::stats`] and the `sssonector_tunnel_*` metrics.
#[derive(Debug)]
struct Counters {
    bytes_in: Count,
    bytes_out: Count,
    packets_dropped: Count,
    writes: Count,
    streams_opened: Count,
    packets_in: Count,
    packets_out: Count,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            bytes_in: Count::new(metrics::counter!("sssonector_tunnel_bytes_received_total")),
            bytes_out: Count::new(metrics::counter!("sssonector_tunnel_bytes_sent_total")),
            packets_dropped: Count::new(metrics::counter!(
                "sssonector_tunnel_packets_dropped_total"
            )),
            writes: Count::new(metrics::counter!("sssonector_tunnel_writes_total")),
            streams_opened: Count::new(metrics::counter!("sssonector_tunnel_streams_opened_total")),
            packets_in: Count::new(
                metrics::counter!("sssonector_tunnel_packets_total", "direction" => "received"),
            ),
            packets_out: Count::new(
                metrics::counter!("sssonector_tunnel_packets_total", "direction" => "sent"),
            ),
        }
    }
}

/// A snapshot of a link's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Bytes read from the transport.
    pub bytes_in: u64,
    /// Bytes written to the transport.
    pub bytes_out: u64,
    /// Packets dropped: the incoming queue was full, or the outbound buffer was.
    pub packets_dropped: u64,
    /// Writes (each one `write_all` plus a flush) to the transport.
    pub writes: u64,
    /// Streams open now.
    pub open_streams: usize,
    /// Streams opened since the link was established, by either side.
    pub streams_opened: u64,
    /// IP packets received from the peer.
    pub packets_in: u64,
    /// IP packets queued for the peer.
    pub packets_out: u64,
    /// Memory held now by stream data received but not yet read, as counted against
    /// [`LinkConfig::max_buffered`].
    pub buffered: usize,
    /// What this link's stream receive windows have grown by beyond the first window
    /// ([`Session::window_grown`]), within the session's receive budget.
    pub window_grown: u64,
}

pub(crate) enum StreamMsg {
    Data(Queued),
    Fin,
    Reset(u16),
}

/// Frames below this size are copied out of the read buffer before they are queued, so a
/// trickle of tiny frames cannot each keep a whole read buffer alive.
const COPY_BELOW: usize = 16 * 1024;

/// Stream data waiting for the application, counted against the link's `max_buffered`
/// until the stream's reader takes it or drops it ([`Queued::release`]). Plain data: queuing
/// a frame clones no handle.
pub(crate) struct Queued {
    pub(crate) data: Bytes,
    charge: usize,
    /// `data` is a slice of a read buffer: the stream's one such frame.
    in_read_buffer: bool,
}

impl Queued {
    /// Gives back what it was charged: to the link's count, and its stream's read-buffer slot.
    pub(crate) fn release(&self, shared: &Shared, pinned: &AtomicUsize) {
        shared.buffered.fetch_sub(self.charge, Ordering::AcqRel);
        if self.in_read_buffer {
            pinned.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

pub(crate) struct StreamSlot {
    tx: mpsc::UnboundedSender<StreamMsg>,
    credit: Arc<Notify>,
    /// This stream's queued frames that are slices of a read buffer (0 or 1).
    pinned: Arc<AtomicUsize>,
}

pub(crate) struct Shared {
    pub(crate) session: Mutex<Session>,
    pub(crate) streams: Mutex<HashMap<u32, StreamSlot>>,
    /// Wakes the writer: output is queued, or the session changed state.
    pub(crate) output: Notify,
    /// Wakes senders waiting for the outbound buffer to drain.
    pub(crate) drained: Notify,
    pub(crate) closed: watch::Sender<Option<CloseReason>>,
    pub(crate) shutting: AtomicBool,
    /// What queued stream data holds, counted against `max_buffered`.
    buffered: AtomicUsize,
    /// The session's window growth last added to `sssonector_tunnel_receive_window_grown_bytes`.
    window_published: AtomicU64,
    /// Taken when the link closes, so the application's queue ends.
    incoming: Mutex<Option<mpsc::Sender<Incoming>>>,
    counters: Counters,
    pub(crate) config: LinkConfig,
    peer: Hello,
    /// Whether super-packets go whole, settled by the hello exchange: read per device read
    /// without the session's lock.
    gso: bool,
}

/// A handle to a running tunnel connection; cheap to clone. The connection ends when the
/// session closes (goodbye, error, dead peer) or the transport fails; [`Link::closed`] tells
/// when and why.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("state", &self.shared.session.lock().state())
            .finish_non_exhaustive()
    }
}

/// Why establishing a link failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EstablishError {
    /// The transport failed.
    #[error("tunnel connection: {0}")]
    Io(#[from] std::io::Error),
    /// The session closed before the hello exchange finished (a version or mode mismatch,
    /// a refused address, a timeout); the reason says which.
    #[error("hello exchange failed: {0:?}")]
    Refused(CloseReason),
}

impl Link {
    /// Runs the hello exchange of `session` over `transport`, then spawns the reader and
    /// writer tasks. Returns the link, the peer's hello, and the queue of incoming packets,
    /// streams and control messages.
    ///
    /// # Errors
    ///
    /// The transport failed or the session closed during the exchange. The session's
    /// handshake timeout bounds the wait.
    pub async fn establish<T>(
        transport: T,
        session: Session,
        config: LinkConfig,
    ) -> Result<(Link, Hello, mpsc::Receiver<Incoming>), EstablishError>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        if config.read_pacing.is_none() && config.write_pacing.is_none() {
            return Self::run(transport, session, config).await;
        }
        let paced = PacedStream::new(
            transport,
            config.read_pacing.clone(),
            config.write_pacing.clone(),
        );
        Self::run(paced, session, config).await
    }

    async fn run<T>(
        transport: T,
        mut session: Session,
        config: LinkConfig,
    ) -> Result<(Link, Hello, mpsc::Receiver<Incoming>), EstablishError>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(transport);
        let mut inbound = BytesMut::with_capacity(config.read_buffer);
        let hello = loop {
            let out = session.take_output(Instant::now());
            if !out.is_empty() {
                writer.write_all(&out).await?;
                writer.flush().await?;
            }
            if let Some(event) = session.poll_event() {
                match event {
                    Event::Established(hello) => break hello,
                    Event::Closed(reason) => return Err(EstablishError::Refused(reason)),
                    _ => continue,
                }
            }
            let deadline = session
                .next_deadline()
                .map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
            inbound.reserve(config.read_buffer);
            tokio::select! {
                read = reader.read_buf(&mut inbound) => {
                    if read? == 0 {
                        return Err(EstablishError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    session.receive_from(&mut inbound, Instant::now());
                }
                () = tokio::time::sleep_until(deadline) => session.tick(Instant::now()),
            }
        };
        // A server queues its hello reply in the same step that establishes it.
        let out = session.take_output(Instant::now());
        if !out.is_empty() {
            writer.write_all(&out).await?;
            writer.flush().await?;
        }
        let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_queue.max(1));
        let gso = session.gso();
        let shared = Arc::new(Shared {
            session: Mutex::new(session),
            streams: Mutex::new(HashMap::new()),
            output: Notify::new(),
            drained: Notify::new(),
            closed: watch::channel(None).0,
            shutting: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            window_published: AtomicU64::new(0),
            incoming: Mutex::new(Some(incoming_tx)),
            counters: Counters::default(),
            config,
            peer: hello.clone(),
            gso,
        });
        // Frames that followed the peer's hello in the same read.
        if !inbound.is_empty() {
            let mut events = Vec::new();
            {
                let mut session = shared.session.lock();
                session.receive_from(&mut inbound, Instant::now());
                drain_events(&mut session, &mut events);
            }
            dispatch(&shared, &mut events);
        }
        tokio::spawn(read_loop(Arc::clone(&shared), reader, inbound));
        tokio::spawn(write_loop(Arc::clone(&shared), writer));
        Ok((Link { shared }, hello, incoming_rx))
    }

    /// The peer's hello.
    pub fn peer(&self) -> &Hello {
        &self.shared.peer
    }

    /// Queues an IP packet, waiting while the outbound buffer is over its limit.
    ///
    /// # Errors
    ///
    /// The link is closed, or the packet is too large.
    pub async fn send_packet(&self, packet: &[u8]) -> Result<(), LinkError> {
        self.send_queued(packet, false).await
    }

    async fn send_queued(&self, packet: &[u8], gso: bool) -> Result<(), LinkError> {
        loop {
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.queue_packet(packet, gso)? {
                return Ok(());
            }
            let mut closed = self.shared.closed.subscribe();
            tokio::select! {
                () = drained => {}
                () = async { let _ = closed.wait_for(Option::is_some).await; } => return Err(LinkError::Closed),
            }
        }
    }

    /// Queues an IP packet unless the outbound buffer is over its limit, in which case the
    /// packet is dropped and counted (as a router would) and `false` returned.
    ///
    /// # Errors
    ///
    /// The link is closed, or the packet is too large.
    pub fn try_send_packet(&self, packet: &[u8]) -> Result<bool, LinkError> {
        let queued = self.queue_packet(packet, false)?;
        if !queued {
            self.shared.counters.packets_dropped.add(1);
        }
        Ok(queued)
    }

    /// Whether super-packets go whole on this link (both sides announced GSO).
    pub fn gso(&self) -> bool {
        self.shared.gso
    }

    /// [`try_send_packet`](Self::try_send_packet) for a super-packet (`virtio_net_hdr` and
    /// IP packet), whole.
    ///
    /// # Errors
    ///
    /// The link is closed, the peer does not take super-packets ([`gso`](Self::gso)), or it
    /// is too large for the peer: split it and send the packets.
    pub fn try_send_gso_packet(&self, raw: &[u8]) -> Result<bool, LinkError> {
        let queued = self.queue_packet(raw, true)?;
        if !queued {
            self.shared.counters.packets_dropped.add(1);
        }
        Ok(queued)
    }

    /// [`send_packet`](Self::send_packet) for a super-packet, whole, waiting while the
    /// outbound buffer is over its limit.
    ///
    /// # Errors
    ///
    /// As [`try_send_gso_packet`](Self::try_send_gso_packet).
    pub async fn send_gso_packet(&self, raw: &[u8]) -> Result<(), LinkError> {
        self.send_queued(raw, true).await
    }

    fn queue_packet(&self, packet: &[u8], gso: bool) -> Result<bool, LinkError> {
        if self.shared.shutting.load(Ordering::Acquire) {
            return Err(LinkError::Closed);
        }
        let mut session = self.shared.session.lock();
        if session.state() != State::Established {
            return Err(LinkError::Closed);
        }
        if session.pending_output() >= self.shared.config.max_pending {
            return Ok(false);
        }
        let was_empty = session.pending_output() == 0;
        if gso {
            session.send_gso_packet(packet)
        } else {
            session.send_packet(packet)
        }
        .map_err(|e| LinkError::Packet(e.to_string()))?;
        drop(session);
        self.shared.counters.packets_out.add(1);
        if was_empty {
            self.shared.output.notify_one();
        }
        Ok(true)
    }

    /// Opens a stream to the peer's forwarding rule `target`.
    ///
    /// # Errors
    ///
    /// The link is closed, or has [`LinkConfig::max_streams`] open.
    pub fn open_stream(&self, target: &str) -> Result<TunnelStream, LinkError> {
        if self.shared.shutting.load(Ordering::Acquire) {
            return Err(LinkError::Closed);
        }
        let mut streams = self.shared.streams.lock();
        if streams.len() >= self.shared.config.max_streams {
            refused_stream("max_streams", streams.len(), self.shared.config.max_streams);
            return Err(LinkError::TooManyStreams(streams.len()));
        }
        let id = {
            let mut session = self.shared.session.lock();
            session.open_stream(target).map_err(|e| match e {
                StreamError::NotEstablished => LinkError::Closed,
                other => LinkError::Stream(other),
            })?
        };
        let stream = self.new_stream(&mut streams, id);
        drop(streams);
        self.shared.output.notify_one();
        Ok(stream)
    }

    fn new_stream(&self, streams: &mut HashMap<u32, StreamSlot>, id: u32) -> TunnelStream {
        new_stream(&self.shared, streams, id)
    }

    /// Whether `other` is a clone of this link (the same session).
    pub fn same(&self, other: &Link) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Starts a clean shutdown: a goodbye is sent, and the link closes once the peer answers
    /// (or the transport ends).
    pub fn close(&self) {
        self.shared.session.lock().close();
        self.shared.output.notify_one();
    }

    /// Waits until the link is closed, and returns why.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.shared.closed.subscribe();
        let reason = rx
            .wait_for(Option::is_some)
            .await
            .map(|r| r.clone())
            .ok()
            .flatten();
        reason.unwrap_or(CloseReason::Goodbye)
    }

    /// Whether the link is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Counters for this link.
    pub fn stats(&self) -> LinkStats {
        let c = &self.shared.counters;
        LinkStats {
            bytes_in: c.bytes_in.get(),
            bytes_out: c.bytes_out.get(),
            packets_dropped: c.packets_dropped.get(),
            writes: c.writes.get(),
            open_streams: self.shared.streams.lock().len(),
            streams_opened: c.streams_opened.get(),
            packets_in: c.packets_in.get(),
            packets_out: c.packets_out.get(),
            buffered: self.shared.buffered.load(Ordering::Acquire),
            window_grown: self.shared.session.lock().window_grown(),
        }
    }
}

fn new_stream(
    shared: &Arc<Shared>,
    streams: &mut HashMap<u32, StreamSlot>,
    id: u32,
) -> TunnelStream {
    let (tx, rx) = mpsc::unbounded_channel();
    let credit = Arc::new(Notify::new());
    let pinned = Arc::new(AtomicUsize::new(0));
    shared.counters.streams_opened.add(1);
    streams.insert(
        id,
        StreamSlot {
            tx,
            credit: Arc::clone(&credit),
            pinned: Arc::clone(&pinned),
        },
    );
    crate::stream::pair(id, shared, rx, credit, pinned)
}

/// Moves the session's events into `into`, a vector the caller keeps, so that no batch of
/// events allocates.
fn drain_events(session: &mut Session, into: &mut Vec<Event>) {
    into.extend(std::iter::from_fn(|| session.poll_event()));
}

/// Brings `sssonector_tunnel_receive_window_grown_bytes` (summed over links) in step with
/// `session`'s window growth; to 0 once the link is shutting. Called with the session's lock
/// held, so that a loop's last update cannot land after the link's final one.
fn publish_window(shared: &Shared, session: &Session) {
    let grown = if shared.shutting.load(Ordering::Acquire) {
        0
    } else {
        session.window_grown()
    };
    let before = shared.window_published.swap(grown, Ordering::AcqRel);
    if before != grown {
        let gauge = metrics::gauge!("sssonector_tunnel_receive_window_grown_bytes");
        if grown > before {
            gauge.increment((grown - before) as f64);
        } else {
            gauge.decrement((before - grown) as f64);
        }
    }
}

fn dispatch(shared: &Arc<Shared>, events: &mut Vec<Event>) {
    let Some(incoming) = shared.incoming.lock().clone() else {
        events.clear();
        return;
    };
    // Counted once per batch, not per packet.
    let mut packets = 0;
    for event in events.drain(..) {
        match event {
            Event::Packet(packet) => {
                packets += 1;
                // A full queue drops the packet, as a router would; TCP inside recovers.
                let dropped = incoming.try_send(Incoming::Packet(packet)).is_err();
                if dropped {
                    shared.counters.packets_dropped.add(1);
                }
            }
            Event::GsoPacket(raw) => {
                packets += 1;
                if incoming.try_send(Incoming::GsoPacket(raw)).is_err() {
                    shared.counters.packets_dropped.add(1);
                }
            }
            Event::StreamOpened { id, target } => {
                let mut streams = shared.streams.lock();
                let open = streams.len();
                let refused = if open >= shared.config.max_streams {
                    Some("max_streams")
                } else {
                    let stream = new_stream(shared, &mut streams, id);
                    match incoming.try_send(Incoming::Stream { target, stream }) {
                        Ok(()) => None,
                        Err(e) => {
                            // Dropping the stream resets it; forget it first so the reset
                            // below is the only one.
                            streams.remove(&id);
                            drop(e);
                            Some("queue_full")
                        }
                    }
                };
                drop(streams);
                if let Some(reason) = refused {
                    shared.session.lock().close_stream(id, stream_code::BUSY);
                    shared.output.notify_one();
                    refused_stream(reason, open, shared.config.max_streams);
                }
            }
            Event::StreamData { id, data } => {
                let mut streams = shared.streams.lock();
                let Some(slot) = streams.get(&id) else {
                    continue;
                };
                match queue(shared, slot, data) {
                    Some(queued) => {
                        if let Err(mpsc::error::SendError(StreamMsg::Data(queued))) =
                            slot.tx.send(StreamMsg::Data(queued))
                        {
                            // The reader is gone: nothing holds it.
                            queued.release(shared, &slot.pinned);
                        }
                    }
                    None => {
                        // Past the link's bound: this stream gives way.
                        if let Some(slot) = streams.remove(&id) {
                            let _ = slot.tx.send(StreamMsg::Reset(stream_code::BUSY));
                        }
                        let open = streams.len();
                        drop(streams);
                        shared.session.lock().close_stream(id, stream_code::BUSY);
                        shared.output.notify_one();
                        refused_stream("buffered", open, shared.config.max_streams);
                    }
                }
            }
            Event::StreamHalfClosed { id } => {
                let streams = shared.streams.lock();
                if let Some(slot) = streams.get(&id) {
                    let _ = slot.tx.send(StreamMsg::Fin);
                }
            }
            Event::StreamClosed { id, code } => {
                if let Some(slot) = shared.streams.lock().remove(&id) {
                    let _ = slot.tx.send(if code == 0 {
                        StreamMsg::Fin
                    } else {
                        StreamMsg::Reset(code)
                    });
                    slot.credit.notify_one();
                }
            }
            Event::StreamCredit { id, .. } => {
                if let Some(slot) = shared.streams.lock().get(&id) {
                    slot.credit.notify_one();
                }
            }
            Event::Control { kind, body } => {
                let _ = incoming.try_send(Incoming::Control { kind, body });
            }
            Event::Closed(reason) => {
                tracing::debug!(?reason, "tunnel session closed");
                shared.output.notify_one();
            }
            // Established comes before the link exists.
            _ => {}
        }
    }
    if packets > 0 {
        shared.counters.packets_in.add(packets);
    }
}

/// Readies `data` for `slot`'s queue within the link's `max_buffered`; `None` if it does not
/// fit. A small frame, or any frame behind one still in its read buffer, is copied, so each
/// stream keeps at most one read buffer alive.
fn queue(shared: &Shared, slot: &StreamSlot, data: Bytes) -> Option<Queued> {
    let zero_copy = data.len() >= COPY_BELOW && slot.pinned.load(Ordering::Acquire) == 0;
    let charge = if zero_copy {
        data.len().max(shared.config.read_buffer)
    } else {
        data.len()
    };
    let before = shared.buffered.fetch_add(charge, Ordering::AcqRel);
    if before + charge > shared.config.max_buffered {
        shared.buffered.fetch_sub(charge, Ordering::AcqRel);
        return None;
    }
    let data = if zero_copy {
        slot.pinned.fetch_add(1, Ordering::AcqRel);
        data
    } else {
        Bytes::copy_from_slice(&data)
    };
    Some(Queued {
        data,
        charge,
        in_read_buffer: zero_copy,
    })
}

/// Counts a stream this side refused, and says why at warn, at most once every 10 s.
pub(crate) fn refused_stream(reason: &'static str, open: usize, max: usize) {
    static WARN: Throttle = Throttle::new(std::time::Duration::from_secs(10));
    metrics::counter!("sssonector_tunnel_streams_refused_total", "reason" => reason).increment(1);
    if let Some(suppressed) = WARN.check() {
        tracing::warn!(
            reason,
            open,
            max_streams = max,
            suppressed,
            "stream refused (raise limits.max_streams if the link is full)"
        );
    }
}

/// Marks the link closed: wakes every waiter and ends every stream.
fn finish(shared: &Arc<Shared>, reason: CloseReason) {
    if !shared.shutting.swap(true, Ordering::AcqRel) {
        let label = match &reason {
            CloseReason::Goodbye => "goodbye",
            CloseReason::DeadPeer => "dead_peer",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::ProtocolError { .. } => "protocol_error",
            CloseReason::PeerError { code: 0, .. } => "transport",
            CloseReason::PeerError { .. } => "peer_error",
        };
        metrics::counter!("sssonector_tunnel_sessions_closed_total", "reason" => label)
            .increment(1);
    }
    shared.incoming.lock().take();
    publish_window(shared, &shared.session.lock());
    shared.closed.send_if_modified(|slot| {
        if slot.is_none() {
            *slot = Some(reason);
            true
        } else {
            false
        }
    });
    for (_, slot) in shared.streams.lock().drain() {
        let _ = slot.tx.send(StreamMsg::Reset(stream_code::CANCELLED));
        slot.credit.notify_one();
    }
    shared.output.notify_one();
    shared.drained.notify_waiters();
}

/// The smallest room asked for per transport read.
const MIN_READ: usize = 16 * 1024;

async fn read_loop<R: AsyncRead>(shared: Arc<Shared>, reader: R, mut inbound: BytesMut) {
    tokio::pin!(reader);
    let mut closed = shared.closed.subscribe();
    let mut events = Vec::new();
    // Room asked for per read: follows the traffic, from 16 KiB up to the read buffer. A
    // packet still waiting for delivery keeps its whole read buffer alive, so a trickle of
    // small reads must not each pin a large one; bulk traffic soon reads the full size.
    let mut room = MIN_READ.min(shared.config.read_buffer);
    let reason = loop {
        inbound.reserve(room);
        let read = tokio::select! {
            read = reader.read_buf(&mut inbound) => read,
            () = async { let _ = closed.wait_for(Option::is_some).await; } => return,
        };
        match read {
            Ok(0) => {
                break CloseReason::PeerError {
                    code: 0,
                    message: "the connection ended".into(),
                };
            }
            Ok(n) => {
                room = (n * 2).clamp(MIN_READ, shared.config.read_buffer.max(MIN_READ));
                shared.counters.bytes_in.add(n as u64);
                let state = {
                    let mut session = shared.session.lock();
                    session.receive_from(&mut inbound, Instant::now());
                    drain_events(&mut session, &mut events);
                    publish_window(&shared, &session);
                    session.state()
                };
                dispatch(&shared, &mut events);
                if state == State::Closed {
                    // The writer sends the goodbye or error queued with the close, then
                    // marks the link closed with the session's reason.
                    shared.output.notify_one();
                    return;
                }
            }
            Err(e) => {
                break CloseReason::PeerError {
                    code: 0,
                    message: format!("read: {e}"),
                };
            }
        }
    };
    finish(&shared, reason);
}

/// Awaits `written` while keeping the session's timers running: a write stuck on a full send
/// buffer (a partition, a peer that stopped reading) must not stop keepalive and dead-peer
/// detection. `Err` carries the reason when the timers closed the session meanwhile.
async fn write_or_tick<F>(shared: &Shared, written: F) -> Result<std::io::Result<()>, CloseReason>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    tokio::pin!(written);
    // Most writes complete at once: then no lock is taken and no timer registered.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(written.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(result) = first {
        return Ok(result);
    }
    loop {
        let deadline = shared.session.lock().next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut written => return Ok(result),
            () = sleep => {
                let mut session = shared.session.lock();
                session.tick(Instant::now());
                if session.state() == State::Closed {
                    return Err(session.close_reason().cloned().unwrap_or(CloseReason::DeadPeer));
                }
            }
        }
    }
}

async fn write_loop<W: AsyncWrite>(shared: Arc<Shared>, writer: W) {
    tokio::pin!(writer);
    let mut events = Vec::new();
    let reason = loop {
        let notified = shared.output.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (out, state, deadline) = {
            let mut session = shared.session.lock();
            let out = session.take_output(Instant::now());
            drain_events(&mut session, &mut events);
            // Streams closed here give back their growth (the writer sends their close).
            publish_window(&shared, &session);
            (out, session.state(), session.next_deadline())
        };
        if !events.is_empty() {
            dispatch(&shared, &mut events);
        }
        if !out.is_empty() {
            let written = async {
                writer.write_all(&out).await?;
                writer.flush().await
            };
            match write_or_tick(&shared, written).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    break CloseReason::PeerError {
                        code: 0,
                        message: format!("write: {e}"),
                    };
                }
                // The session's timers closed it while the write was stuck (a dead peer).
                Err(reason) => break reason,
            }
            shared.counters.bytes_out.add(out.len() as u64);
            shared.counters.writes.add(1);
            shared.session.lock().recycle_output(out);
            shared.drained.notify_waiters();
            continue;
        }
        if state == State::Closed {
            let _ = writer.shutdown().await;
            let reason = shared.session.lock().close_reason().cloned();
            break reason.unwrap_or(CloseReason::Goodbye);
        }
        if shared.closed.borrow().is_some() {
            let _ = writer.shutdown().await;
            return;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = notified => {}
            () = sleep => {
                let mut session = shared.session.lock();
                session.tick(Instant::now());
            }
        }
    };
    finish(&shared, reason);
}
