//! The configuration file: TOML, read into typed sections, then checked as a whole. Every
//! error names the field path and what is wrong; all of them are reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sssonector_tunnel::Cidr;

mod bans;
mod error;
mod value;
pub(crate) use bans::Bans;
pub(crate) use error::ConfigError;
pub(crate) use value::Dur;

/// Which side this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Server,
    Client,
}

/// What the tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Tun,
    Forward,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) role: Role,
    pub(crate) mode: Mode,
    pub(crate) tls: Tls,
    pub(crate) server: Option<Server>,
    pub(crate) client: Option<Client>,
    pub(crate) tun: Option<Tun>,
    #[serde(default)]
    pub(crate) forward: Vec<Forward>,
    #[serde(default)]
    pub(crate) keepalive: Keepalive,
    #[serde(default)]
    pub(crate) limits: Limits,
    /// The admin endpoint (off unless set).
    pub(crate) admin: Option<Admin>,
    /// The audit log (off unless set).
    pub(crate) audit: Option<Audit>,
    /// Temporary bans of sources that keep failing (server).
    #[serde(default)]
    pub(crate) bans: Bans,
    /// Who may do what (server); without it every authenticated client has full access.
    pub(crate) policy: Option<crate::policy::PolicySection>,
    /// The configuration file's directory (relative paths in it are relative to this).
    #[serde(skip)]
    pub(crate) dir: PathBuf,
    /// The configuration file, read again on reload.
    #[serde(skip)]
    pub(crate) path: PathBuf,
}

/// `[audit]`: security events as JSON lines.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Audit {
    /// The file (relative to the configuration file), or `-` for standard output.
    pub(crate) path: PathBuf,
    /// Rotate the file when it would grow past this many bytes (100 MiB by default).
    #[serde(default = "default_audit_max_bytes")]
    pub(crate) max_bytes: u64,
    /// Rotated files kept (5 by default).
    #[serde(default = "default_audit_keep")]
    pub(crate) keep: usize,
}

fn default_audit_max_bytes() -> u64 {
    100 << 20
}
fn default_audit_keep() -> usize {
    5
}

impl Audit {
    /// Where the writer writes: `None` for standard output.
    pub(crate) fn target(&self) -> crate::audit::AuditConfig {
        crate::audit::AuditConfig {
            path: (self.path.as_os_str() != "-").then(|| self.path.clone()),
            max_bytes: self.max_bytes,
            keep: self.keep,
        }
    }
}

/// `[admin]`: the HTTP endpoint for metrics, health, status and reload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    /// Where to listen: loopback unless a token is set.
    pub(crate) listen: SocketAddr,
    /// A file holding the bearer token (else `SSSONECTOR_ADMIN_TOKEN`, else none).
    pub(crate) token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
    #[serde(default)]
    pub(crate) crls: Vec<PathBuf>,
    /// A certificate, CA or CRL this close to expiry makes `/readyz` answer not ready.
    #[serde(default = "default_expiry_warning")]
    pub(crate) expiry_warning: Dur,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    #[serde(deserialize_with = "value::socket_addr")]
    pub(crate) listen: SocketAddr,
    #[serde(default = "default_max_clients")]
    pub(crate) max_clients: usize,
    #[serde(default = "default_handshake_timeout")]
    pub(crate) handshake_timeout: Dur,
    /// Networks clients may connect from (empty: any).
    #[serde(default, deserialize_with = "value::from_text_list")]
    pub(crate) allow: Vec<Cidr>,
    /// New connections per second from one address (IPv6 grouped by /64); 0 for no limit.
    #[serde(default = "default_connections_per_second")]
    pub(crate) connections_per_second: u32,
    /// How long a graceful shutdown waits for clients to say goodbye.
    #[serde(default = "default_shutdown_timeout")]
    pub(crate) shutdown_timeout: Dur,
    /// Where leases and bans are kept across restarts (relative to this file); by default
    /// `$STATE_DIRECTORY/<config name>.state.json` under systemd's `StateDirectory=`, else
    /// nowhere.
    pub(crate) state_file: Option<PathBuf>,
    /// Unfinished handshakes one source (an address, an IPv6 /64) may hold at once; by
    /// default a tenth of `max_clients`, at least 2.
    pub(crate) max_handshakes_per_source: Option<usize>,
}

