//! What `/status` reports, and `sssonector status`'s table of it (in the manner of `wg show`).
//! The same types serialize on the server and deserialize in the command, so the two cannot
//! drift apart.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    /// `server` or `client`.
    pub(crate) role: String,
    /// `tun` or `forward`.
    pub(crate) mode: String,
    /// The program's version.
    pub(crate) version: String,
    /// When the process started (RFC 3339).
    pub(crate) started_at: String,
    /// Seconds since then.
    pub(crate) uptime_seconds: u64,
    /// The server's listening address, or the client's servers.
    pub(crate) listen: Option<String>,
    /// Whether `/readyz` answers ready, and if not, why.
    pub(crate) ready: bool,
    pub(crate) problems: Vec<String>,
    /// Live tunnel sessions.
    pub(crate) sessions: Vec<SessionStatus>,
    /// This side's certificate, its CA, and its CRLs.
    pub(crate) certificates: Vec<CertificateStatus>,
    /// Source addresses banned now.
    pub(crate) bans: Vec<BanStatus>,
    /// The access policy in force.
    pub(crate) policy: PolicyStatus,
    /// The last reload (SIGHUP or `POST /reload`), if any.
    pub(crate) last_reload: Option<ReloadStatus>,
}

/// One live session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionStatus {
    /// The correlation id, also in this session's log lines and audit events.
    pub(crate) id: String,
    /// The peer's certificate names (on a client, the server's).
    pub(crate) identity: IdentityStatus,
    /// The peer's address.
    pub(crate) remote: String,
    /// Tunnel addresses assigned to the peer (TUN mode).
    pub(crate) addresses: Vec<String>,
    /// Bytes read from / written to the peer.
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Bits per second each way, over the last few seconds.
    pub(crate) rate_in_bps: f64,
    pub(crate) rate_out_bps: f64,
    /// Streams open now, and opened since the session began.
    pub(crate) streams_open: usize,
    pub(crate) streams_opened: u64,
    /// When the session was established (RFC 3339), and how long ago.
    pub(crate) since: String,
    pub(crate) seconds: u64,
}

/// A peer's names, as access rules match them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct IdentityStatus {
    pub(crate) name: String,
    pub(crate) common_name: Option<String>,
    pub(crate) organizational_units: Vec<String>,
    pub(crate) dns_names: Vec<String>,
    pub(crate) uris: Vec<String>,
    pub(crate) sha256: String,
    pub(crate) serial: String,
}

/// One certificate, CA or CRL and when it stops being usable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CertificateStatus {
    /// `own`, `ca` or `crl`.
    pub(crate) kind: String,
    /// The file it came from.
    pub(crate) file: String,
    /// The certificate's not-after or the CRL's next-update (RFC 3339), if known.
    pub(crate) expires_at: Option<String>,
    /// Seconds until then (negative once passed).
    pub(crate) expires_in_seconds: Option<i64>,
}

/// A banned source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BanStatus {
    pub(crate) source: String,
    pub(crate) until: String,
    pub(crate) reason: String,
}

/// The access policy in force.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PolicyStatus {
    /// Whether a `[policy]` is configured (without one, every authenticated peer has access).
    pub(crate) configured: bool,
    /// Its version: a digest of its text, so two servers can be compared.
    pub(crate) version: Option<String>,
}

/// What the last reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReloadStatus {
    pub(crate) at: String,
    pub(crate) ok: bool,
    pub(crate) outcome: String,
}

fn bits(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} Gbit/s", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.2} Mbit/s", bps / 1e6)
    } else if bps >= 1e3 {
        format!("{:.1} kbit/s", bps / 1e3)
    } else {
        format!("{bps:.0} bit/s")
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "a byte count shown to two decimals"
)]
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn ago(seconds: u64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn left(seconds: i64) -> String {
    if seconds < 0 {
        format!("expired {} ago", ago(seconds.unsigned_abs()))
    } else {
        format!("in {}", ago(seconds.unsigned_abs()))
    }
}

impl Status {
    /// The report as text for a terminal: a heading, then one block per session, then
    /// certificates, bans and the policy.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sssonector {} ({} {}), up {}, {}",
            self.version,
            self.role,
            self.mode,
            ago(self.uptime_seconds),
            if self.ready { "ready" } else { "NOT READY" }
        );
        if let Some(listen) = &self.listen {
            let _ = writeln!(out, "  listening: {listen}");
        }
        for problem in &self.problems {
            let _ = writeln!(out, "  problem: {problem}");
        }
        let _ = writeln!(out, "\nsessions: {}", self.sessions.len());
        for s in &self.sessions {
            let who = if s.identity.name.is_empty() {
                "(server)"
            } else {
                &s.identity.name
            };
            let _ = writeln!(out, "\nsession {}  {who}", s.id);
            let _ = writeln!(out, "  remote:    {}", s.remote);
            if !s.addresses.is_empty() {
                let _ = writeln!(out, "  addresses: {}", s.addresses.join(", "));
            }
            let _ = writeln!(
                out,
                "  transfer:  {} received, {} sent",
                bytes(s.bytes_in),
                bytes(s.bytes_out)
            );
            let _ = writeln!(
                out,
                "  rate:      {} in, {} out",
                bits(s.rate_in_bps),
                bits(s.rate_out_bps)
            );
            let _ = writeln!(
                out,
                "  streams:   {} open, {} since start",
                s.streams_open, s.streams_opened
            );
            let _ = writeln!(out, "  since:     {} ({} ago)", s.since, ago(s.seconds));
            let names: Vec<String> = s
                .identity
                .organizational_units
                .iter()
                .map(|n| format!("OU={n}"))
                .chain(s.identity.dns_names.iter().map(|n| format!("DNS:{n}")))
                .chain(s.identity.uris.iter().map(|n| format!("URI:{n}")))
                .collect();
            if !names.is_empty() {
                let _ = writeln!(out, "  names:     {}", names.join(", "));
            }
            if !s.identity.serial.is_empty() {
                let _ = writeln!(out, "  serial:    {}", s.identity.serial);
            }
        }
        let _ = writeln!(out, "\ncertificates:");
        for c in &self.certificates {
            let when = match (&c.expires_at, c.expires_in_seconds) {
                (Some(at), Some(secs)) => format!("{at} ({})", left(secs)),
                _ => "no expiry known".to_owned(),
            };
            let verb = if c.kind == "crl" {
                "next update"
            } else {
                "expires"
            };
            let _ = writeln!(out, "  {:<4} {}  {verb} {when}", c.kind, c.file);
        }
        let _ = writeln!(out, "\nbans: {}", self.bans.len());
        for b in &self.bans {
            let _ = writeln!(out, "  {}  until {}  ({})", b.source, b.until, b.reason);
        }
        let _ = writeln!(
            out,
            "\npolicy: {}",
            match (&self.policy.configured, &self.policy.version) {
                (true, Some(v)) => format!("version {v}"),
                (true, None) => "configured".to_owned(),
                (false, _) => "none (every authenticated peer has access)".to_owned(),
            }
        );
        if let Some(r) = &self.last_reload {
            let _ = writeln!(
                out,
                "last reload: {} {}: {}",
                r.at,
                if r.ok { "ok" } else { "FAILED" },
                r.outcome
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_as_people_write_them() {
        assert_eq!(bits(2.5e9), "2.50 Gbit/s");
        assert_eq!(bits(1_500.0), "1.5 kbit/s");
        assert_eq!(bytes(3 << 20), "3.00 MiB");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(ago(3725), "1h 2m");
        assert_eq!(left(-90), "expired 1m 30s ago");
    }
}
