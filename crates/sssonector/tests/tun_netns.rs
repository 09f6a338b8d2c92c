//! TUN mode end to end: a server and a client, each in its own network namespace, joined by a
//! veth pair. Ping both ways (IPv4 and IPv6), 100 MiB through the tunnel with matching
//! sha256, and `kill -9` of the server: after a restart the client reconnects and traffic
//! resumes within 10 s. Two clients route through the server, and an access policy limits
//! client-to-client traffic until a reload grants it. Segmentation-offload super-packets cross
//! whole when both sides have offload, and are split for a client without it.
//!
//! Needs root, `/dev/net/tun`, `ip` (iproute2), `ping` and `python3` (for the transfer's two
//! ends); without them it prints why and passes. CI runs as root.
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

mod common;

use common::netns::{Net, first_line, missing_prerequisite, must, sh, tun_client_toml};
use common::pki;

use std::process::Stdio;
use std::time::{Duration, Instant};

const SINK: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"#;

const SOURCE: &str = r#"
import hashlib, random, socket, sys, time
r = random.Random(7); h = hashlib.sha256(); total = 100 << 20; sent = 0
c = socket.create_connection((sys.argv[1], 5001))
started = time.time()
while sent < total:
    b = r.randbytes(1 << 20); c.sendall(b); h.update(b); sent += len(b)
c.shutdown(socket.SHUT_WR); c.recv(1); took = time.time() - started
print(sent, h.hexdigest(), "%.2f" % (sent * 8 / took / 1e6), flush=True)
"#;

const ECHO: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5002)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
while True:
    b = c.recv(4096)
    if not b: break
    c.sendall(b)
"#;

/// Connects, echoes once, waits for the go file (the outage happens meanwhile), echoes again.
const LONG_LIVED: &str = r#"
import os, socket, sys, time
c = socket.create_connection((sys.argv[1], 5002), timeout=20)
c.sendall(b"before"); assert c.recv(16) == b"before"
print("before ok", flush=True)
deadline = time.time() + 60
while not os.path.exists(sys.argv[2]) and time.time() < deadline:
    time.sleep(0.05)
c.sendall(b"after"); print("after ok" if c.recv(16) == b"after" else "after wrong", flush=True)
"#;

/// 100 MiB from the client namespace to `addr` in the server namespace; returns the
/// sender's Mbit/s and the sha256 both ends agreed on.
fn transfer(net: &Net, addr: &str) -> (f64, String) {
    transfer_between(net, &net.client_ns, &net.server_ns, addr)
}

/// 100 MiB from namespace `from` to `addr` in namespace `to`, as [`transfer`].
fn transfer_between(net: &Net, from: &str, to: &str, addr: &str) -> (f64, String) {
    let mut sink = net
        .exec(to, &["python3", "-c", SINK, addr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut sink), "listening");
    let source = net
        .exec(from, &["python3", "-c", SOURCE, addr])
        .output()
        .unwrap();
    let sent = String::from_utf8_lossy(&source.stdout).to_string();
    let received = String::from_utf8_lossy(&sink.wait_with_output().unwrap().stdout).to_string();
    let sent: Vec<&str> = sent.split_whitespace().collect();
    let received: Vec<&str> = received.split_whitespace().collect();
    assert_eq!(
        sent.len(),
        3,
        "source to {addr}: {sent:?} {}",
        String::from_utf8_lossy(&source.stderr)
    );
    assert_eq!(received.len(), 2, "sink at {addr}: {received:?}");
    assert_eq!(sent[0], (100u64 << 20).to_string());
    assert_eq!(received[0], sent[0], "bytes received at {addr}");
    assert_eq!(received[1], sent[1], "sha256 at {addr}");
    (sent[2].parse().unwrap(), sent[1].to_owned())
}

