//! `sssonector run`: composes the workspace's crates into a server or a client, in TUN or
//! port-forward mode, from a checked configuration.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sssonector_bufpool::BufPool;
use sssonector_certs::{ReloadableIdentity, ReloadableTrust, TlsOptions, TrustReloaded, Usage};
use sssonector_ratelimit::{Pacing, Quota, RateLimiter};
use sssonector_tunnel::Cidr;
use sssonector_tunnel::client::{Endpoint, Reconnect};
use sssonector_tunnel::forward::Targets;
use sssonector_tunnel::proto::{self, Role as SessionRole, Session, SessionConfig, TunnelAddress};
use sssonector_tunnel::server::{AcceptOptions, Server, accept_stack};
use sssonector_tunnel::{LinkConfig, TcpTuning, tun};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::rustls::pki_types::ServerName;
use tracing::Instrument;

use crate::abuse::Shield;
use crate::admin::{Admin, AdminState, Token};
use crate::audit::Audit;
use crate::config::{Config, ConfigError, Mode, Role};
use crate::error::Error;
use crate::forwarder::Forwarder;
use crate::observe::{Observed, Sources};
use crate::persist::Persist;
use crate::policy::{Access, Guard};
use crate::serve::{ServeOptions, ServerMode, SessionLimits, serve_client};
use crate::status::ReloadStatus;

/// A started server or client.
pub(crate) struct Running {
    /// The server's listening address.
    pub(crate) listen: Option<SocketAddr>,
    /// The client's local forwarding listeners, by rule.
    pub(crate) forwards: Vec<(String, SocketAddr)>,
    /// The client's current links (forward mode keeps `client.connections` of them).
    pub(crate) current: Vec<watch::Receiver<Option<sssonector_tunnel::Link>>>,
    /// Errors that end the process (a TUN device that cannot be created, say).
    pub(crate) fatal: mpsc::Receiver<Error>,
    /// Keeps the fatal queue open while no task holds a sender.
    _fatal: mpsc::Sender<Error>,
    stop: watch::Sender<bool>,
    server: Option<Server>,
    shutdown_timeout: Duration,
    identity: Arc<ReloadableIdentity>,
    trust: Arc<ReloadableTrust>,
    /// Sessions, certificates, readiness: what `/status` shows.
    pub(crate) observed: Observed,
    /// The admin endpoint's address, when one runs.
    pub(crate) admin: Option<SocketAddr>,
    /// Reloads asked for through `POST /reload`, each with where to send the outcome.
    pub(crate) reloads: mpsc::Receiver<oneshot::Sender<ReloadStatus>>,
    /// What a reload of the configuration file changes in a running server.
    reloadable: Option<Reloadable>,
    /// And in a running client.
    client_reload: Option<ClientReload>,
    /// Security events.
    pub(crate) audit: Audit,
    /// The server's leases and bans across restarts.
    persist: Option<Persist>,
}

pub(crate) fn pacing(mbps: Option<f64>) -> Result<Option<Pacing>, Error> {
    let Some(mbps) = mbps else { return Ok(None) };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a positive rate in Mbit/s; float-to-int `as` saturates"
    )]
    let bits = (mbps * 1e6) as u64;
    let limiter =
        RateLimiter::new(Quota::bits_per_second(bits).map_err(|e| Error::field("limits", e))?);
    Pacing::new(vec![limiter])
        .map(Some)
        .map_err(|e| Error::field("limits", e))
}

/// The most unread stream data one link holds: room for every window grown to the budget,
/// twice over, and never below the link's default.
pub(crate) fn link_bound(receive_budget: u64) -> usize {
    let twice = usize::try_from(receive_budget.saturating_mul(2)).unwrap_or(usize::MAX);
    twice.max(LinkConfig::default().max_buffered)
}

