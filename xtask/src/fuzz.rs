//! `cargo xtask fuzz [--seconds N] [TARGET…]`: runs the cargo-fuzz targets in `fuzz/` for
//! N seconds each (60 by default), every one of them unless some are named, and prints the
//! executions and crashes of each.
//!
//! It runs on the stable toolchain: with `--sanitizer none`, cargo-fuzz passes rustc only
//! stable flags (coverage instrumentation, `--cfg fuzzing`); libFuzzer itself is built from
//! C++ by libfuzzer-sys (needs a C++ compiler). The committed seed corpus
//! (`fuzz/corpus/<target>/`) is read; what a run discovers goes to
//! `target/fuzz/corpus/<target>/`, crashes to `target/fuzz/artifacts/<target>/`.

use std::process::Command;
use std::time::Instant;

use crate::cmd::{available, cargo, workspace_root};

/// cargo-fuzz's version, pinned so runs are reproducible.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target in `fuzz/Cargo.toml`.
pub(crate) const TARGETS: &[&str] = &[
    "frame_decode",
    "session",
    "certs_load",
    "config_parse",
    "policy_parse",
];

/// One target's run.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) target: String,
    pub(crate) executions: u64,
    pub(crate) seconds: u64,
    pub(crate) crashed: bool,
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().ok_or("--seconds needs a number")?;
                seconds =
                    value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("--seconds: `{value}` is not a whole number above 0")
                    })?;
            }
            name if TARGETS.contains(&name) => targets.push(name.to_owned()),
            other => {
                return Err(format!(
                    "unknown fuzz target or option `{other}` (targets: {})",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    let outcomes = fuzz(&targets, seconds)?;
    println!("\n| target | executions | seconds | executions/s | crashes |");
    println!("|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {} | {} | {} |",
            o.target,
            o.executions,
            o.seconds,
            o.executions / o.seconds.max(1),
            u8::from(o.crashed)
        );
    }
    match outcomes.iter().filter(|o| o.crashed).count() {
        0 => Ok(()),
        n => Err(format!(
            "{n} target(s) crashed; inputs are in target/fuzz/artifacts/<target>/"
        )),
    }
}

/// Installs cargo-fuzz if missing, then runs each of `targets` for `seconds`.
pub(crate) fn fuzz(targets: &[String], seconds: u64) -> Result<Vec<Outcome>, String> {
    if !available("cargo", &["fuzz", "--version"]) {
        eprintln!(
            "cargo-fuzz is missing: installing cargo-fuzz {CARGO_FUZZ_VERSION} from crates.io"
        );
        crate::cmd::step(
            "install cargo-fuzz",
            cargo().args([
                "install",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
                "cargo-fuzz",
            ]),
        )?;
    }
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let mut outcomes = Vec::new();
    for target in targets {
        let corpus = root.join("target/fuzz/corpus").join(target);
        let artifacts = root.join("target/fuzz/artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        eprintln!("\n==> fuzz {target}: {seconds} s");
        let started = Instant::now();
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&fuzz_dir)
            .args(["fuzz", "run", "--sanitizer", "none", "-O", target])
            .arg(&corpus)
            .arg(fuzz_dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .output()
            .map_err(|e| format!("fuzz {target}: cannot start cargo fuzz: {e}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        // libFuzzer's last line: "Done 1345982 runs in 21 second(s)".
        let done = log.lines().rev().find_map(|line| {
            let rest = line.strip_prefix("Done ")?;
            let (runs, rest) = rest.split_once(" runs in ")?;
            let secs = rest.split_whitespace().next()?;
            Some((runs.parse::<u64>().ok()?, secs.parse::<u64>().ok()?))
        });
        let crashed = !output.status.success() || done.is_none();
        if crashed {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        let (executions, secs) = done.unwrap_or((0, started.elapsed().as_secs()));
        eprintln!(
            "<== fuzz {target}: {executions} executions in {secs} s{}",
            if crashed { ", CRASHED" } else { "" }
        );
        outcomes.push(Outcome {
            target: target.clone(),
            executions,
            seconds: secs,
            crashed,
        });
    }
    Ok(outcomes)
}
