//! `cargo xtask soak [--minutes N] [--rate R]`: the load test (`crates/sssonector/tests/load.rs`)
//! built in release and run for N minutes (10 by default) at R new forwarded connections a
//! second (500 by default). It fails on any failed connection, on descriptors that do not
//! return to where they were, and on a resident set that grows 5% or more after the warm-up;
//! the figures are printed as the test ends.

use crate::cmd::{cargo, step};

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut minutes = 10u64;
    let mut rate = 500u64;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--minutes" => &mut minutes,
            "--rate" => &mut rate,
            other => {
                return Err(format!(
                    "unknown soak option `{other}` (--minutes N, --rate R)"
                ));
            }
        };
        let value = args.next().ok_or_else(|| format!("{arg} needs a number"))?;
        *target = value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{arg}: `{value}` is not a whole number above 0"))?;
    }
    step(
        &format!("soak: {rate} new connections a second for {minutes} min"),
        cargo()
            .args([
                "test",
                "--release",
                "-p",
                "sssonector",
                "--test",
                "load",
                "--",
                "--exact",
                "new_connections_at_a_steady_rate",
                "--nocapture",
            ])
            .env("LOAD_TEST_SECONDS", (minutes * 60).to_string())
            .env("LOAD_TEST_RATE", rate.to_string()),
    )
}
