//! One client of the server, from its verified TLS connection to its goodbye: admission by the
//! access policy, the tunnel session, its entry in the status table, and its traffic — streams
//! to forwarding rules, or packets — each checked against what its policy grants, again
//! whenever the policy changes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sssonector_tunnel::forward::Targets;
use sssonector_tunnel::proto::{Assign, Refusal, Session, SessionConfig, TunnelAddress};
use sssonector_tunnel::server::{Handshaken, Server};
use sssonector_tunnel::{Incoming, LinkConfig, stream_code, tun};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::abuse::Shield;
use crate::audit::Audit;
use crate::observe::Observed;
use crate::policy::{Denied, Guard, Reapplied, SlotId, Verdict};
use crate::run::pacing;

/// What the server carries.
pub(crate) enum ServerMode {
    Forward(Targets),
    Tun {
        device: Arc<tun::Device>,
        router: Arc<tun::Router>,
        pools: Arc<tun::Pools>,
    },
}

/// What a new client session is limited to; a reload replaces it for sessions that start
/// after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SessionLimits {
    /// Upload and download in Mbit/s (a policy tier replaces them).
    pub(crate) upload_mbps: Option<f64>,
    pub(crate) download_mbps: Option<f64>,
    pub(crate) max_streams: usize,
}

/// What each client's task shares.
pub(crate) struct ServeOptions {
    pub(crate) session_config: SessionConfig,
    pub(crate) mode: Arc<ServerMode>,
    /// Limits for new sessions, replaced on reload.
    pub(crate) limits: Arc<Mutex<SessionLimits>>,
    pub(crate) server: Server,
    pub(crate) observed: Observed,
    pub(crate) guard: Guard,
    pub(crate) audit: Audit,
    pub(crate) shield: Shield,
}

/// Who a session is, for its audit records and ban counts.
#[derive(Clone)]
struct Who {
    audit: Audit,
    shield: Shield,
    session: String,
    identity: String,
    remote: SocketAddr,
}

impl Who {
    fn event(&self, event: &str) -> crate::audit::Event<'_> {
        self.audit
            .event(event)
            .session(&self.session)
            .identity(&self.identity)
            .remote(self.remote)
    }
}

/// Counts a policy denial and logs it at info, at most once a second per kind: a client
/// retrying a denied stream in a loop cannot flood the log.
fn denied(kind: &'static str, reason: &'static str, detail: &dyn std::fmt::Display) {
    static STREAMS: sssonector_core::Throttle =
        sssonector_core::Throttle::new(Duration::from_secs(1));
    static PACKETS: sssonector_core::Throttle =
        sssonector_core::Throttle::new(Duration::from_secs(1));
    metrics::counter!("sssonector_policy_denials_total", "kind" => kind, "reason" => reason)
        .increment(1);
    let throttle = match kind {
        "packet" => &PACKETS,
        _ => &STREAMS,
    };
    if let Some(suppressed) = throttle.check() {
        tracing::info!(kind, reason, suppressed, detail = %detail, "denied by the access policy");
    }
}

