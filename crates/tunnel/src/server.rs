//! The server's accept path: a tower stack from an accepted TCP connection to a verified
//! TLS stream, and the loop that runs it.
//!
//! ```text
//! accept ─▶ max clients ─▶ IpFilter ─▶ per-IP connection rate limit ─▶ handshake timeout ─▶ TLS accept
//! ```
//!
//! [`accept_stack`] builds the stack from the workspace's layers; [`Server`] runs it for each
//! accepted connection, bounds the clients served at once, and drains on shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use sssonector_certs::PeerIdentity;
use sssonector_ratelimit::{IpGrouping, KeyedLimiter, KeyedRateLimitLayer, Mode as LimitMode};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::cidr::Cidr;
use crate::link::Link;
use crate::transport::TcpTuning;

/// The read buffer under TLS: rustls reads about 4 KiB per call without one.
pub(crate) const SOCKET_BUFFER: usize = 256 * 1024;

/// The transport under a tunnel session: TLS over a buffered TCP stream.
pub type ServerTransport = tokio_rustls::server::TlsStream<BufReader<TcpStream>>;

/// An accepted connection, the accept stack's request.
#[derive(Debug)]
pub struct Accepted {
    /// The socket.
    pub socket: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// A connection through the accept stack: TLS done, client certificate verified.
#[derive(Debug)]
pub struct Handshaken {
    /// The TLS stream.
    pub tls: ServerTransport,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The client certificate's names (common name, SAN DNS and URI names, OUs, SHA-256
    /// fingerprint) and serial number.
    pub identity: PeerIdentity,
}

/// A connection from an address outside the allowed networks.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not in an allowed network")]
pub struct NotAllowed(pub IpAddr);

/// Refuses connections from outside the allowed networks; an empty list allows all.
#[derive(Debug, Clone)]
pub struct IpFilterLayer {
    allowed: Arc<[Cidr]>,
}

impl IpFilterLayer {
    /// Allows these networks.
    pub fn new(allowed: impl IntoIterator<Item = Cidr>) -> Self {
        Self {
            allowed: allowed.into_iter().collect(),
        }
    }
}

impl<S> tower::Layer<S> for IpFilterLayer {
    type Service = IpFilter<S>;
    fn layer(&self, inner: S) -> IpFilter<S> {
        IpFilter {
            inner,
            allowed: Arc::clone(&self.allowed),
        }
    }
}

/// The service of [`IpFilterLayer`].
#[derive(Debug, Clone)]
pub struct IpFilter<S> {
    inner: S,
    allowed: Arc<[Cidr]>,
}

impl<S> Service<Accepted> for IpFilter<S>
where
    S: Service<Accepted>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Accepted) -> Self::Future {
        let ip = req.peer.ip();
        if !self.allowed.is_empty() && !self.allowed.iter().any(|net| net.contains(ip)) {
            return Box::pin(std::future::ready(Err(NotAllowed(ip).into())));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// The TLS accept at the bottom of the stack.
#[derive(Clone)]
pub struct TlsAccept {
    acceptor: TlsAcceptor,
    tuning: TcpTuning,
}

impl fmt::Debug for TlsAccept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAccept").finish_non_exhaustive()
    }
}

impl TlsAccept {
    /// Accepts with `config` (mutual TLS: it must verify client certificates), with the
    /// default [`TcpTuning`].
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            tuning: TcpTuning::default(),
        }
    }

    /// Tunes each accepted connection with `tuning` instead of the default.
    #[must_use]
    pub fn with_tuning(mut self, tuning: TcpTuning) -> Self {
        self.tuning = tuning;
        self
    }
}

impl Service<Accepted> for TlsAccept {
    type Response = Handshaken;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Handshaken>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Accepted) -> Self::Future {
        let acceptor = self.acceptor.clone();
        let tuning = self.tuning;
        Box::pin(async move {
            if let Err(e) = tuning.apply(&req.socket) {
                tracing::debug!(error = %e, "cannot tune the connection");
            }
            let buffered = BufReader::with_capacity(SOCKET_BUFFER, req.socket);
            let tls = acceptor.accept(buffered).await?;
            // rustls refuses a client offering only other protocols; one offering none gets
            // through the handshake, so it is refused here.
            if tls.get_ref().1.alpn_protocol() != Some(crate::proto::ALPN.as_bytes()) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the client did not offer ALPN {:?}", crate::proto::ALPN),
                ));
            }
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::PermissionDenied, "no client certificate")
                })?;
            let identity = PeerIdentity::from_der(leaf)
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
            Ok(Handshaken {
                tls,
                peer: req.peer,
                identity,
            })
        })
    }
}