/// Namespaces `tag` with certificates and a TUN server configuration (IPv4 and IPv6 pools,
/// offload on by default); `None`, with the reason printed, where the test cannot run.
fn server_setup(tag: &str) -> Option<(Net, std::path::PathBuf)> {
    if let Some(reason) = missing_prerequisite(&["ip", "ping", "python3"]) {
        println!("skipped: {reason}; this test needs root, /dev/net/tun, ip, ping and python3");
        return None;
    }
    let net = Net::new(tag);
    let dir = net.dir.clone();
    pki(&dir, "192.168.77.1", &["client"]);
    let server_config = dir.join("server.toml");
    std::fs::write(
        &server_config,
        "role = \"server\"\nmode = \"tun\"\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\ncrls = [\"pki/ca.crl\"]\n\
         [server]\nlisten = \"192.168.77.1:8443\"\n\
         [tun]\nname = \"sss-srv\"\naddress = \"10.77.0.1/24\"\npool = \"10.77.0.0/24\"\n\
         address6 = \"fd77::1/64\"\npool6 = \"fd77::/64\"\nmtu = 1400\n\
         [keepalive]\ninterval = \"1s\"\ntimeout = \"3s\"\n",
    )
    .unwrap();
    Some((net, server_config))
}

#[test]
fn tun_mode_between_two_namespaces() {
    let Some((mut net, server_config)) = server_setup("a") else {
        return;
    };
    let dir = net.dir.clone();
    let client_config = dir.join("client.toml");
    std::fs::write(&client_config, tun_client_toml("3s")).unwrap();
    let (server_ns, client_ns) = (net.server_ns.clone(), net.client_ns.clone());
    let server = net.start(&server_ns, &server_config, "server.log");
    net.start(&client_ns, &client_config, "client.log");

    // Ping both ways, IPv4 and IPv6. The client's addresses are the first of each pool.
    let first = net.ping_within(&client_ns, "10.77.0.1", Duration::from_secs(15));
    assert!(
        first.is_some(),
        "client → server ping\nserver:\n{}\nclient:\n{}",
        net.log("server.log"),
        net.log("client.log")
    );
    assert!(net.ping(&server_ns, "10.77.0.2"), "server → client ping");
    let v6 = net.ping_within(&client_ns, "fd77::1", Duration::from_secs(5));
    assert!(v6.is_some(), "client → server ping over IPv6");
    assert!(
        net.ping(&server_ns, "fd77::2"),
        "server → client ping over IPv6"
    );

    // 100 MiB from the client to the server through the tunnel; both ends hash. The same
    // straight over the veth pair, in the same run, is the baseline.
    let (tunnel_mbps, sha) = transfer(&net, "10.77.0.1");
    let (direct_mbps, _) = transfer(&net, "192.168.77.1");
    println!(
        "100 MiB through the tunnel at {tunnel_mbps:.0} Mbit/s; straight over veth {direct_mbps:.0} Mbit/s ({:.2}×); sha256 {sha}",
        tunnel_mbps / direct_mbps
    );

    // A TCP connection inside the tunnel, open across the outage below.
    let mut echo = net
        .exec(&server_ns, &["python3", "-c", ECHO, "10.77.0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut echo), "listening");
    let go = dir.join("go");
    let mut long_lived = net
        .exec(
            &client_ns,
            &[
                "python3",
                "-c",
                LONG_LIVED,
                "10.77.0.1",
                go.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut long_lived), "before ok");

    // kill -9 the server, start it again: the client reconnects and traffic resumes.
    let child = &mut net.children[server];
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let restarted = Instant::now();
    net.start(&server_ns, &server_config, "server2.log");
    let resumed = net.ping_within(&client_ns, "10.77.0.1", Duration::from_secs(10));
    assert!(
        resumed.is_some(),
        "no traffic within 10 s of the restart\nserver:\n{}\nclient:\n{}",
        net.log("server2.log"),
        net.log("client.log")
    );
    assert!(
        net.ping(&server_ns, "10.77.0.2"),
        "the client kept its address"
    );
    println!(
        "traffic resumed {:.2} s after the server restarted",
        restarted.elapsed().as_secs_f64()
    );
    // The connection opened before the outage carries data again.
    std::fs::write(&go, b"").unwrap();
    let out = long_lived.wait_with_output().unwrap();
    let _ = echo.kill();
    let _ = echo.wait();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "after ok",
        "a TCP connection inside the tunnel did not survive the server restart"
    );
    println!("a TCP connection inside the tunnel survived the restart");
    for log in ["server.log", "client.log"] {
        for line in net
            .log(log)
            .lines()
            .filter(|l| l.contains("TUN device created"))
        {
            println!("{log}: {line}");
        }
    }
}

#[test]
fn the_server_routes_between_two_clients() {
    if let Some(reason) = missing_prerequisite(&["ip", "ping", "python3"]) {
        println!("skipped: {reason}; this test needs root, /dev/net/tun, ip, ping and python3");
        return;
    }
    let mut net = Net::new("b");
    let second = net.add_client(78);
    let dir = net.dir.clone();
    pki(&dir, "192.168.77.1,192.168.78.1", &["alice", "bob"]);
    std::fs::write(
        dir.join("server.toml"),
        "role = \"server\"\nmode = \"tun\"\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
         [server]\nlisten = \"0.0.0.0:8443\"\n\
         [tun]\nname = \"sss-srv\"\naddress = \"10.77.0.1/24\"\npool = \"10.77.0.0/24\"\n\
         [[tun.clients]]\nidentity = \"bob\"\naddress = \"10.77.0.50\"\n",
    )
    .unwrap();
    for (name, server) in [("alice", "192.168.77.1"), ("bob", "192.168.78.1")] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "role = \"client\"\nmode = \"tun\"\n\
                 [tls]\ncert = \"pki/{name}.pem\"\nkey = \"pki/{name}.key\"\nca = \"pki/ca.pem\"\n\
                 [client]\nservers = [\"{server}:8443\"]\n\
                 [tun]\nname = \"sss-{name}\"\n"
            ),
        )
        .unwrap();
    }
    let (server_ns, alice_ns) = (net.server_ns.clone(), net.client_ns.clone());
    net.start(&server_ns, &dir.join("server.toml"), "server.log");
    net.start(&alice_ns, &dir.join("alice.toml"), "alice.log");
    net.start(&second, &dir.join("bob.toml"), "bob.log");
    // alice gets the first free address, bob his fixed one.
    for (ns, addr) in [(&alice_ns, "10.77.0.1"), (&second, "10.77.0.1")] {
        assert!(
            net.ping_within(ns, addr, Duration::from_secs(15)).is_some(),
            "{ns} → server\n{}\n{}\n{}",
            net.log("server.log"),
            net.log("alice.log"),
            net.log("bob.log")
        );
    }
    // Client to client through the server's router, both ways.
    assert!(
        net.ping(&alice_ns, "10.77.0.50"),
        "alice → bob\n{}",
        net.log("server.log")
    );
    assert!(
        net.ping(&second, "10.77.0.2"),
        "bob → alice\n{}",
        net.log("server.log")
    );
    println!("alice (10.77.0.2) and bob (10.77.0.50, fixed) reach each other through the server");
    // Bulk traffic between them: both have offload, so the server routes alice's
    // super-packets to bob whole (and bob's acknowledgements back), intact.
    let (rate, _) = transfer_between(&net, &alice_ns, &second, "10.77.0.50");
    println!("alice → bob: 100 MiB at {rate:.0} Mbit/s through the server, sha256 equal");
}