impl Server {
    /// `state_file`, or its default under systemd's `StateDirectory=` (`state_directory`,
    /// from `$STATE_DIRECTORY`), named after the configuration file.
    pub(crate) fn state_file(
        &self,
        config_path: &Path,
        state_directory: Option<PathBuf>,
    ) -> Option<PathBuf> {
        self.state_file.clone().or_else(|| {
            let stem = config_path.file_stem()?.to_string_lossy().into_owned();
            // systemd may list several directories, separated by colons: the first is ours.
            let dir = state_directory?;
            let first = dir.to_string_lossy().split(':').next()?.to_owned();
            Some(PathBuf::from(first).join(format!("{stem}.state.json")))
        })
    }

    /// `max_handshakes_per_source`, or its default.
    pub(crate) fn handshakes_per_source(&self) -> usize {
        self.max_handshakes_per_source
            .unwrap_or((self.max_clients / 10).max(2))
            .min(self.max_clients)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Client {
    pub(crate) servers: Vec<String>,
    pub(crate) server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub(crate) connect_timeout: Dur,
    /// Forward mode: TLS connections kept to the server, streams spread over them.
    #[serde(default = "default_connections")]
    pub(crate) connections: usize,
    /// While connected to a server other than the first, move back to the first once it
    /// answers again, probing it this often.
    #[serde(default = "default_true")]
    pub(crate) failback: bool,
    #[serde(default = "default_failback_interval")]
    pub(crate) failback_interval: Dur,
}

fn default_failback_interval() -> Dur {
    Dur::secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tun {
    #[serde(default = "default_tun_name")]
    pub(crate) name: String,
    /// The server's own IPv4 address with prefix; clients get theirs from the server.
    pub(crate) address: Option<String>,
    pub(crate) pool: Option<String>,
    /// The server's own IPv6 address with prefix.
    pub(crate) address6: Option<String>,
    pub(crate) pool6: Option<String>,
    #[serde(default = "default_mtu")]
    pub(crate) mtu: u16,
    /// Segmentation offload on the TUN device (fewer, larger reads and writes).
    #[serde(default = "default_true")]
    pub(crate) offload: bool,
    /// Fixed addresses per client identity (server).
    #[serde(default)]
    pub(crate) clients: Vec<TunClient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TunClient {
    pub(crate) identity: String,
    pub(crate) address: Option<String>,
    pub(crate) address6: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Forward {
    pub(crate) name: String,
    /// Client side: where to accept local connections.
    pub(crate) listen: Option<String>,
    /// Server side: where to connect them.
    pub(crate) target: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Keepalive {
    #[serde(default = "default_keepalive_interval")]
    pub(crate) interval: Dur,
    #[serde(default = "default_keepalive_timeout")]
    pub(crate) timeout: Dur,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: default_keepalive_interval(),
            timeout: default_keepalive_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    pub(crate) upload_mbps: Option<f64>,
    pub(crate) download_mbps: Option<f64>,
    /// The most forwarded streams open at once on one tunnel connection.
    #[serde(default = "default_max_streams")]
    pub(crate) max_streams: usize,
    /// Each forwarded stream's first receive window, in bytes.
    #[serde(default = "default_stream_window")]
    pub(crate) stream_window: u32,
    /// The largest a stream's window grows to on a long path.
    #[serde(default = "default_max_stream_window")]
    pub(crate) max_stream_window: u32,
    /// What all of one connection's stream windows may grow by together, in bytes.
    #[serde(default = "default_receive_budget")]
    pub(crate) receive_budget: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            upload_mbps: None,
            download_mbps: None,
            max_streams: default_max_streams(),
            stream_window: default_stream_window(),
            max_stream_window: default_max_stream_window(),
            receive_budget: default_receive_budget(),
        }
    }
}

fn default_max_streams() -> usize {
    16_384
}
fn default_stream_window() -> u32 {
    256 * 1024
}
fn default_max_stream_window() -> u32 {
    16 * 1024 * 1024
}
fn default_receive_budget() -> u64 {
    32 * 1024 * 1024
}
fn default_expiry_warning() -> Dur {
    Dur::secs(7 * 86_400)
}

fn default_max_clients() -> usize {
    100
}
fn default_handshake_timeout() -> Dur {
    Dur::secs(10)
}
fn default_connections() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}
fn default_true() -> bool {
    true
}
fn default_connections_per_second() -> u32 {
    10
}
fn default_shutdown_timeout() -> Dur {
    Dur::secs(10)
}
fn default_connect_timeout() -> Dur {
    Dur::secs(5)
}
fn default_tun_name() -> String {
    "sss0".into()
}
fn default_mtu() -> u16 {
    1400
}
fn default_keepalive_interval() -> Dur {
    Dur::secs(10)
}
fn default_keepalive_timeout() -> Dur {
    Dur::secs(30)
}

/// `500ms`, `10s`, `5m`, `1h`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        "d" => Some(Duration::from_secs(n.checked_mul(86_400)?)),
        _ => None,
    }
}

fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

/// `addr/prefix`, parsed.
pub(crate) fn cidr(text: &str) -> Option<Cidr> {
    text.parse().ok()
}

/// Reads and parses `path`, then applies `SSSONECTOR_…` environment overrides from `env`:
/// `SSSONECTOR_SERVER__LISTEN=0.0.0.0:9443` sets `server.listen` (sections and fields joined
/// by `__`, case-insensitive; the value is read as TOML if it parses, else as a string).
/// Returns the configuration and the overrides applied (`field ← VARIABLE`).
///
/// # Errors
///
/// The file cannot be read, or is not valid TOML for this schema (toml's message names the
/// line, column and key).
pub(crate) fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<String>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        file: path.to_owned(),
        error,
    })?;
    from_text(&text, path, env)
}