fn session_config(config: &Config, role: SessionRole) -> SessionConfig {
    let mode = match config.mode {
        Mode::Tun => proto::Mode::Tun,
        Mode::Forward => proto::Mode::Forward,
    };
    let mut session = SessionConfig::new(role, mode);
    session.keepalive = config.keepalive.interval.0;
    session.dead_peer_timeout = config.keepalive.timeout.0;
    session.stream_window = config.limits.stream_window;
    session.max_stream_window = config.limits.max_stream_window;
    session.receive_budget = config.limits.receive_budget;
    if let Some(tun) = &config.tun {
        session.mtu = tun.mtu;
        if config.mode == Mode::Tun && tun.offload {
            // Super-packets cross whole when both sides' devices have offload: room for
            // 64 KiB and the virtio header in a frame.
            session.gso = true;
            session.max_payload = session.max_payload.max(96 * 1024);
        }
    }
    if let Some(server) = &config.server {
        session.handshake_timeout = server.handshake_timeout.0;
    }
    session
}

fn own_addresses(config: &Config) -> Vec<TunnelAddress> {
    let Some(tun) = &config.tun else {
        return Vec::new();
    };
    [&tun.address, &tun.address6]
        .into_iter()
        .flatten()
        .filter_map(|text| crate::config::cidr(text))
        .map(|net| TunnelAddress {
            addr: net.addr(),
            prefix: net.prefix(),
        })
        .collect()
}

fn pools(config: &Config) -> Result<tun::Pools, Error> {
    let tun = config
        .tun
        .as_ref()
        .ok_or_else(|| Error::field("tun", "mode = \"tun\" needs a [tun] section"))?;
    let own: Vec<IpAddr> = own_addresses(config).iter().map(|a| a.addr).collect();
    let mut pools = Vec::new();
    for text in [&tun.pool, &tun.pool6].into_iter().flatten() {
        let net: Cidr = text.parse().map_err(|e| Error::field("tun.pool", e))?;
        let mut pool = tun::AddressPool::new(net, own.iter().copied());
        for client in &tun.clients {
            for addr in [&client.address, &client.address6].into_iter().flatten() {
                let addr: IpAddr = addr.parse().map_err(|_| {
                    Error::field("tun.clients", format!("{addr:?} is not an address"))
                })?;
                if net.contains(addr) {
                    pool.fix(&client.identity, addr)
                        .map_err(|e| Error::field("tun.clients", e))?;
                }
            }
        }
        pools.push(pool);
    }
    Ok(tun::Pools::new(pools))
}

/// Said at start and by `check-config` when a server has no `[policy]`.
pub(crate) const NO_POLICY: &str = "no [policy] section: every client with a valid certificate may \
     open every forwarding rule and reach every network and client; add a [policy] to say who may do what";

