//! Generated certificates for every case: valid, expired, not yet valid, wrong CA, revoked,
//! wrong usage, key mismatch, broken PEM; and real mutual-TLS handshakes over an in-memory
//! pipe with the configurations built from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::ServerName;
use sssonector_certs::{
    CertError, CertificateAuthority, Identity, Source, TlsOptions, TrustStore, Usage, Validity,
    client_config, server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DAY: Duration = Duration::from_secs(86_400);

/// A directory for this test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sssonector-certs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate("test CA", Validity::days(365)).unwrap()
}

fn identity(issued: &sssonector_certs::Issued) -> Identity {
    Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap()
}

#[test]
fn files_load_and_a_valid_chain_verifies() {
    let dir = TempDir::new("valid");
    let ca = ca();
    let server = ca
        .issue_server(&["localhost", "127.0.0.1"], Validity::days(30))
        .unwrap();
    let cert = dir.write("server.pem", &server.cert_pem);
    let key = dir.write("server.key", &server.key_pem);
    let bundle = dir.write("ca.pem", ca.cert_pem());
    let id = Identity::load(&cert, &key).unwrap();
    assert_eq!(id.source(), &Source::File(cert.clone()));
    let trust = TrustStore::load(&bundle, &[] as &[PathBuf]).unwrap();
    trust.verify(&id, Usage::Server, SystemTime::now()).unwrap();
}

#[test]
fn expired_and_not_yet_valid_certificates_are_named() {
    let ca = ca();
    let now = SystemTime::now();
    let old = ca
        .issue_client("old", Validity::between(now - 10 * DAY, now - DAY))
        .unwrap();
    let trust = TrustStore::from_pem(ca.cert_pem(), &[]).unwrap();
    let err = trust
        .verify(&identity(&old), Usage::Client, now)
        .unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("in-memory PEM: certificate expired at 20"),
        "{err}"
    );
    let future = ca
        .issue_client("future", Validity::between(now + DAY, now + 10 * DAY))
        .unwrap();
    let err = trust
        .verify(&identity(&future), Usage::Client, now)
        .unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");
}

#[test]
fn a_certificate_from_another_ca_is_untrusted() {
    let ours = ca();
    let theirs = ca();
    let stranger = theirs.issue_client("mallory", Validity::days(1)).unwrap();
    let trust = TrustStore::from_pem(ours.cert_pem(), &[]).unwrap();
    let err = trust
        .verify(&identity(&stranger), Usage::Client, SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, CertError::UntrustedChain(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "in-memory PEM: certificate chain does not lead to a trusted CA"
    );
}

#[test]
fn a_revoked_certificate_is_refused_and_others_pass() {
    let ca = ca();
    let alice = ca.issue_client("alice", Validity::days(1)).unwrap();
    let bob = ca.issue_client("bob", Validity::days(1)).unwrap();
    ca.revoke(&alice.serial);
    let crl = ca.crl(DAY).unwrap();
    let trust = TrustStore::from_pem(ca.cert_pem(), &[&crl]).unwrap();
    let err = trust
        .verify(&identity(&alice), Usage::Client, SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, CertError::Revoked(_)), "{err}");
    trust
        .verify(&identity(&bob), Usage::Client, SystemTime::now())
        .unwrap();
}

#[test]
fn a_key_that_does_not_match_is_refused_at_load() {
    let dir = TempDir::new("mismatch");
    let ca = ca();
    let a = ca.issue_server(&["a.example"], Validity::days(1)).unwrap();
    let b = ca.issue_server(&["b.example"], Validity::days(1)).unwrap();
    let cert = dir.write("a.pem", &a.cert_pem);
    let key = dir.write("b.key", &b.key_pem);
    let err = Identity::load(&cert, &key).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: private key does not match the certificate in {}",
            key.display(),
            cert.display()
        )
    );
}

#[test]
fn broken_and_empty_pem_is_reported_with_the_file() {
    let dir = TempDir::new("broken");
    let ca = ca();
    let server = ca.issue_server(&["x.example"], Validity::days(1)).unwrap();
    let key = dir.write("key.pem", &server.key_pem);
    let empty = dir.write("empty.pem", "nothing here\n");
    let err = Identity::load(&empty, &key).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no certificate found (expected a PEM \"CERTIFICATE\" block)",
            empty.display()
        )
    );
    let truncated = dir.write(
        "truncated.pem",
        &server.cert_pem[..server.cert_pem.len() - 40],
    );
    let err = Identity::load(&truncated, &key).unwrap_err();
    assert!(matches!(err, CertError::Pem { .. }), "{err}");
    let missing = dir.0.join("missing.pem");
    let err = Identity::load(&missing, &key).unwrap_err();
    assert!(matches!(err, CertError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", missing.display()))
    );
    let err = Identity::load(dir.write("cert.pem", &server.cert_pem), &empty).unwrap_err();
    assert!(matches!(err, CertError::NoKey(_)), "{err}");
}

