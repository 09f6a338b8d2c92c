//! `cargo xtask bench [FILTER]`: the comparative benchmarks, and the ratios read from them.
//!
//! Two measurements, both relative to a baseline taken in the same run:
//!
//! 1. Time, with criterion: each group measures the bare service, ours and the anchor crates.
//!    The figure is middleware *overhead* (time above the bare service) as a ratio of ours to
//!    the anchor's; below 1.0 means ours adds less. At a few nanoseconds per call, run-to-run
//!    noise on a shared 2-core machine is large, so
//! 2. instructions, with callgrind (when valgrind is installed): the `per-call` binary runs one
//!    contender N and 2N times; the difference over N is instructions per call, exact and
//!    repeatable. The same overhead ratio is computed from it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{available, cargo, step, workspace_root};

/// A comparison: criterion group, per-call prefix, and the anchors with the target.
struct Comparison {
    group: &'static str,
    per_call: &'static str,
    anchors: &'static [(&'static str, f64)],
    /// Further variants of ours reported beside the main one.
    variants: &'static [&'static str],
}

const COMPARISONS: &[Comparison] = &[
    Comparison {
        group: "breaker_closed",
        per_call: "breaker",
        anchors: &[("tower-resilience", 0.25)],
        variants: &[],
    },
    Comparison {
        group: "breaker_closed_rate_window",
        per_call: "breaker-rate",
        anchors: &[("tower-resilience", 0.25)],
        variants: &[],
    },
    Comparison {
        group: "retry_no_retry",
        per_call: "retry",
        anchors: &[("tower-retry", 1.0), ("tower-resilience", 0.5)],
        variants: &["ours-named"],
    },
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut command = cargo();
    command.args(["bench", "-p", "sssonector-benches", "--"]);
    // `cargo xtask bench -- --measurement-time 3` passes criterion's options through.
    command.args(args.iter().skip_while(|a| *a == "--"));
    step("criterion benchmarks", &mut command)?;
    println!("\n## Time (criterion means; overhead = contender − bare service)\n");
    report(|group, name| mean_ns(&criterion_dir(), group.0, name), "ns")?;

    if !available("valgrind", &["--version"]) {
        eprintln!(
            "valgrind is not installed: skipping instruction counts (apt-get install valgrind)"
        );
        return Ok(());
    }
    step(
        "per-call binary",
        cargo().args([
            "build",
            "--release",
            "-p",
            "sssonector-benches",
            "--bin",
            "per-call",
        ]),
    )?;
    let binary = target_dir().join("release/per-call");
    println!("\n## Instructions per call (callgrind; overhead = contender − bare service)\n");
    report(
        |group, name| {
            let contender = if name == "bare" {
                "bare".to_string()
            } else {
                format!("{}/{name}", group.1)
            };
            instructions_per_call(&binary, &contender)
        },
        "instr",
    )
}

/// Prints one table of overheads and ratios from `measure(group, contender)`.
fn report(
    mut measure: impl FnMut((&str, &str), &str) -> Option<f64>,
    unit: &str,
) -> Result<(), String> {
    println!("| group | ours overhead | anchor | anchor overhead | ratio | target |");
    println!("|---|---|---|---|---|---|");
    for c in COMPARISONS {
        let key = (c.group, c.per_call);
        let Some(bare) = measure(key, "bare") else {
            continue;
        };
        let Some(ours) = measure(key, "ours") else {
            continue;
        };
        let variants: Vec<(&str, f64)> = std::iter::once(("ours", ours))
            .chain(
                c.variants
                    .iter()
                    .filter_map(|v| Some((*v, measure(key, v)?))),
            )
            .collect();
        for (anchor, target) in c.anchors {
            let Some(theirs) = measure(key, anchor) else {
                continue;
            };
            let theirs_over = (theirs - bare).max(f64::MIN_POSITIVE);
            for (variant, value) in &variants {
                let over = (value - bare).max(0.0);
                let ratio = over / theirs_over;
                let verdict = if *variant != "ours" {
                    "(for reference)"
                } else if ratio <= *target {
                    "met"
                } else {
                    "MISSED"
                };
                println!(
                    "| {} {variant} | {over:.1} {unit} | {anchor} | {theirs_over:.1} {unit} | {ratio:.3}× | ≤ {target:.2}× {verdict} |",
                    c.group
                );
            }
        }
        println!(
            "| {} bare service | {bare:.1} {unit} per call | | | | |",
            c.group
        );
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn criterion_dir() -> PathBuf {
    target_dir().join("criterion")
}

/// The mean time of one benchmark, in nanoseconds, from criterion's `estimates.json`.
fn mean_ns(dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    // The file is small and its shape fixed:
    // {"mean":{"confidence_interval":{..},"point_estimate":X,..},..}
    let mean = &text[text.find("\"mean\"")?..];
    let key = "\"point_estimate\":";
    let value = &mean[mean.find(key)? + key.len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

/// Instructions per call of one contender: callgrind totals at N and 2N calls, differenced.
fn instructions_per_call(binary: &Path, contender: &str) -> Option<f64> {
    const N: u64 = 10_000;
    let total = |n: u64| -> Option<f64> {
        let output = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(binary)
            .args([contender, &n.to_string()])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stderr);
        let line = text.lines().find(|l| l.contains("Collected :"))?;
        line.rsplit(':').next()?.trim().parse().ok()
    };
    Some((total(2 * N)? - total(N)?) / N as f64)
}
