//! The access policy end to end through the binary, on loopback: default deny at the
//! handshake, a stream to a rule the identity is not granted refused with a reason the client
//! logs, and a policy changed by reload ending a live stream it no longer permits.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::get;
use common::process::{address_after, echo_target, expect, signal, start, through};
use common::{TempDir, log_contains, pki};

fn server_toml(target: SocketAddr, alice_forwards: &str) -> String {
    format!(
        "role = \"server\"\nmode = \"forward\"\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [audit]\npath = \"audit.jsonl\"\n\
         [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n\
         [[forward]]\nname = \"other\"\ntarget = \"{target}\"\n\
         [[policy.rule]]\nname = \"alice\"\nmatch = {{ cn = \"alice\" }}\nforwards = {alice_forwards}\n"
    )
}

fn client_toml(server: SocketAddr, who: &str) -> String {
    format!(
        "role = \"client\"\nmode = \"forward\"\n\
         [tls]\ncert = \"pki/{who}.pem\"\nkey = \"pki/{who}.key\"\nca = \"pki/ca.pem\"\n\
         [client]\nservers = [\"{server}\"]\nserver_name = \"localhost\"\nconnections = 1\n\
         [[forward]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n\
         [[forward]]\nname = \"other\"\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// Waits for an audit record with every `field: value` pair given; returns it.
fn audited(dir: &Path, pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    common::audited(dir, &parts.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn default_deny_granted_rules_and_a_live_policy_change() {
    let tmp = TempDir::new("policy");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["alice", "bob"]);
    let target = echo_target();
    std::fs::write(dir.join("server.toml"), server_toml(target, "[\"echo\"]")).unwrap();
    let (server, server_notify) = start(&dir, "server.toml", "server");
    let ready = expect(&server_notify, "READY=1");
    let server_addr = address_after(&ready, "serving on ");
    let admin = address_after(&ready, "admin on ");

    // alice may use "echo", and nothing else.
    std::fs::write(dir.join("alice.toml"), client_toml(server_addr, "alice")).unwrap();
    let (_alice, alice_notify) = start(&dir, "alice.toml", "alice");
    let ready = expect(&alice_notify, "READY=1");
    let echo = address_after(&ready, "echo on ");
    let other = address_after(&ready, "other on ");
    assert_eq!(through(echo, b"granted").as_deref(), Some(&b"granted"[..]));
    assert_eq!(through(other, b"not granted"), None);
    log_contains(&dir.join("alice.log"), "reason=\"not_permitted\"");

    let started = audited(
        &dir,
        &[
            ("event", "session.start"),
            ("identity", "alice"),
            ("rule", "alice"),
        ],
    );
    assert!(
        started.contains("\"session\":\"") && started.contains("\"remote\":\"127.0.0.1:"),
        "{started}"
    );
    // The correlation id: the same in the audit record and the session's diagnostic lines.
    let session = started
        .split("\"session\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    log_contains(
        &dir.join("server.log"),
        &format!("session{{id={session}}}: client connected"),
    );
    audited(
        &dir,
        &[
            ("event", "stream.open"),
            ("rule", "echo"),
            ("session", &session),
        ],
    );
    audited(
        &dir,
        &[
            ("event", "stream.refused"),
            ("rule", "other"),
            ("reason", "not_granted"),
        ],
    );

    // bob matches no rule: refused at the handshake, and told so.
    std::fs::write(dir.join("bob.toml"), client_toml(server_addr, "bob")).unwrap();
    let (_bob, _bob_notify) = start(&dir, "bob.toml", "bob");
    log_contains(
        &dir.join("bob.log"),
        "not permitted by the server's access policy",
    );
    let metrics = get(admin, "/metrics");
    assert!(
        metrics.contains("sssonector_policy_denials_total{kind=\"handshake\",reason=\"no_rule\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sssonector_policy_denials_total{kind=\"stream\",reason=\"not_granted\"}"),
        "{metrics}"
    );
    audited(
        &dir,
        &[
            ("event", "handshake.refused"),
            ("identity", "bob"),
            ("reason", "no_rule"),
        ],
    );
    let status = get(admin, "/status");
    let version = status
        .split("\"version\": \"")
        .nth(2)
        .and_then(|v| v.split('"').next())
        .unwrap_or_default()
        .to_owned();
    assert!(status.contains("\"configured\": true"), "{status}");

    // A stream open through "echo" while the policy changes to grant only "other": the live
    // stream is reset, "other" now works, and "echo" is refused.
    let mut live = TcpStream::connect(echo).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    live.write_all(b"before").unwrap();
    let mut back = [0u8; 6];
    live.read_exact(&mut back).unwrap();
    std::fs::write(dir.join("server.toml"), server_toml(target, "[\"other\"]")).unwrap();
    signal(&server, "HUP");
    let reloaded = expect(&server_notify, "last reload");
    assert!(reloaded.contains("policy: version"), "{reloaded}");
    let mut rest = Vec::new();
    let waited = Instant::now();
    let ended = live.read_to_end(&mut rest);
    let timed_out = matches!(&ended, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(
        !timed_out && rest.is_empty(),
        "the withdrawn stream stayed open: {ended:?} after {:?}",
        waited.elapsed()
    );
    assert_eq!(
        through(other, b"now granted").as_deref(),
        Some(&b"now granted"[..])
    );
    assert_eq!(through(echo, b"withdrawn"), None);
    audited(
        &dir,
        &[
            ("event", "stream.refused"),
            ("rule", "echo"),
            ("reason", "withdrawn"),
        ],
    );
    let reload = audited(&dir, &[("event", "config.reload")]);
    assert!(reload.contains("\"ok\":true"), "{reload}");
    let metrics = get(admin, "/metrics");
    assert!(
        metrics.contains("sssonector_policy_denials_total{kind=\"stream\",reason=\"withdrawn\"}"),
        "{metrics}"
    );
    let status = get(admin, "/status");
    assert!(
        !version.is_empty() && !status.contains(&version),
        "{version} still in {status}"
    );

    // A policy that does not parse is refused whole: the one in force stays.
    std::fs::write(dir.join("server.toml"), server_toml(target, "[\"nope\"]")).unwrap();
    signal(&server, "HUP");
    let reloaded = expect(&server_notify, "last reload");
    assert!(
        reloaded.contains("configuration refused, policy, rules and limits kept"),
        "{reloaded}"
    );
    assert!(reloaded.contains("names no [[forward]] rule"), "{reloaded}");
    assert_eq!(
        through(other, b"still granted").as_deref(),
        Some(&b"still granted"[..])
    );
    drop(tmp);
}

/// A target that greets each connection with `banner` and closes it.
fn banner_target(banner: &'static [u8]) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let _ = socket.write_all(banner);
        }
    });
    addr
}

fn greeting(local: SocketAddr) -> Vec<u8> {
    let mut socket = TcpStream::connect(local).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = socket.read_to_end(&mut got);
    got
}

#[test]
fn a_reload_retargets_forwarding_rules() {
    let tmp = TempDir::new("retarget");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["alice"]);
    let (a, b) = (banner_target(b"from A"), banner_target(b"from B"));
    let server = |target: SocketAddr| {
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n\
             [[forward]]\nname = \"other\"\ntarget = \"{target}\"\n"
        )
    };
    std::fs::write(dir.join("server.toml"), server(a)).unwrap();
    let (server_process, notify) = start(&dir, "server.toml", "server");
    let server_addr = address_after(&expect(&notify, "READY=1"), "serving on ");
    std::fs::write(dir.join("alice.toml"), client_toml(server_addr, "alice")).unwrap();
    let (_alice, alice_notify) = start(&dir, "alice.toml", "alice");
    let echo = address_after(&expect(&alice_notify, "READY=1"), "echo on ");
    assert_eq!(greeting(echo), b"from A");
    std::fs::write(dir.join("server.toml"), server(b)).unwrap();
    signal(&server_process, "HUP");
    let reloaded = expect(&notify, "last reload");
    assert!(reloaded.contains("forwarding rules: 2 now"), "{reloaded}");
    assert_eq!(greeting(echo), b"from B");
    drop(tmp);
}

