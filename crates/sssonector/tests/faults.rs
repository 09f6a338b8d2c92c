//! Faults between two network namespaces, with a sha256-checked 256 MiB transfer through TUN
//! mode in flight: `kill -9` of the server and a restart, the veth link down for 4 s, 5%
//! random loss for 8 s, a 12 s partition, and a 20 s partition of an idle tunnel. After each
//! the data is intact, the client answers pings again within [`RECOVERY_BOUND`] of the heal,
//! neither process has died, and both hold as many file descriptors as before the fault.
//!
//! OpenVPN (`keepalive 1 5`, UDP) meets the same fault in the same namespaces afterwards and
//! its recovery time is printed beside ours (run with `--no-capture` to see them).
//!
//! Needs root, `/dev/net/tun`, `ip`, `ping`, `python3` and `nft`; without them it prints why
//! and passes. Without `openvpn` it runs sssonector alone and says so. CI has all of them.
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

mod common;

use common::netns::{Net, missing_prerequisite, must, tun_client_toml};
use common::pki;

use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How soon after a fault heals the client must answer pings through the tunnel again.
/// Reconnection waits at most 2 s of backoff, at most 6 s while the dial breaker is open
/// (5 s and 20% jitter), and one SYN retransmission (1 s), before a handshake of milliseconds.
const RECOVERY_BOUND: Duration = Duration::from_secs(12);

/// Bytes sent through the tunnel while a fault is injected.
const TRANSFER_MIB: u64 = 256;

/// The fault lands once the sink has received this much.
const FAULT_AFTER: u64 = 32 << 20;

/// How long a transfer may take, fault included, before the test gives up on it.
const TRANSFER_LIMIT: Duration = Duration::from_secs(240);

/// Receives on port 5001 of `argv[1]`, reporting every 16 MiB, then the total and its hash.
const SINK: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0; mark = 16 << 20
while True:
    b = c.recv(1 << 20)
    if not b: break
    h.update(b); n += len(b)
    if n >= mark:
        print("progress", n, flush=True); mark += 16 << 20
print("done", n, h.hexdigest(), flush=True)
c.close()
"#;

/// Sends `argv[2]` MiB of seeded random bytes to port 5001 of `argv[1]`, then their hash.
const SOURCE: &str = r#"
import hashlib, random, socket, sys
r = random.Random(7); h = hashlib.sha256(); total = int(sys.argv[2]) << 20; sent = 0
c = socket.create_connection((sys.argv[1], 5001), timeout=10); c.settimeout(None)
while sent < total:
    b = r.randbytes(1 << 20); c.sendall(b); h.update(b); sent += len(b)
c.shutdown(socket.SHUT_WR); c.recv(1)
print("sent", sent, h.hexdigest(), flush=True)
"#;

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillServer,
    LinkDown,
    Loss,
    Partition,
    IdlePartition,
}

impl Fault {
    fn in_flight(self) -> bool {
        !matches!(self, Fault::IdlePartition)
    }
}

/// The tunnel under test.
#[derive(Clone, Copy, Debug)]
enum Peer {
    Sssonector,
    OpenVpn,
}

impl Peer {
    /// The server's address inside the tunnel.
    fn addr(self) -> &'static str {
        match self {
            Peer::Sssonector => "10.77.0.1",
            Peer::OpenVpn => "10.88.0.1",
        }
    }

    fn start_server(self, net: &mut Net) -> usize {
        let (ns, config) = (net.server_ns.clone(), net.dir.join("server.toml"));
        match self {
            Peer::Sssonector => net.start(&ns, &config, "server.log"),
            Peer::OpenVpn => openvpn(net, &ns, "server.ovpn", "ovpn-server.log"),
        }
    }

    fn start_client(self, net: &mut Net) -> usize {
        let (ns, config) = (net.client_ns.clone(), net.dir.join("client.toml"));
        match self {
            Peer::Sssonector => net.start(&ns, &config, "client.log"),
            Peer::OpenVpn => openvpn(net, &ns, "client.ovpn", "ovpn-client.log"),
        }
    }

    fn logs(self, net: &Net) -> String {
        let (server, client) = match self {
            Peer::Sssonector => ("server.log", "client.log"),
            Peer::OpenVpn => ("ovpn-server.log", "ovpn-client.log"),
        };
        format!(
            "server log:\n{}\nclient log:\n{}",
            tail(&net.log(server)),
            tail(&net.log(client))
        )
    }
}

