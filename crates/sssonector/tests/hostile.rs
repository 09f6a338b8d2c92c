//! Hostile input against a running server, on loopback, while a healthy forwarded connection
//! runs beside it: no certificate, a foreign CA, self-signed, expired and revoked
//! certificates, TLS 1.2, garbage bytes, plaintext HTTP, a TLS record header claiming 16 MiB,
//! 200 idle connections that never start a handshake, and — with a valid certificate — a
//! wrong protocol version, an oversized frame and an unknown frame type. Each is refused and
//! counted; the healthy connection loses nothing and stays served.
//!
//! The hostile connections come from 127.0.0.3, the healthy client from 127.0.0.1, so the
//! per-source protections aimed at the attacker do not touch the healthy client.
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::http::get;
use common::process::{address_after, echo_target, expect, start};
use common::{TempDir, pki, sssonector, wait_for};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sssonector_certs::{CertificateAuthority, Validity};
use tokio_rustls::rustls;

const ATTACKER: [u8; 4] = [127, 0, 0, 3];

/// A TCP connection to `server` from the attacker's address.
async fn from_attacker(server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((ATTACKER, 0).into()).unwrap();
    socket.connect(server).await.unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `ca_pem`, presenting `client` (certificate, key) if any,
/// speaking only `version`, offering the tunnel's ALPN.
fn client_config(
    ca_pem: &[u8],
    client: Option<(&[u8], &[u8])>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert)
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"sssonector/1".to_vec()];
    Arc::new(config)
}

/// A TLS connection from the attacker with `config`; then `bytes` are sent and whatever comes
/// back is read until the server hangs up (bounded). Returns whether the server answered with
/// a HELLO (frame type 0x01), which no hostile client may get.
async fn attempt(server: SocketAddr, config: Arc<rustls::ClientConfig>, bytes: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = from_attacker(server).await;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("localhost").unwrap();
    let run = async {
        let mut tls = connector.connect(name, tcp).await.ok()?;
        tls.write_all(bytes).await.ok()?;
        let mut back = Vec::new();
        let _ = tls.read_to_end(&mut back).await;
        Some(back.first() == Some(&0x01))
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the server hangs up on a hostile client")
        .unwrap_or(false)
}

/// A frame: type byte, 24-bit length, payload.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![kind, len[1], len[2], len[3]];
    out.extend_from_slice(payload);
    out
}

/// A client HELLO in forward mode for protocol `version`.
fn hello(version: u16) -> Vec<u8> {
    let mut payload = version.to_be_bytes().to_vec();
    payload.push(2); // forward
    payload.extend_from_slice(&1400u16.to_be_bytes());
    payload.extend_from_slice(&3u32.to_be_bytes()); // batching, credit
    payload.push(0); // no addresses
    payload.extend_from_slice(&65_536u32.to_be_bytes());
    frame(0x01, &payload)
}

/// Raw bytes from the attacker; waits for the server to hang up (bounded).
async fn raw(server: SocketAddr, bytes: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = from_attacker(server).await;
    let _ = socket.write_all(bytes).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut Vec::new()))
        .await
        .expect("the server hangs up on bytes that are not TLS");
}

/// A counter's value in Prometheus text (counters are whole numbers, printed plainly).
fn value(line: &str) -> u64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map_or(0, value)
}

/// Sends `size` bytes through the healthy client's forwarded port and checks they all come
/// back, in order.
fn healthy_round_trip(local: SocketAddr, size: usize, seed: u8) {
    let mut socket = TcpStream::connect(local).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let data: Vec<u8> = (0..size)
        .map(|i| {
            u8::try_from(i % 251)
                .unwrap()
                .wrapping_mul(31)
                .wrapping_add(seed)
        })
        .collect();
    let writer = {
        let mut socket = socket.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || socket.write_all(&data).unwrap())
    };
    let mut back = vec![0u8; size];
    socket.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(
        back == data,
        "the healthy connection's bytes came back changed"
    );
}

