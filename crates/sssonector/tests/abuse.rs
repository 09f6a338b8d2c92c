//! Abuse protection through the binary, on loopback: a source that keeps failing its
//! handshake is banned (refused at once, even with a valid certificate), listed in /status,
//! counted, and audited; one source cannot hold every handshake slot.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::http::get;
use common::process::{address_after, echo_target, expect, garbage, start, stop, through};
use common::{TempDir, pki, wait_for};

#[test]
fn repeated_failures_ban_the_source() {
    let tmp = TempDir::new("abuse");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["alice"]);
    let target = echo_target();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\nconnections_per_second = 0\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [audit]\npath = \"audit.jsonl\"\n\
             [bans]\nfailures = 3\nwindow = \"1m\"\nban = \"10m\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n"
        ),
    )
    .unwrap();
    let (_server, notify) = start(&dir, "server.toml", "server");
    let ready = expect(&notify, "READY=1");
    let server_addr = address_after(&ready, "serving on ");
    let admin = address_after(&ready, "admin on ");

    for _ in 0..3 {
        garbage(server_addr);
    }
    let status = wait_for("the ban in /status", || {
        let status = get(admin, "/status");
        status
            .contains("\"source\": \"127.0.0.1\"")
            .then_some(status)
    });
    assert!(status.contains("\"reason\": \"tls\""), "{status}");
    let audit = common::audited(&dir, &["\"event\":\"ban\""]);
    assert!(
        audit.contains("\"remote\":\"127.0.0.1\"") && audit.contains("\"seconds\":600"),
        "{audit}"
    );

    // Banned: even a client with a valid certificate is refused, before TLS.
    std::fs::write(
        dir.join("client.toml"),
        format!(
            "role = \"client\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/alice.pem\"\nkey = \"pki/alice.key\"\nca = \"pki/ca.pem\"\n\
             [client]\nservers = [\"{server_addr}\"]\nserver_name = \"localhost\"\nconnections = 1\n\
             [[forward]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let (_client, client_notify) = start(&dir, "client.toml", "client");
    let local = address_after(&expect(&client_notify, "READY=1"), "echo on ");
    assert_eq!(through(local, b"banned?"), None);
    let metrics = wait_for("refusals counted as banned", || {
        let metrics = get(admin, "/metrics");
        metrics
            .contains("sssonector_server_refused_total{reason=\"banned\"}")
            .then_some(metrics)
    });
    assert!(
        metrics.contains("sssonector_bans_total{reason=\"tls\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sssonector_bans_active 1"), "{metrics}");
    drop(tmp);
}

#[test]
fn one_source_cannot_hold_every_handshake() {
    let tmp = TempDir::new("abuse-inflight");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &[]);
    std::fs::write(
        dir.join("server.toml"),
        "role = \"server\"\nmode = \"forward\"\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nconnections_per_second = 0\nmax_handshakes_per_source = 2\nhandshake_timeout = \"20s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[forward]]\nname = \"echo\"\ntarget = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let (_server, notify) = start(&dir, "server.toml", "server");
    let ready = expect(&notify, "READY=1");
    let server_addr = address_after(&ready, "serving on ");
    let admin = address_after(&ready, "admin on ");
    // Two connections that never send a byte hold the source's two handshake places...
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server_addr).unwrap())
        .collect();
    wait_for("two handshakes in flight", || {
        get(admin, "/metrics")
            .contains("sssonector_sessions{state=\"handshaking\"} 2")
            .then_some(())
    });
    // ...so a third is closed at once instead of waiting out the 20 s handshake timeout.
    let mut third = TcpStream::connect(server_addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let read = third.read(&mut [0u8; 16]);
    assert!(
        matches!(read, Ok(0) | Err(_)) && started.elapsed() < Duration::from_secs(5),
        "{read:?} after {:?}",
        started.elapsed()
    );
    assert!(
        !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third connection was held"
    );
    let metrics = get(admin, "/metrics");
    assert!(
        metrics.contains("sssonector_server_refused_total{reason=\"handshakes_per_source\"} 1"),
        "{metrics}"
    );
    drop(tmp);
}