/// Loads the certificates and starts the server or client in the background.
pub(crate) async fn start(config: &Config) -> Result<Running, Error> {
    let usage = match config.role {
        Role::Server => Usage::Server,
        Role::Client => Usage::Client,
    };
    let identity = Arc::new(
        ReloadableIdentity::load("tls", &config.tls.cert, &config.tls.key, usage, None)
            .map_err(|e| Error::cert("tls.cert / tls.key", e))?,
    );
    let trust = Arc::new(
        ReloadableTrust::load("tls", &config.tls.ca, &config.tls.crls)
            .map_err(|e| Error::cert("tls.ca / tls.crls", e))?,
    );
    let options = TlsOptions::new().with_alpn([proto::ALPN]);
    let (stop, _) = watch::channel(false);
    let (fatal_tx, fatal) = mpsc::channel(4);
    let pool = BufPool::builder()
        .budget(256 << 20)
        .name("sssonector")
        .build()
        .map_err(|e| Error::field("buffer pool", e))?;
    tokio::spawn(pool.maintenance(Duration::from_secs(10)));
    let observed = Observed::new(Sources {
        role: match config.role {
            Role::Server => "server",
            Role::Client => "client",
        },
        mode: match config.mode {
            Mode::Tun => "tun",
            Mode::Forward => "forward",
        },
        identity: Arc::clone(&identity),
        trust: Arc::clone(&trust),
        cert_file: config.tls.cert.clone(),
        ca_file: config.tls.ca.clone(),
        crl_files: config.tls.crls.clone(),
        expiry_warning: config.tls.expiry_warning.0,
    });
    let audit = match &config.audit {
        None => Audit::off(),
        Some(section) => {
            let target = section.target();
            Audit::start(target.clone()).map_err(|e| {
                Error::file(
                    target
                        .path
                        .clone()
                        .unwrap_or_else(|| "standard output".into()),
                    "open the audit log (audit.path)",
                    e,
                )
            })?
        }
    };
    let (reload_tx, reloads) = mpsc::channel(4);
    let mut running = Running {
        listen: None,
        forwards: Vec::new(),
        current: Vec::new(),
        fatal,
        _fatal: fatal_tx.clone(),
        stop,
        server: None,
        shutdown_timeout: Duration::from_secs(10),
        identity: Arc::clone(&identity),
        trust: Arc::clone(&trust),
        observed: observed.clone(),
        admin: None,
        reloads,
        reloadable: None,
        client_reload: None,
        audit: audit.clone(),
        persist: None,
    };
    tokio::spawn(upkeep(
        observed.clone(),
        Arc::clone(&identity),
        audit.clone(),
        running.stop.subscribe(),
    ));
    if let Some(section) = &config.admin {
        let token = Token::load(
            section.token_file.as_deref(),
            std::env::var(crate::admin::TOKEN_ENV).ok(),
        )?;
        let admin = Admin::bind(section.listen, token.as_ref()).await?;
        running.admin = Some(admin.addr());
        let metrics = crate::telemetry::install()?;
        let status_source = observed.clone();
        let state = Arc::new(AdminState {
            metrics,
            status: Box::new(move || status_source.status()),
            reload: reload_tx,
            token,
            audit: audit.clone(),
        });
        tracing::info!(admin = %admin.addr(), "admin endpoint listening");
        tokio::spawn(admin.serve(state, running.stop.subscribe()));
    }
    match config.role {
        Role::Server => {
            let tls = sssonector_certs::server_config_reloading_identity_and_trust(
                identity, &trust, &options,
            )
            .map_err(|e| Error::cert("tls", e))?;
            start_server(config, tls, pool, fatal_tx, &mut running).await?;
        }
        Role::Client => {
            let tls = sssonector_certs::client_config_reloading_identity_and_trust(
                identity, &trust, &options,
            )
            .map_err(|e| Error::cert("tls", e))?;
            start_client(config, tls, pool, fatal_tx, &mut running).await?;
        }
    }
    Ok(running)
}

