//! Bans shared by several servers through a real `redis-server` on loopback: failures at
//! two servers add up to one ban that every server imposes, a server started later learns
//! the bans in force, and a server whose Redis is gone counts on its own.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::http::get;
use common::process::{Process, address_after, expect, garbage, start};
use common::redis::Redis;
use common::{TempDir, pki, wait_for};

/// A forwarding server named `name` banning after 3 failures, sharing bans through `url`;
/// returns it with its listen and admin addresses.
fn server(dir: &Path, name: &str, url: &str) -> (Process, SocketAddr, SocketAddr) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\nconnections_per_second = 0\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [audit]\npath = \"{name}.audit.jsonl\"\n\
             [bans]\nfailures = 3\nwindow = \"1m\"\nban = \"10m\"\n\
             [bans.redis]\nurl = \"{url}\"\nprefix = \"test\"\ntimeout = \"500ms\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    let (process, notify) = start(dir, &format!("{name}.toml"), name);
    let ready = expect(&notify, "READY=1");
    (
        process,
        address_after(&ready, "serving on "),
        address_after(&ready, "admin on "),
    )
}

fn banned(admin: SocketAddr) -> bool {
    get(admin, "/status").contains("\"source\": \"127.0.0.1\"")
}

#[test]
fn failures_at_two_servers_add_up_to_one_ban_every_server_imposes() {
    let Some(redis) = Redis::start() else { return };
    let tmp = TempDir::new("shared-bans");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &[]);
    let (_a, a, a_admin) = server(&dir, "a", &redis.url());
    let (_b, b, b_admin) = server(&dir, "b", &redis.url());

    // Two failures at one server and one at the other: neither alone reaches three.
    garbage(a);
    garbage(b);
    garbage(a);
    wait_for("the ban at a", || banned(a_admin).then_some(()));
    wait_for("the ban at b", || banned(b_admin).then_some(()));
    for name in ["a", "b"] {
        let audit = std::fs::read_to_string(dir.join(format!("{name}.audit.jsonl"))).unwrap();
        let ban = audit
            .lines()
            .find(|l| l.contains("\"event\":\"ban\""))
            .unwrap_or_else(|| panic!("{name} audited no ban: {audit}"));
        assert!(ban.contains("\"origin\":\"shared\""), "{ban}");
        assert!(ban.contains("\"seconds\":600"), "{ban}");
    }
    // Banned at b too: closed before TLS.
    let mut socket = TcpStream::connect(b).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(socket.read(&mut [0; 16]).unwrap_or(0), 0);
    let metrics = wait_for("b refusing the banned source", || {
        let metrics = get(b_admin, "/metrics");
        metrics
            .contains("sssonector_server_refused_total{reason=\"banned\"}")
            .then_some(metrics)
    });
    assert!(
        !metrics.contains("sssonector_bans_shared_errors_total"),
        "{metrics}"
    );

    // A server started now reads the bans in force from Redis.
    let (_c, _, c_admin) = server(&dir, "c", &redis.url());
    wait_for("the ban at c", || banned(c_admin).then_some(()));
    drop(tmp);
}

#[test]
fn without_its_redis_a_server_counts_on_its_own() {
    // Nothing listens here: every command to Redis fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", dead.local_addr().unwrap());
    drop(dead);
    let tmp = TempDir::new("shared-bans-down");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &[]);
    let (_server, addr, admin) = server(&dir, "alone", &url);
    for _ in 0..3 {
        garbage(addr);
    }
    wait_for("the local ban", || banned(admin).then_some(()));
    let metrics = get(admin, "/metrics");
    assert!(
        metrics.contains("sssonector_bans_shared_errors_total{error=\"redis\"} 3"),
        "{metrics}"
    );
    let audit = std::fs::read_to_string(dir.join("alone.audit.jsonl")).unwrap();
    let ban = audit
        .lines()
        .find(|l| l.contains("\"event\":\"ban\""))
        .unwrap();
    assert!(ban.contains("\"origin\":\"local\""), "{ban}");
    drop(tmp);
}