#[test]
fn bans_survive_a_restart_and_a_corrupt_state_file_is_moved_aside() {
    let tmp = TempDir::new("abuse-state");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &[]);
    std::fs::write(
        dir.join("server.toml"),
        "role = \"server\"\nmode = \"forward\"\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nconnections_per_second = 0\nstate_file = \"state.json\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [bans]\nfailures = 2\nban = \"10m\"\n\
         [[forward]]\nname = \"echo\"\ntarget = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let (mut server, notify) = start(&dir, "server.toml", "server");
    let server_addr = address_after(&expect(&notify, "READY=1"), "serving on ");
    garbage(server_addr);
    garbage(server_addr);
    stop(&mut server);
    let saved = std::fs::read_to_string(dir.join("state.json")).unwrap();
    assert!(saved.contains("\"source\": \"127.0.0.1\""), "{saved}");

    // Restarted: the ban is still in force.
    drop(notify);
    let _ = std::fs::remove_file(dir.join("server.notify"));
    let (mut server, notify) = start(&dir, "server.toml", "server");
    let admin = address_after(&expect(&notify, "READY=1"), "admin on ");
    let status = get(admin, "/status");
    assert!(status.contains("\"source\": \"127.0.0.1\""), "{status}");
    stop(&mut server);

    // A state file that does not parse is moved aside, and the server starts clean.
    std::fs::write(dir.join("state.json"), "{ torn write").unwrap();
    drop(notify);
    let _ = std::fs::remove_file(dir.join("server.notify"));
    let (_server, notify) = start(&dir, "server.toml", "server");
    let admin = address_after(&expect(&notify, "READY=1"), "admin on ");
    assert!(get(admin, "/status").contains("\"bans\": []"));
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        });
    assert!(aside, "the corrupt file was not kept aside");
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
    assert!(log.contains("the state file is unusable"), "{log}");
    drop(tmp);
}

#[test]
fn a_ban_ends_the_sources_live_session() {
    let tmp = TempDir::new("abuse-live");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["alice"]);
    let target = echo_target();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\nconnections_per_second = 0\n\
             [audit]\npath = \"audit.jsonl\"\n\
             [bans]\nfailures = 3\nban = \"10m\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n\
             [[forward]]\nname = \"other\"\ntarget = \"{target}\"\n\
             [[policy.rule]]\nname = \"alice\"\nmatch = {{ cn = \"alice\" }}\nforwards = [\"echo\"]\n"
        ),
    )
    .unwrap();
    let (_server, notify) = start(&dir, "server.toml", "server");
    let server_addr = address_after(&expect(&notify, "READY=1"), "serving on ");
    std::fs::write(
        dir.join("client.toml"),
        format!(
            "role = \"client\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/alice.pem\"\nkey = \"pki/alice.key\"\nca = \"pki/ca.pem\"\n\
             [client]\nservers = [\"{server_addr}\"]\nserver_name = \"localhost\"\nconnections = 1\n\
             [[forward]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n\
             [[forward]]\nname = \"other\"\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let (_client, client_notify) = start(&dir, "client.toml", "client");
    let ready = expect(&client_notify, "READY=1");
    let (echo, other) = (
        address_after(&ready, "echo on "),
        address_after(&ready, "other on "),
    );
    assert!(through(echo, b"granted").is_some());
    // Three streams the policy refuses: the third tips a ban, which ends her live session.
    for _ in 0..3 {
        assert_eq!(through(other, b"denied"), None);
    }
    let ban = common::audited(&dir, &["\"event\":\"ban\"", "\"reason\":\"policy\""]);
    assert!(ban.contains("\"sessions_ended\":1"), "{ban}");
    common::log_contains(&dir.join("client.log"), "tunnel lost");
    assert_eq!(
        through(echo, b"banned now"),
        None,
        "a banned source got through"
    );
    drop(tmp);
}