async fn start_server(
    config: &Config,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    pool: BufPool,
    fatal: mpsc::Sender<Error>,
    running: &mut Running,
) -> Result<(), Error> {
    let section = config
        .server
        .as_ref()
        .ok_or_else(|| Error::field("server", "role = \"server\" needs a [server] section"))?;
    let options = AcceptOptions {
        allow: section.allow.clone(),
        connections_per_second: (section.connections_per_second > 0)
            .then_some(section.connections_per_second),
        handshake_timeout: section.handshake_timeout.0,
        tcp: TcpTuning::dead_peer(config.keepalive.timeout.0),
    };
    let stack = accept_stack(tls, &options).map_err(|e| Error::field("server", e))?;
    let listener = TcpListener::bind(section.listen)
        .await
        .map_err(|error| Error::Listen {
            field: "server.listen".into(),
            addr: section.listen.to_string(),
            error,
        })?;
    running.listen = listener.local_addr().ok();
    running.shutdown_timeout = section.shutdown_timeout.0;
    let bans = config.bans.enabled.then(|| {
        crate::bans::Bans::new(
            crate::bans::BanPolicy {
                failures: config.bans.failures,
                window: config.bans.window.0,
                ban: config.bans.ban.0,
                max_ban: config.bans.max_ban.0,
            },
            Arc::new(sssonector_core::SystemClock),
        )
    });
    let sessions = running.observed.clone();
    let mut shield = Shield::new(bans, section.handshakes_per_source(), running.audit.clone())
        .with_on_ban(Arc::new(move |from| sessions.sessions().close_where(from)));
    if let Some(shared) = config.bans.redis.as_ref().filter(|_| config.bans.enabled) {
        let blocklist = shared.blocklist(&config.dir, &config.bans)?;
        shield = crate::shared_bans::start(shield, blocklist, &running.stop.subscribe());
    }
    tokio::spawn(shield.clone().sweep(running.stop.subscribe()));
    running.observed.set_shield(shield.clone());
    let server = Server::builder(section.max_clients).on_refused(Arc::new({
            let audit = running.audit.clone();
            let shield = shield.clone();
            move |peer, reason, error| {
                metrics::counter!("sssonector_server_handshakes_total", "outcome" => "refused", "reason" => reason)
                    .increment(1);
                audit
                    .event("handshake.refused")
                    .remote(peer)
                    .field("reason", reason)
                    .field("by", "accept")
                    .field("error", error.to_string())
                    .emit();
                // Garbage, bad certificates and stalled handshakes count toward a ban; a
                // source outside `allow` or over its rate is refused anyway.
                if matches!(reason, "tls" | "identity" | "handshake_timeout") {
                    shield.failure(peer, reason);
                }
            }
        }))
        .gate(shield.gate())
        .build();
    running.server = Some(server.clone());
    if let Some(addr) = running.listen {
        running.observed.set_listen(addr.to_string());
    }
    running.observed.set_server(server.clone());
    let observed = running.observed.clone();

    let access = match &config.policy {
        Some(section) => {
            let policy = config
                .build_policy(section)
                .map_err(|problems| Error::field("policy", problems.join("; ")))?;
            tracing::info!(
                version = policy.version,
                rules = policy.len(),
                "access policy loaded"
            );
            Access::Policy(Arc::new(policy))
        }
        None => {
            tracing::warn!("{NO_POLICY}");
            Access::Open
        }
    };
    let guard = Guard::new(access);
    let audit = running.audit.clone();
    running.observed.set_guard(guard.clone());

    let mut session_config = session_config(config, SessionRole::Server);
    // Per client: each connection gets its own budgets. Client → server upload is what the
    // server reads. (Checked here once, so the per-connection builds cannot fail.)
    let limits = Arc::new(Mutex::new(session_limits(config)));
    let mode = Arc::new(match config.mode {
        Mode::Forward => ServerMode::Forward(Targets::new(
            config
                .forward
                .iter()
                .filter_map(|r| Some((r.name.clone(), r.target.clone()?))),
            pool,
        )),
        Mode::Tun => {
            let tun_section = config
                .tun
                .as_ref()
                .ok_or_else(|| Error::field("tun", "mode = \"tun\" needs a [tun] section"))?;
            let device = tun::open(
                &tun_section.name,
                &own_addresses(config),
                tun_section.mtu,
                tun_section.offload,
            )
            .map_err(|error| Error::Tun {
                field: "tun.name",
                error,
            })?;
            // A kernel that refused offload gets no super-packets whole.
            session_config.gso &= device.tcp_gso();
            let mtu = tun_section.mtu;
            let router = Arc::new(tun::Router::new());
            let loop_device = Arc::clone(&device);
            let loop_router = Arc::clone(&router);
            tokio::spawn(async move {
                if let Err(e) = tun::server_device_loop(loop_device, loop_router, mtu).await {
                    let _ = fatal
                        .send(Error::Tun {
                            field: "TUN device",
                            error: e,
                        })
                        .await;
                }
            });
            ServerMode::Tun {
                device,
                router,
                pools: Arc::new(pools(config)?),
            }
        }
    });
    let pools_for_state = match &*mode {
        ServerMode::Tun { pools, .. } => Some(Arc::clone(pools)),
        ServerMode::Forward(_) => None,
    };
    if let Some(path) = section.state_file(
        &config.path,
        std::env::var_os("STATE_DIRECTORY").map(std::path::PathBuf::from),
    ) {
        let persist = Persist::restore(path, pools_for_state, shield.clone());
        running.persist = Some(persist.clone());
        tokio::spawn(persist.run(running.stop.subscribe()));
    }
    running.reloadable = Some(Reloadable {
        path: config.path.clone(),
        listen: section.listen,
        guard: guard.clone(),
        limits: Arc::clone(&limits),
        targets: match &*mode {
            ServerMode::Forward(targets) => Some(targets.clone()),
            ServerMode::Tun { .. } => None,
        },
    });
    let serving = server.clone();
    tokio::spawn(async move {
        let tracker = serving.clone();
        serving
            .serve(listener, stack, move |handshaken| {
                let id = crate::sessions::new_id();
                let span = tracing::info_span!("session", id = %id);
                serve_client(
                    handshaken,
                    id,
                    ServeOptions {
                        session_config: session_config.clone(),
                        mode: Arc::clone(&mode),
                        limits: Arc::clone(&limits),
                        server: tracker.clone(),
                        observed: observed.clone(),
                        guard: guard.clone(),
                        audit: audit.clone(),
                        shield: shield.clone(),
                    },
                )
                .instrument(span)
            })
            .await;
    });
    tracing::info!(listen = ?running.listen, mode = ?config.mode, "server started");
    Ok(())
}

