//! Running commands with their timing reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo that invoked us, so the same toolchain runs every step.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs `command`, printing it first and its duration after; an error names the step.
pub(crate) fn step(step: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {step}: {}", render(command));
    let started = Instant::now();
    let status = command
        .status()
        .map_err(|e| format!("{step}: could not start `{}`: {e}", render(command)))?;
    let took = started.elapsed().as_secs_f64();
    if status.success() {
        eprintln!("<== {step}: ok in {took:.1}s");
        Ok(())
    } else {
        Err(format!(
            "{step} failed ({status}) after {took:.1}s: `{}`",
            render(command)
        ))
    }
}

/// Whether `program --version` runs.
pub(crate) fn available(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn render(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    let envs: Vec<String> = command
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    if envs.is_empty() {
        parts.join(" ")
    } else {
        format!("{} {}", envs.join(" "), parts.join(" "))
    }
}
