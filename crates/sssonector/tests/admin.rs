//! The admin endpoint as an operator and Prometheus use it, over real HTTP on loopback:
//! health, readiness (and readiness turning false on a certificate about to expire), metrics
//! with real values after traffic, the status page and `sssonector status`, the token, the
//! hardening headers, `POST /reload`, and the refusal to listen off loopback without a token.
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{address_after, echo_target, expect, start, through};
use common::{TempDir, audited, pki};

const TOKEN: &str = "test-admin-token-0123456789";

/// One exchange: status code, headers, body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, common::http::Reply, String) {
    let reply = common::http::request(addr, method, path, token);
    let body = reply.body.clone();
    (reply.code, reply, body)
}

/// The value of the first sample of `metric` whose labels contain `labels`.
fn sample(metrics: &str, metric: &str, labels: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(metric) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn server_config(dir: &Path, target: SocketAddr, extra: &str) {
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n{extra}\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\
             [audit]\npath = \"audit.jsonl\"\n\
             [[forward]]\nname = \"echo\"\ntarget = \"{target}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
}

#[test]
fn metrics_status_and_reload_over_http() {
    let tmp = TempDir::new("admin");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["alice"]);
    let target = echo_target();
    server_config(&dir, target, "");
    let (_server, server_notify) = start(&dir, "server.toml", "server");
    let ready = expect(&server_notify, "READY=1");
    let server_addr = address_after(&ready, "serving on ");
    let admin = address_after(&ready, "admin on ");

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
    let payload = vec![7u8; 1 << 20];
    assert_eq!(
        through(local, &payload).map(|b| b.len()),
        Some(payload.len())
    );

    // Liveness and readiness need no token.
    let (code, headers, body) = http(admin, "GET", "/healthz", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"alive\""), "{body}");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(headers.header(name), Some(value), "{:?}", headers.headers);
    }
    let (code, _, body) = http(admin, "GET", "/readyz", None);
    assert_eq!(code, 200, "{body}");

    // Metrics and status need the token.
    let (code, headers, _) = http(admin, "GET", "/metrics", None);
    assert_eq!(code, 401);
    assert_eq!(headers.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        http(admin, "GET", "/status", Some("wrong-token-0123456789")).0,
        401
    );

    let (code, headers, metrics) = http(admin, "GET", "/metrics", Some(TOKEN));
    assert_eq!(code, 200, "{metrics}");
    assert!(
        headers
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        headers.headers
    );
    assert!(
        metrics.contains("# HELP sssonector_tunnel_bytes_received_total"),
        "{metrics}"
    );
    let received = sample(&metrics, "sssonector_tunnel_bytes_received_total", "").unwrap_or(0.0);
    assert!(
        received >= f64::from(1u32 << 20),
        "bytes received {received}:\n{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "sssonector_server_handshakes_total",
            "outcome=\"accepted\""
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "sssonector_sessions", "state=\"established\""),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "sssonector_ready", ""),
        Some(1.0),
        "{metrics}"
    );
    let not_after = sample(
        &metrics,
        "sssonector_certs_not_after_timestamp_seconds",
        "cert=\"own\"",
    )
    .unwrap();
    assert!(not_after > 1.7e9, "{metrics}");
    assert!(
        metrics.contains("sssonector_build_info{version=\""),
        "{metrics}"
    );

    let (code, _, body) = http(admin, "GET", "/status", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"name\": \"alice\""), "{body}");
    assert!(body.contains("\"role\": \"server\""), "{body}");
    assert!(!body.contains(TOKEN), "the token leaked into /status");

    // `sssonector status` renders the same page as a table.
    let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(["status", "--admin", &admin.to_string(), "--token-file"])
        .arg(dir.join("admin.token"))
        .output()
        .unwrap();
    let table = common::output_text(&out);
    assert!(out.status.success(), "{table}");
    for wanted in [
        "(server forward)",
        "ready",
        "sessions: 1",
        "alice",
        "transfer:",
        "certificates:",
        "own",
    ] {
        assert!(table.contains(wanted), "missing {wanted:?} in:\n{table}");
    }
    // Without the token it says what is wrong.
    let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(["status", "--admin", &admin.to_string()])
        .env_remove("SSSONECTOR_ADMIN_TOKEN")
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert!(
        !out.status.success() && text.contains("answered 401"),
        "{text}"
    );

    // POST /reload reloads as SIGHUP does, and /status remembers it.
    assert_eq!(http(admin, "POST", "/reload", None).0, 401);
    let (code, _, body) = http(admin, "POST", "/reload", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ok\": true"), "{body}");
    expect(&server_notify, "last reload");
    let (_, _, body) = http(admin, "GET", "/status", Some(TOKEN));
    assert!(body.contains("\"last_reload\": {"), "{body}");

    // Admin access is audited, the token never.
    audited(
        &dir,
        &[
            "\"event\":\"admin.access\"",
            "\"path\":\"/metrics\"",
            "\"status\":401",
        ],
    );
    audited(
        &dir,
        &[
            "\"event\":\"admin.access\"",
            "\"path\":\"/reload\"",
            "\"status\":200",
            "\"authorized\":true",
        ],
    );
    audited(&dir, &["\"event\":\"config.reload\"", "\"ok\":true"]);
    let log = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    assert!(
        !log.contains(TOKEN) && !log.contains("wrong-token"),
        "a token reached the audit log"
    );

    assert_eq!(http(admin, "GET", "/nothing", None).0, 404);
    assert_eq!(http(admin, "DELETE", "/status", Some(TOKEN)).0, 405);
    drop(tmp);
}

