//! Port forwarders under test: a client side that listens on loopback and a server side that
//! connects to the target, with TLS 1.3 AES-256-GCM and mutual certificates between them.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::procs::{Children, free_port, in_ns, run, start_sssonector, wait_listening};

/// What carries a forwarded connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forwarder {
    /// No forwarder: the client connects to the target itself.
    Direct,
    Sssonector,
    Stunnel,
    /// Two chained plain relays (no TLS), 128 KiB buffers: the cost of relaying alone.
    Socat,
}

impl Forwarder {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Forwarder::Direct => "direct",
            Forwarder::Sssonector => "sssonector",
            Forwarder::Stunnel => "stunnel",
            Forwarder::Socat => "socat×2",
        }
    }
}

/// The release binary and a directory with a CA, a server certificate for `localhost` and
/// the path's server address, and a client certificate.
pub(crate) struct Setup {
    pub(crate) binary: PathBuf,
    pub(crate) dir: PathBuf,
}

impl Setup {
    pub(crate) fn new(binary: PathBuf, dir: PathBuf, server_names: &str) -> Result<Self, String> {
        let bin = binary.to_string_lossy().into_owned();
        let pki = dir.join("pki");
        let pki = pki.to_string_lossy().into_owned();
        run(&[&bin, "certs", "init", "--dir", &pki])?;
        run(&[
            &bin,
            "certs",
            "issue",
            "--dir",
            &pki,
            "--server",
            server_names,
            "--out",
            "server",
        ])?;
        run(&[
            &bin, "certs", "issue", "--dir", &pki, "--client", "bench", "--out", "client",
        ])?;
        Ok(Self { binary, dir })
    }

    fn pki(&self, file: &str) -> String {
        self.dir
            .join("pki")
            .join(file)
            .to_string_lossy()
            .into_owned()
    }
}

/// Where the two sides run: the client side in `client_ns` listening on loopback, the
/// server side in `server_ns` listening on `server_ip`; the target is on loopback in the
/// server's namespace. `None` is this namespace.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) client_ns: Option<String>,
    pub(crate) server_ns: Option<String>,
    pub(crate) server_ip: String,
}

impl Place {
    pub(crate) fn loopback() -> Self {
        Self {
            client_ns: None,
            server_ns: None,
            server_ip: "127.0.0.1".into(),
        }
    }
}

/// A forwarder running: its processes, and the port its client side listens on.
pub(crate) struct Running {
    /// Kept for their lifetime: the processes stop when this is dropped.
    _children: Children,
    /// The local port a client connects to (the target's, for `Direct`).
    pub(crate) port: u16,
    /// The address a client connects to: loopback, or the target's address for `Direct`.
    pub(crate) host: String,
    /// Process ids: client side, then server side.
    pub(crate) pids: Vec<u32>,
}

