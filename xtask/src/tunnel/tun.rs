//! TUN mode between two network namespaces joined by veth: sssonector beside OpenVPN (UDP and
//! TCP transports, data channel offload off) and the bare veth.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::procs::{Children, run, start_sssonector};

/// The server's veth address.
pub(crate) const SERVER: &str = "192.168.77.1";

/// A VPN between the namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vpn {
    /// No VPN: straight over the veth.
    Veth,
    Sssonector,
    OpenVpnUdp,
    OpenVpnTcp,
}

impl Vpn {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Vpn::Veth => "veth",
            Vpn::Sssonector => "sssonector",
            Vpn::OpenVpnUdp => "OpenVPN-UDP",
            Vpn::OpenVpnTcp => "OpenVPN-TCP",
        }
    }

    /// The server's address inside the VPN.
    pub(crate) fn server_addr(self) -> &'static str {
        match self {
            Vpn::Veth => SERVER,
            Vpn::Sssonector => "10.77.0.1",
            Vpn::OpenVpnUdp => "10.88.0.1",
            Vpn::OpenVpnTcp => "10.89.0.1",
        }
    }
}

/// Two namespaces joined by veth, removed when dropped.
pub(crate) struct Net {
    pub(crate) server: String,
    pub(crate) client: String,
}

impl Net {
    pub(crate) fn new() -> Result<Self, String> {
        let id = std::process::id();
        let net = Net {
            server: format!("bench-s-{id}"),
            client: format!("bench-c-{id}"),
        };
        let (a, b) = (format!("bv{id}a"), format!("bv{id}b"));
        run(&["ip", "netns", "add", &net.server])?;
        run(&["ip", "netns", "add", &net.client])?;
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        run(&["ip", "link", "set", &a, "netns", &net.server])?;
        run(&["ip", "link", "set", &b, "netns", &net.client])?;
        for (ns, dev, addr) in [
            (&net.server, &a, "192.168.77.1/24"),
            (&net.client, &b, "192.168.77.2/24"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn exec(&self, ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }

    /// Starts `vpn` (nothing for the veth) and waits until a ping crosses it.
    pub(crate) fn start(&self, vpn: Vpn, binary: &Path, dir: &Path) -> Result<Children, String> {
        let mut children = Children::default();
        let pki = |f: &str| dir.join("pki").join(f).to_string_lossy().into_owned();
        match vpn {
            Vpn::Veth => return Ok(children),
            Vpn::Sssonector => {
                let server = format!(
                    "role = \"server\"\nmode = \"tun\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\
                     [server]\nlisten = \"{SERVER}:8443\"\n[bans]\nenabled = false\n\
                     [tun]\nname = \"bsss-s\"\naddress = \"10.77.0.1/24\"\npool = \"10.77.0.0/24\"\nmtu = 1400\noffload = true\n",
                    pki("server.pem"),
                    pki("server.key"),
                    pki("ca.pem")
                );
                let client = format!(
                    "role = \"client\"\nmode = \"tun\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\
                     [client]\nservers = [\"{SERVER}:8443\"]\n\
                     [tun]\nname = \"bsss-c\"\nmtu = 1400\noffload = true\n",
                    pki("client.pem"),
                    pki("client.key"),
                    pki("ca.pem")
                );
                for (side, ns, text) in [
                    ("tun-server", &self.server, server),
                    ("tun-client", &self.client, client),
                ] {
                    start_sssonector(
                        &mut children,
                        self.exec(ns, &binary.to_string_lossy()),
                        &text,
                        dir,
                        side,
                    )?;
                }
            }
            Vpn::OpenVpnUdp | Vpn::OpenVpnTcp => {
                let (server_proto, client_proto, port, subnet) = if vpn == Vpn::OpenVpnUdp {
                    ("udp", "udp", 1194, "10.88.0.0")
                } else {
                    ("tcp-server", "tcp-client", 1195, "10.89.0.0")
                };
                let common = format!(
                    "dev-type tun\nca {}\ntls-version-min 1.3\ndata-ciphers AES-256-GCM\n\
                     disable-dco\nkeepalive 10 60\nverb 1\n",
                    pki("ca.pem")
                );
                let server = format!(
                    "{common}dev bovpn-s\nproto {server_proto}\nlocal {SERVER}\nport {port}\n\
                     server {subnet} 255.255.255.0\ntopology subnet\ncert {}\nkey {}\ndh none\n",
                    pki("server.pem"),
                    pki("server.key")
                );
                let client = format!(
                    "{common}client\ndev bovpn-c\nproto {client_proto}\nremote {SERVER} {port}\nnobind\n\
                     cert {}\nkey {}\n",
                    pki("client.pem"),
                    pki("client.key")
                );
                for (side, ns, text) in [
                    ("ovpn-server", &self.server, server),
                    ("ovpn-client", &self.client, client),
                ] {
                    let config = dir.join(format!("{side}.ovpn"));
                    std::fs::write(&config, text).map_err(|e| e.to_string())?;
                    children.spawn(
                        self.exec(ns, "openvpn").arg("--config").arg(&config),
                        Some(&dir.join(format!("{side}.log"))),
                    )?;
                }
            }
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let ok = self
                .exec(&self.client, "ping")
                .args(["-c", "1", "-W", "1", vpn.server_addr()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(children);
            }
            children.alive()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{}: no ping across it within 30 s", vpn.name()))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.server]);
        let _ = run(&["ip", "netns", "del", &self.client]);
    }
}