async fn start_client(
    config: &Config,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    pool: BufPool,
    fatal: mpsc::Sender<Error>,
    running: &mut Running,
) -> Result<(), Error> {
    let section = config
        .client
        .as_ref()
        .ok_or_else(|| Error::field("client", "role = \"client\" needs a [client] section"))?;
    let mut endpoints = Vec::new();
    for (i, addr) in section.servers.iter().enumerate() {
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        let name = section
            .server_name
            .clone()
            .unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned());
        let name = ServerName::try_from(name.clone()).map_err(|_| {
            Error::field(
                "client.server_name",
                format!("{name:?} is not a DNS name or IP address"),
            )
        })?;
        endpoints.push(
            Endpoint::with_tuning(
                addr,
                name,
                Arc::clone(&tls),
                section.connect_timeout.0,
                TcpTuning::dead_peer(config.keepalive.timeout.0),
            )
            .map_err(|e| Error::field(format!("client.servers[{i}]"), e))?,
        );
    }
    let connections = match config.mode {
        Mode::Forward => section.connections.max(1),
        // One link carries the packets: a second would reorder them.
        Mode::Tun => 1,
    };
    // One budget per direction shared by all the client's connections (clones of a Pacing
    // share it): their sum keeps to the limit, and any one may use all of it. What the client
    // reads is its download.
    let link_config = LinkConfig {
        read_pacing: pacing(config.limits.download_mbps)?,
        write_pacing: pacing(config.limits.upload_mbps)?,
        max_streams: config.limits.max_streams,
        max_buffered: link_bound(config.limits.receive_budget),
        ..LinkConfig::default()
    };
    running.observed.set_listen(section.servers.join(", "));
    running.client_reload = Some(ClientReload {
        forwarder: None,
        path: config.path.clone(),
        upload: link_config.write_pacing.clone(),
        download: link_config.read_pacing.clone(),
        limits: Mutex::new((config.limits.upload_mbps, config.limits.download_mbps)),
    });
    let reconnects: Vec<_> = (0..connections)
        .map(|_| {
            Arc::new(
                Reconnect::new(endpoints.clone(), link_config.clone())
                    .failback(section.failback.then_some(section.failback_interval.0)),
            )
        })
        .collect();
    running.current = reconnects.iter().map(|r| r.current()).collect();
    let reconnect = Arc::clone(&reconnects[0]);
    let session_config = session_config(config, SessionRole::Client);
    let stop = running.stop.subscribe();
    match config.mode {
        Mode::Forward => {
            let forwarder = Arc::new(Forwarder::new(running.current.clone(), pool.clone()));
            for rule in &config.forward {
                let Some(listen) = &rule.listen else { continue };
                forwarder.open(&rule.name, listen)?;
            }
            running.forwards = forwarder.listening();
            if let Some(reload) = running.client_reload.as_mut() {
                reload.forwarder = Some(forwarder);
            }
            for reconnect in reconnects {
                let session_config = session_config.clone();
                let stop = stop.clone();
                let observed = running.observed.clone();
                tokio::spawn(async move {
                    let server = Arc::clone(&reconnect);
                    reconnect
                        .run(
                            || Session::client(session_config.clone(), Instant::now(), Vec::new()),
                            |link, _, _incoming| {
                                let (id, registered) =
                                    client_session(&observed, &server, &link, Vec::new());
                                async move {
                                    let _registered = registered;
                                    link.closed()
                                        .instrument(tracing::info_span!("session", id = %id))
                                        .await;
                                }
                            },
                            stop,
                        )
                        .await;
                });
            }
        }
        Mode::Tun => {
            let tun_section = config
                .tun
                .as_ref()
                .ok_or_else(|| Error::field("tun", "mode = \"tun\" needs a [tun] section"))?;
            let device_failed = {
                let fatal = fatal.clone();
                Arc::new(move |error| {
                    let _ = fatal.try_send(Error::Tun {
                        field: "TUN device",
                        error,
                    });
                }) as tun::OnDeviceError
            };
            let tun_client = Arc::new(tun::Client::new(
                tun_section.name.clone(),
                tun_section.mtu,
                tun_section.offload,
                reconnect.current(),
                device_failed,
            ));
            let name = tun_section.name.clone();
            let observed = running.observed.clone();
            let runner = Arc::clone(&reconnect);
            tokio::spawn(async move {
                let for_session = Arc::clone(&tun_client);
                runner
                    .run(
                        move || {
                            Session::client(
                                session_config.clone(),
                                Instant::now(),
                                for_session.requested(),
                            )
                        },
                        |link, hello, incoming| {
                            let tun_client = Arc::clone(&tun_client);
                            let fatal = fatal.clone();
                            let name = name.clone();
                            let (id, registered) = client_session(
                                &observed,
                                &reconnect,
                                &link,
                                hello.addresses.iter().map(|a| a.addr).collect(),
                            );
                            async move {
                                let _registered = registered;
                                let dev = match tun_client.prepare(&hello).await {
                                    Ok((dev, prepared)) => {
                                        match prepared {
                                            tun::Prepared::Opened => tracing::info!(device = name, addresses = ?hello.addresses, "TUN device up"),
                                            tun::Prepared::Reopened { old } => tracing::info!(device = name, ?old, new = ?hello.addresses, "the server assigned other addresses: TUN device reopened with them"),
                                            tun::Prepared::NewMtu { old } => tracing::info!(device = name, old, new = hello.mtu, "TUN device MTU changed for this session"),
                                            _ => {}
                                        }
                                        dev
                                    }
                                    Err(e) if tun_client.requested().is_empty() => {
                                        // The first open failed: nothing can work.
                                        let _ = fatal.send(Error::Tun { field: "tun.name", error: e }).await;
                                        link.close();
                                        return;
                                    }
                                    Err(e) => {
                                        tracing::error!(device = name, error = %e, "cannot give the TUN device this session's addresses or MTU; reconnecting");
                                        link.close();
                                        link.closed().await;
                                        return;
                                    }
                                };
                                tun::client_link_loop(incoming, dev).await;
                                link.closed().await;
                            }
                            .instrument(tracing::info_span!("session", id = %id))
                        },
                        stop,
                    )
                    .await;
            });
        }
    }
    tracing::info!(servers = ?section.servers, mode = ?config.mode, "client started");
    Ok(())
}