/// A TUN server's policy: client-to-client traffic only where granted, and a reloaded policy
/// that grants it applies to the live sessions at once.
#[test]
fn the_policy_limits_tun_traffic_and_applies_live() {
    if let Some(reason) = missing_prerequisite(&["ip", "ping", "python3"]) {
        println!("skipped: {reason}; this test needs root, /dev/net/tun, ip, ping and python3");
        return;
    }
    let mut net = Net::new("p");
    let second = net.add_client(79);
    let dir = net.dir.clone();
    pki(&dir, "192.168.77.1,192.168.79.1", &["alice", "bob"]);
    let server_toml = |alice_to_clients: bool| {
        format!(
            "role = \"server\"\nmode = \"tun\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"0.0.0.0:8443\"\n\
             [tun]\nname = \"sss-srv\"\naddress = \"10.79.0.1/24\"\npool = \"10.79.0.0/24\"\n\
             [[tun.clients]]\nidentity = \"alice\"\naddress = \"10.79.0.10\"\n\
             [[tun.clients]]\nidentity = \"bob\"\naddress = \"10.79.0.20\"\n\
             [[policy.rule]]\nname = \"alice\"\nmatch = {{ cn = \"alice\" }}\nnetworks = [\"10.79.0.1/32\"]\nclient_to_client = {alice_to_clients}\n\
             [[policy.rule]]\nname = \"bob\"\nmatch = {{ cn = \"bob\" }}\nnetworks = [\"10.79.0.1/32\"]\nclient_to_client = true\n"
        )
    };
    std::fs::write(dir.join("server.toml"), server_toml(false)).unwrap();
    for (name, server) in [("alice", "192.168.77.1"), ("bob", "192.168.79.1")] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "role = \"client\"\nmode = \"tun\"\n\
                 [tls]\ncert = \"pki/{name}.pem\"\nkey = \"pki/{name}.key\"\nca = \"pki/ca.pem\"\n\
                 [client]\nservers = [\"{server}:8443\"]\n\
                 [tun]\nname = \"sss-{name}\"\n"
            ),
        )
        .unwrap();
    }
    let (server_ns, alice_ns) = (net.server_ns.clone(), net.client_ns.clone());
    let server = net.start(&server_ns, &dir.join("server.toml"), "server.log");
    net.start(&alice_ns, &dir.join("alice.toml"), "alice.log");
    net.start(&second, &dir.join("bob.toml"), "bob.log");
    for ns in [&alice_ns, &second] {
        assert!(
            net.ping_within(ns, "10.79.0.1", Duration::from_secs(15))
                .is_some(),
            "{ns} → server (granted)\n{}",
            net.log("server.log")
        );
    }
    // alice may not reach other clients; bob may, but alice's answers are hers to send.
    assert!(
        !net.ping(&alice_ns, "10.79.0.20"),
        "alice reached bob without the grant"
    );
    assert!(
        !net.ping(&second, "10.79.0.10"),
        "alice answered bob without the grant"
    );
    assert!(
        net.log("server.log")
            .contains("denied by the access policy"),
        "{}",
        net.log("server.log")
    );

    // Grant it and reload: the live sessions carry it at once.
    std::fs::write(dir.join("server.toml"), server_toml(true)).unwrap();
    let pid = net.children[server].id().to_string();
    assert!(sh(&["kill", "-HUP", &pid]));
    assert!(
        net.ping_within(&alice_ns, "10.79.0.20", Duration::from_secs(10))
            .is_some(),
        "alice → bob after the grant\n{}",
        net.log("server.log")
    );
    assert!(
        net.ping(&second, "10.79.0.10"),
        "bob → alice after the grant"
    );
    assert_eq!(
        net.log("alice.log").matches("tunnel established").count(),
        1,
        "the reload made alice reconnect:\n{}",
        net.log("alice.log")
    );
    println!("client-to-client denied, then granted by a reload without reconnecting");
}

