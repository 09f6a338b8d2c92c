//! A path with delay, without netem: three namespaces (client, router, server) joined by veth,
//! where the router sends every forwarded packet through a TUN device to a small user-space
//! delayer that holds each packet for the delay before handing it back.

use std::process::Command;

use super::procs::{Children, run};

/// The server's address on the far side of the router.
pub(crate) const SERVER_IP: &str = "10.90.2.2";

/// The delayer: reads packets from a TUN device and writes each back `delay` ms later, in
/// order (the delay is the same for all, so a queue suffices).
const DELAYER: &str = r#"
import collections, fcntl, os, select, struct, sys, time
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454ca, 0x0001, 0x1000
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", sys.argv[1].encode(), IFF_TUN | IFF_NO_PI))
delay = float(sys.argv[2]) / 1000.0
queue = collections.deque()
os.set_blocking(fd, False)
while True:
    now = time.monotonic()
    while queue and queue[0][0] <= now:
        try:
            os.write(fd, queue.popleft()[1])
        except OSError:
            pass
    timeout = max(0.0, queue[0][0] - now) if queue else 1.0
    ready, _, _ = select.select([fd], [], [], timeout)
    if ready:
        while True:
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                break
            queue.append((time.monotonic() + delay, packet))
"#;

/// The three namespaces and the delayer, removed when dropped.
pub(crate) struct DelayNet {
    pub(crate) client: String,
    pub(crate) router: String,
    pub(crate) server: String,
    _delayer: Children,
}

impl DelayNet {
    /// A path whose every packet waits `delay_ms` in the router, each way.
    pub(crate) fn new(delay_ms: u32) -> Result<Self, String> {
        let id = std::process::id();
        let mut net = DelayNet {
            client: format!("dly-c-{id}"),
            router: format!("dly-r-{id}"),
            server: format!("dly-s-{id}"),
            _delayer: Children::default(),
        };
        for ns in [&net.client, &net.router, &net.server] {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let links = [
            (
                &net.client,
                "dc0",
                "dr0",
                "10.90.1.2/24",
                "10.90.1.1/24",
                "10.90.1.1",
            ),
            (
                &net.server,
                "ds0",
                "dr1",
                "10.90.2.2/24",
                "10.90.2.1/24",
                "10.90.2.1",
            ),
        ];
        for (ns, end, router_end, addr, router_addr, gateway) in links {
            run(&[
                "ip",
                "link",
                "add",
                end,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                router_end,
                "netns",
                &net.router,
            ])?;
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", end])?;
            run(&[
                "ip",
                "-n",
                &net.router,
                "addr",
                "add",
                router_addr,
                "dev",
                router_end,
            ])?;
            for (n, dev) in [(ns.as_str(), end), (net.router.as_str(), router_end)] {
                // Large packets: the delayer's cost is per packet.
                run(&["ip", "-n", n, "link", "set", dev, "mtu", "9000", "up"])?;
            }
            run(&["ip", "-n", ns, "route", "add", "default", "via", gateway])?;
        }
        let sysctl = |key: &str| run(&["ip", "netns", "exec", &net.router, "sysctl", "-qw", key]);
        sysctl("net.ipv4.ip_forward=1")?;
        sysctl("net.ipv4.conf.all.rp_filter=0")?;
        sysctl("net.ipv4.conf.default.rp_filter=0")?;
        sysctl("net.ipv4.conf.all.send_redirects=0")?;
        net._delayer.spawn(
            Command::new("ip").args([
                "netns",
                "exec",
                &net.router,
                "python3",
                "-c",
                DELAYER,
                "dly0",
                &delay_ms.to_string(),
            ]),
            None,
        )?;
        // The delayer creates the device; wait for it, then route what arrives from either
        // side into it. What it writes back arrives on dly0 and takes the main table.
        let started = std::time::Instant::now();
        while run(&["ip", "-n", &net.router, "link", "show", "dly0"]).is_err() {
            if started.elapsed() > std::time::Duration::from_secs(10) {
                return Err("the delayer did not create its device".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        run(&[
            "ip",
            "-n",
            &net.router,
            "link",
            "set",
            "dly0",
            "mtu",
            "9000",
            "up",
        ])?;
        sysctl("net.ipv4.conf.dly0.rp_filter=0")?;
        run(&[
            "ip",
            "-n",
            &net.router,
            "route",
            "add",
            "default",
            "dev",
            "dly0",
            "table",
            "100",
        ])?;
        for dev in ["dr0", "dr1"] {
            run(&[
                "ip",
                "-n",
                &net.router,
                "rule",
                "add",
                "iif",
                dev,
                "table",
                "100",
            ])?;
        }
        Ok(net)
    }
}

impl Drop for DelayNet {
    fn drop(&mut self) {
        for ns in [&self.client, &self.router, &self.server] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}
