//! The admin endpoint: one small HTTP/1 server (hyper) for operators and their tools.
//!
//! | path | what | token (when one is set) |
//! |---|---|---|
//! | `GET /healthz` | the process is alive | not needed |
//! | `GET /readyz` | ready to serve (server: listening, certificates valid and not expiring within the warning period; client: connected); 503 with the problems otherwise | not needed |
//! | `GET /metrics` | Prometheus text | needed |
//! | `GET /status` | sessions, certificates, bans, policy, last reload (JSON) | needed |
//! | `POST /reload` | reload as SIGHUP does | always needed |
//!
//! It listens on loopback unless told otherwise, and refuses to start on any other address
//! without a token. Every response carries `nosniff`, `no-store` and frame-deny headers.

mod auth;
mod client;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::status::{ReloadStatus, Status};

pub(crate) use auth::{TOKEN_ENV, Token};
pub(crate) use client::fetch_status;

/// Why the admin endpoint cannot start, or a request to it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AdminError {
    /// The token file cannot be read.
    #[error("admin.token_file: cannot read {}: {error}", file.display())]
    TokenFile {
        file: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The token is too short to be a secret.
    #[error("{origin}: the token must be at least {min} characters")]
    WeakToken { origin: String, min: usize },
    /// A non-loopback address without a token.
    #[error(
        "admin.listen: {0} is not a loopback address, and no token is set: set admin.token_file \
         (or SSSONECTOR_ADMIN_TOKEN) so the endpoint is not open to the network"
    )]
    OpenToNetwork(SocketAddr),
    /// The address cannot be bound.
    #[error("admin.listen: cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    /// `sssonector status` could not reach the endpoint.
    #[error("cannot reach the admin endpoint at {addr}: {error}")]
    Connect {
        addr: String,
        #[source]
        error: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("admin endpoint at {addr}: {error}")]
    Http {
        addr: String,
        #[source]
        error: hyper::Error,
    },
    /// The endpoint answered with an error status.
    #[error("admin endpoint at {addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    /// The endpoint's answer is not the expected JSON.
    #[error("admin endpoint at {addr}: unexpected answer: {error}")]
    Decode {
        addr: String,
        #[source]
        error: serde_json::Error,
    },
}

/// What the routes need from the running program.
pub(crate) struct AdminState {
    pub(crate) metrics: PrometheusHandle,
    /// The status report, computed per request.
    pub(crate) status: Box<dyn Fn() -> Status + Send + Sync>,
    /// Asks the main loop to reload; it answers with the outcome.
    pub(crate) reload: tokio::sync::mpsc::Sender<oneshot::Sender<ReloadStatus>>,
    pub(crate) token: Option<Token>,
    /// Admin access is audited: refused requests, reloads and status reads.
    pub(crate) audit: crate::audit::Audit,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// At most this many admin connections are served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest an admin connection stays open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A bound admin endpoint.
#[derive(Debug)]
pub(crate) struct Admin {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Admin {
    /// Binds `addr`, refusing a non-loopback address without a token.
    pub(crate) async fn bind(addr: SocketAddr, token: Option<&Token>) -> Result<Self, AdminError> {
        check_exposure(addr, token)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| AdminError::Bind { addr, error })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Self { listener, addr })
    }

    /// The address it listens on (with the port chosen, if 0 was asked for).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` turns true.
    pub(crate) async fn serve(self, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let state = Arc::clone(&state);
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            routes::handle(request, peer, &state).await,
                        )
                    }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(socket), service);
                match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin connection ended"),
                    Err(_) => tracing::debug!(%peer, "admin connection timed out"),
                    Ok(Ok(())) => {}
                }
            });
        }
    }
}

/// A token is required off loopback.
pub(crate) fn check_exposure(addr: SocketAddr, token: Option<&Token>) -> Result<(), AdminError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(AdminError::OpenToNetwork(addr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_a_token() {
        let open: SocketAddr = "0.0.0.0:9797".parse().unwrap();
        let err = check_exposure(open, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("admin.listen: 0.0.0.0:9797 is not a loopback address")
        );
        let token = Token::new("0123456789abcdef", "test").unwrap();
        assert!(check_exposure(open, Some(&token)).is_ok());
        assert!(check_exposure("127.0.0.1:9797".parse().unwrap(), None).is_ok());
        assert!(check_exposure("[::1]:9797".parse().unwrap(), None).is_ok());
    }
}