/// A client that reconnects to a server which now assigns it another address takes that
/// address: its traffic gets through (before, the kept device went on sending from the old
/// address, and the server's anti-spoofing dropped it all).
#[test]
fn a_reconnecting_client_takes_the_address_the_server_now_assigns() {
    if let Some(reason) = missing_prerequisite(&["ip", "ping", "python3"]) {
        println!("skipped: {reason}; this test needs root, /dev/net/tun, ip, ping and python3");
        return;
    }
    let mut net = Net::new("d");
    let dir = net.dir.clone();
    pki(&dir, "192.168.77.1", &["client"]);
    let server_config = dir.join("server.toml");
    let server_with = |fixed: &str| {
        std::fs::write(
            &server_config,
            format!(
                "role = \"server\"\nmode = \"tun\"\n\
                 [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
                 [server]\nlisten = \"192.168.77.1:8443\"\n\
                 [tun]\nname = \"sss-srv\"\naddress = \"10.77.0.1/24\"\npool = \"10.77.0.0/24\"\nmtu = 1400\n\
                 [[tun.clients]]\nidentity = \"client\"\naddress = \"{fixed}\"\n\
                 [keepalive]\ninterval = \"1s\"\ntimeout = \"3s\"\n"
            ),
        )
        .unwrap();
    };
    server_with("10.77.0.5");
    std::fs::write(dir.join("client.toml"), tun_client_toml("3s")).unwrap();
    let (server_ns, client_ns) = (net.server_ns.clone(), net.client_ns.clone());
    let server = net.start(&server_ns, &server_config, "server.log");
    net.start(&client_ns, &dir.join("client.toml"), "client.log");
    assert!(
        net.ping_within(&client_ns, "10.77.0.1", Duration::from_secs(15))
            .is_some(),
        "first session\n{}\n{}",
        net.log("server.log"),
        net.log("client.log")
    );
    assert!(net.ping(&server_ns, "10.77.0.5"), "server → client at .5");

    // The server restarts assigning .9: the client reconnects and must use it.
    let _ = net.children[server].kill();
    let _ = net.children[server].wait();
    server_with("10.77.0.9");
    net.start(&server_ns, &server_config, "server2.log");
    let back = net.ping_within(&client_ns, "10.77.0.1", Duration::from_secs(20));
    assert!(
        back.is_some(),
        "after the new address\n{}\n{}",
        net.log("server2.log"),
        net.log("client.log")
    );
    assert!(net.ping(&server_ns, "10.77.0.9"), "server → client at .9");
    assert!(
        net.log("client.log").contains("TUN device reopened"),
        "{}",
        net.log("client.log")
    );
    println!(
        "client moved from 10.77.0.5 to 10.77.0.9 across a server restart; traffic after {back:?}"
    );
}

