//! `sssonector check-config`: the example configurations pass with certificates made by
//! `sssonector certs`; a broken one gets every problem reported with its field path.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TempDir, pki};

fn sssonector(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run sssonector");
    (out.status.success(), common::output_text(&out))
}

/// A directory with a CA, a server certificate (`pki/server.*`) and a client one
/// (`pki/client.*`), as the example configurations expect.
fn setup(name: &str) -> TempDir {
    let dir = TempDir::new(&format!("config-{name}"));
    pki(&dir.0, "localhost,127.0.0.1", &["client"]);
    dir
}

#[test]
fn the_example_configurations_pass() {
    let tmp = setup("examples");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
    for name in [
        "server-forward",
        "client-forward",
        "server-tun",
        "client-tun",
    ] {
        // Beside the pki directory, as an operator would keep them: paths in a
        // configuration are relative to its own directory.
        let file = tmp.0.join(format!("{name}.toml"));
        std::fs::copy(examples.join(format!("{name}.toml")), &file).unwrap();
        let (ok, out) = sssonector(
            &tmp.0,
            &["check-config", "--config", file.to_str().unwrap()],
        );
        assert!(ok, "{name}: {out}");
        assert!(out.contains(": ok ("), "{out}");
    }
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let tmp = setup("broken");
    let config = tmp.0.join("broken.toml");
    std::fs::write(
        &config,
        r#"
role = "client"
mode = "forward"

[tls]
cert = "pki/client.pem"
key = "pki/server.key"
ca = "pki/ca.pem"

[client]
servers = ["vpn.example"]

[[forward]]
name = "web"
target = "x"

[keepalive]
interval = "10s"
timeout = "5s"
"#,
    )
    .unwrap();
    let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "broken.toml"]);
    assert!(!ok);
    for expected in [
        "broken.toml: 4 problems",
        "keepalive.timeout (5s) must be longer than keepalive.interval (10s)",
        "client.servers[0]: \"vpn.example\" is not host:port",
        "forward[0].listen: missing (a client needs the listen of each rule)",
        "tls.cert / tls.key: pki/server.key: private key does not match the certificate in pki/client.pem",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // Syntax and unknown fields are caught by the parser, with the line.
    std::fs::write(
        &config,
        "role = \"client\"\nmode = \"forward\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "broken.toml"]);
    assert!(!ok);
    assert!(out.contains("unknown field `colour`"), "{out}");
    assert!(out.contains("line 3"), "{out}");
    // Durations, addresses and networks are read as what they are, named by their path.
    for (field, value, expected) in [
        (
            "keepalive]\ninterval",
            "\"10\"",
            "\"10\" is not a duration (write 500ms, 10s, 5m, 1h or 7d)",
        ),
        (
            "server]\nlisten = \"127.0.0.1:1\"\nallow",
            "[\"10.0.0.0/8\", \"10.0.0/8\"]",
            "[1]: \"10.0.0/8\": \"10.0.0\" is not an IP address",
        ),
        (
            "server]\nlisten = \"127.0.0.1:1\"\nhandshake_timeout",
            "\"0s\"",
            "\"0s\" is zero",
        ),
    ] {
        std::fs::write(
            &config,
            format!("role = \"server\"\nmode = \"forward\"\n[{field} = {value}\n"),
        )
        .unwrap();
        let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "broken.toml"]);
        assert!(
            !ok && out.contains(expected),
            "missing {expected:?} in:\n{out}"
        );
    }
}

#[test]
fn environment_variables_override_fields() {
    let tmp = setup("env");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
    let file = tmp.0.join("server-forward.toml");
    std::fs::copy(examples.join("server-forward.toml"), &file).unwrap();
    let run = |vars: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
            .current_dir(&tmp.0)
            .args(["check-config", "--config", file.to_str().unwrap()])
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        (out.status.success(), common::output_text(&out))
    };
    // A value of the wrong form is named with its field and the override that set it.
    let (ok, text) = run(&[("SSSONECTOR_SERVER__LISTEN", "not-an-address")]);
    assert!(!ok);
    for expected in [
        "override: server.listen ← SSSONECTOR_SERVER__LISTEN",
        "\"not-an-address\" is not an IP address and port",
        "in `server.listen`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
    // A number is read as a number, and then checked.
    let (ok, text) = run(&[("SSSONECTOR_SERVER__MAX_CLIENTS", "0")]);
    assert!(!ok);
    assert!(
        text.contains("override: server.max_clients ← SSSONECTOR_SERVER__MAX_CLIENTS"),
        "{text}"
    );
    assert!(
        text.contains("1 problem:") && text.contains("server.max_clients: must be at least 1"),
        "{text}"
    );
    let (ok, text) = run(&[("SSSONECTOR_SERVER__MAX_CLIENTS", "7")]);
    assert!(ok, "{text}");
}

