//! Port forwarding: TCP connections carried as tunnel streams.
//!
//! The client accepts local connections for each rule and opens a stream named after the
//! rule; the server connects each stream to the rule's target. [`splice`] moves the bytes both
//! ways with buffers from a [`BufPool`], up to 64 KiB per read, and preserves half-close: when
//! one side stops sending, the other reads end-of-stream and may still answer. A reset stays a
//! reset: a stream reset (the far target died or aborted) closes the local socket with a TCP
//! reset, and a local reset resets the stream, so neither end takes a cut-off transfer for a
//! complete one.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sssonector_bufpool::BufPool;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::link::{LinkError, stream_code};
use crate::stream::{StreamReader, StreamWriter, TunnelStream};

/// Bytes read from a socket per stream frame.
pub const CHUNK: usize = 64 * 1024;

/// Bytes moved by one [`splice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Spliced {
    /// From the socket into the tunnel.
    pub sent: u64,
    /// From the tunnel into the socket.
    pub received: u64,
}

/// Why a splice ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpliceError {
    /// The local socket failed.
    #[error("local connection: {0}")]
    Io(#[from] io::Error),
    /// The stream was reset or the tunnel closed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Carries `socket` over `stream` both ways until both directions end. Each direction
/// half-closes the other side when its source ends. An error on either side resets both: the
/// stream is reset, and the socket is closed with a TCP reset (`SO_LINGER` 0), so the local
/// application reads a reset — never an end-of-file it could take for a complete transfer.
///
/// # Errors
///
/// The socket failed, or the stream was reset or its link closed.
pub async fn splice(
    socket: TcpStream,
    stream: TunnelStream,
    pool: &BufPool,
) -> Result<Spliced, SpliceError> {
    let (read, mut write) = socket.into_split();
    let (reader, writer) = stream.into_split();
    let moved = tokio::try_join!(
        upstream(&read, writer, pool),
        downstream(reader, &mut write)
    );
    match moved {
        Ok((sent, received)) => Ok(Spliced { sent, received }),
        Err(e) => {
            // Dropping the futures above reset the stream's halves that were still open.
            abort(read, write);
            Err(e)
        }
    }
}

/// Closes a connection with a TCP reset instead of a FIN.
fn abort(read: OwnedReadHalf, write: OwnedWriteHalf) {
    if let Ok(socket) = read.reunite(write) {
        if let Err(e) = socket.set_zero_linger() {
            tracing::debug!(error = %e, "cannot set SO_LINGER 0: the connection closes with a FIN");
        }
    }
}

async fn upstream(
    socket: &OwnedReadHalf,
    mut writer: StreamWriter,
    pool: &BufPool,
) -> Result<u64, SpliceError> {
    let mut total = 0;
    loop {
        // A buffer is taken only once the socket has data: an idle connection holds none, so
        // 10,000 idle connections do not pin 10,000 buffers (nor exhaust the pool's budget and
        // stall every other stream).
        if let Err(e) = socket.readable().await {
            writer.reset(stream_code::CANCELLED);
            return Err(e.into());
        }
        let mut buf = pool
            .get(CHUNK)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        let n = match socket.try_read_buf(&mut *buf) {
            Ok(n) => n,
            // Readiness was spurious; the buffer goes back to the pool.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                writer.reset(stream_code::CANCELLED);
                return Err(e.into());
            }
        };
        if n == 0 {
            writer.finish();
            return Ok(total);
        }
        total += n as u64;
        writer.send(buf.freeze()).await?;
    }
}