/// Starts `openvpn --config CONFIG` in `ns`; returns its index in `net.children`.
fn openvpn(net: &mut Net, ns: &str, config: &str, log: &str) -> usize {
    let dir = net.dir.to_str().unwrap().to_owned();
    net.spawn(ns, &["openvpn", "--cd", &dir, "--config", config], log)
}

/// The last 40 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Namespaces with a CA, and the configurations of both tunnels written into them.
/// Keepalive is the same on both: a ping a second, the peer dead after 5 s of silence.
fn setup(tag: &str) -> Net {
    let net = Net::new(tag);
    let dir = &net.dir;
    pki(dir, "192.168.77.1", &["client"]);
    std::fs::write(
        dir.join("server.toml"),
        "role = \"server\"\nmode = \"tun\"\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\ncrls = [\"pki/ca.crl\"]\n\
         [server]\nlisten = \"192.168.77.1:8443\"\n\
         [tun]\nname = \"sss-srv\"\naddress = \"10.77.0.1/24\"\npool = \"10.77.0.0/24\"\nmtu = 1400\n\
         [keepalive]\ninterval = \"1s\"\ntimeout = \"5s\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.toml"), tun_client_toml("5s")).unwrap();
    std::fs::write(
        dir.join("server.ovpn"),
        "dev ovpn-srv\ndev-type tun\nproto udp\nlocal 192.168.77.1\nport 1194\n\
         server 10.88.0.0 255.255.255.0\ntopology subnet\n\
         ca pki/ca.pem\ncert pki/server.pem\nkey pki/server.key\ndh none\n\
         keepalive 1 5\ndisable-dco\nverb 3\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ovpn"),
        "client\ndev ovpn-cli\ndev-type tun\nproto udp\nremote 192.168.77.1 1194\nnobind\n\
         persist-tun\npersist-key\nca pki/ca.pem\ncert pki/client.pem\nkey pki/client.key\n\
         keepalive 1 5\ndisable-dco\nverb 3\n",
    )
    .unwrap();
    net
}

/// Starts `args` in `ns` and sends each line of its standard output to the receiver; its
/// standard error goes to `dir/LOG`. The child is `net`'s, so it dies with the test.
fn lines<S: AsRef<str>>(net: &mut Net, ns: &str, args: &[S], log: &str) -> Receiver<String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut child = net
        .exec(ns, &args)
        .current_dir(&net.dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(net.dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    net.children.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line starting with `prefix`, skipping others, within `limit`.
fn expect(rx: &Receiver<String>, prefix: &str, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return Ok(line),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => return Err(format!("no {prefix:?} in {limit:?}")),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("the program ended before {prefix:?}"));
            }
        }
    }
}

/// A transfer from the client namespace to the server's tunnel address, under way.
struct Transfer {
    sink: Receiver<String>,
    source: Receiver<String>,
}

impl Transfer {
    fn start(net: &mut Net, addr: &str, mib: u64) -> Result<Self, String> {
        let (server_ns, client_ns) = (net.server_ns.clone(), net.client_ns.clone());
        let sink = lines(net, &server_ns, &["python3", "-c", SINK, addr], "sink.err");
        expect(&sink, "listening", Duration::from_secs(10))?;
        let source = lines(
            net,
            &client_ns,
            &["python3", "-c", SOURCE, addr, &mib.to_string()],
            "source.err",
        );
        Ok(Self { sink, source })
    }

