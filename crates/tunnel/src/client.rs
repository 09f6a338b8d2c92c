//! The client's dial path and its reconnect loop.
//!
//! Each server endpoint gets a tower stack `retry(breaker(timeout(tls connect)))` from the
//! workspace's layers: a quick retry smooths over a single lost SYN, the endpoint's breaker stops
//! hammering a dead server, and the timeout bounds a hung connect. [`Reconnect`] tries the
//! endpoints in turn (failover), backs off with jitter when all fail, and starts again as soon
//! as an established link ends.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sssonector_breaker::{CircuitBreaker, CircuitBreakerLayer};
use sssonector_core::Rng;
use sssonector_retry::{Backoff, Jitter, RetryLayer, RetryPolicy};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::link::{EstablishError, Incoming, Link, LinkConfig};
use crate::proto::{Hello, Session};
use crate::server::SOCKET_BUFFER;
use crate::transport::TcpTuning;

/// The transport under a client session: TLS over a buffered TCP stream.
pub type ClientTransport = tokio_rustls::client::TlsStream<BufReader<TcpStream>>;

/// Connects to one server and runs the TLS handshake: the bottom of the dial stack.
#[derive(Clone)]
pub struct TlsConnect {
    addr: Arc<str>,
    name: ServerName<'static>,
    connector: TlsConnector,
    tuning: TcpTuning,
}

impl fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnect")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsConnect {
    /// Connects to `addr` (`host:port`), expecting a certificate for `name`, with the default
    /// [`TcpTuning`].
    pub fn new(addr: &str, name: ServerName<'static>, config: Arc<ClientConfig>) -> Self {
        Self {
            addr: addr.into(),
            name,
            connector: TlsConnector::from(config),
            tuning: TcpTuning::default(),
        }
    }

    /// Tunes each connection with `tuning` instead of the default.
    #[must_use]
    pub fn with_tuning(mut self, tuning: TcpTuning) -> Self {
        self.tuning = tuning;
        self
    }
}

impl Service<()> for TlsConnect {
    type Response = ClientTransport;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<ClientTransport>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let socket = TcpStream::connect(&*this.addr).await?;
            this.tuning.apply(&socket)?;
            let buffered = BufReader::with_capacity(SOCKET_BUFFER, socket);
            this.connector.connect(this.name, buffered).await
        })
    }
}

/// One server the client may use.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: String,
    breaker: CircuitBreaker,
    dial: BoxCloneSyncService<(), ClientTransport, BoxError>,
}

impl Endpoint {
    /// The dial stack for `addr`: retry(breaker(timeout(TLS connect))). The breaker opens
    /// after 3 consecutive failures for 1 s (growing to 5 s while the server stays down, so a returning server is found within seconds).
    ///
    /// # Errors
    ///
    /// The breaker or retry configuration is invalid (they are fixed here, so only if the
    /// crates change their rules).
    pub fn new(
        addr: &str,
        name: ServerName<'static>,
        config: Arc<ClientConfig>,
        connect_timeout: Duration,
    ) -> Result<Self, BoxError> {
        Self::with_tuning(addr, name, config, connect_timeout, TcpTuning::default())
    }

    /// As [`new`](Self::new), tuning each connection with `tuning` (set its dead-peer timeout
    /// to the session's).
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new).
    pub fn with_tuning(
        addr: &str,
        name: ServerName<'static>,
        config: Arc<ClientConfig>,
        connect_timeout: Duration,
        tuning: TcpTuning,
    ) -> Result<Self, BoxError> {
        let breaker = CircuitBreaker::builder()
            .name(format!("sssonector_dial_{addr}"))
            .consecutive_failures(3)
            .open_duration(Duration::from_secs(1))
            .open_backoff(2.0, Duration::from_secs(5))
            .open_jitter(0.2)
            .build()?;
        let policy = RetryPolicy::builder()
            .max_retries(1)
            .backoff(Backoff::exponential(Duration::from_millis(50)).jitter(Jitter::Full))
            .build()?;
        let dial = ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .timeout(connect_timeout)
            .service(TlsConnect::new(addr, name, config).with_tuning(tuning));
        Ok(Self {
            addr: addr.to_owned(),
            breaker,
            dial: BoxCloneSyncService::new(dial),
        })
    }

    /// Where it is.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Dials it through the stack.
    ///
    /// # Errors
    ///
    /// Connect, TLS or timeout failures, or the breaker is open.
    pub async fn dial(&self) -> Result<ClientTransport, BoxError> {
        self.dial.clone().oneshot(()).await
    }
}

