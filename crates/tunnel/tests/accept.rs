//! The accept stack refuses what it should, each layer on its own: clients outside the allowed
//! networks, connection floods from one address, clients that stall the handshake, and clients
//! that do not speak the protocol's ALPN.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sssonector_certs::{CertificateAuthority, Identity, TlsOptions, TrustStore, Validity};
use sssonector_tunnel::server::{AcceptOptions, Accepted, NotAllowed, accept_stack};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tower::ServiceExt;

/// Accepts one connection, runs it through the stack, and returns the stack's verdict.
async fn verdict(
    options: AcceptOptions,
    client: impl FnOnce(SocketAddr, common::Pki) -> tokio::task::JoinHandle<()>,
) -> Result<String, tower::BoxError> {
    let pki = common::pki();
    let stack = accept_stack(pki.server.clone(), &options).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = client(listener.local_addr().unwrap(), pki);
    let (socket, peer) = listener.accept().await.unwrap();
    stack
        .oneshot(Accepted { socket, peer })
        .await
        .map(|h| h.identity.name().to_owned())
}

fn tls_client(
    addr: SocketAddr,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let socket = TcpStream::connect(addr).await.unwrap();
        let connector = TlsConnector::from(config);
        if let Ok(mut tls) = connector
            .connect(ServerName::try_from("localhost").unwrap(), socket)
            .await
        {
            // Hold the connection while the server decides.
            let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut [0u8; 1]).await;
        }
    })
}

fn options() -> AcceptOptions {
    AcceptOptions {
        allow: Vec::new(),
        connections_per_second: None,
        handshake_timeout: Duration::from_secs(5),
        ..AcceptOptions::default()
    }
}

#[tokio::test]
async fn a_proper_client_gets_through_with_its_identity() {
    let result = verdict(options(), |addr, pki| tls_client(addr, pki.client)).await;
    assert_eq!(result.unwrap(), "alice");
}

#[tokio::test]
async fn addresses_outside_the_allowed_networks_are_refused() {
    let mut opts = options();
    opts.allow = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    let err = verdict(opts, |addr, pki| tls_client(addr, pki.client))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<NotAllowed>().is_some(), "{err}");
    assert_eq!(err.to_string(), "127.0.0.1 is not in an allowed network");
}

#[tokio::test]
async fn a_stalled_handshake_times_out() {
    let mut opts = options();
    opts.handshake_timeout = Duration::from_millis(200);
    let err = verdict(opts, |addr, _| {
        tokio::spawn(async move {
            // Connects and says nothing.
            let _socket = TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn a_client_without_the_alpn_is_refused() {
    // The same CA and a valid client certificate, but no ALPN offered.
    let ca = CertificateAuthority::generate("test CA", Validity::days(1)).unwrap();
    let server = ca.issue_server(&["localhost"], Validity::days(1)).unwrap();
    let client = ca.issue_client("mallory", Validity::days(1)).unwrap();
    let trust = TrustStore::from_pem(ca.cert_pem(), &[]).unwrap();
    let server_config = sssonector_certs::server_config(
        &Identity::from_pem(&server.cert_pem, &server.key_pem).unwrap(),
        &trust,
        &TlsOptions::new().with_alpn([sssonector_tunnel::proto::ALPN]),
    )
    .unwrap();
    let client_config = sssonector_certs::client_config(
        &Identity::from_pem(&client.cert_pem, &client.key_pem).unwrap(),
        &trust,
        &TlsOptions::new(),
    )
    .unwrap();
    let stack = accept_stack(server_config, &options()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = tls_client(listener.local_addr().unwrap(), client_config);
    let (socket, peer) = listener.accept().await.unwrap();
    let err = stack.oneshot(Accepted { socket, peer }).await.unwrap_err();
    assert!(err.to_string().contains("did not offer ALPN"), "{err}");
}

#[tokio::test]
async fn a_connection_flood_from_one_address_is_limited() {
    let mut opts = options();
    opts.connections_per_second = Some(2);
    let pki = common::pki();
    let stack = accept_stack(pki.server, &opts).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut admitted = 0;
    let mut limited = 0;
    for _ in 0..5 {
        let _client = tls_client(addr, pki.client.clone());
        let (socket, peer) = listener.accept().await.unwrap();
        match stack.clone().oneshot(Accepted { socket, peer }).await {
            Ok(_) => admitted += 1,
            Err(e) => {
                assert!(
                    sssonector_core::find_rejection(e.as_ref()).is_some(),
                    "not a rate-limit rejection: {e}"
                );
                limited += 1;
            }
        }
    }
    // A burst of 2, then refusals: five connections in well under a second.
    assert_eq!((admitted, limited), (2, 3));
}