async fn downstream(
    mut reader: StreamReader,
    socket: &mut OwnedWriteHalf,
) -> Result<u64, SpliceError> {
    let mut total = 0;
    // Whatever has arrived is written together (one vectored write for many frames).
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let mut finished = match reader.recv().await? {
            Some(data) => {
                batch.push(data);
                false
            }
            None => true,
        };
        let mut queued: usize = batch.iter().map(Bytes::len).sum();
        while !finished && queued < BATCH {
            match reader.try_recv() {
                None => break,
                Some(Ok(Some(data))) => {
                    queued += data.len();
                    batch.push(data);
                }
                Some(Ok(None)) => finished = true,
                Some(Err(e)) => return Err(e.into()),
            }
        }
        if queued > 0 {
            write_all_vectored(socket, &batch).await?;
            batch.clear();
            total += queued as u64;
            reader.consumed(queued);
        }
        if finished {
            // The peer half-closed: so do we, and the local side reads end-of-file.
            let _ = socket.shutdown().await;
            return Ok(total);
        }
    }
}

/// The most bytes gathered for one vectored write.
const BATCH: usize = 256 * 1024;

async fn write_all_vectored(socket: &mut OwnedWriteHalf, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = socket.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The server side of port forwarding: rule names and the addresses they connect to.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Clones share the rules, so [`set_rules`](Self::set_rules) reaches every session.
    rules: Arc<parking_lot::RwLock<Arc<HashMap<String, String>>>>,
    connect_timeout: Duration,
    pool: BufPool,
}

impl Targets {
    /// Rules as `(name, host:port)` pairs; `pool` supplies the splice buffers.
    pub fn new(rules: impl IntoIterator<Item = (String, String)>, pool: BufPool) -> Self {
        Self {
            rules: Arc::new(parking_lot::RwLock::new(Arc::new(
                rules.into_iter().collect(),
            ))),
            connect_timeout: Duration::from_secs(5),
            pool,
        }
    }

    /// Replaces the rules (a configuration reload) for every clone: streams opened from now
    /// on use the new ones; streams already connected stay connected.
    pub fn set_rules(&self, rules: impl IntoIterator<Item = (String, String)>) {
        *self.rules.write() = Arc::new(rules.into_iter().collect());
    }

    /// The rules in force, sorted by name.
    pub fn rules(&self) -> Vec<(String, String)> {
        let mut rules: Vec<(String, String)> = self
            .rules
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rules.sort();
        rules
    }

    /// How long a connect to a target may take (5 s by default).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects a stream the peer opened to its rule's target and splices the two; resets the
    /// stream with [`stream_code::UNKNOWN_TARGET`] or [`stream_code::CONNECT_FAILED`] when it
    /// cannot.
    ///
    /// # Errors
    ///
    /// The rule is unknown, the connect failed, or the splice did.
    pub async fn serve(&self, target: &str, stream: TunnelStream) -> Result<Spliced, SpliceError> {
        let rules = Arc::clone(&self.rules.read());
        let Some(addr) = rules.get(target) else {
            stream.reset(stream_code::UNKNOWN_TARGET);
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no forwarding rule named {target:?}"),
            )
            .into());
        };
        let connected =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr.as_str()))
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
        let socket = match connected {
            Ok(socket) => socket,
            Err(e) => {
                stream.reset(stream_code::CONNECT_FAILED);
                return Err(
                    io::Error::new(e.kind(), format!("connect to {addr} ({target}): {e}")).into(),
                );
            }
        };
        let _ = socket.set_nodelay(true);
        splice(socket, stream, &self.pool).await
    }
}

/// Serves the streams a client opens on `link` until the link closes: each is connected to
/// its rule's target in its own task.
pub async fn serve_link(
    mut incoming: tokio::sync::mpsc::Receiver<crate::Incoming>,
    targets: Targets,
) {
    while let Some(item) = incoming.recv().await {
        if let crate::Incoming::Stream { target, stream } = item {
            let targets = targets.clone();
            tokio::spawn(async move {
                let id = stream.id();
                match targets.serve(&target, stream).await {
                    Ok(moved) => {
                        tracing::debug!(
                            id,
                            target,
                            sent = moved.sent,
                            received = moved.received,
                            "stream done"
                        );
                    }
                    Err(e) => tracing::info!(id, target, error = %e, "stream failed"),
                }
            });
        }
    }
}

