//! `sssonector demo`: the whole product on loopback, with nothing configured and no root.
//!
//! It makes a CA and certificates in a temporary directory, writes a server and a client
//! configuration in port-forward mode, starts both (the same code as `run`), starts a local
//! echo target, pushes data through the tunnel, and prints throughput and connection latency
//! beside the same measured straight to the echo target.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sssonector_certs::{CertificateAuthority, Validity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config;
use crate::error::Error;

/// An I/O failure talking to `addr`.
fn io(addr: SocketAddr) -> impl Fn(std::io::Error) -> Error {
    move |error| Error::DemoIo { addr, error }
}

/// What the demo pushes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DemoOptions {
    /// Mebibytes per stream, each way.
    pub(crate) mib: usize,
    /// Concurrent streams in the second throughput run.
    pub(crate) streams: usize,
    /// Connections timed for latency.
    pub(crate) connections: usize,
}

/// Removes the temporary directory, however the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::file(path, "write", e))
}

fn make_pki(dir: &Path) -> Result<(), Error> {
    // Valid well past the 7-day readiness warning, so the demo server reports ready.
    let ca = CertificateAuthority::generate("sssonector demo CA", Validity::days(30))
        .map_err(|e| Error::cert("demo", e))?;
    let server = ca
        .issue_server(&["localhost", "127.0.0.1"], Validity::days(30))
        .map_err(|e| Error::cert("demo", e))?;
    let client = ca
        .issue_client("demo-client", Validity::days(30))
        .map_err(|e| Error::cert("demo", e))?;
    write(&dir.join("ca.pem"), ca.cert_pem())?;
    write(&dir.join("server.pem"), &server.cert_pem)?;
    write(&dir.join("server.key"), &server.key_pem)?;
    write(&dir.join("client.pem"), &client.cert_pem)?;
    write(&dir.join("client.key"), &client.key_pem)?;
    Ok(())
}

async fn echo_target() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Connect, send one byte, read it back: the time a new forwarded connection costs.
async fn connect_latency(addr: SocketAddr, count: usize) -> Result<Duration, Error> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let mut socket = TcpStream::connect(addr).await.map_err(io(addr))?;
        socket.set_nodelay(true).map_err(io(addr))?;
        socket.write_all(b"x").await.map_err(io(addr))?;
        let mut byte = [0u8; 1];
        socket.read_exact(&mut byte).await.map_err(io(addr))?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// `streams` connections each writing `bytes` and reading them back; returns the time taken.
async fn push(addr: SocketAddr, streams: usize, bytes: usize) -> Result<Duration, Error> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|i| {
            tokio::spawn(async move {
                let socket = TcpStream::connect(addr).await.map_err(io(addr))?;
                socket.set_nodelay(true).map_err(io(addr))?;
                let (mut r, mut w) = socket.into_split();
                let writer = tokio::spawn(async move {
                    #[allow(clippy::cast_possible_truncation, reason = "below 251")]
                    let chunk: Vec<u8> = (0..256 * 1024)
                        .map(|j| ((i * 31 + j) % 251) as u8)
                        .collect();
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        w.write_all(&chunk[..n]).await?;
                        left -= n;
                    }
                    w.shutdown().await
                });
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0;
                loop {
                    let n = r.read(&mut buf).await.map_err(io(addr))?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                writer
                    .await
                    .map_err(|e| Error::Demo(format!("stream {i}: {e}")))?
                    .map_err(io(addr))?;
                if got == bytes {
                    Ok(())
                } else {
                    Err(Error::Demo(format!(
                        "stream {i}: {got} of {bytes} bytes came back"
                    )))
                }
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| Error::Demo(format!("a stream's task: {e}")))??;
    }
    Ok(started.elapsed())
}

fn gbits(bytes: usize, took: Duration) -> f64 {
    // Both directions moved `bytes`.
    (bytes as f64 * 8.0 * 2.0) / took.as_secs_f64() / 1e9
}