/// The sessions `/status` lists.
fn sessions(admin: SocketAddr) -> usize {
    let status: serde_json::Value = serde_json::from_str(&get(admin, "/status")).unwrap();
    status["sessions"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_lowered_session_limit_ends_the_newest_sessions_at_reload() {
    let tmp = TempDir::new("policy-limit");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["alice"]);
    let target = echo_target();
    // Bans after 3 failures: refusals over the session limit must not count (the client's
    // reconnects would ban its own address, ending the session it may keep).
    let limit = |n: usize| {
        server_toml(target, &format!("[\"echo\"]\nmax_sessions = {n}")) + "[bans]\nfailures = 3\n"
    };
    std::fs::write(dir.join("server.toml"), limit(3)).unwrap();
    let (server, server_notify) = start(&dir, "server.toml", "server");
    let ready = expect(&server_notify, "READY=1");
    let server_addr = address_after(&ready, "serving on ");
    let admin = address_after(&ready, "admin on ");
    std::fs::write(
        dir.join("client.toml"),
        client_toml(server_addr, "alice").replace("connections = 1", "connections = 3"),
    )
    .unwrap();
    let (_client, client_notify) = start(&dir, "client.toml", "client");
    let local = address_after(&expect(&client_notify, "READY=1"), "echo on ");
    common::wait_for("alice's three sessions", || {
        (sessions(admin) == 3).then_some(())
    });

    std::fs::write(dir.join("server.toml"), limit(1)).unwrap();
    signal(&server, "HUP");
    expect(&server_notify, "last reload");
    audited(
        &dir,
        &[
            ("event", "session.ended_by_policy"),
            ("reason", "session_limit"),
        ],
    );
    common::wait_for("one session left", || (sessions(admin) == 1).then_some(()));
    // The client's reconnects are refused by the limit; the remaining session still works.
    log_contains(&dir.join("client.log"), "session limit");
    // (A connection may land on a link still closing on the client; a new one gets through.)
    common::wait_for("traffic over the remaining session", || {
        (through(local, b"still here").as_deref() == Some(&b"still here"[..])).then_some(())
    });
    for _ in 0..10 {
        assert_eq!(sessions(admin), 1, "the limit holds");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(tmp);
}