/// The client side of one rule: accepts local connections on `listener` and carries each
/// as a stream to `rule` over one of `links` — the open one with the fewest streams, so
/// streams spread over several TLS connections (one connection carries about one core's
/// worth). A connection accepted while every link is down waits up to `wait` for one to
/// come back, then is closed.
pub async fn listen(
    listener: tokio::net::TcpListener,
    rule: String,
    links: Vec<tokio::sync::watch::Receiver<Option<crate::Link>>>,
    pool: BufPool,
    wait: Duration,
) {
    let rule: Arc<str> = rule.into();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(rule = &*rule, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let mut links = links.clone();
        let rule = Arc::clone(&rule);
        let pool = pool.clone();
        tokio::spawn(async move {
            let link = tokio::time::timeout(wait, least_loaded(&mut links))
                .await
                .ok()
                .flatten();
            let Some(link) = link else {
                refused_connection("no_tunnel", &rule, peer, &"no tunnel connection is up");
                return;
            };
            let stream = match link.open_stream(&rule) {
                Ok(stream) => stream,
                // Counted and logged by the link.
                Err(LinkError::TooManyStreams(_)) => return,
                Err(e) => {
                    refused_connection("open_failed", &rule, peer, &e);
                    return;
                }
            };
            if let Err(e) = splice(socket, stream, &pool).await {
                let refused = match &e {
                    SpliceError::Link(LinkError::Reset { code, .. }) => refusal(*code),
                    _ => None,
                };
                match refused {
                    Some((reason, why)) => refused_connection(reason, &rule, peer, &why),
                    None => tracing::debug!(
                        rule = &*rule,
                        %peer,
                        error = %e,
                        "forwarded connection ended"
                    ),
                }
            }
        });
    }
}

/// A far side's reset that means it refused the stream: the `reason` label and what to log.
fn refusal(code: u16) -> Option<(&'static str, &'static str)> {
    match code {
        stream_code::BUSY => Some(("peer_busy", "the server is at its stream limit")),
        stream_code::NOT_PERMITTED => Some((
            "not_permitted",
            "the server's access policy does not permit this rule",
        )),
        stream_code::UNKNOWN_TARGET => Some(("unknown_target", "the server has no such rule")),
        _ => None,
    }
}

/// A local connection the client could not carry: counted by `reason` in
/// `sssonector_tunnel_streams_refused_total`, and logged at warn at most once every 10 s.
fn refused_connection(
    reason: &'static str,
    rule: &str,
    peer: std::net::SocketAddr,
    why: &dyn std::fmt::Display,
) {
    static WARN: sssonector_core::Throttle =
        sssonector_core::Throttle::new(Duration::from_secs(10));
    metrics::counter!("sssonector_tunnel_streams_refused_total", "reason" => reason).increment(1);
    if let Some(suppressed) = WARN.check() {
        tracing::warn!(rule, %peer, reason, suppressed, error = %why, "forwarded connection refused");
    }
}

/// The open link with the fewest streams, waiting for one while all are down; `None` once
/// every link's sender is gone.
async fn least_loaded(
    links: &mut [tokio::sync::watch::Receiver<Option<crate::Link>>],
) -> Option<crate::Link> {
    loop {
        let best = links
            .iter_mut()
            .filter_map(|rx| rx.borrow_and_update().clone())
            .filter(|l| !l.is_closed())
            .min_by_key(|l| l.stats().open_streams);
        if best.is_some() {
            return best;
        }
        if links.is_empty() {
            return None;
        }
        // All down (rare: between reconnects). Wake on the first link's change, and look at
        // the others every 50 ms.
        match tokio::time::timeout(Duration::from_millis(50), links[0].changed()).await {
            Ok(Err(_)) if links.len() == 1 => return None,
            _ => {}
        }
    }
}
