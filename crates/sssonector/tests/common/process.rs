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
