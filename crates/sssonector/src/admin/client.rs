//! `sssonector status`: one `GET /status` over hyper's HTTP/1 client.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{AUTHORIZATION, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::AdminError;
use crate::status::Status;

/// How long the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches and decodes `/status` from the admin endpoint at `addr` (`host:port`), sending
/// `token` as a bearer token if given.
pub(crate) async fn fetch_status(addr: &str, token: Option<&str>) -> Result<Status, AdminError> {
    let timed_out = || AdminError::Connect {
        addr: addr.to_owned(),
        error: std::io::ErrorKind::TimedOut.into(),
    };
    tokio::time::timeout(TIMEOUT, fetch(addr, token))
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

async fn fetch(addr: &str, token: Option<&str>) -> Result<Status, AdminError> {
    let http = |error| AdminError::Http {
        addr: addr.to_owned(),
        error,
    };
    let socket = TcpStream::connect(addr)
        .await
        .map_err(|error| AdminError::Connect {
            addr: addr.to_owned(),
            error,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
        .await
        .map_err(http)?;
    tokio::spawn(connection);
    let mut request = Request::get("/status").header(HOST, addr);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {}", token.trim()));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| AdminError::Connect {
            addr: addr.to_owned(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    if !status.is_success() {
        return Err(AdminError::Status {
            addr: addr.to_owned(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|error| AdminError::Decode {
        addr: addr.to_owned(),
        error,
    })
}
