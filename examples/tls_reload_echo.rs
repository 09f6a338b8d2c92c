//! A template: a mutual-TLS echo server that reloads its certificate from disk while it runs.
//!
//! It generates a CA, a server certificate and a client certificate into a temporary
//! directory, serves on 127.0.0.1, and polls the certificate files. The client connects,
//! the certificate files are replaced (as certbot or a Kubernetes secret would), and the next
//! connection is served with the new certificate without a restart. Run it with
//! `cargo run -p sssonector-examples --example tls_reload_echo`.

#![allow(
    clippy::print_stdout,
    reason = "an example speaks to the person running it"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use sssonector_certs::{
    CertificateAuthority, Identity, Issued, ReloadableIdentity, TlsOptions, TrustStore, Usage,
    Validity, client_config, server_config_reloading_identity,
};
use sssonector_core::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Replaces a file the safe way: write a temporary file, then rename it over the old one.
fn install(dir: &Path, issued: &Issued) -> std::io::Result<()> {
    for (name, text) in [
        ("server.pem", &issued.cert_pem),
        ("server.key", &issued.key_pem),
    ] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects, sends a line, reads the echo; returns the serial of the server's certificate.
async fn talk(
    addr: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> Result<String, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(client);
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    tls.write_all(b"hello over mutual TLS\n").await?;
    let mut reply = vec![0u8; 22];
    tls.read_exact(&mut reply).await?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("the server presented no certificate")?;
    // The serial sits near the start of the DER; showing a digest of the whole certificate is
    // simpler and tells the two apart just as well.
    let digest = cert
        .as_ref()
        .iter()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
    Ok(format!(
        "{} (\"{}\")",
        hex(&digest.to_be_bytes()),
        String::from_utf8_lossy(&reply).trim()
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("sssonector-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // A PKI: the CA, the server's first certificate, and a client.
    let ca = CertificateAuthority::generate("example CA", Validity::days(30))?;
    install(
        &dir,
        &ca.issue_server(&["localhost", "127.0.0.1"], Validity::days(7))?,
    )?;
    let trust = TrustStore::from_pem(ca.cert_pem(), &[])?;
    let alice = ca.issue_client("alice", Validity::days(7))?;
    let mut client = (*client_config(
        &Identity::from_pem(&alice.cert_pem, &alice.key_pem)?,
        &trust,
        &TlsOptions::new(),
    )?)
    .clone();
    client.resumption = rustls::client::Resumption::disabled(); // show each full handshake
    let client = Arc::new(client);

    // The server: its certificate is reloaded from the files every 100 ms when they change.
    let identity = Arc::new(ReloadableIdentity::load(
        "echo",
        dir.join("server.pem"),
        dir.join("server.key"),
        Usage::Server,
        Some(trust.clone()),
    )?);
    tokio::spawn(identity.clone().poll(Duration::from_millis(100)));
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config_reloading_identity(
        identity.clone(),
        &trust,
        &TlsOptions::new(),
    )?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    println!(
        "mutual-TLS echo server on {addr}, certificates in {}",
        dir.display()
    );

    println!(
        "first connection:  certificate {}",
        talk(addr, client.clone()).await?
    );
    install(
        &dir,
        &ca.issue_server(&["localhost", "127.0.0.1"], Validity::days(7))?,
    )?;
    println!("certificate files replaced on disk");
    let before = identity.serial();
    let reloaded = async {
        while identity.serial() == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reloaded)
        .await
        .map_err(|_| {
            format!(
                "not reloaded within 10 s: {:?}",
                identity.stats().last_error
            )
        })?;
    println!(
        "second connection: certificate {}",
        talk(addr, client).await?
    );
    let stats = identity.stats();
    println!(
        "reloads: {} replaced, {} refused; expires in {} h",
        stats.replaced,
        stats.failed,
        identity
            .expires_in(std::time::SystemTime::now())
            .map_or(0, |d| d.as_secs() / 3600)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
