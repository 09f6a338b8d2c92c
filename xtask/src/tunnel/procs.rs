//! Processes, ports, directories and readiness for the tunnel harness.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Child processes killed (last started first) when dropped.
#[derive(Default)]
pub(crate) struct Children(Vec<Child>);

impl Children {
    /// Starts `command` with its output discarded (standard error to `log`, when given).
    pub(crate) fn spawn(
        &mut self,
        command: &mut Command,
        log: Option<&Path>,
    ) -> Result<u32, String> {
        command.stdin(Stdio::null()).stdout(Stdio::null());
        match log {
            Some(path) => {
                let file =
                    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
                command.stderr(file);
            }
            None => {
                command.stderr(Stdio::null());
            }
        }
        let child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", command.get_program().to_string_lossy()))?;
        let pid = child.id();
        self.0.push(child);
        Ok(pid)
    }

    /// Whether every child is still running; the first that exited is named.
    pub(crate) fn alive(&mut self) -> Result<(), String> {
        for child in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("process {} exited: {status}", child.id()));
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("sssonector-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port free now.
pub(crate) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Runs `args`, failing with its standard error.
pub(crate) fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `command` run inside network namespace `ns`, or as it is without one.
pub(crate) fn in_ns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, program]);
            command
        }
        None => Command::new(program),
    }
}

/// Waits until something listens on TCP `port` (in `ns`, or here), up to 10 s.
pub(crate) fn wait_listening(ns: Option<&str>, port: u16) -> Result<(), String> {
    let started = Instant::now();
    let wanted = format!(":{port} ");
    while started.elapsed() < Duration::from_secs(10) {
        let out = in_ns(ns, "ss")
            .args(["-Hltn"])
            .output()
            .map_err(|e| format!("ss: {e}"))?;
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains(&wanted))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listens on port {port} after 10 s"))
}

/// A `$NOTIFY_SOCKET` for sssonector's readiness message.
pub(crate) struct Notify {
    socket: UnixDatagram,
    pub(crate) path: PathBuf,
}

impl Notify {
    pub(crate) fn new(dir: &Path, name: &str) -> Result<Self, String> {
        let path = dir.join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        Ok(Self { socket, path })
    }

    /// Waits up to 15 s for `READY=1`, checking that `children` live meanwhile.
    pub(crate) fn ready(&self, children: &mut Children) -> Result<(), String> {
        let started = Instant::now();
        let mut buf = [0u8; 512];
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(n) = self.socket.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                    return Ok(());
                }
            }
            children.alive()?;
        }
        Err(format!("no READY=1 on {} after 15 s", self.path.display()))
    }
}

/// The resident set of process `pid`, KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for {pid}"))
}

/// Installs the Debian packages whose `program`s are missing.
pub(crate) fn install(wanted: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::cmd::step(
        "apt-get install",
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The last five lines of each of the `names` in `dir` that exist, for an error message.
pub(crate) fn log_tails(dir: &Path, names: &[&str]) -> String {
    let mut out = String::new();
    for name in names {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            let mut tail: Vec<&str> = text.lines().rev().take(5).collect();
            tail.reverse();
            if !tail.is_empty() {
                out.push_str(&format!("\n{name}:\n  {}", tail.join("\n  ")));
            }
        }
    }
    out
}

/// Writes `config` to `dir/SIDE.toml` and starts `command` (the binary, perhaps behind
/// `ip netns exec`) with `run --config` on it, logging to `dir/SIDE.log`; returns once it
/// says it is ready.
pub(crate) fn start_sssonector(
    children: &mut Children,
    mut command: Command,
    config: &str,
    dir: &Path,
    side: &str,
) -> Result<u32, String> {
    let path = dir.join(format!("{side}.toml"));
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let notify = Notify::new(dir, side)?;
    let pid = children.spawn(
        command
            .args(["run", "--config"])
            .arg(&path)
            .args(["--log-level", "warn"])
            .env("NOTIFY_SOCKET", &notify.path),
        Some(&dir.join(format!("{side}.log"))),
    )?;
    notify.ready(children)?;
    Ok(pid)
}
