//! A template: the tunnel as a library. A port-forwarding server and client over mutual TLS in
//! one process, built from `sssonector-tunnel`'s pieces: the accept stack and `Server` on one
//! side, `Endpoint` (the dial stack) and `Reconnect` on the other, `forward::listen` and
//! `Targets` for the rules, and a `BufPool` for the splice buffers.
//!
//! It generates certificates, starts an echo service as the rule's target, forwards a local
//! port to it through the tunnel, sends a few messages (one connection half-closes and still
//! gets its answer), and prints the link's counters. Run it with
//! `cargo run -p sssonector-examples --example forward_tunnel`.

#![allow(
    clippy::print_stdout,
    reason = "an example speaks to the person running it"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use sssonector_bufpool::BufPool;
use sssonector_certs::{CertificateAuthority, Identity, TlsOptions, TrustStore, Validity};
use sssonector_core::BoxError;
use sssonector_tunnel::client::{Endpoint, Reconnect};
use sssonector_tunnel::forward::{self, Targets};
use sssonector_tunnel::proto::{ALPN, Mode, Role, Session, SessionConfig};
use sssonector_tunnel::server::{AcceptOptions, Server, accept_stack};
use sssonector_tunnel::{Link, LinkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Certificates: a CA, the server's and one client's. (`sssonector certs` writes the same
    // to files; `Identity::load` and `TrustStore::load` read them.)
    let ca = CertificateAuthority::generate("example CA", Validity::days(1))?;
    let server_cert = ca.issue_server(&["localhost"], Validity::days(1))?;
    let client_cert = ca.issue_client("alice", Validity::days(1))?;
    let trust = TrustStore::from_pem(ca.cert_pem(), &[])?;
    let options = TlsOptions::new().with_alpn([ALPN]);
    let server_tls = sssonector_certs::server_config(
        &Identity::from_pem(&server_cert.cert_pem, &server_cert.key_pem)?,
        &trust,
        &options,
    )?;
    let client_tls = sssonector_certs::client_config(
        &Identity::from_pem(&client_cert.cert_pem, &client_cert.key_pem)?,
        &trust,
        &options,
    )?;
    let pool = BufPool::builder().budget(32 << 20).build()?;

    // The rule's target: an echo service that answers after the client half-closes.
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                if socket.read_to_end(&mut request).await.is_ok() {
                    let _ = socket.write_all(&request.to_ascii_uppercase()).await;
                }
            });
        }
    });

    // Server: accept stack (IP filter → per-IP rate limit → handshake timeout → TLS), then a
    // session per client whose streams are connected to the rule "echo".
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server_addr = listener.local_addr()?;
    let server = Server::new(10);
    let stack = accept_stack(server_tls, &AcceptOptions::default())?;
    let targets = Targets::new([("echo".to_owned(), echo_addr.to_string())], pool.clone());
    let serving = server.clone();
    tokio::spawn(async move {
        let tracker = serving.clone();
        serving
            .serve(listener, stack, move |handshaken| {
                let (targets, tracker) = (targets.clone(), tracker.clone());
                async move {
                    println!(
                        "server: {} connected from {}",
                        handshaken.identity, handshaken.peer
                    );
                    let session = Session::server(
                        SessionConfig::new(Role::Server, Mode::Forward),
                        Instant::now(),
                        Box::new(|_| Ok(Vec::new())),
                    );
                    let config = LinkConfig::default();
                    if let Ok((link, _, incoming)) =
                        Link::establish(handshaken.tls, session, config).await
                    {
                        tracker.track(&link, &handshaken.identity.serial);
                        tokio::spawn(forward::serve_link(incoming, targets));
                        link.closed().await;
                    }
                }
            })
            .await;
    });

    // Client: dial stack per server (retry → breaker → timeout → TLS), reconnecting with
    // backoff; a local port forwarded to the rule "echo".
    let endpoint = Endpoint::new(
        &server_addr.to_string(),
        ServerName::try_from("localhost")?,
        client_tls,
        Duration::from_secs(5),
    )?;
    let reconnect = Arc::new(Reconnect::new(vec![endpoint], LinkConfig::default()));
    let local = TcpListener::bind("127.0.0.1:0").await?;
    let local_addr = local.local_addr()?;
    tokio::spawn(forward::listen(
        local,
        "echo".into(),
        vec![reconnect.current()],
        pool.clone(),
        Duration::from_secs(10),
    ));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let runner = Arc::clone(&reconnect);
    let client = tokio::spawn(async move {
        runner
            .run(
                || {
                    Session::client(
                        SessionConfig::new(Role::Client, Mode::Forward),
                        Instant::now(),
                        Vec::new(),
                    )
                },
                |link, _, _incoming| async move {
                    link.closed().await;
                },
                stop_rx,
            )
            .await;
    });
    println!("client: {local_addr} is forwarded through {server_addr} to {echo_addr}");

    // Use it: each connection sends, half-closes, and reads the answer.
    for message in ["hello", "through", "the tunnel"] {
        let mut socket = TcpStream::connect(local_addr).await?;
        socket.write_all(message.as_bytes()).await?;
        socket.shutdown().await?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await?;
        println!("sent {message:?}, got {answer:?}");
        assert_eq!(answer, message.to_uppercase());
    }
    let link = reconnect.current().borrow().clone().ok_or("no link")?;
    let stats = link.stats();
    println!(
        "client link: {} bytes out in {} writes, {} bytes in; server: {:?}",
        stats.bytes_out,
        stats.writes,
        stats.bytes_in,
        server.stats()
    );

    // Shut down: the client says goodbye; the server drains.
    stop.send_replace(true);
    client.await?;
    let left = server.shutdown(Duration::from_secs(5)).await;
    println!("done; {left} client(s) left at shutdown");
    Ok(())
}
