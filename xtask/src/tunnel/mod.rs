//! `cargo xtask bench tunnel`: sssonector as a whole process beside the programs it replaces,
//! measured in one run with the contenders alternated run by run, the same certificates, TLS
//! 1.3 AES-256-GCM and mutual TLS on every side.
//!
//! - forward: iperf3 through port forwarders on loopback, 1 and 4 streams: sssonector,
//!   stunnel, two chained socat relays (no TLS) and iperf3 straight;
//! - latency: new connections one after another, connect to first echoed byte, added over
//!   straight (p50, p99);
//! - delay: one stream over a path with 20 ms and 50 ms each way (a user-space delayer in a
//!   router namespace): sssonector, stunnel and plain TCP;
//! - tun: iperf3 and ping between two namespaces through sssonector's TUN mode, OpenVPN over
//!   UDP and over TCP (data channel offload off), and the bare veth;
//! - memory: thousands of idle forwarded connections held at once: RSS per connection on each
//!   side, sssonector beside stunnel.
//!
//! Prints one table of medians and writes `docs/bench/tunnel.json` and `docs/bench/tunnel.svg`.

mod delay;
mod forward;
mod measure;
mod memory;
mod procs;
mod report;
mod tun;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{cargo, step, workspace_root};
use forward::{Forwarder, Place, Setup};
use report::{Measure, OURS};

#[derive(Debug)]
struct Options {
    rounds: usize,
    seconds: u32,
    connections: usize,
    idle: usize,
    only: Vec<String>,
}

const PARTS: [&str; 5] = ["forward", "latency", "delay", "tun", "memory"];

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            rounds: 3,
            seconds: 5,
            connections: 200,
            idle: 10_000,
            only: PARTS.iter().map(|s| s.to_string()).collect(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value"))
                    .cloned()
            };
            let number = |name: &str, text: String| {
                text.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}: `{text}` is not a positive whole number"))
            };
            match arg.as_str() {
                "--rounds" => options.rounds = number("--rounds", value("--rounds")?)?,
                "--seconds" => {
                    options.seconds = u32::try_from(number("--seconds", value("--seconds")?)?)
                        .map_err(|_| "--seconds: too large".to_string())?;
                }
                "--connections" => {
                    options.connections = number("--connections", value("--connections")?)?;
                }
                "--idle" => options.idle = number("--idle", value("--idle")?)?,
                "--only" => {
                    let parts: Vec<String> =
                        value("--only")?.split(',').map(str::to_owned).collect();
                    if let Some(bad) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
                        return Err(format!(
                            "--only: unknown part `{bad}` (one of {})",
                            PARTS.join(", ")
                        ));
                    }
                    options.only = parts;
                }
                other => return Err(format!("bench tunnel: unknown option `{other}`")),
            }
        }
        Ok(options)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.iter().any(|p| p == part)
    }
}

/// `items` rotated left by `round`: each contender goes first in turn.
fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let n = round % v.len();
        v.rotate_left(n);
    }
    v
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args)?;
    let root = procs::run(&["id", "-u"]).is_ok_and(|o| o.trim() == "0");
    if root {
        procs::install(&[
            ("iperf3", "iperf3"),
            ("stunnel4", "stunnel4"),
            ("socat", "socat"),
            ("openvpn", "openvpn"),
            ("ss", "iproute2"),
            ("prlimit", "util-linux"),
            ("ping", "iputils-ping"),
            ("python3", "python3"),
        ])?;
    }
    step(
        "sssonector (release)",
        cargo().args(["build", "--release", "-p", "sssonector"]),
    )?;
    let binary = target_dir().join("release").join("sssonector");
    let dir = procs::TempDir::new("bench-tunnel")?;
    let setup = Setup::new(
        binary.clone(),
        dir.0.clone(),
        &format!("localhost,127.0.0.1,{},{}", tun::SERVER, delay::SERVER_IP),
    )?;
    let mut measures = Vec::new();
    if options.wants("forward") || options.wants("latency") {
        measures.extend(forward_and_latency(&setup, &options)?);
    }
    if options.wants("delay") {
        if root {
            measures.extend(delayed(&setup, &options)?);
        } else {
            println!("delay skipped: needs root for network namespaces");
        }
    }
    if options.wants("tun") {
        if root && Path::new("/dev/net/tun").exists() {
            measures.extend(tun_mode(&setup, &options)?);
        } else {
            println!("tun skipped: needs root and /dev/net/tun");
        }
    }
    if options.wants("memory") {
        measures.extend(memory_use(&setup, &options)?);
    }
    let date = procs::run(&["date", "-u", "+%F"])?.trim().to_owned();
    let machine = machine();
    let command = format!(
        "cargo xtask bench tunnel{}",
        args.iter().map(|a| format!(" {a}")).collect::<String>()
    );
    println!(
        "\n## Tunnel, same run ({date}, {machine}; {} rounds, iperf3 {} s, medians)\n",
        options.rounds, options.seconds
    );
    print!("{}", report::markdown(&measures));
    let out = workspace_root().join("docs").join("bench");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let caption = format!("{command} · {date} · {machine}");
    std::fs::write(
        out.join("tunnel.json"),
        report::json(&measures, &date, &machine, &command),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(out.join("tunnel.svg"), report::svg(&measures, &caption))
        .map_err(|e| e.to_string())?;
    println!("\nwrote docs/bench/tunnel.json and docs/bench/tunnel.svg");
    Ok(())
}