/// Every minute: refreshes the gauges read from live state (certificate expiry among them,
/// so they are current even when nothing scrapes `/status`), and warns, logs and audits the
/// first time the certificate's remaining life crosses each warning threshold.
async fn upkeep(
    observed: Observed,
    identity: Arc<ReloadableIdentity>,
    audit: Audit,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let _ = observed.status();
        if let Some(threshold) = identity.check_expiry(std::time::SystemTime::now()) {
            audit
                .event("certificate.expiry_warning")
                .field("threshold_seconds", threshold.as_secs())
                .field(
                    "seconds_left",
                    identity
                        .expires_in(std::time::SystemTime::now())
                        .map_or(0, |d| d.as_secs()),
                )
                .emit();
        }
    }
}

/// The limits in `config` for new server sessions.
fn session_limits(config: &Config) -> SessionLimits {
    SessionLimits {
        upload_mbps: config.limits.upload_mbps,
        download_mbps: config.limits.download_mbps,
        max_streams: config.limits.max_streams,
    }
}

/// What a reload applies to a running server: the access policy, the forwarding rules'
/// targets, and the limits of new sessions, all from the configuration file read again and
/// checked whole (a bad file changes none of them).
struct Reloadable {
    path: std::path::PathBuf,
    /// Fields a reload cannot change, compared to say a restart is needed.
    listen: SocketAddr,
    guard: Guard,
    limits: Arc<Mutex<SessionLimits>>,
    targets: Option<Targets>,
}

