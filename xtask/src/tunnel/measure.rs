//! The measurements: iperf3 throughput and new-connection latency.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::procs::{in_ns, wait_listening};

/// iperf3 for `seconds` with `streams` parallel streams: the server in `server_ns` on
/// `server_port`, the client in `client_ns` connecting to `host:port`; Gbit/s received. Tries
/// three times (iperf3 sometimes fails to start its control connection).
pub(crate) fn iperf(
    server_ns: Option<&str>,
    server_port: u16,
    client_ns: Option<&str>,
    host: &str,
    port: u16,
    streams: u32,
    seconds: u32,
) -> Result<f64, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let mut server = in_ns(server_ns, "iperf3")
            .args(["-s", "-1", "-p", &server_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 -s: {e}"))?;
        let result = wait_listening(server_ns, server_port).and_then(|()| {
            let out = in_ns(client_ns, "iperf3")
                .args([
                    "-c",
                    host,
                    "-p",
                    &port.to_string(),
                    "-t",
                    &seconds.to_string(),
                ])
                .args(["-P", &streams.to_string(), "-J"])
                .output()
                .map_err(|e| format!("iperf3 -c: {e}"))?;
            let json = String::from_utf8_lossy(&out.stdout);
            received_gbits(&json).ok_or_else(|| format!("iperf3: no result in {json}"))
        });
        let _ = server.kill();
        let _ = server.wait();
        match result {
            Ok(gbits) => return Ok(gbits),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

/// `end.sum_received.bits_per_second` from iperf3's JSON, in Gbit/s.
pub(crate) fn received_gbits(json: &str) -> Option<f64> {
    let at = json.rfind("\"sum_received\"")?;
    let rest = &json[at..];
    let key = rest.find("\"bits_per_second\"")?;
    let value = rest[key + "\"bits_per_second\"".len()..].trim_start_matches([':', ' ', '\t']);
    let end = value.find([',', '\n', '}'])?;
    value[..end].trim().parse::<f64>().ok().map(|b| b / 1e9)
}

/// An echo target on loopback: every connection gets back what it sends, on its own thread.
pub(crate) struct Echo {
    pub(crate) port: u16,
}

impl Echo {
    pub(crate) fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    let mut buf = [0u8; 4096];
                    let mut stream = stream;
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self { port })
    }
}

/// `count` sequential new connections to `host:port`, each sending one byte and waiting for
/// its echo; milliseconds from connect to echo, each.
pub(crate) fn connect_latencies(host: &str, port: u16, count: usize) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let mut stream =
            TcpStream::connect((host, port)).map_err(|e| format!("connect {host}:{port}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream.write_all(b"x").map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("echo through {host}:{port}: {e}"))?;
        out.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// Average ping round trip in ms: `count` pings at 20 ms intervals from `ns` to `addr`.
pub(crate) fn ping_ms(ns: &str, addr: &str, count: u32) -> Result<f64, String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.02",
            addr,
        ])
        .output()
        .map_err(|e| format!("ping: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.041/0.052/0.093/0.010 ms
    text.lines()
        .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.contains("min/avg")))
        .and_then(|(_, v)| v.split('/').nth(1)?.parse().ok())
        .ok_or_else(|| format!("ping {addr} from {ns}: {text}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn iperf3_json_gives_the_received_rate() {
        let json = "{\"end\": {\"sum_sent\": {\"bits_per_second\": 2e9},\n\"sum_received\": {\n\"seconds\": 5,\n\"bits_per_second\": 4.5e+09,\n\"sender\": true}}}";
        assert_eq!(super::received_gbits(json), Some(4.5));
        assert_eq!(super::received_gbits("{}"), None);
    }
}
