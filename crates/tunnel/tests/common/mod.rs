//! Shared set-up: a CA, a server and a client certificate, and the TLS configurations.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use sssonector_certs::{CertificateAuthority, Identity, TlsOptions, TrustStore, Validity};
use tokio_rustls::rustls::{ClientConfig, ServerConfig};

pub struct Pki {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

pub fn pki() -> Pki {
    let ca = CertificateAuthority::generate("test CA", Validity::days(1)).unwrap();
    let server = ca.issue_server(&["localhost"], Validity::days(1)).unwrap();
    let client = ca.issue_client("alice", Validity::days(1)).unwrap();
    let trust = TrustStore::from_pem(ca.cert_pem(), &[]).unwrap();
    let options = TlsOptions::new().with_alpn([sssonector_tunnel::proto::ALPN]);
    Pki {
        server: sssonector_certs::server_config(
            &Identity::from_pem(&server.cert_pem, &server.key_pem).unwrap(),
            &trust,
            &options,
        )
        .unwrap(),
        client: sssonector_certs::client_config(
            &Identity::from_pem(&client.cert_pem, &client.key_pem).unwrap(),
            &trust,
            &options,
        )
        .unwrap(),
    }
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Deterministic bytes for stream `i`.
pub fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// A link and its incoming queue.
pub type LinkEnd = (
    sssonector_tunnel::Link,
    tokio::sync::mpsc::Receiver<sssonector_tunnel::Incoming>,
);

/// A client and a server link established over an in-memory transport, each with its session
/// and link settings (for TUN mode: the server assigns no addresses).
pub async fn link_pair(
    (client_session, client_link): (
        sssonector_tunnel::proto::SessionConfig,
        sssonector_tunnel::LinkConfig,
    ),
    (server_session, server_link): (
        sssonector_tunnel::proto::SessionConfig,
        sssonector_tunnel::LinkConfig,
    ),
) -> (LinkEnd, LinkEnd) {
    use sssonector_tunnel::Link;
    use sssonector_tunnel::proto::Session;
    use std::time::Instant;

    let (a, b) = tokio::io::duplex(1 << 20);
    let client = Link::establish(
        a,
        Session::client(client_session, Instant::now(), Vec::new()),
        client_link,
    );
    let server = Link::establish(
        b,
        Session::server(server_session, Instant::now(), Box::new(|_| Ok(Vec::new()))),
        server_link,
    );
    let (client, server) = tokio::join!(client, server);
    let (c, _, ci) = client.unwrap();
    let (s, _, si) = server.unwrap();
    ((c, ci), (s, si))
}

/// Session settings for a TUN-mode client and server.
pub fn tun_sessions() -> (
    sssonector_tunnel::proto::SessionConfig,
    sssonector_tunnel::proto::SessionConfig,
) {
    use sssonector_tunnel::proto::{Mode, Role, SessionConfig};
    (
        SessionConfig::new(Role::Client, Mode::Tun),
        SessionConfig::new(Role::Server, Mode::Tun),
    )
}
