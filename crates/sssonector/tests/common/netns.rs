//! Network namespaces joined by veth pairs, for the TUN-mode tests: creating them, running
//! processes inside them, and removing both on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the namespace tests cannot run here, if they cannot: they need root, `/dev/net/tun`,
/// and each of `tools` on the path.
pub fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Runs a command quietly; whether it succeeded.
pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and a veth pair, named after this process; removed on drop, with every
/// process started in them.
pub struct Net {
    pub server_ns: String,
    pub client_ns: String,
    /// The veth ends: the server's (`192.168.77.1`) and the client's (`192.168.77.2`).
    pub server_dev: String,
    pub client_dev: String,
    /// More client namespaces, joined to the server's by their own veth pairs.
    pub extra: Vec<String>,
    pub tag: String,
    pub dir: PathBuf,
    pub children: Vec<Child>,
}

impl Net {
    /// `tag` (one letter) keeps the names of tests run in one process apart.
    pub fn new(tag: &str) -> Self {
        let id = std::process::id();
        let net = Net {
            server_ns: format!("sss-s{tag}-{id}"),
            client_ns: format!("sss-c{tag}-{id}"),
            server_dev: format!("sv{tag}{id}a"),
            client_dev: format!("sv{tag}{id}b"),
            extra: Vec::new(),
            tag: tag.to_owned(),
            dir: std::env::temp_dir().join(format!("sss-netns{tag}-{id}")),
            children: Vec::new(),
        };
        let (a, b) = (&net.server_dev, &net.client_dev);
        must(&["ip", "netns", "add", &net.server_ns]);
        must(&["ip", "netns", "add", &net.client_ns]);
        must(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
        must(&["ip", "link", "set", a, "netns", &net.server_ns]);
        must(&["ip", "link", "set", b, "netns", &net.client_ns]);
        for (ns, dev, addr) in [
            (&net.server_ns, a, "192.168.77.1/24"),
            (&net.client_ns, b, "192.168.77.2/24"),
        ] {
            must(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        std::fs::create_dir_all(&net.dir).unwrap();
        net
    }

    /// Another client namespace whose veth reaches the server's as `192.168.{subnet}.1`.
    pub fn add_client(&mut self, subnet: u8) -> String {
        let id = std::process::id();
        let ns = format!("sss-c{}{subnet}-{id}", self.tag);
        let (a, b) = (
            format!("s{}{subnet}{id}a", self.tag),
            format!("s{}{subnet}{id}b", self.tag),
        );
        must(&["ip", "netns", "add", &ns]);
        self.extra.push(ns.clone());
        must(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        must(&["ip", "link", "set", &a, "netns", &self.server_ns]);
        must(&["ip", "link", "set", &b, "netns", &ns]);
        for (n, dev, addr) in [
            (&self.server_ns, &a, format!("192.168.{subnet}.1/24")),
            (&ns, &b, format!("192.168.{subnet}.2/24")),
        ] {
            must(&["ip", "-n", n, "addr", "add", &addr, "dev", dev]);
            must(&["ip", "-n", n, "link", "set", dev, "up"]);
            must(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// `args` run inside namespace `ns`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).args(args);
        command
    }

    /// One ping from `ns` to `addr`, one second to answer.
    pub fn ping(&self, ns: &str, addr: &str) -> bool {
        self.exec(ns, &["ping", "-c", "1", "-W", "1", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Pings until it answers or `limit` passes; returns how long it took.
    pub fn ping_within(&self, ns: &str, addr: &str, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.ping(ns, addr) {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Starts `sssonector run --config CONFIG` in `ns`, its log in `dir/LOG`; returns its index
    /// in `children`.
    pub fn start(&mut self, ns: &str, config: &Path, log: &str) -> usize {
        self.spawn(
            ns,
            &[
                env!("CARGO_BIN_EXE_sssonector"),
                "run",
                "--config",
                config.to_str().unwrap(),
                "--log-level",
                "debug",
            ],
            log,
        )
    }

    /// Starts `args` in `ns` (in `dir`), standard error and output to `dir/LOG`; returns its
    /// index in `children`. `ip netns exec` execs the program, so the child's pid is its own.
    pub fn spawn(&mut self, ns: &str, args: &[&str], log: &str) -> usize {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = self
            .exec(ns, args)
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Kills child `index` (SIGKILL) and reaps it.
    pub fn kill(&mut self, index: usize) {
        let child = &mut self.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether child `index` is still running (it has not exited or crashed).
    pub fn running(&mut self, index: usize) -> bool {
        matches!(self.children[index].try_wait(), Ok(None))
    }

    /// How many file descriptors child `index` holds.
    pub fn open_fds(&self, index: usize) -> usize {
        let pid = self.children[index].id();
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        sh(&["ip", "netns", "del", &self.server_ns]);
        sh(&["ip", "netns", "del", &self.client_ns]);
        for ns in &self.extra {
            sh(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TUN client's configuration for the server at `192.168.77.1:8443`, with the CA's client
/// certificate, a keepalive each second and the peer dead after `timeout` of silence.
pub fn tun_client_toml(timeout: &str) -> String {
    format!(
        "role = \"client\"\nmode = \"tun\"\n\
         [tls]\ncert = \"pki/client.pem\"\nkey = \"pki/client.key\"\nca = \"pki/ca.pem\"\n\
         [client]\nservers = [\"192.168.77.1:8443\"]\n\
         [tun]\nname = \"sss-cli\"\nmtu = 1400\n\
         [keepalive]\ninterval = \"1s\"\ntimeout = \"{timeout}\"\n"
    )
}

/// The first line a child writes to its piped standard output.
pub fn first_line(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    let stdout = child.stdout.as_mut().unwrap();
    // One byte at a time through a BufReader that is dropped: fine for one short line.
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    line.trim().to_owned()
}
