//! Who may do what: access rules matched against a client certificate's names, and the grants
//! they give. Default deny: with a policy, a client that matches no rule is refused at the
//! handshake, and whatever its rule does not grant is refused too. Without a `[policy]`
//! section every authenticated client keeps full access.
//!
//! Rules are tried in order; the first whose `match` fits the certificate decides. Within a
//! `match`, every field given must match, each by any of its names (exact, or globs with `*`
//! and `?`; DNS names compare case-insensitively).
//!
//! ```toml
//! [[policy.rule]]
//! name = "ops"
//! match = { ou = "ops", uri = "spiffe://example.org/ns/prod/*" }
//! forwards = ["db", "metrics-*"]
//! tier = "gold"
//! max_sessions = 4
//!
//! [policy.tiers.gold]
//! upload_mbps = 200
//! download_mbps = 200
//! ```

mod file;
mod guard;
mod pattern;

use std::net::IpAddr;
use std::sync::Arc;

use sssonector_certs::PeerIdentity;
use sssonector_tunnel::Cidr;
use sssonector_tunnel::tun::Destination;

pub(crate) use file::{Context, PolicySection};
pub(crate) use guard::{Denied, Guard, Reapplied, SlotId};
use pattern::Pattern;

/// A bandwidth tier: limits shared by all of one identity's connections.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tier {
    pub(crate) name: String,
    pub(crate) upload_mbps: Option<f64>,
    pub(crate) download_mbps: Option<f64>,
}

/// What one rule permits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Grant {
    /// The rule's name, for logs and audit events.
    pub(crate) rule: String,
    forwards: Vec<Pattern>,
    networks: Vec<Cidr>,
    client_to_client: bool,
    pub(crate) tier: Option<Tier>,
    pub(crate) max_sessions: Option<usize>,
}

impl Grant {
    /// Whether the `[[forward]]` rule `name` may be opened.
    pub(crate) fn allows_forward(&self, name: &str) -> bool {
        self.forwards.iter().any(|p| p.matches(name))
    }

    /// Whether a packet to `dst` may be sent.
    pub(crate) fn allows_packet(&self, dst: IpAddr, to: Destination) -> bool {
        match to {
            Destination::Client => self.client_to_client,
            _ => self.networks.iter().any(|net| net.contains(dst)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Matcher {
    cn: Vec<Pattern>,
    ou: Vec<Pattern>,
    dns: Vec<Pattern>,
    uri: Vec<Pattern>,
    sha256: Vec<String>,
}

impl Matcher {
    fn matches(&self, peer: &PeerIdentity) -> bool {
        fn any<'a>(patterns: &[Pattern], names: impl Iterator<Item = &'a str> + Clone) -> bool {
            patterns.is_empty() || patterns.iter().any(|p| names.clone().any(|n| p.matches(n)))
        }
        let dns: Vec<String> = peer
            .dns_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        any(&self.cn, peer.common_name.iter().map(String::as_str))
            && any(
                &self.ou,
                peer.organizational_units.iter().map(String::as_str),
            )
            && any(&self.dns, dns.iter().map(String::as_str))
            && any(&self.uri, peer.uris.iter().map(String::as_str))
            && (self.sha256.is_empty() || self.sha256.contains(&peer.sha256))
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    name: String,
    matcher: Matcher,
    grant: Arc<Grant>,
}

/// A checked policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    rules: Vec<Rule>,
    /// A short digest of the policy's text.
    pub(crate) version: String,
}

impl Policy {
    /// The grant of the first rule that matches `peer`, or `None`: refused.
    pub(crate) fn evaluate(&self, peer: &PeerIdentity) -> Option<Arc<Grant>> {
        self.rules
            .iter()
            .find(|r| r.matcher.matches(peer))
            .map(|r| Arc::clone(&r.grant))
    }

    /// How many rules it has.
    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }
}

/// The access in force: open (no policy configured) or a policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Access {
    /// No `[policy]`: every authenticated peer may do everything.
    Open,
    /// Default deny under this policy.
    Policy(Arc<Policy>),
}

/// What a peer may do now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Everything (no policy).
    All,
    /// What this grant permits.
    Granted(Arc<Grant>),
    /// Nothing: no rule matches.
    Refused,
}

impl Verdict {
    pub(crate) fn allows_forward(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Granted(grant) => grant.allows_forward(name),
            Self::Refused => false,
        }
    }

    pub(crate) fn allows_packet(&self, dst: IpAddr, to: Destination) -> bool {
        match self {
            Self::All => true,
            Self::Granted(grant) => grant.allows_packet(dst, to),
            Self::Refused => false,
        }
    }

    /// The matching rule's name, for logs (`-` without a policy).
    pub(crate) fn rule(&self) -> &str {
        match self {
            Self::All => "-",
            Self::Granted(grant) => &grant.rule,
            Self::Refused => "(none)",
        }
    }
}

impl Access {
    pub(crate) fn verdict(&self, peer: &PeerIdentity) -> Verdict {
        match self {
            Self::Open => Verdict::All,
            Self::Policy(policy) => policy
                .evaluate(peer)
                .map_or(Verdict::Refused, Verdict::Granted),
        }
    }

    pub(crate) fn version(&self) -> Option<String> {
        match self {
            Self::Open => None,
            Self::Policy(policy) => Some(policy.version.clone()),
        }
    }
}

#[cfg(test)]
mod tests;