fn forward_and_latency(setup: &Setup, options: &Options) -> Result<Vec<Measure>, String> {
    let contenders = [
        Forwarder::Direct,
        Forwarder::Sssonector,
        Forwarder::Stunnel,
        Forwarder::Socat,
    ];
    let mut one = Measure::new("port forward, 1 stream", "Gbit/s", true, "stunnel").target(2.0);
    let mut four = Measure::new("port forward, 4 streams", "Gbit/s", true, "stunnel").target(2.0);
    let mut p50 = Measure::new("new connection, added p50", "ms", false, "stunnel").target(10.0);
    let mut p99 = Measure::new("new connection, added p99", "ms", false, "stunnel");
    let echo = measure::Echo::start()?;
    let place = Place::loopback();
    for round in 0..options.rounds {
        eprintln!("forward round {}/{}", round + 1, options.rounds);
        let mut direct_latency = None;
        let mut latencies = Vec::new();
        for forwarder in rotated(&contenders, round) {
            if options.wants("forward") {
                let target = procs::free_port()?;
                let running =
                    forward::start(forwarder, setup, &place, target, &[]).map_err(|e| {
                        format!("{}: {e}{}", forwarder.name(), forward::logs(&setup.dir))
                    })?;
                for (streams, m) in [(1, &mut one), (4, &mut four)] {
                    let gbits = measure::iperf(
                        None,
                        target,
                        None,
                        &running.host,
                        running.port,
                        streams,
                        options.seconds,
                    )
                    .map_err(|e| {
                        format!("{}: {e}{}", forwarder.name(), forward::logs(&setup.dir))
                    })?;
                    m.add(forwarder.name(), gbits);
                }
                drop(running);
            }
            if options.wants("latency") && forwarder != Forwarder::Socat {
                let running = forward::start(forwarder, setup, &place, echo.port, &[])?;
                // A few first, so that the tunnel's own connection is up and warm.
                measure::connect_latencies(&running.host, running.port, 5)?;
                let samples =
                    measure::connect_latencies(&running.host, running.port, options.connections)?;
                if forwarder == Forwarder::Direct {
                    direct_latency = Some(samples);
                } else {
                    latencies.push((forwarder.name(), samples));
                }
            }
        }
        if let Some(direct) = direct_latency {
            let (d50, d99) = (
                report::quantile(&direct, 0.5),
                report::quantile(&direct, 0.99),
            );
            for (name, samples) in latencies {
                if let (Some(a), Some(b), Some(d50), Some(d99)) = (
                    report::quantile(&samples, 0.5),
                    report::quantile(&samples, 0.99),
                    d50,
                    d99,
                ) {
                    p50.add(name, (a - d50).max(0.0));
                    p99.add(name, (b - d99).max(0.0));
                }
            }
        }
    }
    let mut out = Vec::new();
    if options.wants("forward") {
        out.extend([one, four]);
    }
    if options.wants("latency") {
        out.extend([p50, p99]);
    }
    Ok(out)
}

fn delayed(setup: &Setup, options: &Options) -> Result<Vec<Measure>, String> {
    let contenders = [Forwarder::Direct, Forwarder::Sssonector, Forwarder::Stunnel];
    let mut out = Vec::new();
    for delay_ms in [20, 50] {
        let net = delay::DelayNet::new(delay_ms)?;
        let place = Place {
            client_ns: Some(net.client.clone()),
            server_ns: Some(net.server.clone()),
            server_ip: delay::SERVER_IP.into(),
        };
        let mut m = Measure::new(
            format!("1 stream over {delay_ms} ms each way"),
            "Gbit/s",
            true,
            "plain TCP",
        );
        if delay_ms == 50 {
            m = m.target(0.9);
        }
        for round in 0..options.rounds {
            eprintln!("delay {delay_ms} ms round {}/{}", round + 1, options.rounds);
            for forwarder in rotated(&contenders, round) {
                let target = procs::free_port()?;
                let running =
                    forward::start(forwarder, setup, &place, target, &[]).map_err(|e| {
                        format!("{}: {e}{}", forwarder.name(), forward::logs(&setup.dir))
                    })?;
                // Twice the time: slow start over a long path takes seconds.
                let gbits = measure::iperf(
                    Some(&net.server),
                    target,
                    Some(&net.client),
                    &running.host,
                    running.port,
                    1,
                    options.seconds * 2,
                )?;
                let name = if forwarder == Forwarder::Direct {
                    "plain TCP"
                } else {
                    forwarder.name()
                };
                m.add(name, gbits);
            }
        }
        out.push(m);
        drop(net);
    }
    Ok(out)
}