/// A client's new link in the status table, under a new correlation id, with the server's
/// address and certificate names; it leaves the table when the returned guard drops.
fn client_session(
    observed: &Observed,
    reconnect: &Reconnect,
    link: &sssonector_tunnel::Link,
    addresses: Vec<IpAddr>,
) -> (String, crate::sessions::Registered) {
    let id = crate::sessions::new_id();
    let registered = observed.sessions().register(
        &id,
        reconnect.server_identity(),
        reconnect.server().unwrap_or_default(),
        addresses,
        link.clone(),
    );
    (id, registered)
}

/// A client's `[[forward]]` rules as `(name, listen)`, sorted.
fn client_rules(config: &Config) -> Vec<(String, String)> {
    let mut rules: Vec<(String, String)> = config
        .forward
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.listen.clone()?)))
        .collect();
    rules.sort();
    rules
}

/// What a reload changes in a running client: its upload and download rates, which every
/// connection shares (a limit added or removed needs a restart, and the reload says so), and
/// in forward mode its local listeners.
struct ClientReload {
    path: std::path::PathBuf,
    upload: Option<Pacing>,
    download: Option<Pacing>,
    /// The rates in force, as configured.
    limits: Mutex<(Option<f64>, Option<f64>)>,
    /// Forward mode: the local listeners, opened and closed as the rules change.
    forwarder: Option<Arc<Forwarder>>,
}

impl ClientReload {
    fn apply(&self) -> Result<(String, bool), ConfigError> {
        let (config, _) = crate::config::load_checked(&self.path, std::env::vars())?;
        let mut said = Vec::new();
        let mut limits = self.limits.lock();
        let (up, down) = &mut *limits;
        for (what, pacing, old, new) in [
            (
                "limits.upload_mbps",
                &self.upload,
                up,
                config.limits.upload_mbps,
            ),
            (
                "limits.download_mbps",
                &self.download,
                down,
                config.limits.download_mbps,
            ),
        ] {
            match (pacing, new) {
                _ if *old == new => {}
                (Some(pacing), Some(mbps)) => {
                    #[allow(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "a positive rate in Mbit/s; float-to-int `as` saturates"
                    )]
                    let bits = (mbps * 1e6) as u64;
                    let quota = Quota::bits_per_second(bits);
                    match (quota, pacing.budgets().first()) {
                        (Ok(quota), Some(limiter)) if limiter.set_quota(0, quota).is_ok() => {
                            *old = new;
                            said.push(format!("{what}: {mbps} Mbit/s now"));
                        }
                        _ => said.push(format!("{what}: cannot change; restart to apply it")),
                    }
                }
                _ => said.push(format!("{what} added or removed: restart to apply it")),
            }
        }
        drop(limits);
        // TUN mode has no forwarding listeners.
        let mut complete = true;
        if let Some(forwarder) = &self.forwarder {
            let (changes, opened_all) = forwarder.apply(&client_rules(&config));
            said.extend(changes);
            complete = opened_all;
        }
        if said.is_empty() {
            said.push("configuration: nothing to change".to_owned());
        }
        Ok((said.join("; "), complete))
    }
}

