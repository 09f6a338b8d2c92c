//! Project automation for the sssonector workspace.
//!
//! - `cargo xtask ci`: exactly what CI runs (format, lints, tests, docs, benchmark and example
//!   builds, the unattended examples, dependency policy). Installs missing tools itself.
//! - `cargo xtask bench tunnel [--rounds N] [--seconds S] [--only PARTS]`: the tunnel beside
//!   stunnel, OpenVPN, socat and the bare path, measured in one run.
//! - `cargo xtask fuzz [--seconds N] [TARGET…]`: the cargo-fuzz targets in `fuzz/`, N seconds
//!   each, on the stable toolchain.
//! - `cargo xtask soak [--minutes N] [--rate R]`: new forwarded connections at R a second for
//!   N minutes, in release; fails on errors, descriptor leaks or resident-set growth.
//! - `cargo xtask bench [FILTER]`: runs the criterion benchmarks that set our crates beside
//!   their anchors and prints the overhead ratios the crate READMEs quote.

#![allow(
    clippy::print_stdout,
    reason = "xtask reports to the developer running it on standard output"
)]

mod bench;
mod ci;
mod cmd;
mod fuzz;
mod soak;
#[cfg(test)]
mod tidy;
mod tunnel;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("tunnel") => {
            tunnel::run(&args[2..])
        }
        Some("bench") => bench::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            eprintln!("{}", USAGE);
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown subcommand `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci              run everything CI runs (installs cargo-deny if missing)
  fuzz [--seconds N] [TARGET...]
                  run the cargo-fuzz targets (frame_decode, session, certs_load,
                  config_parse, policy_parse) N seconds each (60 by default) and print
                  executions and crashes (installs cargo-fuzz)
  soak [--minutes N] [--rate R]
                  R new forwarded connections a second (500) for N minutes (10), in
                  release: fails on any error, leaked descriptor or RSS growth of 5% or more
  bench [FILTER]  run the comparative criterion benchmarks and print overhead ratios
  bench tunnel [--rounds N] [--seconds S] [--connections N] [--idle N]
               [--only forward,latency,delay,tun,memory]
                  sssonector beside stunnel, socat, OpenVPN and the bare path, in one
                  run, contenders alternated: port forward, new-connection latency, a
                  path with 20 and 50 ms delay, TUN mode, idle-connection memory (root
                  for delay and tun; installs iperf3, stunnel4, socat, openvpn); writes
                  docs/bench/tunnel.json and tunnel.svg";