/// Runs the demo; prints as it goes.
#[allow(
    clippy::print_stdout,
    reason = "the demo tells the user what it does as it goes"
)]
pub(crate) async fn demo(options: DemoOptions) -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("sssonector-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, "create", e))?;
    let dir = TempDir(dir);
    make_pki(&dir.0)?;
    println!(
        "1. certificates: a CA, a server and a client certificate in {}",
        dir.0.display()
    );

    let target = echo_target()
        .await
        .map_err(|e| Error::Demo(format!("cannot start the echo target: {e}")))?;
    write(
        &dir.0.join("server.toml"),
        &format!(
            "role = \"server\"\nmode = \"forward\"\n\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nca = \"ca.pem\"\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\nconnections_per_second = 0\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n"
        ),
    )?;
    let server_config = load(&dir.0.join("server.toml"))?;
    let server = crate::run::start(&server_config).await?;
    let server_addr = server
        .listen
        .ok_or_else(|| Error::Demo("the server has no address".into()))?;
    println!("2. server: listening on {server_addr} (mutual TLS 1.3), rule \"echo\" → {target}");
    let admin = server
        .admin
        .ok_or_else(|| Error::Demo("the server has no admin endpoint".into()))?;
    println!(
        "   admin endpoint: http://{admin}/ (/metrics, /healthz, /readyz, /status; try `sssonector status --admin {admin}` while it runs)"
    );

    write(
        &dir.0.join("client.toml"),
        &format!(
            "role = \"client\"\nmode = \"forward\"\n\n[tls]\ncert = \"client.pem\"\nkey = \"client.key\"\nca = \"ca.pem\"\n\n\
             [client]\nservers = [\"{server_addr}\"]\nserver_name = \"localhost\"\n\n\
             [[forward]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n"
        ),
    )?;
    let client_config = load(&dir.0.join("client.toml"))?;
    let connected = Instant::now();
    let client = crate::run::start(&client_config).await?;
    let local = client
        .forwards
        .first()
        .map(|(_, a)| *a)
        .ok_or_else(|| Error::Demo("the client has no forwarding listener".into()))?;
    let mut current = client
        .current
        .first()
        .cloned()
        .ok_or_else(|| Error::Demo("the client has no link".into()))?;
    tokio::time::timeout(Duration::from_secs(10), current.wait_for(Option::is_some))
        .await
        .map_err(|_| Error::Demo("the client did not connect within 10 s".into()))?
        .map_err(|e| Error::Demo(e.to_string()))?;
    println!(
        "3. client: started and connected in {:.1} ms (TCP, TLS, hello); local port {local} is forwarded to \"echo\"",
        connected.elapsed().as_secs_f64() * 1e3
    );

    let direct = connect_latency(target, options.connections).await?;
    let tunnel = connect_latency(local, options.connections).await?;
    println!(
        "4. new connection + first byte echoed, median of {}: through the tunnel {:.3} ms, direct {:.3} ms (+{:.3} ms)",
        options.connections,
        tunnel.as_secs_f64() * 1e3,
        direct.as_secs_f64() * 1e3,
        (tunnel.as_secs_f64() - direct.as_secs_f64()) * 1e3
    );

    let bytes = options.mib << 20;
    for streams in [1, options.streams.max(1)] {
        let through = push(local, streams, bytes).await?;
        let straight = push(target, streams, bytes).await?;
        println!(
            "5. {streams} stream{} × {} MiB each way (both directions counted): through the tunnel {:.2} Gbit/s, direct {:.2} Gbit/s",
            if streams == 1 { "" } else { "s" },
            options.mib,
            gbits(bytes * streams, through),
            gbits(bytes * streams, straight),
        );
    }

    let status = crate::admin::fetch_status(&admin.to_string(), None).await?;
    let sessions: Vec<String> = status
        .sessions
        .iter()
        .map(|s| {
            format!(
                "{} from {} ({} in, {} out)",
                s.identity.name, s.remote, s.bytes_in, s.bytes_out
            )
        })
        .collect();
    println!(
        "6. server /status: {}, {} session{}: {}",
        if status.ready { "ready" } else { "NOT READY" },
        sessions.len(),
        if sessions.len() == 1 { "" } else { "s" },
        sessions.join("; ")
    );

    client.shutdown().await;
    server.shutdown().await;
    println!("7. done: every byte came back; client and server said goodbye.");
    Ok(())
}

fn load(path: &Path) -> Result<config::Config, Error> {
    Ok(config::load_checked(path, std::iter::empty()).map(|(config, _)| config)?)
}
