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