    /// Waits until the sink has received at least `bytes`.
    fn reached(&self, bytes: u64) -> Result<(), String> {
        let deadline = Instant::now() + TRANSFER_LIMIT;
        loop {
            let line = expect(
                &self.sink,
                "",
                deadline.saturating_duration_since(Instant::now()),
            )?;
            let mut words = line.split_whitespace();
            match (
                words.next(),
                words.next().and_then(|n| n.parse::<u64>().ok()),
            ) {
                (Some("progress"), Some(n)) if n >= bytes => return Ok(()),
                (Some("done"), _) => return Err(format!("ended before {bytes} bytes: {line}")),
                _ => {}
            }
        }
    }

    /// Waits for both ends; the error says how they disagree.
    fn finish(self, mib: u64) -> Result<(), String> {
        let received = expect(&self.sink, "done", TRANSFER_LIMIT)?;
        let sent = expect(&self.source, "sent", Duration::from_secs(10))?;
        let bytes = (mib << 20).to_string();
        let (received, sent): (Vec<&str>, Vec<&str>) = (
            received.split_whitespace().collect(),
            sent.split_whitespace().collect(),
        );
        if sent.get(1) != Some(&bytes.as_str()) || received.get(1..) != sent.get(1..) {
            return Err(format!("sent {sent:?}, received {received:?}"));
        }
        Ok(())
    }
}