pub(crate) async fn serve_client(handshaken: Handshaken, id: String, options: ServeOptions) {
    let ServeOptions {
        session_config,
        mode,
        limits,
        server,
        observed,
        guard,
        audit,
        shield,
    } = options;
    let Handshaken {
        tls,
        peer,
        identity: peer_identity,
    } = handshaken;
    let identity = peer_identity.name().to_owned();
    let serial = peer_identity.serial.clone();
    let who = Who {
        audit,
        shield,
        session: id.clone(),
        identity: identity.clone(),
        remote: peer,
    };
    let SessionLimits {
        upload_mbps,
        download_mbps,
        max_streams,
    } = *limits.lock();
    let admitted = guard.admit(&peer_identity);
    // Its own budgets (what the server reads is the client's upload), unless its tier's,
    // shared with the identity's other connections, replace them.
    let (read_pacing, write_pacing) = match admitted.as_ref().ok().and_then(|a| a.budgets.clone()) {
        Some(budgets) => budgets,
        None => (
            pacing(upload_mbps).ok().flatten(),
            pacing(download_mbps).ok().flatten(),
        ),
    };
    let link_config = LinkConfig {
        read_pacing,
        write_pacing,
        max_streams,
        max_buffered: crate::run::link_bound(session_config.receive_budget),
        ..LinkConfig::default()
    };
    let assigned: Arc<Mutex<Vec<TunnelAddress>>> = Arc::default();
    let assign: Assign = match (&admitted, &*mode) {
        // A refused client hears why in an ERROR frame that names nothing of the policy.
        (Err(Denied::NoRule), _) => Box::new(|_| {
            Err(Refusal::not_permitted(
                "not permitted by the server's access policy",
            ))
        }),
        (Err(Denied::SessionLimit(_)), _) => Box::new(|_| {
            Err(Refusal::not_permitted(
                "the server's session limit for this identity is reached",
            ))
        }),
        (Ok(_), ServerMode::Forward(_)) => Box::new(|_| Ok(Vec::new())),
        (Ok(_), ServerMode::Tun { pools, .. }) => {
            let pools = Arc::clone(pools);
            let identity = identity.clone();
            let assigned = Arc::clone(&assigned);
            Box::new(move |hello| {
                let leased = pools
                    .lease(&identity, &hello.addresses)
                    .map_err(|e| e.to_string())?;
                assigned.lock().clone_from(&leased);
                Ok(leased)
            })
        }
    };
    if let Err(why) = &admitted {
        let reason = match why {
            Denied::NoRule => "no_rule",
            Denied::SessionLimit(_) => "session_limit",
        };
        denied("handshake", reason, &format_args!("{identity} from {peer}"));
        metrics::counter!("sssonector_server_handshakes_total", "outcome" => "refused", "reason" => "policy")
            .increment(1);
        tracing::info!(%peer, identity, reason, "session refused by the access policy");
        who.event("handshake.refused")
            .field("reason", reason)
            .field("by", "policy")
            .emit();
        // An identity the policy does not know counts toward a ban; one over its session
        // limit does not (a client with more connections than it may hold would otherwise
        // ban its own address, and lose the sessions it may hold).
        if matches!(why, Denied::NoRule) {
            who.shield.failure(peer, "policy");
        }
    }
    let session = Session::server(session_config, Instant::now(), assign);
    let established = sssonector_tunnel::Link::establish(tls, session, link_config).await;
    let (link, incoming, admitted) = match (established, admitted) {
        (Ok((link, _hello, incoming)), Ok(admitted)) => (link, incoming, admitted),
        (Ok((link, _, _)), Err(_)) => {
            // Not reached: a refusing assigner fails the hello. Close to be sure.
            link.close();
            return;
        }
        (Err(e), admitted) => {
            if admitted.is_ok() {
                metrics::counter!("sssonector_server_handshakes_total", "outcome" => "refused", "reason" => "session")
                    .increment(1);
                tracing::info!(%peer, identity, error = %e, "session refused");
                who.event("handshake.refused")
                    .field("reason", "session")
                    .field("error", e.to_string())
                    .emit();
            }
            release(&mode, &assigned);
            return;
        }
    };
    metrics::counter!("sssonector_server_handshakes_total", "outcome" => "accepted", "reason" => "ok")
        .increment(1);
    server.track(&link, &serial);
    let addresses: Vec<IpAddr> = assigned.lock().iter().map(|a| a.addr).collect();
    let _registered = observed.sessions().register(
        &id,
        Some(peer_identity.clone()),
        peer.to_string(),
        addresses.clone(),
        link.clone(),
    );
    tracing::info!(%peer, identity, ?addresses, rule = admitted.verdict.rule(), super_packets = link.gso(), "client connected");
    who.event("session.start")
        .field("rule", admitted.verdict.rule())
        .field("serial", peer_identity.serial_hex())
        .field("sha256", peer_identity.sha256.clone())
        .field(
            "addresses",
            addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .emit();
    let started = Instant::now();
    metrics::gauge!("sssonector_server_clients").increment(1.0);

    // The session's verdict, re-evaluated whenever the policy changes; its traffic watches it.
    let (verdict_tx, verdict) = watch::channel(admitted.verdict.clone());
    let watcher = tokio::spawn(
        watch_policy(
            guard.clone(),
            peer_identity,
            admitted.slot.id(),
            verdict_tx,
            link.clone(),
            who.clone(),
        )
        .in_current_span(),
    );
    match &*mode {
        ServerMode::Forward(targets) => {
            tokio::spawn(
                serve_streams(incoming, targets.clone(), verdict, who.clone()).in_current_span(),
            );
        }
        ServerMode::Tun { device, router, .. } => {
            for addr in &addresses {
                router.insert(*addr, link.clone());
            }
            // One session per identity in TUN mode: a new one (a roaming client back before
            // its old connection was noticed dead) replaces the old, and keeps its address.
            let replaced = observed.sessions().close_identity(&identity, &id);
            if replaced > 0 {
                tracing::info!(%peer, identity, replaced, "a new session of this identity replaces its older one");
                who.event("session.replaced")
                    .field("replaced", replaced)
                    .emit();
            }
            tokio::spawn(
                tun::server_link_loop_filtered(
                    incoming,
                    addresses.clone(),
                    Arc::clone(device),
                    Arc::clone(router),
                    Some(packet_filter(verdict, who.clone())),
                )
                .in_current_span(),
            );
        }
    }
    let reason = link.closed().await;
    watcher.abort();
    if let ServerMode::Tun { router, .. } = &*mode {
        for addr in &addresses {
            router.remove_link(*addr, &link);
        }
    }
    metrics::gauge!("sssonector_server_clients").decrement(1.0);
    let stats = link.stats();
    tracing::info!(
        %peer,
        identity,
        ?reason,
        bytes_in = stats.bytes_in,
        bytes_out = stats.bytes_out,
        "client disconnected"
    );
    who.event("session.end")
        .field("reason", format!("{reason:?}"))
        .field("bytes_in", stats.bytes_in)
        .field("bytes_out", stats.bytes_out)
        .field("streams", stats.streams_opened)
        .field("seconds", started.elapsed().as_secs())
        .emit();
    drop(admitted.slot);
    release(&mode, &assigned);
}

fn release(mode: &ServerMode, assigned: &Mutex<Vec<TunnelAddress>>) {
    if let ServerMode::Tun { pools, .. } = mode {
        pools.release(&assigned.lock());
    }
}

/// Re-evaluates the session's verdict on every policy change; ends the session when the new
/// policy refuses its identity.
async fn watch_policy(
    guard: Guard,
    peer_identity: sssonector_certs::PeerIdentity,
    slot: SlotId,
    verdict: watch::Sender<Verdict>,
    link: sssonector_tunnel::Link,
    who: Who,
) {
    let mut access = guard.subscribe();
    access.mark_unchanged();
    while access.changed().await.is_ok() {
        let now = access.borrow_and_update().verdict(&peer_identity);
        let whom = format_args!("{} from {}", who.identity, who.remote);
        if now == Verdict::Refused {
            denied("session", "no_rule", &whom);
            tracing::info!(peer = %who.remote, identity = who.identity, "the new access policy refuses this client: ending its session");
            who.event("session.ended_by_policy")
                .field("reason", "no_rule")
                .emit();
            link.close();
        } else {
            match guard.reapply(&slot, &now) {
                Reapplied::Keep => {}
                Reapplied::Rerated(tier) => {
                    tracing::info!(
                        identity = who.identity,
                        tier = tier.name,
                        upload_mbps = tier.upload_mbps,
                        download_mbps = tier.download_mbps,
                        "the identity's bandwidth tier now has new rates"
                    );
                }
                Reapplied::OverLimit(max) => {
                    denied("session", "session_limit", &whom);
                    tracing::info!(peer = %who.remote, identity = who.identity, max_sessions = max, "the new access policy allows this identity fewer sessions: ending its newest");
                    who.event("session.ended_by_policy")
                        .field("reason", "session_limit")
                        .field("max_sessions", max)
                        .emit();
                    link.close();
                }
                Reapplied::Reconnect => {
                    tracing::info!(peer = %who.remote, identity = who.identity, "the client's bandwidth tier changed in a way pacing cannot follow in place: ending its session so it reconnects under the new one");
                    who.event("session.ended_by_policy")
                        .field("reason", "tier_changed")
                        .emit();
                    link.close();
                }
            }
        }
        verdict.send_replace(now);
    }
}

/// The server side of forwarding under a policy: each stream the client opens is checked
/// against the session's verdict, and reset with `NOT_PERMITTED` if its rule is not granted
/// — at open, or later when a new policy withdraws it.
async fn serve_streams(
    mut incoming: mpsc::Receiver<Incoming>,
    targets: Targets,
    verdict: watch::Receiver<Verdict>,
    who: Who,
) {
    while let Some(item) = incoming.recv().await {
        let Incoming::Stream { target, stream } = item else {
            continue;
        };
        if !verdict.borrow().allows_forward(&target) {
            denied(
                "stream",
                "not_granted",
                &format_args!("{target:?} for {}", who.remote),
            );
            who.event("stream.refused")
                .field("rule", target.as_str())
                .field("stream", stream.id())
                .field("reason", "not_granted")
                .emit();
            who.shield.failure(who.remote, "policy");
            stream.reset(stream_code::NOT_PERMITTED);
            continue;
        }
        who.event("stream.open")
            .field("rule", target.as_str())
            .field("stream", stream.id())
            .emit();
        let targets = targets.clone();
        let mut verdict = verdict.clone();
        let who = who.clone();
        tokio::spawn(
            async move {
                let id = stream.id();
                let reset = stream.reset_handle();
                let serve = targets.serve(&target, stream);
                let withdrawn = async {
                    verdict.mark_unchanged();
                    while verdict.changed().await.is_ok() {
                        if !verdict.borrow_and_update().allows_forward(&target) {
                            return;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    result = serve => match result {
                        Ok(moved) => tracing::debug!(id, target, sent = moved.sent, received = moved.received, "stream done"),
                        Err(e) => tracing::info!(id, target, error = %e, "stream failed"),
                    },
                    () = withdrawn => {
                        denied("stream", "withdrawn", &format_args!("{target:?} for {}", who.remote));
                        who.event("stream.refused")
                            .field("rule", target.as_str())
                            .field("stream", id)
                            .field("reason", "withdrawn")
                            .emit();
                        reset.reset(stream_code::NOT_PERMITTED);
                    }
                }
            }
            .in_current_span(),
        );
    }
}

/// The TUN filter for one session: its verdict, refreshed when the policy changes (one
/// atomic load per packet otherwise). Denied packets are audited at most once every 10 s
/// per session, with how many were denied since.
fn packet_filter(mut verdict: watch::Receiver<Verdict>, who: Who) -> tun::PacketFilter {
    let mut current = verdict.borrow_and_update().clone();
    let mut last_audit: Option<Instant> = None;
    let mut unaudited = 0u64;
    Box::new(move |dst, to| {
        if verdict.has_changed().unwrap_or(false) {
            current = verdict.borrow_and_update().clone();
        }
        let allowed = current.allows_packet(dst, to);
        if !allowed {
            denied("packet", "not_granted", &dst);
            unaudited += 1;
            if last_audit.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                who.event("packet.denied")
                    .field("destination", dst.to_string())
                    .field(
                        "to",
                        if to == tun::Destination::Client {
                            "client"
                        } else {
                            "server"
                        },
                    )
                    .field("count", unaudited)
                    .emit();
                last_audit = Some(Instant::now());
                unaudited = 0;
            }
        }
        allowed
    })
}
