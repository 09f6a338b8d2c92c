//! Running `sssonector run` as a child with its own systemd notify socket, and the loopback
//! peers the end-to-end tests talk through.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child's resident set in KiB, from /proc.
pub fn rss_kib(process: &Process) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", process.0.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// How many file descriptors a child holds, from /proc.
pub fn open_fds(process: &Process) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", process.0.id())).map_or(0, Iterator::count)
}

/// Starts `sssonector run` with its own notify socket; returns the process and the socket.
pub fn start(dir: &Path, config: &str, name: &str) -> (Process, UnixDatagram) {
    let socket_path = dir.join(format!("{name}.notify"));
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .current_dir(dir)
        .args(["run", "--config", config])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (Process(child), socket)
}

/// A forward-mode server (`server.toml`, forwarding `echo` to `target`, then `server_extra`)
/// and a client (`client.toml`, certificate `user`, one `echo` forward on a loopback port, with
/// `client_extra` in its `[client]` table) started in `dir`, which must hold `pki(dir,
/// "localhost", &[user])`. Returns both processes and the client's READY notification.
pub fn forward_pair(
    dir: &Path,
    target: SocketAddr,
    server_extra: &str,
    user: &str,
    client_extra: &str,
) -> (Process, Process, String) {
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n{server_extra}"
        ),
    )
    .unwrap();
    let (server, server_notify) = start(dir, "server.toml", "server");
    let server_addr = address_after(&expect(&server_notify, "READY=1"), "serving on ");
    std::fs::write(
        dir.join("client.toml"),
        format!(
            "role = \"client\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/{user}.pem\"\nkey = \"pki/{user}.key\"\nca = \"pki/ca.pem\"\n\
             [client]\nservers = [\"{server_addr}\"]\nserver_name = \"localhost\"\n{client_extra}\
             [[forward]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let (client, client_notify) = start(dir, "client.toml", "client");
    let ready = expect(&client_notify, "READY=1");
    (server, client, ready)
}

/// The next notification that contains `wanted`.
pub fn expect(socket: &UnixDatagram, wanted: &str) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("waiting for {wanted:?}: {e}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains(wanted) {
            return message;
        }
    }
}

pub fn address_after(message: &str, marker: &str) -> SocketAddr {
    let rest = &message[message.find(marker).unwrap() + marker.len()..];
    rest.split(|c: char| c.is_whitespace() || c == ';' || c == ',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn echo_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = socket.read(&mut buf) {
                    if n == 0 || socket.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// One message through the forwarded port and back; `None` if the tunnel refused it.
pub fn through(local: SocketAddr, message: &[u8]) -> Option<Vec<u8>> {
    let mut socket = TcpStream::connect(local).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.write_all(message).ok()?;
    let mut back = vec![0u8; message.len()];
    socket.read_exact(&mut back).ok()?;
    Some(back)
}

/// Sends `signal` (`HUP`, `TERM`) to `process`.
pub fn signal(process: &Process, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal}");
}

/// SIGTERM, then waits for the exit.
pub fn stop(process: &mut Process) {
    signal(process, "TERM");
    let started = std::time::Instant::now();
    while process.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends bytes that are not TLS and waits for the server to hang up.
pub fn garbage(server: SocketAddr) {
    let mut socket = TcpStream::connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = socket.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let _ = socket.read_to_end(&mut Vec::new());
}