/// What the accept stack needs.
#[derive(Debug, Clone)]
pub struct AcceptOptions {
    /// Networks clients may connect from; empty allows all.
    pub allow: Vec<Cidr>,
    /// New connections per second allowed from one address (IPv6 grouped by /64); `None`
    /// for no limit.
    pub connections_per_second: Option<u32>,
    /// How long the TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How each accepted connection is tuned (set its dead-peer timeout to the session's).
    pub tcp: TcpTuning,
}

impl Default for AcceptOptions {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            connections_per_second: Some(10),
            handshake_timeout: Duration::from_secs(10),
            tcp: TcpTuning::default(),
        }
    }
}

/// The accept stack: IP filter → per-IP connection rate limit → handshake timeout → TLS.
///
/// # Errors
///
/// The rate limit's quota is invalid.
pub fn accept_stack(
    tls: Arc<ServerConfig>,
    options: &AcceptOptions,
) -> Result<BoxCloneSyncService<Accepted, Handshaken, BoxError>, BoxError> {
    let base = ServiceBuilder::new()
        .timeout(options.handshake_timeout)
        .service(TlsAccept::new(tls).with_tuning(options.tcp));
    let limited = match options.connections_per_second {
        Some(rate) => {
            let rate = u64::from(rate.max(1));
            let per_ip = KeyedLimiter::<IpAddr>::builder()
                .name("sssonector_accept")
                .quota(sssonector_ratelimit::Quota::per_second(rate)?.with_burst(rate)?)
                .max_keys(100_000)
                .build()?;
            let group = IpGrouping::default();
            BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(KeyedRateLimitLayer::new(
                        per_ip,
                        move |req: &Accepted| group.key(req.peer.ip()),
                        LimitMode::Reject,
                    ))
                    .service(base),
            )
        }
        None => BoxCloneSyncService::new(base.map_err(Into::into)),
    };
    Ok(BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(IpFilterLayer::new(options.allow.iter().copied()))
            .service(limited),
    ))
}

/// Why the accept stack refused a connection, as the `reason` label of
/// `sssonector_server_refused_total`: `not_allowed` (outside `allow`), `rate_limited`,
/// `handshake_timeout`, `identity` (no ALPN, no certificate, or a certificate that names
/// nothing), or `tls` (the handshake failed: an untrusted, expired or revoked certificate, or
/// not TLS at all).
pub fn refusal_reason(error: &(dyn std::error::Error + 'static)) -> &'static str {
    if error.downcast_ref::<NotAllowed>().is_some() {
        "not_allowed"
    } else if error
        .downcast_ref::<sssonector_core::RateLimited>()
        .is_some()
    {
        "rate_limited"
    } else if error
        .downcast_ref::<tower::timeout::error::Elapsed>()
        .is_some()
    {
        "handshake_timeout"
    } else if error
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
    {
        "identity"
    } else {
        "tls"
    }
}

/// Told of each connection the accept stack refused: the peer, the
/// [`refusal_reason`], and the error.
pub type OnRefused =
    Arc<dyn Fn(SocketAddr, &'static str, &(dyn std::error::Error + 'static)) + Send + Sync>;

/// Decides, right after accept, whether a connection goes on to the accept stack: `Ok` with a
/// ticket held until its handshake is over (so the gate can count unfinished handshakes), or
/// `Err` with the reason it is closed at once (the `reason` label of
/// `sssonector_server_refused_total`).
pub type Gate =
    Arc<dyn Fn(SocketAddr) -> Result<Box<dyn std::any::Any + Send>, &'static str> + Send + Sync>;

/// Counters of the accept loop.
#[derive(Debug, Default)]
struct ServerCounters {
    accepted: AtomicU64,
    refused_full: AtomicU64,
    refused_stack: AtomicU64,
    sessions: AtomicU64,
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Connections closed at once because `max_clients` were being served.
    pub refused_full: u64,
    /// Connections the accept stack refused (filter, rate limit, timeout, TLS).
    pub refused_stack: u64,
    /// Tunnel sessions established.
    pub sessions: u64,
    /// Clients connected now.
    pub connected: usize,
}

/// Runs the accept stack for every connection, at most `max_clients` at once, and hands each
/// handshaken connection to the caller's handler. Shut it down with [`Server::shutdown`]: it
/// stops accepting, asks every link to close, and waits for them up to a deadline.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    clients: Arc<Semaphore>,
    max_clients: usize,
    links: Mutex<Vec<(Link, Vec<u8>)>>,
    counters: ServerCounters,
    stop: watch::Sender<bool>,
    on_refused: Option<OnRefused>,
    gate: Option<Gate>,
}

