//! `cargo xtask bench tunnel`: the tunnel as a whole process, each figure beside a baseline
//! measured in the same run.
//!
//! 1. Port forward on loopback (no root): `sssonector demo` with 256 MiB per stream, which
//!    prints the same transfer straight to its echo target.
//! 2. TUN mode between two network namespaces joined by veth (root, iperf3): iperf3 through the
//!    tunnel, 1 and 4 streams, with TUN offload on and off, beside iperf3 straight over the veth
//!    pair. Installs iperf3 with apt-get when missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{available, cargo, step, workspace_root};

pub(crate) fn run() -> Result<(), String> {
    step(
        "sssonector (release)",
        cargo().args(["build", "--release", "-p", "sssonector"]),
    )?;
    let binary = target_dir().join("release").join("sssonector");

    println!("\n## Port forward on loopback: sssonector demo --mib 256\n");
    let demo = Command::new(&binary)
        .args(["demo", "--mib", "256", "--streams", "4"])
        .output()
        .map_err(|e| format!("demo: {e}"))?;
    print!("{}", String::from_utf8_lossy(&demo.stdout));
    if !demo.status.success() {
        return Err(format!(
            "demo failed: {}",
            String::from_utf8_lossy(&demo.stderr)
        ));
    }

    if available("iperf3", &["--version"]) {
        forward_iperf(&binary)?;
    } else {
        println!("\n(iperf3 not installed: the forward-mode iperf3 run is skipped)");
    }

    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || !Path::new("/dev/net/tun").exists() {
        println!("\nTUN mode skipped: needs root and /dev/net/tun");
        return Ok(());
    }
    if !available("iperf3", &["--version"]) {
        step(
            "apt-get install iperf3",
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", "iperf3"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    println!("\n## TUN mode between two network namespaces (iperf3, 5 s each, MTU 1400)\n");
    println!("| setup | 1 stream Gbit/s | 4 streams Gbit/s | × veth (1 / 4) |");
    println!("|---|---|---|---|");
    let net = Net::new()?;
    let direct = (net.iperf("192.168.77.1", 1)?, net.iperf("192.168.77.1", 4)?);
    println!(
        "| straight over veth (baseline) | {:.2} | {:.2} | 1.00 / 1.00 |",
        direct.0, direct.1
    );
    for offload in [true, false] {
        let mut tunnel = net.tunnel(&binary, offload)?;
        let through = (net.iperf("10.77.0.1", 1)?, net.iperf("10.77.0.1", 4)?);
        tunnel.stop();
        println!(
            "| through the tunnel, TUN offload {} | {:.2} | {:.2} | {:.2} / {:.2} |",
            if offload { "on" } else { "off" },
            through.0,
            through.1,
            through.0 / direct.0,
            through.1 / direct.1
        );
    }
    Ok(())
}

/// Port forward on loopback with iperf3 (one direction, as the data-path notes measured
/// stunnel): a server and a client process, rule "iperf" to an iperf3 server, beside iperf3
/// straight to it.
fn forward_iperf(binary: &Path) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("sssonector-bench-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _cleanup = RemoveDir(dir.clone());
    let pki = dir.join("pki");
    let pki = pki.to_str().unwrap_or("pki");
    let bin = binary.to_str().unwrap_or("sssonector");
    run_quiet(&[bin, "certs", "init", "--dir", pki])?;
    run_quiet(&[
        bin,
        "certs",
        "issue",
        "--dir",
        pki,
        "--server",
        "localhost",
        "--out",
        "server",
    ])?;
    run_quiet(&[
        bin, "certs", "issue", "--dir", pki, "--client", "bench", "--out", "client",
    ])?;
    let free_port = || -> Result<u16, String> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port())
    };
    let (iperf_port, tunnel_port, local_port) = (free_port()?, free_port()?, free_port()?);
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "role = \"server\"\nmode = \"forward\"\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
             [server]\nlisten = \"127.0.0.1:{tunnel_port}\"\nconnections_per_second = 0\n\
             [[forward]]\nname = \"iperf\"\ntarget = \"127.0.0.1:{iperf_port}\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("client.toml"),
        format!(
            "role = \"client\"\nmode = \"forward\"\n[tls]\ncert = \"pki/client.pem\"\nkey = \"pki/client.key\"\nca = \"pki/ca.pem\"\n\
             [client]\nservers = [\"127.0.0.1:{tunnel_port}\"]\nserver_name = \"localhost\"\n\
             [[forward]]\nname = \"iperf\"\nlisten = \"127.0.0.1:{local_port}\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut tunnel = Tunnel {
        children: Vec::new(),
    };
    for config in ["server.toml", "client.toml"] {
        tunnel.start(Command::new(binary), &dir.join(config))?;
    }
    let iperf = |port: u16, streams: u32| -> Result<f64, String> {
        let mut server = Command::new("iperf3");
        server.args(["-s", "-1", "-B", "127.0.0.1", "-p", &iperf_port.to_string()]);
        let mut client = Command::new("iperf3");
        client.args(["-c", "127.0.0.1", "-p", &port.to_string()]);
        iperf3(server, client, streams)
    };
    let direct = (iperf(iperf_port, 1)?, iperf(iperf_port, 4)?);
    let through = (iperf(local_port, 1)?, iperf(local_port, 4)?);
    tunnel.stop();
    println!("\n## Port forward on loopback, iperf3 (5 s each)\n");
    println!("| setup | 1 stream Gbit/s | 4 streams Gbit/s | × direct (1 / 4) |");
    println!("|---|---|---|---|");
    println!(
        "| iperf3 straight (baseline) | {:.2} | {:.2} | 1.00 / 1.00 |",
        direct.0, direct.1
    );
    println!(
        "| through the tunnel | {:.2} | {:.2} | {:.2} / {:.2} |",
        through.0,
        through.1,
        through.0 / direct.0,
        through.1 / direct.1
    );
    Ok(())
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `server` (an `iperf3 -s -1`), runs `client` (an `iperf3 -c …`) for 5 s with
/// `streams` parallel streams, and returns the Gbit/s the server received.
fn iperf3(mut server: Command, mut client: Command, streams: u32) -> Result<f64, String> {
    let mut server = server
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 server: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .args(["-t", "5", "-P", &streams.to_string(), "-J"])
        .output()
        .map_err(|e| format!("iperf3 client: {e}"))?;
    let _ = server.wait();
    let json = String::from_utf8_lossy(&out.stdout);
    received_gbits(&json).ok_or_else(|| format!("iperf3: no result in {json}"))
}

/// `end.sum_received.bits_per_second` from iperf3's JSON, in Gbit/s.
fn received_gbits(json: &str) -> Option<f64> {
    let at = json.rfind("\"sum_received\"")?;
    let rest = &json[at..];
    let key = rest.find("\"bits_per_second\"")?;
    let value = rest[key + 17..].trim_start_matches([':', ' ']);
    let end = value.find([',', '\n', '}'])?;
    value[..end].trim().parse::<f64>().ok().map(|b| b / 1e9)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn run_quiet(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces joined by veth, removed on drop.
struct Net {
    server: String,
    client: String,
    dir: PathBuf,
}

struct Tunnel {
    children: Vec<Child>,
}

impl Tunnel {
    /// Appends `run --config CONFIG` to `command` (the binary, or `ip netns exec … binary`),
    /// starts it, and gives it a moment to listen.
    fn start(&mut self, mut command: Command, config: &Path) -> Result<(), String> {
        let child = command
            .args(["run", "--config"])
            .arg(config)
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("sssonector run --config {}: {e}", config.display()))?;
        self.children.push(child);
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    fn stop(&mut self) {
        // The client first, so it does not log the server's going as an outage.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The devices go with the processes; give the kernel a moment.
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Net {
    fn new() -> Result<Self, String> {
        let id = std::process::id();
        let net = Net {
            server: format!("bench-s-{id}"),
            client: format!("bench-c-{id}"),
            dir: std::env::temp_dir().join(format!("sssonector-bench-{id}")),
        };
        let (a, b) = (format!("bv{id}a"), format!("bv{id}b"));
        run_quiet(&["ip", "netns", "add", &net.server])?;
        run_quiet(&["ip", "netns", "add", &net.client])?;
        run_quiet(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        run_quiet(&["ip", "link", "set", &a, "netns", &net.server])?;
        run_quiet(&["ip", "link", "set", &b, "netns", &net.client])?;
        for (ns, dev, addr) in [
            (&net.server, &a, "192.168.77.1/24"),
            (&net.client, &b, "192.168.77.2/24"),
        ] {
            run_quiet(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
            run_quiet(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            run_quiet(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        std::fs::create_dir_all(&net.dir).map_err(|e| e.to_string())?;
        let sssonector = |args: &[&str]| {
            run_quiet(
                &[
                    &[target_dir()
                        .join("release/sssonector")
                        .to_str()
                        .unwrap_or("sssonector")][..],
                    args,
                ]
                .concat(),
            )
        };
        let pki = net.dir.join("pki");
        let pki = pki.to_str().unwrap_or("pki");
        sssonector(&["certs", "init", "--dir", pki])?;
        sssonector(&[
            "certs",
            "issue",
            "--dir",
            pki,
            "--server",
            "192.168.77.1",
            "--out",
            "server",
        ])?;
        sssonector(&[
            "certs", "issue", "--dir", pki, "--client", "bench", "--out", "client",
        ])?;
        Ok(net)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).args(args);
        command
    }

    /// Starts a server and a client and waits until a ping crosses the tunnel.
    fn tunnel(&self, binary: &Path, offload: bool) -> Result<Tunnel, String> {
        let write = |name: &str, text: String| {
            std::fs::write(self.dir.join(name), text).map_err(|e| e.to_string())
        };
        write(
            "server.toml",
            format!(
                "role = \"server\"\nmode = \"tun\"\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nca = \"pki/ca.pem\"\n\
                 [server]\nlisten = \"192.168.77.1:8443\"\n\
                 [tun]\nname = \"bench-srv\"\naddress = \"10.77.0.1/24\"\npool = \"10.77.0.0/24\"\nmtu = 1400\noffload = {offload}\n"
            ),
        )?;
        write(
            "client.toml",
            format!(
                "role = \"client\"\nmode = \"tun\"\n[tls]\ncert = \"pki/client.pem\"\nkey = \"pki/client.key\"\nca = \"pki/ca.pem\"\n\
                 [client]\nservers = [\"192.168.77.1:8443\"]\n\
                 [tun]\nname = \"bench-cli\"\nmtu = 1400\noffload = {offload}\n"
            ),
        )?;
        let mut tunnel = Tunnel {
            children: Vec::new(),
        };
        for (ns, config) in [(&self.server, "server.toml"), (&self.client, "client.toml")] {
            let binary = binary.to_str().unwrap_or("sssonector");
            tunnel.start(self.exec(ns, &[binary]), &self.dir.join(config))?;
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            let ok = self
                .exec(&self.client, &["ping", "-c", "1", "-W", "1", "10.77.0.1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(tunnel);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("the tunnel did not come up within 15 s".into())
    }

    /// iperf3 from the client namespace to `addr` in the server namespace; Gbit/s received.
    fn iperf(&self, addr: &str, streams: u32) -> Result<f64, String> {
        iperf3(
            self.exec(&self.server, &["iperf3", "-s", "-1", "-B", addr]),
            self.exec(&self.client, &["iperf3", "-c", addr]),
            streams,
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run_quiet(&["ip", "netns", "del", &self.server]);
        let _ = run_quiet(&["ip", "netns", "del", &self.client]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
