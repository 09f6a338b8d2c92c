//! `cargo xtask ci`: exactly what CI runs, in order, stopping at the first failure.

use std::time::Instant;

use std::process::Command;

use crate::cmd::{available, cargo, step};

/// cargo-deny's version, pinned so CI is reproducible; installing it from source takes about
/// three minutes on two cores.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// cargo-hack's version, pinned likewise; it builds in under a minute.
const CARGO_HACK_VERSION: &str = "0.6.46";

/// Programs the tests need, with the flag that makes each print its version (iputils' ping
/// and iproute2's ip know `-V`, not `--version`) and the Debian package that provides it.
/// Tests that need one skip with a printed reason when it is missing; CI (root) installs them
/// so they run for real.
const APT_PACKAGES: &[(&str, &str, &str)] = &[
    ("redis-server", "--version", "redis-server"),
    // The TUN end-to-end test pings through the tunnel between two network namespaces.
    ("ping", "-V", "iputils-ping"),
    ("ip", "-V", "iproute2"),
    // The fault suite drops packets with nft and measures OpenVPN's recovery beside ours.
    ("nft", "--version", "nftables"),
    ("openvpn", "--version", "openvpn"),
    // libfuzzer-sys builds libFuzzer from C++ for the fuzz targets.
    ("g++", "--version", "g++"),
];

/// Crates with loom models of their atomics, and the test-name filter that selects them.
const LOOM_TESTS: &[(&str, &str)] = &[
    ("sssonector-core", "loom_tests"),
    ("sssonector-ratelimit", "loom_tests"),
];

/// Seconds each fuzz target runs in CI.
const FUZZ_SECONDS: u64 = 15;

/// Examples that run to completion on their own, with no network beyond loopback and no root.
const UNATTENDED_EXAMPLES: &[&str] = &[
    "retry_breaker_tcp",
    "ip_limited_echo",
    "throttled_copy",
    "pooled_copy",
    "pooled_failover",
    "tls_reload_echo",
    "forward_tunnel",
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if let Some(extra) = args.first() {
        return Err(format!("`ci` takes no arguments, got `{extra}`"));
    }
    let started = Instant::now();
    install_tools()?;

    step("format", cargo().args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // Every other step builds with all features; this one checks each crate without its
    // optional features and with each one alone, so a feature gate cannot hide a break.
    step(
        "features, each alone",
        cargo().args(["hack", "check", "--workspace", "--each-feature"]),
    )?;
    if available("cargo-nextest", &["nextest", "--version"]) {
        step(
            "tests",
            cargo().args([
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
            ]),
        )?;
    } else {
        eprintln!("cargo-nextest is not installed: running the tests with cargo test");
        step(
            "tests",
            cargo().args([
                "test",
                "--workspace",
                "--all-features",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ]),
        )?;
    }
    // The lock-free state machines under loom, which explores every interleaving of their
    // atomics; a cfg of our own (tokio reads `cfg(loom)` itself) and a target directory of
    // its own, so the other steps' builds stay as they are.
    for (package, filter) in LOOM_TESTS {
        step(
            &format!("loom {package}"),
            cargo()
                .args(["test", "-p", package, "--lib", filter])
                .env("RUSTFLAGS", "--cfg sssonector_loom")
                .env("CARGO_TARGET_DIR", "target/loom"),
        )?;
    }
    step(
        "doc tests",
        cargo().args(["test", "--workspace", "--all-features", "--doc"]),
    )?;
    step(
        "docs",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    step(
        "benchmarks build",
        cargo().args(["bench", "--workspace", "--no-run"]),
    )?;
    step(
        "examples build",
        cargo().args(["build", "--workspace", "--examples"]),
    )?;
    for example in UNATTENDED_EXAMPLES {
        step(
            &format!("example {example}"),
            cargo().args([
                "run",
                "--quiet",
                "-p",
                "sssonector-examples",
                "--example",
                example,
            ]),
        )?;
    }
    // The fuzz targets build, and each runs briefly on the committed seeds and what it finds
    // (longer runs: `cargo xtask fuzz --seconds N`).
    let targets: Vec<String> = crate::fuzz::TARGETS
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    let outcomes = crate::fuzz::fuzz(&targets, FUZZ_SECONDS)?;
    if let Some(crashed) = outcomes.iter().find(|o| o.crashed) {
        return Err(format!(
            "fuzz {}: crashed; the input is in target/fuzz/artifacts/{}/",
            crashed.target, crashed.target
        ));
    }
    step(
        "dependency policy",
        cargo().args([
            "deny",
            "--all-features",
            "check",
            "bans",
            "licenses",
            "sources",
        ]),
    )?;
    eprintln!(
        "\nxtask ci: all steps passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs what CI needs and a fresh machine lacks, saying what it installs.
fn install_tools() -> Result<(), String> {
    if !available("cargo", &["fmt", "--version"]) || !available("cargo", &["clippy", "--version"]) {
        return Err(
            "rustfmt and clippy are required; install them with `rustup component add rustfmt clippy`"
                .into(),
        );
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(program, version, _)| !available(program, &[version]))
        .map(|(_, _, package)| *package)
        .collect();
    if !missing.is_empty() {
        if is_root() {
            eprintln!(
                "installing Debian packages the tests need: {}",
                missing.join(" ")
            );
            step(
                "apt-get update",
                Command::new("apt-get").args(["update", "-q"]),
            )?;
            step(
                "apt-get install",
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends"])
                    .args(&missing)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
        } else {
            eprintln!(
                "not root: not installing {}; the tests that need them will skip",
                missing.join(" ")
            );
        }
    }
    if !available("cargo-deny", &["--version"]) {
        eprintln!(
            "cargo-deny is missing: installing cargo-deny {CARGO_DENY_VERSION} from crates.io"
        );
        step(
            "install cargo-deny",
            cargo().args([
                "install",
                "--locked",
                "--version",
                CARGO_DENY_VERSION,
                "cargo-deny",
            ]),
        )?;
    }
    if !available("cargo-hack", &["hack", "--version"]) {
        eprintln!(
            "cargo-hack is missing: installing cargo-hack {CARGO_HACK_VERSION} from crates.io"
        );
        step(
            "install cargo-hack",
            cargo().args([
                "install",
                "--locked",
                "--version",
                CARGO_HACK_VERSION,
                "cargo-hack",
            ]),
        )?;
    }
    Ok(())
}

/// Whether this process runs as root (`id -u` prints 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}