/// Keeps a client connected: dials the endpoints in turn, establishes a session, hands the
/// link to the caller, and when it ends starts over. Before each new round — after a lost
/// link as after a round where every endpoint failed — it waits an exponential backoff with
/// full jitter, from 100 ms up to a low cap (2 s by default), so the clients of a restarted
/// server do not all return at once, and a restarted server is found again within seconds.
/// While connected to any endpoint but the first, it probes the first every 30 s (jittered)
/// and moves back once it answers ([`failback`](Self::failback)).
#[derive(Debug)]
pub struct Reconnect {
    endpoints: Vec<Endpoint>,
    backoff: Backoff,
    failback: Option<Duration>,
    link: LinkConfig,
    current: watch::Sender<Option<Link>>,
    /// The address of the endpoint the current link goes to.
    server: parking_lot::Mutex<Option<String>>,
    /// The names in the certificate of the server last connected to.
    server_identity: parking_lot::Mutex<Option<sssonector_certs::PeerIdentity>>,
}

impl Reconnect {
    /// Reconnects across `endpoints`, first to last.
    pub fn new(endpoints: Vec<Endpoint>, link: LinkConfig) -> Self {
        Self {
            endpoints,
            backoff: Backoff::exponential(Duration::from_millis(100))
                .max_delay(Duration::from_secs(2))
                .jitter(Jitter::Full),
            failback: Some(Duration::from_secs(30)),
            link,
            current: watch::channel(None).0,
            server: parking_lot::Mutex::new(None),
            server_identity: parking_lot::Mutex::new(None),
        }
    }

    /// Replaces the backoff between failed rounds.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How often to probe the first endpoint while connected to another (jittered ±25 %);
    /// once a probe's dial succeeds, the current link is closed (its open streams are reset)
    /// and the client reconnects from the first. `None` stays wherever it is connected.
    #[must_use]
    pub fn failback(mut self, interval: Option<Duration>) -> Self {
        self.failback = interval.filter(|i| !i.is_zero());
        self
    }

    /// The link in use now, or `None` while reconnecting; `changed()` on the receiver wakes
    /// on every connect and disconnect.
    pub fn current(&self) -> watch::Receiver<Option<Link>> {
        self.current.subscribe()
    }

    /// The address (`host:port`, as configured) of the server the current link goes to, or
    /// `None` while reconnecting.
    pub fn server(&self) -> Option<String> {
        self.server.lock().clone()
    }

    /// The names in the certificate of the server the current link goes to (`None` before
    /// the first connection).
    pub fn server_identity(&self) -> Option<sssonector_certs::PeerIdentity> {
        self.server_identity.lock().clone()
    }

    /// Runs until `stop` turns true. `session` makes a fresh client session for each
    /// attempt; `on_link` gets each established link with the server's hello and its
    /// incoming queue, and runs until the link is closed (it should return then).
    pub async fn run<S, F, Fut>(&self, session: S, mut on_link: F, mut stop: watch::Receiver<bool>)
    where
        S: Fn() -> Session,
        F: FnMut(Link, Hello, mpsc::Receiver<Incoming>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let rng = Rng::from_entropy();
        let mut failed_rounds = 0u32;
        let mut previous = self.backoff.initial();
        let mut preferred = 0;
        while !stopped(&stop) {
            let mut connected = false;
            let mut failed_back = false;
            for offset in 0..self.endpoints.len() {
                let index = (preferred + offset) % self.endpoints.len();
                let endpoint = &self.endpoints[index];
                let attempt = async {
                    let transport = endpoint.dial().await?;
                    // The server's names, for status pages: the handshake verified them.
                    let names = transport
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| sssonector_certs::PeerIdentity::from_der(leaf).ok());
                    *self.server_identity.lock() = names;
                    Link::establish(transport, session(), self.link.clone())
                        .await
                        .map_err(|e| -> BoxError {
                            match e {
                                EstablishError::Refused(reason) => {
                                    format!("the server refused the session: {reason:?}").into()
                                }
                                other => Box::new(other),
                            }
                        })
                };
                let result = tokio::select! {
                    r = attempt => r,
                    () = until_stopped(&mut stop) => return,
                };
                match result {
                    Ok((link, hello, incoming)) => {
                        tracing::info!(server = endpoint.addr(), "tunnel established");
                        metrics::counter!("sssonector_client_connects_total").increment(1);
                        preferred = index;
                        connected = true;
                        failed_rounds = 0;
                        previous = self.backoff.initial();
                        *self.server.lock() = Some(endpoint.addr().to_owned());
                        self.current.send_replace(Some(link.clone()));
                        let closing = link.clone();
                        let failback = self.failback.filter(|_| index != 0);
                        let mut moving_back = false;
                        tokio::select! {
                            () = on_link(link, hello, incoming) => {}
                            () = until_stopped(&mut stop) => {
                                closing.close();
                                let _ = tokio::time::timeout(Duration::from_secs(2), closing.closed()).await;
                            }
                            () = self.probe_first(failback, &rng) => {
                                tracing::info!(
                                    from = endpoint.addr(),
                                    to = self.endpoints[0].addr(),
                                    "the first server answers again: moving back to it"
                                );
                                metrics::counter!("sssonector_client_failbacks_total").increment(1);
                                moving_back = true;
                                closing.close();
                                let _ = tokio::time::timeout(Duration::from_secs(2), closing.closed()).await;
                            }
                        }
                        let reason = closing.closed().await;
                        self.current.send_replace(None);
                        *self.server.lock() = None;
                        if stopped(&stop) {
                            tracing::info!(server = endpoint.addr(), ?reason, "tunnel closed");
                            return;
                        }
                        if moving_back {
                            preferred = 0;
                            failed_back = true;
                        } else {
                            tracing::warn!(
                                server = endpoint.addr(),
                                ?reason,
                                "tunnel lost; reconnecting"
                            );
                            metrics::counter!("sssonector_client_disconnects_total").increment(1);
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(server = endpoint.addr(), error = %e, "connect failed");
                        metrics::counter!("sssonector_client_connect_failures_total").increment(1);
                    }
                }
            }
            if stopped(&stop) {
                return;
            }
            let end = if failed_back {
                RoundEnd::MovingBack
            } else if connected {
                RoundEnd::LinkLost
            } else {
                RoundEnd::AllFailed
            };
            let delay = self.delay_before_next(end, &mut failed_rounds, &mut previous, &rng);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = until_stopped(&mut stop) => return,
            }
        }
    }
}