#[test]
fn readiness_turns_false_on_a_certificate_about_to_expire() {
    let tmp = TempDir::new("admin-expiry");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &[]);
    // A server certificate valid for one day, inside the 7-day warning period.
    common::sssonector(
        &dir,
        &[
            "certs",
            "issue",
            "--dir",
            "pki",
            "--server",
            "localhost",
            "--out",
            "server",
            "--days",
            "1",
        ],
    );
    server_config(&dir, echo_target(), "expiry_warning = \"7d\"");
    let (_server, notify) = start(&dir, "server.toml", "server");
    let admin = address_after(&expect(&notify, "READY=1"), "admin on ");
    let (code, _, body) = http(admin, "GET", "/readyz", None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("within tls.expiry_warning"), "{body}");
    assert!(body.contains("server.pem"), "{body}");
    let (_, _, metrics) = http(admin, "GET", "/metrics", Some(TOKEN));
    assert_eq!(
        sample(&metrics, "sssonector_ready", ""),
        Some(0.0),
        "{metrics}"
    );
    // Still alive.
    assert_eq!(http(admin, "GET", "/healthz", None).0, 200);
    // The certificate's remaining day crossed the 30-, 7- and 1-day warnings: audited.
    audited(
        &dir,
        &[
            "\"event\":\"certificate.expiry_warning\"",
            "\"threshold_seconds\":",
        ],
    );
    drop(tmp);
}

#[test]
fn off_loopback_without_a_token_is_refused_at_start() {
    let tmp = TempDir::new("admin-open");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &[]);
    std::fs::write(
        dir.join("server.toml"),
        "role = \"server\"\nmode = \"forward\"\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"0.0.0.0:0\"\n\
         [[forward]]\nname = \"echo\"\ntarget = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    for command in ["run", "check-config"] {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
            .current_dir(&dir)
            .args([command, "--config", "server.toml"])
            .env_remove("SSSONECTOR_ADMIN_TOKEN")
            .output()
            .unwrap();
        let text = common::output_text(&out);
        assert!(!out.status.success(), "{command}: {text}");
        assert!(
            text.contains("admin.listen: 0.0.0.0:0 is not a loopback address"),
            "{command}: {text}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    // With a token it starts.
    std::fs::write(dir.join("admin.token"), TOKEN).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .current_dir(&dir)
        .args(["check-config", "--config", "server.toml"])
        .env("SSSONECTOR_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    drop(tmp);
}