#[test]
fn hostile_clients_are_refused_and_counted_while_a_healthy_one_is_served() {
    let tmp = TempDir::new("hostile");
    let dir = tmp.0.clone();
    let serials = pki(&dir, "localhost", &["alice", "mallory"]);
    sssonector(&dir, &["certs", "revoke", "--dir", "pki", &serials[1]]);
    let target = echo_target();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\ncrls = [\"pki/ca.crl\"]\n\
             [server]\nlisten = \"0.0.0.0:0\"\nconnections_per_second = 0\nhandshake_timeout = \"2s\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [bans]\nfailures = 1000\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n"
        ),
    )
    .unwrap();
    let (_server, notify) = start(&dir, "server.toml", "server");
    let ready = expect(&notify, "READY=1");
    let port = address_after(&ready, "serving on ").port();
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let attacked = server;
    let admin = address_after(&ready, "admin on ");
    std::fs::write(
        dir.join("client.toml"),
        format!(
            "role = \"client\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/alice.pem\"\nkey = \"pki/alice.key\"\nca = \"pki/ca.pem\"\n\
             [client]\nservers = [\"{server}\"]\nserver_name = \"localhost\"\nconnections = 1\n\
             [[forward]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let (_client, client_notify) = start(&dir, "client.toml", "client");
    let local = address_after(&expect(&client_notify, "READY=1"), "echo on ");
    healthy_round_trip(local, 1 << 20, 1);

    // A connection the healthy client keeps open across the whole battery.
    let mut long_lived = TcpStream::connect(local).unwrap();
    long_lived
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    long_lived.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    long_lived.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"before");

    let read = |name: &str| std::fs::read(dir.join("pki").join(name)).unwrap();
    let ca = read("ca.pem");
    let foreign = CertificateAuthority::generate("foreign CA", Validity::days(1)).unwrap();
    let foreign_client = foreign.issue_client("alice", Validity::days(1)).unwrap();
    let own = CertificateAuthority::from_pem(
        &String::from_utf8(ca.clone()).unwrap(),
        &String::from_utf8(read("ca.key")).unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now();
    let expired = own
        .issue_client(
            "alice",
            Validity::between(
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            ),
        )
        .unwrap();
    let self_signed = CertificateAuthority::generate("alice", Validity::days(1)).unwrap();
    let (alice, alice_key) = (read("alice.pem"), read("alice.key"));
    let (mallory, mallory_key) = (read("mallory.pem"), read("mallory.key"));
    let tls13 = &rustls::version::TLS13;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let refused_tls = [
            ("no certificate", client_config(&ca, None, tls13)),
            (
                "a foreign CA's certificate",
                client_config(
                    &ca,
                    Some((
                        foreign_client.cert_pem.as_bytes(),
                        foreign_client.key_pem.as_bytes(),
                    )),
                    tls13,
                ),
            ),
            (
                "a self-signed certificate",
                client_config(
                    &ca,
                    Some((
                        self_signed.cert_pem().as_bytes(),
                        self_signed.key_pem().as_bytes(),
                    )),
                    tls13,
                ),
            ),
            (
                "an expired certificate",
                client_config(
                    &ca,
                    Some((expired.cert_pem.as_bytes(), expired.key_pem.as_bytes())),
                    tls13,
                ),
            ),
            (
                "a revoked certificate",
                client_config(&ca, Some((&mallory, &mallory_key)), tls13),
            ),
            (
                "TLS 1.2",
                client_config(&ca, Some((&alice, &alice_key)), &rustls::version::TLS12),
            ),
        ];
        for (what, config) in refused_tls {
            assert!(
                !attempt(attacked, config, &hello(1)).await,
                "{what}: the server answered"
            );
        }
        // A valid certificate, but the session is broken: each is refused after TLS.
        let valid = client_config(&ca, Some((&alice, &alice_key)), tls13);
        assert!(
            !attempt(attacked, valid.clone(), &hello(2)).await,
            "a wrong version"
        );
        let mut oversized = hello(1);
        oversized.extend_from_slice(&[0x11, 0xff, 0xff, 0xff]);
        oversized.extend_from_slice(&[0u8; 1024]);
        attempt(attacked, valid.clone(), &oversized).await;
        let mut unknown = hello(1);
        unknown.extend_from_slice(&frame(0x3d, b"?"));
        attempt(attacked, valid, &unknown).await;

        // 200 connections that never start a handshake: only a share of the handshake
        // slots is theirs.
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(from_attacker(attacked).await);
        }
        // The healthy client is served meanwhile.
        healthy_round_trip(local, 256 << 10, 2);
        drop(idle);
        // Garbage, plaintext HTTP, and a TLS record header claiming 16 MiB.
        raw(attacked, &[0x5a; 512]).await;
        raw(attacked, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        raw(
            attacked,
            &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff],
        )
        .await;
    });

    let metrics = wait_for("the refusals counted", || {
        let metrics = get(admin, "/metrics");
        (counter(&metrics, "sssonector_server_refused_total{reason=\"tls\"}") >= 9)
            .then_some(metrics)
    });
    let tls = counter(&metrics, "sssonector_server_refused_total{reason=\"tls\"}");
    let identity = counter(
        &metrics,
        "sssonector_server_refused_total{reason=\"identity\"}",
    );
    let slots = counter(
        &metrics,
        "sssonector_server_refused_total{reason=\"handshakes_per_source\"}",
    );
    let broken = counter(
        &metrics,
        "sssonector_tunnel_sessions_closed_total{reason=\"protocol_error\"}",
    );
    let refused_session: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("sssonector_server_handshakes_total{")
                && l.contains("outcome=\"refused\"")
                && l.contains("reason=\"session\"")
        })
        .map(value)
        .sum();
    println!(
        "refused: tls {tls}, identity {identity}, handshake slots {slots}; sessions refused {refused_session}, closed for protocol errors {broken}"
    );
    // Five certificate problems, TLS 1.2 and three byte streams that are not TLS.
    assert!(tls + identity >= 9, "{metrics}");
    assert!(
        slots >= 150,
        "idle pre-handshake connections over the share: {slots}"
    );
    assert!(
        refused_session >= 1,
        "a wrong version is refused: {metrics}"
    );
    assert!(
        broken >= 2,
        "an oversized and an unknown frame end their sessions: {metrics}"
    );

    // The healthy connection kept across the battery, and a new one, lost nothing.
    long_lived.write_all(b"after!").unwrap();
    long_lived.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after!");
    healthy_round_trip(local, 1 << 20, 3);
    drop(tmp);
}
