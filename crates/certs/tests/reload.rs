//! Hot rotation: new files are validated then swapped in; bad files are refused and the old
//! certificate stays; symlink swaps are noticed; rotations under concurrent handshakes fail
//! none of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sssonector_certs::{
    CertError, CertificateAuthority, Identity, Issued, ReloadableIdentity, Reloaded, TlsOptions,
    TrustStore, Usage, Validity, client_config, server_config_reloading_identity,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sssonector-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a certificate and key the way a careful tool does: to temporary names, then
/// renamed into place, so a reader never sees half a file.
fn install(dir: &Path, issued: &Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    for (path, text) in [(&cert, &issued.cert_pem), (&key, &issued.key_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (cert, key)
}

fn der(issued: &Issued) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()
}

struct Pki {
    ca: CertificateAuthority,
    trust: TrustStore,
    client: Arc<rustls::ClientConfig>,
}

fn pki() -> Pki {
    let ca = CertificateAuthority::generate("reload CA", Validity::days(30)).unwrap();
    let trust = TrustStore::from_pem(ca.cert_pem(), &[]).unwrap();
    let alice = ca.issue_client("alice", Validity::days(1)).unwrap();
    let alice = Identity::from_pem(&alice.cert_pem, &alice.key_pem).unwrap();
    let client = client_config(&alice, &trust, &TlsOptions::new()).unwrap();
    // Every handshake in full: a resumed session shows the certificate of the session it
    // resumes, which is what rotation must not disturb but is not what these tests look at.
    let mut client = (*client).clone();
    client.resumption = rustls::client::Resumption::disabled();
    Pki {
        ca,
        trust,
        client: Arc::new(client),
    }
}

/// A server certificate installed in `dir`, loaded as a validated reloadable identity, and
/// a server configuration presenting it.
struct Served {
    cert: PathBuf,
    key: PathBuf,
    identity: Arc<ReloadableIdentity>,
    server: Arc<rustls::ServerConfig>,
}

fn serve(dir: &TempDir, pki: &Pki, issued: &Issued) -> Served {
    let (cert, key) = install(&dir.0, issued);
    let identity = Arc::new(
        ReloadableIdentity::load(
            "server",
            &cert,
            &key,
            Usage::Server,
            Some(pki.trust.clone()),
        )
        .unwrap(),
    );
    let server =
        server_config_reloading_identity(identity.clone(), &pki.trust, &TlsOptions::new()).unwrap();
    Served {
        cert,
        key,
        identity,
        server,
    }
}

/// One handshake; returns the certificate the server presented.
async fn presented(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<CertificateDer<'static>> {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let server_side = tokio::spawn(async move {
        let mut tls = acceptor.accept(a).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.shutdown().await
    });
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), b)
        .await?;
    tls.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    server_side.await.unwrap()?;
    Ok(cert)
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_handshakes() {
    let dir = TempDir::new("rotate");
    let pki = pki();
    let first = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    let Served {
        identity, server, ..
    } = serve(&dir, &pki, &first);
    assert_eq!(
        presented(server.clone(), pki.client.clone()).await.unwrap(),
        der(&first)
    );

    assert_eq!(identity.reload().unwrap(), Reloaded::Unchanged);
    let second = pki
        .ca
        .issue_server(&["localhost"], Validity::days(2))
        .unwrap();
    install(&dir.0, &second);
    assert_eq!(
        identity.reload().unwrap(),
        Reloaded::Replaced {
            serial: second.serial.clone()
        }
    );
    assert_eq!(
        presented(server, pki.client.clone()).await.unwrap(),
        der(&second)
    );
    assert_eq!(identity.stats().replaced, 1);
    let left = identity.expires_in(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(86_400) && left <= Duration::from_secs(2 * 86_400));
}