impl Reloadable {
    /// Applies the configuration file as it is now; returns what changed, or why nothing did.
    fn apply(&self) -> Result<(String, bool), ConfigError> {
        // One line: the outcome also goes to systemd's STATUS=, which ends at a newline.
        let (config, _) = crate::config::load_checked(&self.path, std::env::vars())?;
        let access = match &config.policy {
            None => Access::Open,
            Some(section) => config
                .build_policy(section)
                .map(|p| Access::Policy(Arc::new(p)))
                .map_err(|problems| ConfigError::Invalid {
                    file: self.path.clone(),
                    overrides: Vec::new(),
                    problems,
                })?,
        };
        let mut said = vec![match &access {
            Access::Open => "policy: none (every client has full access)".to_owned(),
            Access::Policy(p) => format!("policy: version {}", p.version),
        }];
        if *self.guard.access() != access {
            self.guard.replace(access);
        }
        if let Some(targets) = &self.targets {
            let mut rules: Vec<(String, String)> = config
                .forward
                .iter()
                .filter_map(|r| Some((r.name.clone(), r.target.clone()?)))
                .collect();
            rules.sort();
            if targets.rules() != rules {
                said.push(format!("forwarding rules: {} now", rules.len()));
                targets.set_rules(rules);
            }
        }
        let limits = session_limits(&config);
        let mut current = self.limits.lock();
        if *current != limits {
            *current = limits;
            said.push("limits: replaced for new sessions".to_owned());
        }
        drop(current);
        if config
            .server
            .as_ref()
            .is_some_and(|s| s.listen != self.listen)
        {
            said.push("server.listen changed: restart to apply it".to_owned());
        }
        Ok((said.join("; "), true))
    }
}

impl Running {
    /// Reloads certificates, CA and CRLs (SIGHUP or `POST /reload`); ends the sessions of
    /// newly revoked clients. Returns what it did, also kept for `/status`.
    pub(crate) fn reload(&self) -> ReloadStatus {
        let mut ok = true;
        let identity = match self.identity.reload() {
            Ok(r) => format!("certificate: {r:?}"),
            Err(e) => {
                ok = false;
                format!("certificate refused, old one kept: {e}")
            }
        };
        let trust = match self.trust.reload() {
            Ok(TrustReloaded::Replaced { newly_revoked }) => {
                let closed = self
                    .server
                    .as_ref()
                    .map_or(0, |s| s.close_revoked(&newly_revoked));
                format!(
                    "CA/CRLs replaced, {} newly revoked, {closed} session(s) ended",
                    newly_revoked.len()
                )
            }
            Ok(other) => format!("CA/CRLs: {other:?}"),
            Err(e) => {
                ok = false;
                format!("CA/CRLs refused, old ones kept: {e}")
            }
        };
        let applied = match (&self.reloadable, &self.client_reload) {
            (Some(server), _) => Some(server.apply()),
            (None, Some(client)) => Some(client.apply()),
            (None, None) => None,
        };
        let policy = match applied {
            None => String::new(),
            Some(applied) => match applied {
                Ok((said, complete)) => {
                    // A listener that could not be opened fails the reload (the rest applied).
                    ok &= complete;
                    format!("; {said}")
                }
                Err(e) => {
                    ok = false;
                    format!(
                        "; configuration refused, policy, rules and limits kept: {}",
                        e.one_line()
                    )
                }
            },
        };
        let status = self
            .observed
            .reloaded(ok, format!("{identity}; {trust}{policy}"));
        self.audit
            .event("config.reload")
            .field("ok", status.ok)
            .field("outcome", status.outcome.as_str())
            .emit();
        status
    }

    /// Stops accepting and reconnecting, says goodbye to every peer, and waits for them up
    /// to the shutdown timeout.
    pub(crate) async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Some(persist) = &self.persist {
            persist.save().await;
        }
        if let Some(server) = &self.server {
            let left = server.shutdown(self.shutdown_timeout).await;
            if left > 0 {
                tracing::warn!(
                    left,
                    "shutdown deadline passed with clients still connected"
                );
            }
        }
        let links: Vec<_> = self
            .current
            .iter()
            .filter_map(|current| current.borrow().clone())
            .collect();
        for link in &links {
            link.close();
        }
        for link in links {
            let _ = tokio::time::timeout(self.shutdown_timeout, link.closed()).await;
        }
    }
}