/// How a round of dialing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoundEnd {
    /// The first endpoint answered a probe: the client left its link to go back to it.
    MovingBack,
    /// An established link was lost.
    LinkLost,
    /// Every endpoint failed.
    AllFailed,
}

impl Reconnect {
    /// The wait before the next round.
    fn delay_before_next(
        &self,
        end: RoundEnd,
        failed_rounds: &mut u32,
        previous: &mut Duration,
        rng: &Rng,
    ) -> Duration {
        let attempt = match end {
            // The first server just answered a probe: go now.
            RoundEnd::MovingBack => return Duration::ZERO,
            // A lost link: the backoff's first step, jittered, so the clients of a restarted
            // server do not all return in the same instant.
            RoundEnd::LinkLost => 1,
            RoundEnd::AllFailed => {
                *failed_rounds = failed_rounds.saturating_add(1);
                *failed_rounds
            }
        };
        let d = self.backoff.delay(attempt, *previous, rng);
        *previous = d;
        d
    }

    /// Resolves once the first endpoint answers a dial, probing every `interval` (±25 %);
    /// never without an interval.
    async fn probe_first(&self, interval: Option<Duration>, rng: &Rng) {
        let Some(interval) = interval else {
            return std::future::pending().await;
        };
        let first = &self.endpoints[0];
        loop {
            tokio::time::sleep(interval.mul_f64(rng.range_f64(0.75, 1.25))).await;
            match first.dial().await {
                // A whole TLS handshake: the server is up and takes us; the probe's
                // connection is dropped, and the client reconnects through a fresh one.
                Ok(_probe) => return,
                Err(e) => {
                    tracing::debug!(server = first.addr(), error = %e, "the first server does not answer yet")
                }
            }
        }
    }
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_after_a_lost_link_are_spread_out() {
        let reconnect = Reconnect::new(Vec::new(), LinkConfig::default());
        let rng = Rng::with_seed(7);
        let delays: Vec<Duration> = (0..100)
            .map(|_| {
                let (mut rounds, mut previous) = (0, Duration::from_millis(100));
                reconnect.delay_before_next(RoundEnd::LinkLost, &mut rounds, &mut previous, &rng)
            })
            .collect();
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(100)),
            "{delays:?}"
        );
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 50,
            "jittered: {} distinct of 100",
            distinct.len()
        );
        // Failed rounds grow up to the cap; a failback goes at once.
        let (mut rounds, mut previous) = (0, Duration::from_millis(100));
        for _ in 0..10 {
            let d =
                reconnect.delay_before_next(RoundEnd::AllFailed, &mut rounds, &mut previous, &rng);
            assert!(d <= Duration::from_secs(2), "{d:?}");
        }
        assert_eq!(rounds, 10);
        assert_eq!(
            reconnect.delay_before_next(RoundEnd::MovingBack, &mut rounds, &mut previous, &rng),
            Duration::ZERO
        );
    }
}