#[tokio::test]
async fn a_bad_new_file_is_refused_and_the_old_certificate_stays() {
    let dir = TempDir::new("bad");
    let pki = pki();
    let good = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    let Served {
        cert,
        key,
        identity,
        server,
    } = serve(&dir, &pki, &good);

    // A truncated certificate.
    std::fs::write(&cert, &good.cert_pem[..100]).unwrap();
    assert!(matches!(
        identity.reload(),
        Err(CertError::Pem { .. } | CertError::NoCertificate(_))
    ));
    // An expired one, whole and well formed.
    let now = SystemTime::now();
    let expired = pki
        .ca
        .issue_server(
            &["localhost"],
            Validity::between(
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            ),
        )
        .unwrap();
    install(&dir.0, &expired);
    let err = identity.reload().unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
    // A certificate whose key was not replaced with it.
    let other = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    std::fs::write(&cert, &other.cert_pem).unwrap();
    std::fs::write(&key, &good.key_pem).unwrap();
    assert!(matches!(
        identity.reload(),
        Err(CertError::KeyMismatch { .. })
    ));

    let stats = identity.stats();
    assert_eq!((stats.replaced, stats.failed), (0, 3));
    assert!(stats.last_error.unwrap().contains("does not match"));
    assert_eq!(identity.serial(), good.serial);
    assert_eq!(
        presented(server, pki.client.clone()).await.unwrap(),
        der(&good)
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_swap_is_noticed_by_the_poll() {
    let dir = TempDir::new("symlink");
    let pki = pki();
    let v1 = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    let v2 = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    for (name, issued) in [("v1", &v1), ("v2", &v2)] {
        let version = dir.0.join(name);
        std::fs::create_dir_all(&version).unwrap();
        install(&version, issued);
    }
    // As Kubernetes mounts secrets: `current` points at a version directory.
    let current = dir.0.join("current");
    std::os::unix::fs::symlink("v1", &current).unwrap();
    let identity = Arc::new(
        ReloadableIdentity::load(
            "server",
            current.join("server.pem"),
            current.join("server.key"),
            Usage::Server,
            Some(pki.trust.clone()),
        )
        .unwrap(),
    );
    let poll = tokio::spawn(identity.clone().poll(Duration::from_millis(20)));
    let next = dir.0.join("next");
    std::os::unix::fs::symlink("v2", &next).unwrap();
    std::fs::rename(&next, &current).unwrap(); // atomic swap
    let swapped = async {
        while identity.serial() != v2.serial {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), swapped)
        .await
        .expect("the poll picks up the swap");
    poll.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_under_concurrent_handshakes_fail_none() {
    let dir = TempDir::new("concurrent");
    let pki = pki();
    let first = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    let Served {
        identity, server, ..
    } = serve(&dir, &pki, &first);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (server, client) = (server.clone(), pki.client.clone());
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match presented(server.clone(), client.clone()).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for _ in 0..100 {
        let next = pki
            .ca
            .issue_server(&["localhost"], Validity::days(1))
            .unwrap();
        install(&dir.0, &next);
        assert!(matches!(identity.reload(), Ok(Reloaded::Replaced { .. })));
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("clients finish")
            .unwrap();
    }
    assert_eq!(identity.stats().replaced, 100);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no handshake failed");
    eprintln!(
        "{} handshakes during 100 rotations",
        done.load(Ordering::Relaxed)
    );
    assert!(done.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn a_crl_reload_refuses_new_handshakes_of_a_revoked_client() {
    let dir = TempDir::new("crl");
    let pki = pki();
    let server_cert = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    let (cert, key) = install(&dir.0, &server_cert);
    let ca_file = dir.0.join("ca.pem");
    let crl_file = dir.0.join("ca.crl");
    std::fs::write(&ca_file, pki.ca.cert_pem()).unwrap();
    std::fs::write(&crl_file, pki.ca.crl(Duration::from_secs(86_400)).unwrap()).unwrap();
    let identity =
        Arc::new(ReloadableIdentity::load("server", &cert, &key, Usage::Server, None).unwrap());
    let trust = Arc::new(
        sssonector_certs::ReloadableTrust::load("clients", &ca_file, &[&crl_file]).unwrap(),
    );
    let server = sssonector_certs::server_config_reloading_identity_and_trust(
        identity,
        &trust,
        &TlsOptions::new(),
    )
    .unwrap();

    let bob = pki.ca.issue_client("bob", Validity::days(1)).unwrap();
    let bob_client = {
        let id = Identity::from_pem(&bob.cert_pem, &bob.key_pem).unwrap();
        let mut c = (*client_config(&id, &pki.trust, &TlsOptions::new()).unwrap()).clone();
        c.resumption = rustls::client::Resumption::disabled();
        Arc::new(c)
    };
    presented(server.clone(), bob_client.clone()).await.unwrap();
    presented(server.clone(), pki.client.clone()).await.unwrap();

    pki.ca.revoke(&bob.serial);
    std::fs::write(&crl_file, pki.ca.crl(Duration::from_secs(86_400)).unwrap()).unwrap();
    assert_eq!(
        trust.reload().unwrap(),
        sssonector_certs::TrustReloaded::Replaced {
            newly_revoked: vec![bob.serial.clone()]
        }
    );
    assert!(
        presented(server.clone(), bob_client).await.is_err(),
        "bob is refused now"
    );
    presented(server, pki.client.clone())
        .await
        .expect("alice still gets in");

    // A broken CRL is refused and the current one stays.
    std::fs::write(
        &crl_file,
        "-----BEGIN X509 CRL-----\nnot base64!\n-----END X509 CRL-----\n",
    )
    .unwrap();
    assert!(trust.reload().is_err());
    assert_eq!(trust.stats().failed, 1);
    assert_eq!(trust.trust().crls().len(), 1);
}

#[test]
fn expiry_warnings_fire_once_per_threshold() {
    use sssonector_certs::ExpiryPolicy;
    let dir = TempDir::new("expiry");
    let pki = pki();
    let now = SystemTime::now();
    let short = pki
        .ca
        .issue_server(
            &["localhost"],
            Validity::between(
                now - Duration::from_secs(60),
                now + 10 * 86_400 * Duration::from_secs(1),
            ),
        )
        .unwrap();
    let (cert, key) = install(&dir.0, &short);
    let identity = ReloadableIdentity::load("server", &cert, &key, Usage::Server, None)
        .unwrap()
        .with_expiry_policy(ExpiryPolicy::default());
    const DAY: u64 = 86_400;
    // 10 days left: below 30, above 7.
    assert_eq!(
        identity.check_expiry(now),
        Some(Duration::from_secs(30 * DAY))
    );
    assert_eq!(identity.check_expiry(now), None, "warned once");
    // 5 days later: below 7.
    let later = now + Duration::from_secs(5 * DAY);
    assert_eq!(
        identity.check_expiry(later),
        Some(Duration::from_secs(7 * DAY))
    );
    assert_eq!(identity.check_expiry(later), None);
    // A renewed certificate starts afresh, and with 90 days left says nothing.
    let renewed = pki
        .ca
        .issue_server(&["localhost"], Validity::days(90))
        .unwrap();
    install(&dir.0, &renewed);
    identity.reload().unwrap();
    assert_eq!(identity.check_expiry(now), None);
    assert_eq!(
        identity.check_expiry(now + Duration::from_secs(85 * DAY)),
        Some(Duration::from_secs(7 * DAY))
    );
}

#[test]
fn the_trust_store_knows_when_its_ca_expires_and_its_crl_is_due() {
    let pki = pki();
    let crl = pki.ca.crl(Duration::from_secs(3600)).unwrap();
    let trust = TrustStore::from_pem(pki.ca.cert_pem(), &[&crl]).unwrap();
    let now = SystemTime::now();
    let ca_left = trust.ca_not_after().unwrap().duration_since(now).unwrap();
    assert!(
        ca_left > Duration::from_secs(29 * 86_400) && ca_left <= Duration::from_secs(30 * 86_400)
    );
    let crl_left = trust
        .crl_next_update()
        .unwrap()
        .duration_since(now)
        .unwrap();
    assert!(crl_left > Duration::from_secs(3500) && crl_left <= Duration::from_secs(3600));
}

#[tokio::test]
async fn a_certificate_in_its_last_third_is_renewed_by_the_local_ca() {
    use sssonector_certs::{LocalCaIssuer, RenewalRequest};
    let dir = TempDir::new("renew");
    let ca = Arc::new(CertificateAuthority::generate("renewing CA", Validity::days(30)).unwrap());
    let trust = TrustStore::from_pem(ca.cert_pem(), &[]).unwrap();
    let now = SystemTime::now();
    let nine_days = Duration::from_secs(9 * 86_400);
    let first = ca
        .issue_server(
            &["localhost"],
            Validity::between(now - Duration::from_secs(60), now + nine_days),
        )
        .unwrap();
    let (cert, key) = install(&dir.0, &first);
    let identity =
        ReloadableIdentity::load("server", &cert, &key, Usage::Server, Some(trust)).unwrap();
    let issuer = LocalCaIssuer(ca.clone());
    let request = RenewalRequest {
        names: vec!["localhost".into()],
        usage: Usage::Server,
        validity: nine_days,
    };
    // Day 1 of 9: not due.
    assert_eq!(
        identity.renew_if_due(&issuer, &request, now).await.unwrap(),
        None
    );
    // Day 7 of 9: in the last third.
    let day7 = now + Duration::from_secs(7 * 86_400);
    let serial = identity
        .renew_if_due(&issuer, &request, day7)
        .await
        .unwrap()
        .expect("renewed");
    assert_ne!(serial, first.serial);
    assert_eq!(identity.serial(), serial);
    assert!(!identity.renewal_due(now, 1.0 / 3.0));
    // The files on disk are the new ones, and the new key is its owner's alone (even where
    // the old one was not).
    let on_disk = Identity::load(&cert, &key).unwrap();
    assert_eq!(
        on_disk.chain()[0],
        CertificateDer::from_pem_file(&cert).unwrap()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the renewed key is readable by others: {mode:o}"
        );
    }
}

/// Records the OCSP response the server staples, then verifies as usual.
#[derive(Debug)]
struct SeesOcsp {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for SeesOcsp {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.seen.lock().unwrap().push(ocsp_response.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[tokio::test]
async fn an_ocsp_response_is_stapled_and_reloaded() {
    let dir = TempDir::new("ocsp");
    let pki = pki();
    let server_cert = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    let (cert, key) = install(&dir.0, &server_cert);
    let ocsp = dir.0.join("server.ocsp");
    // Any DER will do for the server: it staples what it is given; clients judge it.
    std::fs::write(&ocsp, b"\x30\x03\x0a\x01\x00").unwrap();
    let identity = Arc::new(
        ReloadableIdentity::load("server", &cert, &key, Usage::Server, None)
            .unwrap()
            .with_ocsp_file(&ocsp)
            .unwrap(),
    );
    let server =
        server_config_reloading_identity(identity.clone(), &pki.trust, &TlsOptions::new()).unwrap();
    let sees = Arc::new(SeesOcsp {
        inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
            pki.trust.roots(),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap(),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let mut client = (*pki.client).clone();
    client.dangerous().set_certificate_verifier(sees.clone());
    let client = Arc::new(client);
    presented(server.clone(), client.clone()).await.unwrap();
    std::fs::write(&ocsp, b"\x30\x03\x0a\x01\x01").unwrap();
    assert!(matches!(identity.reload(), Ok(Reloaded::Replaced { .. })));
    presented(server, client).await.unwrap();
    let seen = sees.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            b"\x30\x03\x0a\x01\x00".to_vec(),
            b"\x30\x03\x0a\x01\x01".to_vec()
        ]
    );
    // Not DER: refused, the old response stays.
    std::fs::write(&ocsp, b"not der").unwrap();
    assert!(matches!(identity.reload(), Err(CertError::Invalid { .. })));
}

#[cfg(unix)]
#[tokio::test]
async fn the_directory_watch_sees_a_kubernetes_style_swap() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("watch");
    let pki = pki();
    let v1 = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    let v2 = pki
        .ca
        .issue_server(&["localhost"], Validity::days(1))
        .unwrap();
    // As the kubelet lays out a secret: files are links through `..data` to a version dir.
    for (name, issued) in [("..v1", &v1), ("..v2", &v2)] {
        let version = dir.0.join(name);
        std::fs::create_dir_all(&version).unwrap();
        install(&version, issued);
    }
    symlink("..v1", dir.0.join("..data")).unwrap();
    for file in ["server.pem", "server.key"] {
        symlink(format!("..data/{file}"), dir.0.join(file)).unwrap();
    }
    let identity = Arc::new(
        ReloadableIdentity::load(
            "server",
            dir.0.join("server.pem"),
            dir.0.join("server.key"),
            Usage::Server,
            Some(pki.trust.clone()),
        )
        .unwrap(),
    );
    assert_eq!(identity.serial(), v1.serial);
    // The watch is in place when `watch` returns; the future only handles its events.
    let watching = tokio::spawn(identity.watch().unwrap());
    symlink("..v2", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    let swapped = async {
        while identity.serial() != v2.serial {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), swapped)
        .await
        .expect("the watch picks up the swap without a poll");
    watching.abort();
}

#[tokio::test]
async fn a_client_follows_a_ca_rotation() {
    let dir = TempDir::new("ca-rotation");
    let old_ca = CertificateAuthority::generate("old CA", Validity::days(30)).unwrap();
    let new_ca = CertificateAuthority::generate("new CA", Validity::days(30)).unwrap();
    // The client trusts a bundle file; its own certificate comes from the old CA.
    let bundle = dir.0.join("ca.pem");
    std::fs::write(&bundle, old_ca.cert_pem()).unwrap();
    let client_files = dir.0.join("client");
    std::fs::create_dir_all(&client_files).unwrap();
    let (client_cert, client_key) = install(
        &client_files,
        &old_ca.issue_client("alice", Validity::days(1)).unwrap(),
    );
    let client_identity = Arc::new(
        ReloadableIdentity::load("client", &client_cert, &client_key, Usage::Client, None).unwrap(),
    );
    let client_trust = Arc::new(
        sssonector_certs::ReloadableTrust::load("servers", &bundle, &[] as &[PathBuf]).unwrap(),
    );
    let mut client = (*sssonector_certs::client_config_reloading_identity_and_trust(
        client_identity,
        &client_trust,
        &TlsOptions::new(),
    )
    .unwrap())
    .clone();
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);

    // A server with a certificate from the new CA, accepting clients of the old one.
    let server_files = dir.0.join("server");
    std::fs::create_dir_all(&server_files).unwrap();
    let (cert, key) = install(
        &server_files,
        &new_ca
            .issue_server(&["localhost"], Validity::days(1))
            .unwrap(),
    );
    let server_identity =
        Arc::new(ReloadableIdentity::load("server", &cert, &key, Usage::Server, None).unwrap());
    let accepts_old = TrustStore::from_pem(old_ca.cert_pem(), &[]).unwrap();
    let server =
        server_config_reloading_identity(server_identity, &accepts_old, &TlsOptions::new())
            .unwrap();

    assert!(
        presented(server.clone(), client.clone()).await.is_err(),
        "new CA not trusted yet"
    );
    std::fs::write(
        &bundle,
        format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem()),
    )
    .unwrap();
    assert!(matches!(
        client_trust.reload(),
        Ok(sssonector_certs::TrustReloaded::Replaced { .. })
    ));
    presented(server, client)
        .await
        .expect("trusted after the bundle reload");
}