#[test]
fn the_policy_is_checked_with_its_paths_and_its_absence_warned() {
    let tmp = setup("policy");
    let base = "role = \"server\"\nmode = \"forward\"\n\
                [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
                [server]\nlisten = \"127.0.0.1:8443\"\n\
                [[forward]]\nname = \"web\"\ntarget = \"127.0.0.1:80\"\n";
    let config = tmp.0.join("server.toml");
    std::fs::write(&config, base).unwrap();
    let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "server.toml"]);
    assert!(ok, "{out}");
    assert!(out.contains("warning: no [policy] section"), "{out}");

    std::fs::write(
        &config,
        format!(
            "{base}[[policy.rule]]\nname = \"ops\"\nmatch = {{ ou = \"ops\" }}\nforwards = [\"web\", \"db\"]\nnetworks = [\"10.0.0.0/8\"]\n"
        ),
    )
    .unwrap();
    let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "server.toml"]);
    assert!(!ok, "{out}");
    for expected in [
        "server.toml: 2 problems",
        "policy.rule[0].forwards[1]: \"db\" names no [[forward]] rule (known: web)",
        "policy.rule[0].networks[0]: the server is in forward mode; grant forwards instead",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // The rules may live in a file of their own, with paths named after it.
    std::fs::write(
        tmp.0.join("policy.toml"),
        "[[rule]]\nname = \"ops\"\nmatch = { ou = \"ops\" }\nforwards = [\"web\"]\ntier = \"gold\"\n",
    )
    .unwrap();
    std::fs::write(&config, format!("{base}[policy]\nfile = \"policy.toml\"\n")).unwrap();
    let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "server.toml"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("rule[0].tier: no tier named \"gold\" in [tiers]"),
        "{out}"
    );
    std::fs::write(
        tmp.0.join("policy.toml"),
        "[[rule]]\nname = \"ops\"\nmatch = { ou = \"ops\" }\nforwards = [\"web\"]\ntier = \"gold\"\n[tiers.gold]\nupload_mbps = 100\n",
    )
    .unwrap();
    let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "server.toml"]);
    assert!(ok, "{out}");
    assert!(out.contains("policy: 1 rule, version "), "{out}");
}

/// A forward-mode server with the certificates of [`setup`], to append sections to.
const FORWARD_SERVER: &str = "role = \"server\"\nmode = \"forward\"\n\
    [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
    [server]\nlisten = \"127.0.0.1:1\"\n\
    [[forward]]\nname = \"echo\"\ntarget = \"127.0.0.1:9\"\n";

#[test]
fn shared_bans_settings_are_checked_without_touching_redis() {
    let tmp = setup("shared-bans");
    let config = tmp.0.join("bans.toml");
    let server = FORWARD_SERVER;
    for (section, expected) in [
        (
            "url = \"http://user:hunter2@cache:6379\"",
            "bans.redis.url: redis store http://***@cache:6379",
        ),
        (
            "url = \"redis://cache:6379\"\nca = \"pki/ca.pem\"",
            "bans.redis.ca / bans.redis.cert: TLS settings need a rediss:// url",
        ),
        (
            "url = \"rediss://cache:6379\"\ncert = \"pki/server.pem\"",
            "bans.redis.cert / bans.redis.key: give both or neither",
        ),
        (
            "url = \"redis://cache\"\nprefix = \"\"",
            "bans.redis.prefix: must not be empty",
        ),
    ] {
        std::fs::write(&config, format!("{server}[bans.redis]\n{section}\n")).unwrap();
        let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "bans.toml"]);
        assert!(
            !ok && out.contains(expected),
            "missing {expected:?} in:\n{out}"
        );
        assert!(!out.contains("hunter2"), "the password was printed:\n{out}");
    }
    // A good one passes: check-config reads no password file and opens no connection.
    std::fs::write(
        &config,
        format!(
            "{server}[bans.redis]\nurl = \"rediss://bans@cache.invalid:6380/2\"\n\
             password_file = \"redis.password\"\nca = \"pki/ca.pem\"\n"
        ),
    )
    .unwrap();
    let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "bans.toml"]);
    assert!(ok, "{out}");
}

#[test]
fn stream_windows_are_checked_against_each_other() {
    let tmp = setup("windows");
    let config = tmp.0.join("windows.toml");
    let server = FORWARD_SERVER;
    for (limits, expected) in [
        (
            "stream_window = 1024",
            "limits.stream_window: 1024 must be 4096 to 16777216 bytes",
        ),
        (
            "stream_window = 1048576\nmax_stream_window = 65536",
            "limits.max_stream_window: 65536 must be at least limits.stream_window (1048576)",
        ),
        (
            "receive_budget = 100000000000",
            "limits.receive_budget: 100000000000 must be at most",
        ),
    ] {
        std::fs::write(&config, format!("{server}[limits]\n{limits}\n")).unwrap();
        let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "windows.toml"]);
        assert!(
            !ok && out.contains(expected),
            "missing {expected:?} in:\n{out}"
        );
    }
    // Fixed windows: the largest equal to the first.
    std::fs::write(
        &config,
        format!("{server}[limits]\nstream_window = 65536\nmax_stream_window = 65536\n"),
    )
    .unwrap();
    let (ok, out) = sssonector(&tmp.0, &["check-config", "--config", "windows.toml"]);
    assert!(ok, "{out}");
}
