//! Many idle forwarded connections at once: the resident set each one costs each process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use super::forward::{self, Forwarder, Place, Setup};
use super::procs::{Children, free_port, rss_kib, run, wait_listening};

/// A file-descriptor limit for every process in the test: above the 2 per connection a
/// forwarder needs, within the machine's hard limit.
const NOFILE: &str = "--nofile=20000:20000";

/// An echo target that holds any number of connections on one thread (Python's selectors).
const ECHO: &str = r#"
import selectors, socket, sys
sel = selectors.DefaultSelector()
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(4096); srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is srv:
            try:
                c, _ = srv.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            except OSError:
                pass
        else:
            c = key.fileobj
            try:
                data = c.recv(4096)
            except OSError:
                data = b""
            if data:
                try: c.send(data)
                except OSError: pass
            else:
                sel.unregister(c); c.close()
"#;

/// What one contender held and cost.
pub(crate) struct Held {
    pub(crate) held: usize,
    /// KiB per connection: client side, server side.
    pub(crate) per_connection: (f64, f64),
}

/// Opens up to `count` connections through `forwarder`, each echoing one byte, and measures
/// each side's resident-set growth per connection held.
pub(crate) fn hold(forwarder: Forwarder, setup: &Setup, count: usize) -> Result<Held, String> {
    // This process holds the client ends.
    run(&["prlimit", "--pid", &std::process::id().to_string(), NOFILE])?;
    let mut target = Children::default();
    let target_port = free_port()?;
    target.spawn(
        Command::new("prlimit").args([NOFILE, "python3", "-c", ECHO, &target_port.to_string()]),
        None,
    )?;
    wait_listening(None, target_port)?;
    let running = forward::start(
        forwarder,
        setup,
        &Place::loopback(),
        target_port,
        &["prlimit", NOFILE],
    )
    .map_err(|e| format!("{e}{}", forward::logs(&setup.dir)))?;
    let connect = || -> Result<TcpStream, String> {
        let mut s = TcpStream::connect(("127.0.0.1", running.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"x").map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok(s)
    };
    // One first, so that what a process sets up once is not counted per connection.
    let first = connect()?;
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<u64> = running
        .pids
        .iter()
        .map(|&p| rss_kib(p))
        .collect::<Result<_, _>>()?;
    let mut open = Vec::with_capacity(count);
    let started = Instant::now();
    while open.len() < count && started.elapsed() < Duration::from_secs(180) {
        match connect() {
            Ok(s) => open.push(s),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<u64> = running
        .pids
        .iter()
        .map(|&p| rss_kib(p))
        .collect::<Result<_, _>>()?;
    let held = open.len();
    drop(open);
    drop(first);
    let per = |i: usize| after[i].saturating_sub(before[i]) as f64 / held.max(1) as f64;
    Ok(Held {
        held,
        per_connection: (per(0), per(1)),
    })
}
