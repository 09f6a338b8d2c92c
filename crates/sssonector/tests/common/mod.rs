//! What the binary's end-to-end tests share: a temporary directory, running the binary, and a
//! CA with its certificates made by the binary itself.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of the shared set-up"
)]

pub mod http;
pub mod netns;
pub mod process;
pub mod redis;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Polls `check` every 20 ms until it gives a value; fails the test naming `what` after
/// 15 s.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "never saw {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits for a line of the audit log `dir/audit.jsonl` that contains every one of `parts`.
pub fn audited(dir: &Path, parts: &[&str]) -> String {
    wait_for(&format!("an audit record with {parts:?}"), || {
        std::fs::read_to_string(dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
    })
}

/// Waits until `file` contains `wanted`; returns its text.
pub fn log_contains(file: &Path, wanted: &str) -> String {
    wait_for(&format!("{wanted:?} in {}", file.display()), || {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.contains(wanted).then_some(text)
    })
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `$TMPDIR/sss-{name}-{pid}`, created.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sss-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A finished command's standard output and standard error, one after the other.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `sssonector ARGS` in `dir`, which must succeed; returns its standard output.
pub fn sssonector(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dir/pki`: a CA, `server.pem` / `.key` for `server_names` (comma-separated), and
/// `{client}.pem` / `.key` for each client. Returns the clients' serial numbers (hex).
pub fn pki(dir: &Path, server_names: &str, clients: &[&str]) -> Vec<String> {
    sssonector(dir, &["certs", "init", "--dir", "pki"]);
    sssonector(
        dir,
        &[
            "certs",
            "issue",
            "--dir",
            "pki",
            "--server",
            server_names,
            "--out",
            "server",
        ],
    );
    clients
        .iter()
        .map(|client| {
            let issued = sssonector(
                dir,
                &[
                    "certs", "issue", "--dir", "pki", "--client", client, "--out", client,
                ],
            );
            // "issued client certificate … (serial 0a1b…), …"
            issued
                .split("(serial ")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .unwrap()
                .to_owned()
        })
        .collect()
}