/// Builds a [`Server`] with hooks.
pub struct ServerBuilder {
    max_clients: usize,
    on_refused: Option<OnRefused>,
    gate: Option<Gate>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("max_clients", &self.max_clients)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Tells `on_refused` of each connection the accept stack refuses (for an audit log, or
    /// to count failures against a source).
    #[must_use]
    pub fn on_refused(mut self, on_refused: OnRefused) -> Self {
        self.on_refused = Some(on_refused);
        self
    }

    /// Puts each accepted connection to `gate` before anything else (a ban list, a cap on
    /// unfinished handshakes per source).
    #[must_use]
    pub fn gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        Server {
            inner: Arc::new(ServerInner {
                clients: Arc::new(Semaphore::new(self.max_clients)),
                max_clients: self.max_clients,
                links: Mutex::new(Vec::new()),
                counters: ServerCounters::default(),
                stop: watch::channel(false).0,
                on_refused: self.on_refused,
                gate: self.gate,
            }),
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for at most `max_clients` clients at once.
    pub fn new(max_clients: usize) -> Self {
        Self::builder(max_clients).build()
    }

    /// A server for at most `max_clients` clients at once, with hooks.
    pub fn builder(max_clients: usize) -> ServerBuilder {
        ServerBuilder {
            max_clients,
            on_refused: None,
            gate: None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        ServerStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused_full: c.refused_full.load(Ordering::Relaxed),
            refused_stack: c.refused_stack.load(Ordering::Relaxed),
            sessions: c.sessions.load(Ordering::Relaxed),
            connected: self.inner.max_clients - self.inner.clients.available_permits(),
        }
    }

    /// Records a link and its client certificate's serial, so shutdown can close it and
    /// [`close_revoked`](Self::close_revoked) can end it; the caller's handler calls this
    /// once the session is established.
    pub fn track(&self, link: &Link, serial: &[u8]) {
        self.inner.counters.sessions.fetch_add(1, Ordering::Relaxed);
        let mut links = self.inner.links.lock();
        links.retain(|(l, _)| !l.is_closed());
        links.push((link.clone(), serial.to_vec()));
    }

    /// Ends the sessions of clients whose certificate serial is in `serials` (after a CRL
    /// reload revoked them); returns how many.
    pub fn close_revoked(&self, serials: &[Vec<u8>]) -> usize {
        let links = self.inner.links.lock();
        let mut closed = 0;
        for (link, serial) in links.iter() {
            if !link.is_closed() && serials.contains(serial) {
                link.close();
                closed += 1;
            }
        }
        closed
    }

    /// Accepts on `listener` until [`shutdown`](Self::shutdown), running `stack` and then
    /// `handle` for each connection in its own task. `handle` owns the connection until it
    /// returns; its client slot is freed then.
    pub async fn serve<H, F>(
        &self,
        listener: TcpListener,
        stack: BoxCloneSyncService<Accepted, Handshaken, BoxError>,
        handle: H,
    ) where
        H: Fn(Handshaken) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut stop = self.inner.stop.subscribe();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = Arc::clone(&self.inner.clients).try_acquire_owned() else {
                self.inner
                    .counters
                    .refused_full
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, max = self.inner.max_clients, "refused: max_clients reached");
                metrics::counter!("sssonector_server_refused_total", "reason" => "max_clients")
                    .increment(1);
                continue;
            };
            let ticket = match &self.inner.gate {
                None => None,
                Some(gate) => match gate(peer) {
                    Ok(ticket) => Some(ticket),
                    Err(reason) => {
                        self.inner
                            .counters
                            .refused_stack
                            .fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("sssonector_server_refused_total", "reason" => reason)
                            .increment(1);
                        static REFUSED: sssonector_core::Throttle =
                            sssonector_core::Throttle::new(Duration::from_secs(10));
                        if let Some(suppressed) = REFUSED.check() {
                            tracing::info!(%peer, reason, suppressed, "connection refused at once");
                        }
                        continue;
                    }
                },
            };
            let stack = stack.clone();
            let handle = handle.clone();
            let server = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let result = stack.oneshot(Accepted { socket, peer }).await;
                drop(ticket);
                match result {
                    Ok(handshaken) => handle(handshaken).await,
                    Err(e) => {
                        server
                            .inner
                            .counters
                            .refused_stack
                            .fetch_add(1, Ordering::Relaxed);
                        let reason = refusal_reason(&*e);
                        metrics::counter!("sssonector_server_refused_total", "reason" => reason)
                            .increment(1);
                        tracing::info!(%peer, reason, error = %e, "connection refused");
                        if let Some(on_refused) = &server.inner.on_refused {
                            on_refused(peer, reason, &*e);
                        }
                    }
                }
            });
        }
    }

    /// Stops accepting, sends every client a goodbye, and waits until they are gone or
    /// `deadline` passes. Returns how many links were still open at the deadline.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.inner.stop.send_replace(true);
        let links: Vec<Link> = self
            .inner
            .links
            .lock()
            .iter()
            .map(|(l, _)| l.clone())
            .collect();
        for link in &links {
            link.close();
        }
        let all = async {
            for link in &links {
                link.closed().await;
            }
        };
        let _ = tokio::time::timeout(deadline, all).await;
        links.iter().filter(|l| !l.is_closed()).count()
    }
}
