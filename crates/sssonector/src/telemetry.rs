//! The process's metrics recorder: every crate's `metrics` calls land in one Prometheus
//! registry that `/metrics` renders. [`METRICS`] names every metric the program exports, with
//! its help text; the shipped alerts and dashboard are tested against it.

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the program exports: name, kind, unit and help text.
pub(crate) const METRICS: &[(&str, Kind, Option<Unit>, &str)] = &[
    // The program.
    (
        "sssonector_build_info",
        Kind::Gauge,
        None,
        "Always 1; the version label says which build runs.",
    ),
    (
        "sssonector_start_time_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "When the process started, in seconds since the Unix epoch.",
    ),
    (
        "sssonector_ready",
        Kind::Gauge,
        None,
        "1 while /readyz answers ready, else 0.",
    ),
    (
        "sssonector_sessions",
        Kind::Gauge,
        None,
        "Tunnel sessions by state (handshaking, established).",
    ),
    (
        "sssonector_reloads_total",
        Kind::Counter,
        None,
        "Reloads (SIGHUP or POST /reload) by result (ok, failed).",
    ),
    (
        "sssonector_admin_requests_total",
        Kind::Counter,
        None,
        "Admin endpoint requests by path and HTTP status.",
    ),
    // Certificates.
    (
        "sssonector_certs_not_after_timestamp_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "When a certificate expires (cert: own or ca), in seconds since the Unix epoch.",
    ),
    (
        "sssonector_certs_crl_next_update_timestamp_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "When the earliest CRL is due to be replaced, in seconds since the Unix epoch.",
    ),
    (
        "sssonector_certs_expiry_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Seconds until this side's certificate expires.",
    ),
    (
        "sssonector_certs_expiry_warnings_total",
        Kind::Counter,
        None,
        "Certificate expiry warnings by threshold crossed.",
    ),
    (
        "sssonector_certs_reloads_total",
        Kind::Counter,
        None,
        "Certificate reloads by result (replaced, failed).",
    ),
    (
        "sssonector_certs_ca_expiry_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Seconds until the CA certificate expires.",
    ),
    (
        "sssonector_certs_crl_next_update_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Seconds until the CRL's next update.",
    ),
    // The server's accept path.
    (
        "sssonector_server_clients",
        Kind::Gauge,
        None,
        "Clients with an established session.",
    ),
    (
        "sssonector_server_refused_total",
        Kind::Counter,
        None,
        "Connections refused by reason (max_clients, banned, handshakes_per_source, not_allowed, rate_limited, handshake_timeout, identity, tls).",
    ),
    (
        "sssonector_server_handshakes_total",
        Kind::Counter,
        None,
        "Tunnel handshakes by outcome (accepted, refused) and reason.",
    ),
    // Access policy, bans and the audit log.
    (
        "sssonector_policy_denials_total",
        Kind::Counter,
        None,
        "Policy denials by kind (handshake, session, stream, packet) and reason.",
    ),
    (
        "sssonector_bans_total",
        Kind::Counter,
        None,
        "Sources banned, by the failure that tipped the ban.",
    ),
    (
        "sssonector_bans_active",
        Kind::Gauge,
        None,
        "Sources banned now.",
    ),
    (
        "sssonector_bans_shared_errors_total",
        Kind::Counter,
        None,
        "Failures counted locally because the shared count in Redis failed (redis) or was too far behind (queue_full).",
    ),
    (
        "sssonector_audit_dropped_total",
        Kind::Counter,
        None,
        "Audit records dropped (queue full or write failed).",
    ),
    // The client's reconnects.
    (
        "sssonector_client_connects_total",
        Kind::Counter,
        None,
        "Tunnel connections the client established.",
    ),
    (
        "sssonector_client_failbacks_total",
        Kind::Counter,
        None,
        "Moves back to the first listed server once it answered a probe.",
    ),
    (
        "sssonector_client_disconnects_total",
        Kind::Counter,
        None,
        "Established tunnel connections the client lost (each is followed by a reconnect).",
    ),
    (
        "sssonector_client_connect_failures_total",
        Kind::Counter,
        None,
        "Attempts to connect to a server that failed.",
    ),
    // Links and streams.
    (
        "sssonector_tunnel_bytes_received_total",
        Kind::Counter,
        Some(Unit::Bytes),
        "Bytes read from tunnel connections.",
    ),
    (
        "sssonector_tunnel_bytes_sent_total",
        Kind::Counter,
        Some(Unit::Bytes),
        "Bytes written to tunnel connections.",
    ),
    (
        "sssonector_tunnel_writes_total",
        Kind::Counter,
        None,
        "Batched writes to tunnel connections.",
    ),
    (
        "sssonector_tunnel_packets_dropped_total",
        Kind::Counter,
        None,
        "Packets dropped because a queue was full.",
    ),
    (
        "sssonector_tunnel_sessions_closed_total",
        Kind::Counter,
        None,
        "Tunnel sessions closed by reason.",
    ),
    (
        "sssonector_tunnel_streams_opened_total",
        Kind::Counter,
        None,
        "Forwarded streams opened.",
    ),
    (
        "sssonector_tunnel_streams_open",
        Kind::Gauge,
        None,
        "Forwarded streams open now.",
    ),
    (
        "sssonector_tunnel_streams_refused_total",
        Kind::Counter,
        None,
        "Forwarded connections or streams refused by reason (max_streams, queue_full, no_tunnel, peer_busy, unknown_target, open_failed).",
    ),
    (
        "sssonector_tun_packets_total",
        Kind::Counter,
        None,
        "TUN packets by outcome.",
    ),
    (
        "sssonector_tun_super_packets_total",
        Kind::Counter,
        None,
        "Segmentation-offload super-packets by path (to_peer: read from the device; to_device: from a peer) and how they went (whole, split).",
    ),
    (
        "sssonector_tunnel_receive_window_grown_bytes",
        Kind::Gauge,
        Some(Unit::Bytes),
        "What forwarded streams' receive windows have grown by beyond their first window, over all connections (each within limits.receive_budget).",
    ),
    // Libraries.
    (
        "sssonector_ratelimit_admitted_total",
        Kind::Counter,
        None,
        "Rate limiter admissions by limiter.",
    ),
    (
        "sssonector_ratelimit_limited_total",
        Kind::Counter,
        None,
        "Rate limiter refusals (rate-limit hits) by limiter.",
    ),
    (
        "sssonector_ratelimit_wait_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time waited for a rate limiter.",
    ),
    (
        "sssonector_ratelimit_tracked_keys",
        Kind::Gauge,
        None,
        "Keys a keyed rate limiter tracks.",
    ),
    (
        "sssonector_ratelimit_evictions_total",
        Kind::Counter,
        None,
        "Keys a keyed rate limiter evicted.",
    ),
    (
        "sssonector_ratelimit_redis_errors_total",
        Kind::Counter,
        None,
        "Redis-backed rate limit checks decided by the failure policy because Redis failed.",
    ),
    (
        "sssonector_ratelimit_redis_store_errors_total",
        Kind::Counter,
        None,
        "Commands to a Redis store that failed or timed out.",
    ),
    (
        "sssonector_bufpool_hits_total",
        Kind::Counter,
        None,
        "Buffer pool gets served from the pool.",
    ),
    (
        "sssonector_bufpool_misses_total",
        Kind::Counter,
        None,
        "Buffer pool gets that allocated.",
    ),
    (
        "sssonector_bufpool_waits_total",
        Kind::Counter,
        None,
        "Buffer pool gets that waited for memory.",
    ),
    (
        "sssonector_bufpool_rejections_total",
        Kind::Counter,
        None,
        "Buffer pool gets refused for lack of memory.",
    ),
    (
        "sssonector_bufpool_trimmed_total",
        Kind::Counter,
        None,
        "Idle buffers the pool freed.",
    ),
    (
        "sssonector_bufpool_evicted_total",
        Kind::Counter,
        None,
        "Buffers evicted from the pool.",
    ),
    (
        "sssonector_bufpool_dropped_on_return_total",
        Kind::Counter,
        None,
        "Returned buffers freed instead of pooled.",
    ),
    (
        "sssonector_bufpool_pooled_bytes",
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes held idle in the buffer pool.",
    ),
    (
        "sssonector_bufpool_outstanding_bytes",
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes of buffers handed out.",
    ),
    (
        "sssonector_bufpool_outstanding_buffers",
        Kind::Gauge,
        None,
        "Buffers handed out.",
    ),
    (
        "sssonector_bufpool_in_use_bytes",
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes counted against the pool's budget.",
    ),
    (
        "sssonector_bufpool_budget_bytes",
        Kind::Gauge,
        Some(Unit::Bytes),
        "The buffer pool's byte budget.",
    ),
    (
        "sssonector_breaker_state",
        Kind::Gauge,
        None,
        "Circuit breaker state (0 closed, 1 open, 2 half-open) by breaker.",
    ),
    (
        "sssonector_breaker_calls_total",
        Kind::Counter,
        None,
        "Calls through a circuit breaker by outcome.",
    ),
    (
        "sssonector_breaker_slow_calls_total",
        Kind::Counter,
        None,
        "Calls a circuit breaker counted as slow.",
    ),
    (
        "sssonector_retry_attempts_total",
        Kind::Counter,
        None,
        "Attempts made under a retry policy.",
    ),
    (
        "sssonector_retry_retries_total",
        Kind::Counter,
        None,
        "Retries made under a retry policy.",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder's histogram samples are folded into their buckets (the exporter's
/// own default).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The name of the thread that keeps the recorder's memory bounded.
const UPKEEP_THREAD: &str = "metrics-upkeep";

/// Folds the recorder's pending histogram samples into their buckets every `every`, for the
/// life of the process. A recorder installed without the exporter's own HTTP listener keeps
/// every sample recorded until something does this or a scrape of `/metrics` renders them, so
/// without it a process nobody scrapes grows with each paced wait.
fn spawn_upkeep(handle: PrometheusHandle, every: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name(UPKEEP_THREAD.to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; histograms grow until /metrics is scraped");
    }
}

/// Installs the Prometheus recorder for the whole process (once; later calls return the same
/// handle) and describes every metric in [`METRICS`].
///
/// # Errors
///
/// Another recorder was installed first.
pub(crate) fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new().install_recorder()?;
    spawn_upkeep(handle.clone(), UPKEEP_EVERY);
    for &(name, kind, unit, help) in METRICS {
        match (kind, unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(name, u, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
    metrics::gauge!("sssonector_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds since 1970, far below 2^52"
    )]
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64);
    metrics::gauge!("sssonector_start_time_seconds").set(started);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// The names of this process's threads.
    fn threads() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    }

    #[test]
    fn installing_starts_one_upkeep_thread() {
        install().unwrap();
        install().unwrap();
        // A new thread carries its creator's name until it has started and named itself.
        let upkeep = || threads().iter().filter(|t| *t == UPKEEP_THREAD).count();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while upkeep() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Time for a second one to name itself, had the second install started one.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(upkeep(), 1, "threads: {:?}", threads());
    }

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Every `sssonector_…` metric name in `text` (alert and dashboard expressions).
    fn names(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("sssonector_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            found.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
        found.sort();
        found.dedup();
        found
    }

    fn sources(dir: &Path, into: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if path.ends_with("telemetry.rs") {
                    // The table names every metric; only what follows it emits.
                    let from = text.find("static HANDLE").unwrap();
                    let to = text.find("#[cfg(test)]").unwrap();
                    into.push_str(&text[from..to]);
                } else {
                    into.push_str(&text);
                }
            }
        }
    }

    #[test]
    fn the_shipped_alerts_and_dashboard_name_only_exported_metrics() {
        let known: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        for file in ["dist/prometheus/alerts.yml", "dist/grafana/sssonector.json"] {
            let text = std::fs::read_to_string(root().join(file)).unwrap();
            let named = names(&text);
            assert!(named.len() >= 5, "{file} names only {named:?}");
            for name in named {
                assert!(
                    known.contains(&name.as_str()),
                    "{file} names {name}, which the program does not export"
                );
            }
        }
    }

    #[test]
    fn every_described_metric_is_emitted_somewhere() {
        let mut code = String::new();
        for krate in std::fs::read_dir(root().join("crates")).unwrap().flatten() {
            let src = krate.path().join("src");
            if src.is_dir() {
                sources(&src, &mut code);
            }
        }
        for (name, ..) in METRICS {
            assert!(
                code.contains(&format!("\"{name}\"")),
                "{name} is described but nothing emits it"
            );
        }
    }
}