fn tun_mode(setup: &Setup, options: &Options) -> Result<Vec<Measure>, String> {
    use tun::Vpn;
    let contenders = [Vpn::Veth, Vpn::Sssonector, Vpn::OpenVpnUdp, Vpn::OpenVpnTcp];
    let mut one = Measure::new("TUN, 1 TCP stream", "Gbit/s", true, "OpenVPN-UDP").target(3.0);
    let mut four = Measure::new("TUN, 4 TCP streams", "Gbit/s", true, "OpenVPN-UDP");
    let mut ping =
        Measure::new("TUN ping, added round trip", "ms", false, "OpenVPN-UDP").target(2.0);
    let net = tun::Net::new()?;
    for round in 0..options.rounds {
        eprintln!("tun round {}/{}", round + 1, options.rounds);
        let mut pings = Vec::new();
        for vpn in rotated(&contenders, round) {
            let children = net
                .start(vpn, &setup.binary, &setup.dir)
                .map_err(|e| format!("{e}{}", tun_logs(&setup.dir)))?;
            let port = 5201;
            for (streams, m) in [(1, &mut one), (4, &mut four)] {
                let gbits = measure::iperf(
                    Some(&net.server),
                    port,
                    Some(&net.client),
                    vpn.server_addr(),
                    port,
                    streams,
                    options.seconds,
                )?;
                m.add(vpn.name(), gbits);
            }
            pings.push((vpn, measure::ping_ms(&net.client, vpn.server_addr(), 50)?));
            drop(children);
            // The devices go with the processes; give the kernel a moment.
            std::thread::sleep(Duration::from_millis(300));
        }
        if let Some(&(_, veth)) = pings.iter().find(|(v, _)| *v == Vpn::Veth) {
            for (vpn, ms) in pings.into_iter().filter(|(v, _)| *v != Vpn::Veth) {
                ping.add(vpn.name(), (ms - veth).max(0.001));
            }
        }
    }
    Ok(vec![one, four, ping])
}

fn tun_logs(dir: &Path) -> String {
    procs::log_tails(
        dir,
        &[
            "tun-server.log",
            "tun-client.log",
            "ovpn-server.log",
            "ovpn-client.log",
        ],
    )
}

fn memory_use(setup: &Setup, options: &Options) -> Result<Vec<Measure>, String> {
    let mut client = Measure::new(
        format!("{} idle connections, RSS each, client side", options.idle),
        "KiB",
        false,
        "stunnel",
    );
    let mut server = Measure::new(
        format!("{} idle connections, RSS each, server side", options.idle),
        "KiB",
        false,
        "stunnel",
    );
    let mut notes = Vec::new();
    for forwarder in [Forwarder::Sssonector, Forwarder::Stunnel] {
        eprintln!(
            "memory: {} with {} idle connections",
            forwarder.name(),
            options.idle
        );
        let held = memory::hold(forwarder, setup, options.idle)?;
        client.add(forwarder.name(), held.per_connection.0);
        server.add(forwarder.name(), held.per_connection.1);
        if held.held < options.idle {
            notes.push(format!("{} held {}", forwarder.name(), held.held));
        } else if forwarder.name() == OURS {
            notes.push(format!("{OURS} held all"));
        }
    }
    let note = notes.join(", ");
    client.note = Some(note.clone());
    server.note = Some(note);
    Ok(vec![client, server])
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = procs::run(&["uname", "-r"]).map_or_else(|_| "?".into(), |k| k.trim().to_owned());
    format!("{cpus} vCPU {model}, Linux {kernel}")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_by_name() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let o = Options::parse(&args("--rounds 5 --only tun,delay")).unwrap();
        assert_eq!((o.rounds, o.seconds), (5, 5));
        assert!(o.wants("tun") && !o.wants("forward"));
        assert!(
            Options::parse(&args("--only fast"))
                .unwrap_err()
                .contains("`fast`")
        );
        assert!(
            Options::parse(&args("--rounds 0"))
                .unwrap_err()
                .contains("--rounds")
        );
        assert!(
            Options::parse(&args("--seconds"))
                .unwrap_err()
                .contains("needs a value")
        );
    }

    #[test]
    fn each_contender_goes_first_in_turn() {
        assert_eq!(rotated(&[1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(rotated(&[1, 2, 3], 1), [2, 3, 1]);
        assert_eq!(rotated(&[1, 2, 3], 5), [3, 1, 2]);
    }
}