/// Starts `forwarder` between `place`'s two sides to `target_port` on the server side's
/// loopback; `prefix` runs before each program (`prlimit --nofile=…`, say).
pub(crate) fn start(
    forwarder: Forwarder,
    setup: &Setup,
    place: &Place,
    target_port: u16,
    prefix: &[&str],
) -> Result<Running, String> {
    let mut children = Children::default();
    let (tunnel_port, port) = (free_port()?, free_port()?);
    let command = |ns: &Option<String>, program: &str| -> Command {
        match prefix.split_first() {
            Some((first, rest)) => {
                let mut command = in_ns(ns.as_deref(), first);
                command.args(rest).arg(program);
                command
            }
            None => in_ns(ns.as_deref(), program),
        }
    };
    let dir = &setup.dir;
    let mut pids = Vec::new();
    match forwarder {
        Forwarder::Direct => {
            return Ok(Running {
                _children: children,
                port: target_port,
                host: if place.server_ns == place.client_ns {
                    "127.0.0.1".into()
                } else {
                    place.server_ip.clone()
                },
                pids,
            });
        }
        Forwarder::Sssonector => {
            let server = format!(
                "role = \"server\"\nmode = \"forward\"\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\
                 [server]\nlisten = \"{}:{tunnel_port}\"\nconnections_per_second = 0\n\
                 [bans]\nenabled = false\n\
                 [[forward]]\nname = \"bench\"\ntarget = \"127.0.0.1:{target_port}\"\n",
                setup.pki("server.pem"),
                setup.pki("server.key"),
                setup.pki("ca.pem"),
                place.server_ip
            );
            let client = format!(
                "role = \"client\"\nmode = \"forward\"\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\
                 [client]\nservers = [\"{}:{tunnel_port}\"]\nserver_name = \"localhost\"\n\
                 [[forward]]\nname = \"bench\"\nlisten = \"127.0.0.1:{port}\"\n",
                setup.pki("client.pem"),
                setup.pki("client.key"),
                setup.pki("ca.pem"),
                place.server_ip
            );
            for (side, ns, text) in [
                ("server", &place.server_ns, server),
                ("client", &place.client_ns, client),
            ] {
                let pid = start_sssonector(
                    &mut children,
                    command(ns, &setup.binary.to_string_lossy()),
                    &text,
                    dir,
                    side,
                )?;
                pids.push(pid);
            }
            pids.reverse();
        }
        Forwarder::Stunnel => {
            let common = format!(
                "foreground = yes\npid =\nsyslog = no\ndebug = 3\n\
                 socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n\
                 [bench]\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\n\
                 sslVersionMin = TLSv1.3\nciphersuites = TLS_AES_256_GCM_SHA384\n",
                setup.pki("ca.pem")
            );
            let server = format!(
                "{common}cert = {}\nkey = {}\naccept = {}:{tunnel_port}\nconnect = 127.0.0.1:{target_port}\n",
                setup.pki("server.pem"),
                setup.pki("server.key"),
                place.server_ip
            );
            let client = format!(
                "{common}client = yes\ncheckHost = localhost\ncert = {}\nkey = {}\naccept = 127.0.0.1:{port}\nconnect = {}:{tunnel_port}\n",
                setup.pki("client.pem"),
                setup.pki("client.key"),
                place.server_ip
            );
            for (side, ns, text, listen) in [
                ("stunnel-server", &place.server_ns, server, tunnel_port),
                ("stunnel-client", &place.client_ns, client, port),
            ] {
                let config = dir.join(format!("{side}.conf"));
                std::fs::write(&config, text).map_err(|e| e.to_string())?;
                pids.push(children.spawn(
                    command(ns, "stunnel4").arg(&config),
                    Some(&dir.join(format!("{side}.log"))),
                )?);
                wait_listening(ns.as_deref(), listen)?;
            }
            pids.reverse();
        }
        Forwarder::Socat => {
            let server_listen = format!(
                "TCP-LISTEN:{tunnel_port},bind={},reuseaddr,fork,nodelay",
                place.server_ip
            );
            let server_connect = format!("TCP:127.0.0.1:{target_port},nodelay");
            let client_listen = format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay");
            let client_connect = format!("TCP:{}:{tunnel_port},nodelay", place.server_ip);
            for (ns, listen, connect, at) in [
                (
                    &place.server_ns,
                    &server_listen,
                    &server_connect,
                    tunnel_port,
                ),
                (&place.client_ns, &client_listen, &client_connect, port),
            ] {
                pids.push(children.spawn(
                    command(ns, "socat").args(["-b131072", listen, connect]),
                    None,
                )?);
                wait_listening(ns.as_deref(), at)?;
            }
            pids.reverse();
        }
    }
    Ok(Running {
        _children: children,
        port,
        host: "127.0.0.1".into(),
        pids,
    })
}

/// The last lines of the logs a forwarder left in `dir`, for an error message.
pub(crate) fn logs(dir: &Path) -> String {
    super::procs::log_tails(
        dir,
        &[
            "server.log",
            "client.log",
            "stunnel-server.log",
            "stunnel-client.log",
        ],
    )
}
