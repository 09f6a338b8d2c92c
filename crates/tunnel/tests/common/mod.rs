//! Shared set-up: a CA, a server and a client certificate, and the TLS configurations.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of the shared set-up"
)]

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

/// One side's session and link settings.
pub type Side = (
    sssonector_tunnel::proto::SessionConfig,
    sssonector_tunnel::LinkConfig,
);

/// A client and a server link established over an in-memory transport, each with its session
/// and link settings (for TUN mode: the server assigns no addresses).
pub async fn link_pair(client: Side, server: Side) -> (LinkEnd, LinkEnd) {
    let (a, b) = tokio::io::duplex(1 << 20);
    establish_pair((a, client), (b, server)).await
}

/// [`link_pair`] over TLS 1.3 with mutual certificates ([`pki`]) on a loopback TCP
/// connection: the transport the binary uses.
pub async fn tls_link_pair(client: Side, server: Side) -> (LinkEnd, LinkEnd) {
    let pki = pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tokio_rustls::TlsAcceptor::from(pki.server.clone())
            .accept(tcp)
            .await
            .unwrap()
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(pki.client.clone())
            .connect(name, tcp)
            .await
            .unwrap()
    };
    let (accepted, connected) = tokio::join!(accept, connect);
    establish_pair((connected, client), (accepted, server)).await
}

async fn establish_pair<C, S>(
    (client_io, (client_session, client_link)): (C, Side),
    (server_io, (server_session, server_link)): (S, Side),
) -> (LinkEnd, LinkEnd)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use sssonector_tunnel::Link;
    use sssonector_tunnel::proto::Session;
    use std::time::Instant;

    let client = Link::establish(
        client_io,
        Session::client(client_session, Instant::now(), Vec::new()),
        client_link,
    );
    let server = Link::establish(
        server_io,
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

/// dhat's heap profiler in testing mode, for a test binary whose global allocator is
/// `dhat::Alloc`, writing its profile to the temporary directory as
/// `sssonector-dhat-{name}-{pid}.json`; and the single-threaded runtime such a test runs in, so
/// that nothing else allocates meanwhile.
pub fn heap_profiler(name: &str) -> (dhat::Profiler, tokio::runtime::Runtime) {
    let profiler = dhat::Profiler::builder()
        .testing()
        .file_name(std::env::temp_dir().join(format!(
            "sssonector-dhat-{name}-{}.json",
            std::process::id()
        )))
        .build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (profiler, runtime)
}

/// Two forward-mode links with default settings over an in-memory transport, and one stream
/// between them: the client's end and the server's.
pub async fn forward_stream() -> (
    (sssonector_tunnel::Link, sssonector_tunnel::Link),
    (
        sssonector_tunnel::TunnelStream,
        sssonector_tunnel::TunnelStream,
    ),
) {
    use sssonector_tunnel::proto::{Mode, Role, SessionConfig};
    use sssonector_tunnel::{Incoming, LinkConfig};
    let forward = |role| SessionConfig::new(role, Mode::Forward);
    let ((client, _ci), (server, mut incoming)) = link_pair(
        (forward(Role::Client), LinkConfig::default()),
        (forward(Role::Server), LinkConfig::default()),
    )
    .await;
    let local = client.open_stream("x").unwrap();
    let Some(Incoming::Stream { stream, .. }) = incoming.recv().await else {
        panic!("no stream");
    };
    ((client, server), (local, stream))
}