/// The nft table that drops packets on the client's veth: all of them, or `percent` of them
/// at random.
fn drop_rule(net: &Net, percent: Option<u8>) {
    let dev = &net.client_dev;
    let chance = percent.map_or(String::new(), |p| format!("numgen random mod 100 < {p} "));
    let rules = format!(
        "table inet sssfault {{\n\
           chain input {{ type filter hook input priority 0; iifname \"{dev}\" {chance}drop; }}\n\
           chain output {{ type filter hook output priority 0; oifname \"{dev}\" {chance}drop; }}\n\
         }}\n"
    );
    let file = net.dir.join("fault.nft");
    std::fs::write(&file, rules).unwrap();
    let out = net
        .exec(&net.client_ns, &["nft", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn heal_rule(net: &Net) {
    must(&[
        "ip",
        "netns",
        "exec",
        &net.client_ns,
        "nft",
        "delete",
        "table",
        "inet",
        "sssfault",
    ]);
}

/// Breaks the path the way `fault` says, and mends it; returns the server's index (a new
/// one after a restart) and the instant the path was whole again.
fn inject(net: &mut Net, peer: Peer, fault: Fault, server: usize) -> (usize, Instant) {
    let (client_ns, dev) = (net.client_ns.clone(), net.client_dev.clone());
    match fault {
        Fault::KillServer => {
            net.kill(server);
            std::thread::sleep(Duration::from_secs(1));
            let healed = Instant::now();
            (peer.start_server(net), healed)
        }
        Fault::LinkDown => {
            must(&["ip", "-n", &client_ns, "link", "set", &dev, "down"]);
            std::thread::sleep(Duration::from_secs(4));
            must(&["ip", "-n", &client_ns, "link", "set", &dev, "up"]);
            (server, Instant::now())
        }
        Fault::Loss | Fault::Partition | Fault::IdlePartition => {
            let (percent, hold) = match fault {
                Fault::Loss => (Some(5), 8),
                Fault::Partition => (None, 12),
                _ => (None, 20),
            };
            drop_rule(net, percent);
            std::thread::sleep(Duration::from_secs(hold));
            heal_rule(net);
            (server, Instant::now())
        }
    }
}

/// How long after `healed` the client's first ping through the tunnel was answered, pinging
/// every 100 ms from now on; `None` if none was within 60 s.
fn first_reply(net: &mut Net, addr: &str, healed: Instant) -> Option<Duration> {
    let client_ns = net.client_ns.clone();
    let pings = lines(
        net,
        &client_ns,
        &["ping", "-n", "-i", "0.1", "-W", "1", addr],
        "ping.err",
    );
    let index = net.children.len() - 1;
    let answered = expect(&pings, "64 bytes from", Duration::from_secs(60)).ok();
    let at = healed.elapsed();
    net.kill(index);
    answered.map(|_| at)
}

/// Polls until `index` holds `baseline` descriptors again, for up to 10 s; the last count.
fn settle_fds(net: &Net, index: usize, baseline: usize) -> usize {
    let started = Instant::now();
    loop {
        let now = net.open_fds(index);
        if now == baseline || started.elapsed() > Duration::from_secs(10) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One fault against one tunnel: its time to recover, or what went wrong.
fn exercise(net: &mut Net, peer: Peer, fault: Fault) -> Result<Duration, String> {
    let mut server = peer.start_server(net);
    let client = peer.start_client(net);
    let client_ns = net.client_ns.clone();
    if net
        .ping_within(&client_ns, peer.addr(), Duration::from_secs(20))
        .is_none()
    {
        return Err("the tunnel never came up".into());
    }
    // Let the session settle (keepalives, the state file) before counting descriptors.
    std::thread::sleep(Duration::from_secs(1));
    let (server_fds, client_fds) = (net.open_fds(server), net.open_fds(client));

    let transfer = if fault.in_flight() {
        let transfer = Transfer::start(net, peer.addr(), TRANSFER_MIB)?;
        transfer.reached(FAULT_AFTER)?;
        Some(transfer)
    } else {
        None
    };
    let (restarted, healed) = inject(net, peer, fault, server);
    server = restarted;
    let recovered = first_reply(net, peer.addr(), healed)
        .ok_or_else(|| "no ping answered within 60 s of the heal".to_owned())?;
    match transfer {
        Some(transfer) => transfer.finish(TRANSFER_MIB)?,
        // Data sent after an idle fault must arrive whole too.
        None => Transfer::start(net, peer.addr(), 32)?.finish(32)?,
    }
    if !net.running(server) || !net.running(client) {
        return Err("a process died".into());
    }
    if let Peer::Sssonector = peer {
        let (server_now, client_now) = (
            settle_fds(net, server, server_fds),
            settle_fds(net, client, client_fds),
        );
        if (server_now, client_now) != (server_fds, client_fds) {
            return Err(format!(
                "descriptors: server {server_fds} before, {server_now} after; \
                 client {client_fds} before, {client_now} after"
            ));
        }
    }
    net.kill(server);
    net.kill(client);
    Ok(recovered)
}

fn run(tag: &str, fault: Fault) {
    if let Some(reason) = missing_prerequisite(&["ip", "ping", "python3", "nft"]) {
        println!(
            "skipped: {reason}; this test needs root, /dev/net/tun, ip, ping, python3 and nft"
        );
        return;
    }
    let mut net = setup(tag);
    let ours = exercise(&mut net, Peer::Sssonector, fault);
    let ours = match ours {
        Ok(took) => took,
        Err(why) => panic!("{fault:?}: {why}\n{}", Peer::Sssonector.logs(&net)),
    };
    assert!(
        ours <= RECOVERY_BOUND,
        "{fault:?}: recovered {ours:?} after the heal, more than {RECOVERY_BOUND:?}\n{}",
        Peer::Sssonector.logs(&net)
    );
    let theirs = if missing_prerequisite(&["openvpn"]).is_some() {
        "not installed".to_owned()
    } else {
        match exercise(&mut net, Peer::OpenVpn, fault) {
            Ok(took) => format!("{:.1} s", took.as_secs_f64()),
            Err(why) => format!("failed: {why}\n{}", Peer::OpenVpn.logs(&net)),
        }
    };
    println!(
        "fault {fault:?}: sssonector recovered {:.1} s after the heal; OpenVPN {theirs}",
        ours.as_secs_f64()
    );
}

#[test]
fn kill_the_server_and_restart_it() {
    run("k", Fault::KillServer);
}

#[test]
fn link_down_for_four_seconds() {
    run("l", Fault::LinkDown);
}

#[test]
fn five_percent_loss() {
    run("r", Fault::Loss);
}

#[test]
fn partition_during_a_transfer() {
    run("p", Fault::Partition);
}

#[test]
fn idle_partition() {
    run("i", Fault::IdlePartition);
}