/// A second session of one identity replaces the first (OpenVPN's behaviour without
/// `duplicate-cn`): a client that roams to another network while its old connection still
/// looks alive gets its address back, and traffic to that address reaches it.
#[test]
fn a_roaming_client_replaces_its_old_session_and_keeps_its_address() {
    if let Some(reason) = missing_prerequisite(&["ip", "ping", "python3"]) {
        println!("skipped: {reason}; this test needs root, /dev/net/tun, ip, ping and python3");
        return;
    }
    let mut net = Net::new("e");
    let roamed = net.add_client(79);
    let dir = net.dir.clone();
    pki(&dir, "192.168.77.1,192.168.79.1", &["client"]);
    std::fs::write(
        dir.join("server.toml"),
        "role = \"server\"\nmode = \"tun\"\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
         [server]\nlisten = \"0.0.0.0:8443\"\n\
         [tun]\nname = \"sss-srv\"\naddress = \"10.77.0.1/24\"\npool = \"10.77.0.0/24\"\n\
         [audit]\npath = \"audit.jsonl\"\n\
         [keepalive]\ninterval = \"1s\"\ntimeout = \"60s\"\n",
    )
    .unwrap();
    for (name, server) in [("here", "192.168.77.1"), ("there", "192.168.79.1")] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "role = \"client\"\nmode = \"tun\"\n\
                 [tls]\ncert = \"pki/client.pem\"\nkey = \"pki/client.key\"\nca = \"pki/ca.pem\"\n\
                 [client]\nservers = [\"{server}:8443\"]\n\
                 [tun]\nname = \"sss-cli\"\n\
                 [keepalive]\ninterval = \"1s\"\ntimeout = \"60s\"\n"
            ),
        )
        .unwrap();
    }
    let (server_ns, here_ns) = (net.server_ns.clone(), net.client_ns.clone());
    net.start(&server_ns, &dir.join("server.toml"), "server.log");
    let here = net.start(&here_ns, &dir.join("here.toml"), "here.log");
    assert!(
        net.ping_within(&here_ns, "10.77.0.1", Duration::from_secs(15))
            .is_some(),
        "first session\n{}\n{}",
        net.log("server.log"),
        net.log("here.log")
    );
    // The client "moves": its first connection freezes (it still looks alive to the server,
    // whose dead-peer timeout is a minute), and it connects again from another network.
    let pid = net.children[here].id().to_string();
    must(&["kill", "-STOP", &pid]);
    net.start(&roamed, &dir.join("there.toml"), "there.log");
    let back = net.ping_within(&roamed, "10.77.0.1", Duration::from_secs(15));
    assert!(
        back.is_some(),
        "roamed session\n{}\n{}",
        net.log("server.log"),
        net.log("there.log")
    );
    // The address is the same, and it leads to the new session.
    assert!(
        net.ping(&server_ns, "10.77.0.2"),
        "server → 10.77.0.2 reaches the roamed client\n{}\n{}",
        net.log("server.log"),
        net.log("there.log")
    );
    assert!(
        net.log("server.log").contains("replaces its older one"),
        "{}",
        net.log("server.log")
    );
    must(&["kill", "-CONT", &pid]);
    println!("the roamed client kept 10.77.0.2; traffic after {back:?}");
}