/// [`load`] of a file's text already read; `path` names it in errors and anchors relative
/// paths.
pub(crate) fn from_text(
    text: &str,
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<String>), ConfigError> {
    let located = |overrides: &[String], e: toml::de::Error| ConfigError::Parse {
        file: path.to_owned(),
        overrides: overrides.to_vec(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    };
    let overrides: Vec<(Vec<String>, String, String)> = env
        .into_iter()
        .filter_map(|(name, value)| {
            if name == crate::admin::TOKEN_ENV {
                // A secret, not a configuration field.
                return None;
            }
            let rest = name.strip_prefix("SSSONECTOR_")?;
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            path.iter()
                .all(|p| !p.is_empty())
                .then_some((path, name, value))
        })
        .collect();
    let base = path.parent().unwrap_or(Path::new(""));
    if overrides.is_empty() {
        // Straight from the text, so errors keep their line numbers.
        return toml::from_str::<Config>(text)
            .map(|c| (c.rebased(base, path), Vec::new()))
            .map_err(|e| located(&[], e));
    }
    let mut table: toml::Table = toml::from_str(text).map_err(|e| located(&[], e))?;
    let mut applied = Vec::new();
    for (field, variable, raw) in overrides {
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = field.split_last().expect("paths are not empty");
        let mut section = &mut table;
        for name in parents {
            let entry = section
                .entry(name.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                return Err(ConfigError::Override {
                    variable,
                    name: name.clone(),
                });
            };
            section = inner;
        }
        section.insert(last.clone(), value);
        applied.push(format!("{} ← {variable}", field.join(".")));
    }
    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            file: path.to_owned(),
            overrides: applied.clone(),
            message: format!(
                "with overrides: {}",
                e.to_string().trim_end().replace('\n', " ")
            ),
        })?;
    Ok((config.rebased(base, path), applied))
}

/// [`load`], then [`Config::check`]: the configuration only if it has no problem, else every
/// problem with its field path.
pub(crate) fn load_checked(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<String>), ConfigError> {
    let (config, overrides) = load(path, env)?;
    let problems = config.check();
    if problems.is_empty() {
        return Ok((config, overrides));
    }
    Err(ConfigError::Invalid {
        file: path.to_owned(),
        overrides,
        problems,
    })
}

