//! `sssonector run` and `sssonector demo` as an operator uses them, on loopback without root:
//! systemd readiness through `NOTIFY_SOCKET`, forwarding through the tunnel, SIGHUP reloading
//! a CRL that revokes the connected client (its session ends and it cannot come back), and
//! SIGTERM draining to a clean exit; the systemd unit in `dist/` verifies.
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

mod common;

use common::process::{address_after, echo_target, expect, forward_pair, start, through};
use common::{TempDir, pki};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn notify_forward_reload_revokes_and_drains() {
    let tmp = TempDir::new("run");
    let dir = tmp.0.clone();
    let serial = pki(&dir, "localhost", &["alice"]).remove(0);
    let target = echo_target();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\ncrls = [\"pki/ca.crl\"]\n\
             [server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n"
        ),
    )
    .unwrap();
    let (mut server, server_notify) = start(&dir, "server.toml", "server");
    let ready = expect(&server_notify, "READY=1");
    let server_addr = address_after(&ready, "serving on ");

    std::fs::write(
        dir.join("client.toml"),
        format!(
            "role = \"client\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/alice.pem\"\nkey = \"pki/alice.key\"\nca = \"pki/ca.pem\"\n\
             [client]\nservers = [\"{server_addr}\"]\nserver_name = \"localhost\"\nconnections = 2\n\
             [[forward]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let (_client, client_notify) = start(&dir, "client.toml", "client");
    let ready = expect(&client_notify, "READY=1");
    let local = address_after(&ready, "echo on ");

    assert_eq!(
        through(local, b"hello through the tunnel").as_deref(),
        Some(&b"hello through the tunnel"[..]),
        "server log:\n{}\nclient log:\n{}",
        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default(),
        std::fs::read_to_string(dir.join("client.log")).unwrap_or_default()
    );

    // Both of the client's connections are up before the revocation.
    let waited = Instant::now();
    while std::fs::read_to_string(dir.join("server.log"))
        .unwrap_or_default()
        .matches("client connected")
        .count()
        < 2
    {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the second connection did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Revoke alice and send SIGHUP: the new CRL is loaded, her session is ended, and she
    // cannot come back.
    common::sssonector(&dir, &["certs", "revoke", "--dir", "pki", &serial]);
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    expect(&server_notify, "RELOADING=1");
    let reloaded = expect(&server_notify, "last reload");
    assert!(
        // The client keeps two TLS connections (client.connections = 2): both end.
        reloaded.contains("1 newly revoked, 2 session(s) ended"),
        "{reloaded}"
    );
    // Her reconnects now fail the TLS handshake (no session resumption gets around the CRL).
    let refused = Instant::now();
    let server_log = loop {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
        if log.contains("connection refused") {
            break log;
        }
        assert!(
            refused.elapsed() < Duration::from_secs(10),
            "the revoked client was not refused:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(server_log.contains("revoked"), "{server_log}");
    assert_eq!(
        through(local, b"still there?"),
        None,
        "a revoked client got through"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    expect(&server_notify, "STOPPING=1");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop(tmp);
}

#[test]
fn demo_runs_with_nothing_configured() {
    let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(["demo", "--mib", "4", "--connections", "5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "1. certificates",
        "2. server",
        "3. client",
        "4. new connection",
        "5. 4 streams",
        "6. server /status: ready, 2 sessions: demo-client",
        "7. done",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("skipped: systemd-analyze is not installed");
        return;
    }
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/sssonector@.service"),
    )
    .unwrap()
    .replace(
        "/usr/local/bin/sssonector",
        env!("CARGO_BIN_EXE_sssonector"),
    );
    assert!(unit.contains("Type=notify"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let tmp = TempDir::new("unit");
    let dir = tmp.0.clone();
    let path = dir.join("sssonector@test.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
    drop(tmp);
}

#[test]
fn a_client_upload_limit_paces_its_bytes() {
    let tmp = TempDir::new("limit");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["bob"]);
    let target = echo_target();
    let (_server, _client, ready) =
        forward_pair(&dir, target, "[limits]\nupload_mbps = 40\n", "bob", "");
    let local = address_after(&ready, "echo on ");
    // Warm up (the tunnel connects), then time 4 MiB through the 40 Mbit/s upload limit.
    assert!(through(local, b"warm").is_some());
    let payload = vec![5u8; 4 << 20];
    let started = Instant::now();
    let back = through(local, &payload).expect("echoed");
    let took = started.elapsed();
    assert_eq!(back.len(), payload.len());
    let mbps = (payload.len() * 8) as f64 / took.as_secs_f64() / 1e6;
    println!("4 MiB through a 40 Mbit/s upload limit: {took:?}, {mbps:.1} Mbit/s of payload");
    // 33.5 Mbit at 40 Mbit/s on the wire (5 % overhead) takes ~0.88 s less a 100 ms burst;
    // without the limit it takes a few milliseconds. Only a lower bound is asserted: a slow
    // machine can only make it slower.
    assert!(took >= Duration::from_millis(600), "not paced: {took:?}");
    drop(tmp);
}

#[test]
fn a_reload_changes_the_clients_upload_limit() {
    let tmp = TempDir::new("client-limit");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["carol"]);
    let target = echo_target();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n"
        ),
    )
    .unwrap();
    let (_server, server_notify) = start(&dir, "server.toml", "server");
    let server_addr = address_after(&expect(&server_notify, "READY=1"), "serving on ");
    let client = |mbps: u32| {
        format!(
            "role = \"client\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/carol.pem\"\nkey = \"pki/carol.key\"\nca = \"pki/ca.pem\"\n\
             [client]\nservers = [\"{server_addr}\"]\nserver_name = \"localhost\"\n\
             [[forward]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n\
             [limits]\nupload_mbps = {mbps}\n"
        )
    };
    std::fs::write(dir.join("client.toml"), client(100_000)).unwrap();
    let (client_process, client_notify) = start(&dir, "client.toml", "client");
    let local = address_after(&expect(&client_notify, "READY=1"), "echo on ");
    assert!(through(local, b"warm").is_some());
    std::fs::write(dir.join("client.toml"), client(40)).unwrap();
    common::process::signal(&client_process, "HUP");
    let reloaded = expect(&client_notify, "last reload");
    assert!(
        reloaded.contains("limits.upload_mbps: 40 Mbit/s now"),
        "{reloaded}"
    );
    let payload = vec![5u8; 4 << 20];
    let started = Instant::now();
    assert_eq!(
        through(local, &payload).map(|b| b.len()),
        Some(payload.len())
    );
    let took = started.elapsed();
    println!("4 MiB after the client's limit was lowered to 40 Mbit/s: {took:?}");
    // 33.5 Mbit at 40 Mbit/s takes ~0.8 s; unlimited, a few milliseconds. A lower bound only.
    assert!(took >= Duration::from_millis(600), "not paced: {took:?}");
    drop(tmp);
}

#[test]
fn a_reload_opens_and_closes_the_clients_forwarding_listeners() {
    let tmp = TempDir::new("client-rules");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["dave"]);
    let target = echo_target();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n\
             [[forward]]\nname = \"second\"\ntarget = \"{target}\"\n"
        ),
    )
    .unwrap();
    let (_server, server_notify) = start(&dir, "server.toml", "server");
    let server_addr = address_after(&expect(&server_notify, "READY=1"), "serving on ");
    let client = |rules: &[&str]| {
        let rules: String = rules
            .iter()
            .map(|r| format!("[[forward]]\nname = \"{r}\"\nlisten = \"127.0.0.1:0\"\n"))
            .collect();
        format!(
            "role = \"client\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/dave.pem\"\nkey = \"pki/dave.key\"\nca = \"pki/ca.pem\"\n\
             [client]\nservers = [\"{server_addr}\"]\nserver_name = \"localhost\"\n{rules}"
        )
    };
    std::fs::write(dir.join("client.toml"), client(&["echo"])).unwrap();
    let (client_process, client_notify) = start(&dir, "client.toml", "client");
    let echo = address_after(&expect(&client_notify, "READY=1"), "echo on ");
    assert_eq!(through(echo, b"one").as_deref(), Some(&b"one"[..]));

    // Add "second": its listener opens, and the reload says where.
    std::fs::write(dir.join("client.toml"), client(&["echo", "second"])).unwrap();
    common::process::signal(&client_process, "HUP");
    let reloaded = expect(&client_notify, "last reload");
    let second = address_after(&reloaded, "forward second on ");
    assert_eq!(through(second, b"two").as_deref(), Some(&b"two"[..]));

    // Remove "echo": its listener closes; "second" stays.
    std::fs::write(dir.join("client.toml"), client(&["second"])).unwrap();
    common::process::signal(&client_process, "HUP");
    let reloaded = expect(&client_notify, "last reload");
    assert!(reloaded.contains("forward echo closed"), "{reloaded}");
    let started = Instant::now();
    while std::net::TcpStream::connect(echo).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "echo's listener stayed open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(through(second, b"three").as_deref(), Some(&b"three"[..]));
    drop(tmp);
}