/// A mutual-TLS handshake and one echoed message over an in-memory pipe.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<Vec<u8>, std::io::Error> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let server_side = tokio::spawn(async move {
        let mut tls = acceptor.accept(a).await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf).await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let result = async {
        let mut tls = connector.connect(name, b).await?;
        tls.write_all(b"hello").await?;
        let mut echoed = Vec::new();
        tls.read_to_end(&mut echoed).await?;
        Ok(echoed)
    }
    .await;
    let server_result = server_side.await.unwrap();
    match (result, server_result) {
        (Ok(echoed), Ok(())) => Ok(echoed),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[tokio::test]
async fn mutual_tls_works_and_refuses_revoked_and_unknown_clients() {
    let ca = ca();
    let server = ca.issue_server(&["localhost"], Validity::days(1)).unwrap();
    let alice = ca.issue_client("alice", Validity::days(1)).unwrap();
    let mallory = ca.issue_client("mallory", Validity::days(1)).unwrap();
    ca.revoke(&mallory.serial);
    let crl = ca.crl(DAY).unwrap();
    let trust = TrustStore::from_pem(ca.cert_pem(), &[&crl]).unwrap();
    let options = TlsOptions::new().with_alpn(["sssonector/1"]);
    let server_cfg = server_config(&identity(&server), &trust, &options).unwrap();
    let client =
        |who: &sssonector_certs::Issued| client_config(&identity(who), &trust, &options).unwrap();

    let echoed = handshake(server_cfg.clone(), client(&alice), "localhost")
        .await
        .unwrap();
    assert_eq!(echoed, b"hello");

    let refused = handshake(server_cfg.clone(), client(&mallory), "localhost").await;
    assert!(refused.is_err(), "a revoked client is refused");

    let stranger_ca = ca_other();
    let stranger = stranger_ca.issue_client("eve", Validity::days(1)).unwrap();
    let stranger_trust = TrustStore::from_pem(ca.cert_pem(), &[]).unwrap();
    let stranger_cfg = client_config(&identity(&stranger), &stranger_trust, &options).unwrap();
    let refused = handshake(server_cfg.clone(), stranger_cfg, "localhost").await;
    assert!(refused.is_err(), "a client of another CA is refused");

    // The client checks the server's name.
    let refused = handshake(server_cfg, client(&alice), "elsewhere.example").await;
    assert!(refused.is_err(), "a server with the wrong name is refused");
}

fn ca_other() -> CertificateAuthority {
    CertificateAuthority::generate("other CA", Validity::days(365)).unwrap()
}

#[tokio::test]
async fn tls12_is_opt_in() {
    let ca = ca();
    let server = ca.issue_server(&["localhost"], Validity::days(1)).unwrap();
    let alice = ca.issue_client("alice", Validity::days(1)).unwrap();
    let trust = TrustStore::from_pem(ca.cert_pem(), &[]).unwrap();
    let server13 = server_config(&identity(&server), &trust, &TlsOptions::new()).unwrap();
    let only12 = {
        let base =
            client_config(&identity(&alice), &trust, &TlsOptions::new().with_tls12()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(trust.roots())
        .with_no_client_auth();
        config.alpn_protocols.clone_from(&base.alpn_protocols);
        Arc::new(config)
    };
    assert!(
        handshake(server13, only12.clone(), "localhost")
            .await
            .is_err()
    );
    let server12 =
        server_config(&identity(&server), &trust, &TlsOptions::new().with_tls12()).unwrap();
    // TLS 1.2 is now offered by the server; this client has no certificate, so it is
    // still refused, but by client authentication rather than by the protocol version.
    let err = handshake(server12, only12, "localhost").await.unwrap_err();
    assert!(!err.to_string().contains("protocol version"), "{err}");
}

#[test]
fn a_ca_loaded_from_its_files_issues_certificates_its_certificate_verifies() {
    let original = CertificateAuthority::generate("persisted CA", Validity::days(30)).unwrap();
    let loaded = CertificateAuthority::from_pem(original.cert_pem(), original.key_pem()).unwrap();
    let server = loaded
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    let trust = TrustStore::from_pem(original.cert_pem(), &[]).unwrap();
    trust
        .verify(&identity(&server), Usage::Server, SystemTime::now())
        .unwrap();
    loaded.revoke(&server.serial);
    let crl = loaded.crl(DAY).unwrap();
    let trust = TrustStore::from_pem(original.cert_pem(), &[&crl]).unwrap();
    assert!(matches!(
        trust.verify(&identity(&server), Usage::Server, SystemTime::now()),
        Err(CertError::Revoked(_))
    ));
    let other = CertificateAuthority::generate("other", Validity::days(1)).unwrap();
    assert!(matches!(
        CertificateAuthority::from_pem(original.cert_pem(), other.key_pem()),
        Err(CertError::KeyMismatch { .. })
    ));
}

/// The CRL number of a PEM CRL.
fn crl_number(pem: &str) -> u64 {
    use rustls_pki_types::CertificateRevocationListDer;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    crl.crl_number().unwrap().to_u64_digits()[0]
}

#[test]
fn a_reloaded_ca_takes_up_its_crl_where_it_left_off() {
    let ca = CertificateAuthority::generate("crl CA", Validity::days(10)).unwrap();
    let a = ca.issue_client("a", Validity::days(1)).unwrap();
    let b = ca.issue_client("b", Validity::days(1)).unwrap();
    ca.revoke(&a.serial);
    let _first = ca.crl(Duration::from_secs(3600)).unwrap();
    ca.revoke(&b.serial);
    let second = ca.crl(Duration::from_secs(3600)).unwrap();
    assert_eq!(crl_number(&second), 2);

    // Loaded again from its files (a new process): without its CRL it would start over at 1
    // and forget both revocations.
    let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    again.restore_crl(&second, Source::Memory).unwrap();
    let mut revoked: Vec<Vec<u8>> = again.revoked().into_iter().map(|(s, _)| s).collect();
    revoked.sort();
    let mut expected = vec![a.serial.clone(), b.serial.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    let third = again.crl(Duration::from_secs(3600)).unwrap();
    assert_eq!(crl_number(&third), 3, "CRL numbers keep increasing");

    // Another CA's CRL, or no CRL at all, is refused naming the file.
    let other = CertificateAuthority::generate("other CA", Validity::days(10)).unwrap();
    let foreign = other.crl(Duration::from_secs(3600)).unwrap();
    let file = Source::File("/etc/pki/ca.crl".into());
    let e = again.restore_crl(&foreign, file.clone()).unwrap_err();
    assert!(e.to_string().contains("/etc/pki/ca.crl"), "{e}");
    assert!(e.to_string().contains("not by this CA"), "{e}");
    let e = again.restore_crl("not a crl", file).unwrap_err();
    assert!(e.to_string().contains("/etc/pki/ca.crl"), "{e}");
}

#[test]
fn serial_numbers_are_positive_16_byte_and_distinct() {
    let ca = CertificateAuthority::generate("serial CA", Validity::days(1)).unwrap();
    let serials: std::collections::BTreeSet<Vec<u8>> = (0..200)
        .map(|i| {
            ca.issue_client(&format!("c{i}"), Validity::days(1))
                .unwrap()
                .serial
        })
        .collect();
    assert_eq!(serials.len(), 200);
    for s in &serials {
        assert!(s.len() <= 16 && s[0] & 0x80 == 0, "{s:?}");
    }
}

#[tokio::test]
async fn a_client_refuses_a_revoked_server() {
    let ca = ca();
    let server = ca.issue_server(&["localhost"], Validity::days(1)).unwrap();
    let alice = ca.issue_client("alice", Validity::days(1)).unwrap();
    let options = TlsOptions::new().with_alpn(["sssonector/1"]);
    let plain = TrustStore::from_pem(ca.cert_pem(), &[]).unwrap();
    let server_cfg = server_config(&identity(&server), &plain, &options).unwrap();
    ca.revoke(&server.serial);
    let crl = ca.crl(DAY).unwrap();
    // The client's trust store has the CRL: the server's certificate is refused.
    let trust = TrustStore::from_pem(ca.cert_pem(), &[&crl]).unwrap();
    let client = client_config(&identity(&alice), &trust, &options).unwrap();
    let refused = handshake(server_cfg.clone(), client, "localhost").await;
    let error = refused.expect_err("a revoked server is refused");
    assert!(
        error.to_string().to_lowercase().contains("revoked"),
        "{error}"
    );
    // Without it, the same server is accepted.
    let client = client_config(&identity(&alice), &plain, &options).unwrap();
    assert_eq!(
        handshake(server_cfg, client, "localhost").await.unwrap(),
        b"hello"
    );
}

#[test]
fn a_crl_that_does_not_parse_is_named_by_its_file() {
    let dir = TempDir::new("bad-crl");
    let ca = ca();
    let ca_file = dir.write("ca.pem", ca.cert_pem());
    // A PEM block of the right type whose contents are not a CRL.
    let bad = dir.write(
        "ca.crl",
        "-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n",
    );
    let err = TrustStore::load(&ca_file, &[&bad]).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&bad.display().to_string()), "{text}");
    assert!(!text.starts_with(&ca_file.display().to_string()), "{text}");
}