impl Config {
    /// Relative certificate paths are relative to the configuration file's directory, so a
    /// service finds them whatever its working directory.
    fn rebased(mut self, base: &Path, path: &Path) -> Self {
        self.dir = base.to_owned();
        self.path = path.to_owned();
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut self.tls.cert);
        rebase(&mut self.tls.key);
        rebase(&mut self.tls.ca);
        self.tls.crls.iter_mut().for_each(rebase);
        if let Some(file) = self.admin.as_mut().and_then(|a| a.token_file.as_mut()) {
            rebase(file);
        }
        if let Some(audit) = self.audit.as_mut() {
            if audit.path.as_os_str() != "-" {
                rebase(&mut audit.path);
            }
        }
        if let Some(file) = self.server.as_mut().and_then(|s| s.state_file.as_mut()) {
            rebase(file);
        }
        self
    }

    /// The server's `[policy]`, checked against its forwarding rules and mode.
    pub(crate) fn build_policy(
        &self,
        section: &crate::policy::PolicySection,
    ) -> Result<crate::policy::Policy, Vec<String>> {
        let forwards: Vec<String> = self.forward.iter().map(|r| r.name.clone()).collect();
        section.build(crate::policy::Context {
            forwards: (self.mode == Mode::Forward).then_some(&forwards[..]),
            base: &self.dir,
        })
    }

    fn check_tun(&self, tun: &Tun, errors: &mut Vec<String>) {
        let server = self.role == Role::Server;
        for (field, value, v6) in [
            ("tun.address", &tun.address, false),
            ("tun.address6", &tun.address6, true),
        ] {
            if let Some(text) = value {
                match cidr(text) {
                    Some(net) if net.addr().is_ipv6() == v6 => {}
                    _ => errors.push(format!(
                        "{field}: {text:?} is not an {} address with prefix (for example {})",
                        if v6 { "IPv6" } else { "IPv4" },
                        if v6 { "fd00:8::1/64" } else { "10.8.0.1/24" }
                    )),
                }
            }
        }
        for (field, pool, address, v6) in [
            ("tun.pool", &tun.pool, &tun.address, false),
            ("tun.pool6", &tun.pool6, &tun.address6, true),
        ] {
            let Some(text) = pool else { continue };
            match cidr(text) {
                Some(net) if net.addr().is_ipv6() == v6 => {
                    if !server {
                        errors.push(format!(
                            "{field}: only a server assigns addresses; remove it"
                        ));
                    }
                    if let Some(own) = address.as_deref().and_then(cidr) {
                        if !net.contains(own.addr()) {
                            errors.push(format!(
                                "{field}: {text:?} does not contain this side's address {}",
                                address.as_deref().unwrap_or_default()
                            ));
                        }
                    }
                }
                _ => errors.push(format!(
                    "{field}: {text:?} is not an {} network (for example {})",
                    if v6 { "IPv6" } else { "IPv4" },
                    if v6 { "fd00:8::/64" } else { "10.8.0.0/24" }
                )),
            }
        }
        if server && tun.address.is_none() && tun.address6.is_none() {
            errors.push("tun.address: a TUN server needs its own address (or tun.address6)".into());
        }
        if server && tun.pool.is_none() && tun.pool6.is_none() {
            errors.push(
                "tun.pool: a TUN server needs a pool to give clients addresses from (or tun.pool6)"
                    .into(),
            );
        }
        if !(576..=65_535).contains(&tun.mtu) {
            errors.push(format!(
                "tun.mtu: {} is below the IPv4 minimum of 576",
                tun.mtu
            ));
        }
        if tun.name.is_empty() || tun.name.len() > 15 {
            errors.push(format!(
                "tun.name: {:?} must be 1 to 15 characters",
                tun.name
            ));
        }
        for (i, client) in tun.clients.iter().enumerate() {
            if !server {
                errors.push(format!(
                    "tun.clients[{i}]: only a server fixes client addresses"
                ));
            }
            if client.identity.is_empty() {
                errors.push(format!("tun.clients[{i}].identity: must not be empty"));
            }
            for (field, value, pool) in [
                ("address", &client.address, &tun.pool),
                ("address6", &client.address6, &tun.pool6),
            ] {
                let Some(text) = value else { continue };
                match (
                    text.parse::<std::net::IpAddr>(),
                    pool.as_deref().and_then(cidr),
                ) {
                    (Ok(addr), Some(net)) if net.contains(addr) => {}
                    (Ok(_), _) => errors.push(format!(
                        "tun.clients[{i}].{field}: {text} is not inside the pool {}",
                        pool.as_deref().unwrap_or("(none)")
                    )),
                    (Err(_), _) => errors.push(format!(
                        "tun.clients[{i}].{field}: {text:?} is not an IP address (no prefix)"
                    )),
                }
            }
        }
    }

    /// Every rule a parsed configuration must also meet, each failure naming its field.
    pub(crate) fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        self.bans.check(self.role, &mut errors);
        if self.keepalive.timeout <= self.keepalive.interval {
            errors.push(format!(
                "keepalive.timeout ({}) must be longer than keepalive.interval ({})",
                self.keepalive.timeout, self.keepalive.interval
            ));
        }
        match (self.role, &self.server, &self.client) {
            (Role::Server, None, _) => {
                errors.push("role = \"server\" needs a [server] section".into())
            }
            (Role::Client, _, None) => {
                errors.push("role = \"client\" needs a [client] section".into())
            }
            _ => {}
        }
        if let Some(server) = &self.server {
            if server.max_clients == 0 {
                errors.push("server.max_clients: must be at least 1".into());
            }
            if server.max_handshakes_per_source == Some(0) {
                errors.push("server.max_handshakes_per_source: must be at least 1".into());
            }
        }
        if let Some(client) = &self.client {
            if client.servers.is_empty() {
                errors.push("client.servers: list at least one server (host:port)".into());
            }
            if !(1..=16).contains(&client.connections) {
                errors.push(format!(
                    "client.connections: {} must be 1 to 16",
                    client.connections
                ));
            }
            if client.server_name.as_deref().is_some_and(str::is_empty) {
                errors.push("client.server_name: must not be empty when given".into());
            }
            for (i, s) in client.servers.iter().enumerate() {
                if !is_host_port(s) {
                    errors.push(format!("client.servers[{i}]: {s:?} is not host:port"));
                }
            }
        }
        match self.mode {
            Mode::Tun => match &self.tun {
                None => errors.push("mode = \"tun\" needs a [tun] section".into()),
                Some(tun) => self.check_tun(tun, &mut errors),
            },
            Mode::Forward => {
                if self.forward.is_empty() {
                    errors.push("mode = \"forward\" needs at least one [[forward]] rule".into());
                }
            }
        }
        for (i, rule) in self.forward.iter().enumerate() {
            if rule.name.is_empty() {
                errors.push(format!("forward[{i}].name: must not be empty"));
            }
            if self.forward[..i].iter().any(|r| r.name == rule.name) {
                errors.push(format!("forward[{i}].name: {:?} is used twice", rule.name));
            }
            let (needed, other) = match self.role {
                Role::Client => (&rule.listen, "listen"),
                Role::Server => (&rule.target, "target"),
            };
            match needed {
                None => errors.push(format!(
                    "forward[{i}].{other}: missing (a {} needs the {other} of each rule)",
                    if self.role == Role::Client {
                        "client"
                    } else {
                        "server"
                    }
                )),
                // A local listen address may use port 0 (any free port, reported at start).
                Some(addr)
                    if !(is_host_port(addr) || (other == "listen" && addr.ends_with(":0"))) =>
                {
                    errors.push(format!("forward[{i}].{other}: {addr:?} is not host:port"));
                }
                Some(_) => {}
            }
        }
        for (field, value) in [
            ("limits.upload_mbps", self.limits.upload_mbps),
            ("limits.download_mbps", self.limits.download_mbps),
        ] {
            if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                errors.push(format!("{field}: must be a positive number of Mbit/s"));
            }
        }
        if let Some(section) = &self.policy {
            if self.role == Role::Client {
                errors.push("policy: only a server enforces an access policy; remove it".into());
            } else if let Err(problems) = self.build_policy(section) {
                errors.extend(problems);
            }
        }
        if let Some(audit) = &self.audit {
            if audit.max_bytes < 4096 {
                errors.push(format!(
                    "audit.max_bytes: {} is too small to hold a record (at least 4096)",
                    audit.max_bytes
                ));
            }
            if audit.path.as_os_str().is_empty() {
                errors.push("audit.path: give a file, or \"-\" for standard output".into());
            }
        }
        if !(1..=1_000_000).contains(&self.limits.max_streams) {
            errors.push(format!(
                "limits.max_streams: {} must be 1 to 1000000",
                self.limits.max_streams
            ));
        }
        let limits = &self.limits;
        if !(4096..=16 << 20).contains(&limits.stream_window) {
            errors.push(format!(
                "limits.stream_window: {} must be 4096 to 16777216 bytes",
                limits.stream_window
            ));
        }
        if limits.max_stream_window < limits.stream_window || limits.max_stream_window > 1 << 30 {
            errors.push(format!(
                "limits.max_stream_window: {} must be at least limits.stream_window ({}) and at most 1073741824 bytes",
                limits.max_stream_window, limits.stream_window
            ));
        }
        if limits.receive_budget > 1 << 34 {
            errors.push(format!(
                "limits.receive_budget: {} must be at most 17179869184 bytes (16 GiB)",
                limits.receive_budget
            ));
        }
        if let Some(admin) = &self.admin {
            if let Some(file) = &admin.token_file {
                if let Err(e) = crate::admin::Token::load(Some(file), None) {
                    errors.push(e.to_string());
                }
            }
        }
        // The certificate files must load and belong together.
        let tls = &self.tls;
        if let Err(e) = sssonector_certs::Identity::load(&tls.cert, &tls.key) {
            errors.push(format!("tls.cert / tls.key: {e}"));
        }
        if let Err(e) = sssonector_certs::TrustStore::load(&tls.ca, &tls.crls) {
            errors.push(format!("tls.ca / tls.crls: {e}"));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("3d"), Some(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("3w"), None);
    }
}