#[test]
fn super_packets_cross_whole_between_offload_devices_and_split_for_others() {
    let Some((mut net, server_config)) = server_setup("g") else {
        return;
    };
    let dir = net.dir.clone();
    let (server_ns, client_ns) = (net.server_ns.clone(), net.client_ns.clone());
    // An admin endpoint in the server's namespace, for its super-packet counters.
    let mut text = std::fs::read_to_string(&server_config).unwrap();
    text.push_str("[admin]\nlisten = \"127.0.0.1:9464\"\n");
    std::fs::write(&server_config, text).unwrap();
    net.start(&server_ns, &server_config, "server.log");
    let mut counted = SuperPackets::default();
    for (offload, whole) in [(true, "super_packets=true"), (false, "super_packets=false")] {
        let client_config = dir.join(format!("client-{offload}.toml"));
        let text = tun_client_toml("3s").replace(
            "mtu = 1400\n",
            &format!("mtu = 1400\noffload = {offload}\n"),
        );
        std::fs::write(&client_config, text).unwrap();
        let log = format!("client-{offload}.log");
        let client = net.start(&client_ns, &client_config, &log);
        assert!(
            net.ping_within(&client_ns, "10.77.0.1", Duration::from_secs(15))
                .is_some(),
            "client (offload {offload}) → server ping\nserver:\n{}\nclient:\n{}",
            net.log("server.log"),
            net.log(&log)
        );
        // Both ways: the client's device reads super-packets (whole or split by it), and the
        // server's (whole, or split by the server for this client).
        let (up, _) = transfer_between(&net, &client_ns, &server_ns, "10.77.0.1");
        let (down, _) = transfer_between(&net, &server_ns, &client_ns, "10.77.0.2");
        println!(
            "client offload {offload}: 100 MiB up at {up:.0} Mbit/s, down at {down:.0}, sha256 equal"
        );
        assert!(
            net.log("server.log").contains(whole),
            "the server did not log {whole}:\n{}",
            net.log("server.log")
        );
        // What the server's metrics say it did with the super-packets of both transfers.
        let now = SuperPackets::scrape(&net, &server_ns);
        let added = now.since(&counted);
        println!("client offload {offload}: the server's super-packets {added:?}");
        if offload {
            assert!(
                added.to_peer_whole > 0 && added.to_peer_split == 0,
                "{added:?}"
            );
            assert!(added.to_device_whole > 0, "{added:?}");
        } else {
            assert!(
                added.to_peer_split > 0 && added.to_peer_whole == 0,
                "{added:?}"
            );
            assert_eq!(
                added.to_device_whole + added.to_device_split,
                0,
                "{added:?}"
            );
        }
        counted = now;
        let child = &mut net.children[client];
        child.kill().unwrap();
        child.wait().unwrap();
        // Its device goes with it.
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The server's `sssonector_tun_super_packets_total` by path and how.
#[derive(Debug, Default)]
struct SuperPackets {
    to_peer_whole: u64,
    to_peer_split: u64,
    to_device_whole: u64,
    to_device_split: u64,
}

impl SuperPackets {
    /// Reads them from the admin endpoint at `127.0.0.1:9464` inside `ns`.
    fn scrape(net: &Net, ns: &str) -> Self {
        let out = net
            .exec(
                ns,
                &[
                    "python3",
                    "-c",
                    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=10).read().decode())",
                ],
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let value = |path: &str, how: &str| {
            text.lines()
                .filter(|l| l.starts_with("sssonector_tun_super_packets_total{"))
                .filter(|l| {
                    l.contains(&format!("path=\"{path}\"")) && l.contains(&format!("how=\"{how}\""))
                })
                .find_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Self {
            to_peer_whole: value("to_peer", "whole"),
            to_peer_split: value("to_peer", "split"),
            to_device_whole: value("to_device", "whole"),
            to_device_split: value("to_device", "split"),
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            to_peer_whole: self.to_peer_whole - before.to_peer_whole,
            to_peer_split: self.to_peer_split - before.to_peer_split,
            to_device_whole: self.to_device_whole - before.to_device_whole,
            to_device_split: self.to_device_split - before.to_device_split,
        }
    }
}
