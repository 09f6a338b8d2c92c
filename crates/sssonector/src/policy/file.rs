//! The policy as written: `[policy]` in the configuration, or a file it names with the same
//! keys at the top level; read with serde, then checked as a whole, every problem reported with
//! its path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sssonector_tunnel::Cidr;

use super::pattern::Pattern;
use super::{Grant, Matcher, Policy, Rule, Tier};

/// `[policy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicySection {
    /// A file holding the rules and tiers instead (relative to the configuration file).
    pub(crate) file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) rule: Vec<RuleConfig>,
    #[serde(default)]
    pub(crate) tiers: BTreeMap<String, TierConfig>,
}

/// A policy file: `[[rule]]` and `[tiers.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<RuleConfig>,
    #[serde(default)]
    tiers: BTreeMap<String, TierConfig>,
}

/// One `[[policy.rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleConfig {
    name: String,
    #[serde(rename = "match")]
    matches: MatchConfig,
    /// `[[forward]]` rule names this identity may open (globs allowed; `"*"` for all).
    #[serde(default)]
    forwards: Vec<String>,
    /// Networks behind the server this identity may send packets to (TUN mode).
    #[serde(default)]
    networks: Vec<String>,
    /// Whether it may send packets to other clients (TUN mode; off by default).
    #[serde(default)]
    client_to_client: bool,
    /// A bandwidth tier from `[policy.tiers]`, shared by all of the identity's connections.
    tier: Option<String>,
    /// The most sessions the identity may hold at once.
    max_sessions: Option<usize>,
}

/// One name or several, in TOML either way.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl OneOrMany {
    fn list(&self) -> Vec<&str> {
        match self {
            Self::One(one) => vec![one.as_str()],
            Self::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

/// `match = { … }`: every field given must match (any of its names).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchConfig {
    #[serde(default)]
    cn: OneOrMany,
    #[serde(default)]
    ou: OneOrMany,
    #[serde(default)]
    dns: OneOrMany,
    #[serde(default)]
    uri: OneOrMany,
    #[serde(default)]
    sha256: OneOrMany,
}

/// `[policy.tiers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TierConfig {
    upload_mbps: Option<f64>,
    download_mbps: Option<f64>,
}

/// What the policy is checked against: the configuration around it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The server's `[[forward]]` rule names (forward mode), or `None` in TUN mode.
    pub(crate) forwards: Option<&'a [String]>,
    /// The configuration file's directory, for a relative `policy.file`.
    pub(crate) base: &'a Path,
}

/// A SHA-256 fingerprint in any of the usual spellings (`AB:CD:…`, `abcd…`), normalized to
/// lowercase hex without separators.
fn fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

impl PolicySection {
    /// The policy, or every problem with its path. Its version is a digest of what it was
    /// built from, so two servers with the same policy show the same version.
    pub(crate) fn build(&self, context: Context<'_>) -> Result<Policy, Vec<String>> {
        let mut errors = Vec::new();
        let (rules, tiers, prefix, source) = match &self.file {
            Some(file) => {
                let path = if file.is_relative() {
                    context.base.join(file)
                } else {
                    file.clone()
                };
                if !self.rule.is_empty() || !self.tiers.is_empty() {
                    errors.push(
                        "policy: give the rules either in policy.file or inline, not both".into(),
                    );
                }
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    vec![format!("policy.file: cannot read {}: {e}", path.display())]
                })?;
                let parsed: PolicyFile = toml::from_str(&text).map_err(|e| {
                    vec![format!(
                        "policy.file ({}): {}",
                        path.display(),
                        e.to_string().trim_end().replace('\n', "\n  ")
                    )]
                })?;
                (parsed.rule, parsed.tiers, String::new(), text)
            }
            None => (
                self.rule.clone(),
                self.tiers.clone(),
                "policy.".to_owned(),
                format!("{:?}{:?}", self.rule, self.tiers),
            ),
        };
        let mut built_tiers = BTreeMap::new();
        for (name, tier) in &tiers {
            for (field, value) in [
                ("upload_mbps", tier.upload_mbps),
                ("download_mbps", tier.download_mbps),
            ] {
                if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                    errors.push(format!(
                        "{prefix}tiers.{name}.{field}: must be a positive number of Mbit/s"
                    ));
                }
            }
            built_tiers.insert(
                name.clone(),
                Tier {
                    name: name.clone(),
                    upload_mbps: tier.upload_mbps,
                    download_mbps: tier.download_mbps,
                },
            );
        }
        let mut built = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{prefix}rule[{i}]");
            if rule.name.is_empty() {
                errors.push(format!("{at}.name: must not be empty"));
            }
            if rules[..i].iter().any(|r| r.name == rule.name) {
                errors.push(format!("{at}.name: {:?} is used twice", rule.name));
            }
            let m = &rule.matches;
            let mut sha256 = Vec::new();
            for (j, text) in m.sha256.list().into_iter().enumerate() {
                match fingerprint(text) {
                    Some(hex) => sha256.push(hex),
                    None => errors.push(format!(
                        "{at}.match.sha256[{j}]: {text:?} is not a SHA-256 fingerprint (64 hex digits)"
                    )),
                }
            }
            let patterns =
                |field: &str, names: &OneOrMany, fold: bool, errors: &mut Vec<String>| {
                    names
                        .list()
                        .into_iter()
                        .enumerate()
                        .filter_map(|(j, n)| {
                            if n.is_empty() {
                                errors.push(format!("{at}.match.{field}[{j}]: must not be empty"));
                                None
                            } else {
                                Some(Pattern::new(n, fold))
                            }
                        })
                        .collect::<Vec<_>>()
                };
            let matcher = Matcher {
                cn: patterns("cn", &m.cn, false, &mut errors),
                ou: patterns("ou", &m.ou, false, &mut errors),
                dns: patterns("dns", &m.dns, true, &mut errors),
                uri: patterns("uri", &m.uri, false, &mut errors),
                sha256,
            };
            if [&m.cn, &m.ou, &m.dns, &m.uri, &m.sha256]
                .iter()
                .all(|names| names.list().is_empty())
            {
                errors.push(format!(
                    "{at}.match: give at least one of cn, ou, dns, uri, sha256 (use cn = \"*\" to match every certificate with a common name)"
                ));
            }
            let mut forwards = Vec::new();
            for (j, name) in rule.forwards.iter().enumerate() {
                match context.forwards {
                    None => errors.push(format!(
                        "{at}.forwards[{j}]: the server is in tun mode; grant networks instead"
                    )),
                    Some(known) => {
                        let pattern = Pattern::new(name, false);
                        if !known.iter().any(|k| pattern.matches(k)) {
                            errors.push(format!(
                                "{at}.forwards[{j}]: {name:?} names no [[forward]] rule (known: {})",
                                known.join(", ")
                            ));
                        }
                        forwards.push(pattern);
                    }
                }
            }
            let mut networks = Vec::new();
            for (j, net) in rule.networks.iter().enumerate() {
                if context.forwards.is_some() {
                    errors.push(format!(
                        "{at}.networks[{j}]: the server is in forward mode; grant forwards instead"
                    ));
                }
                match net.parse::<Cidr>() {
                    Ok(cidr) => networks.push(cidr),
                    Err(e) => errors.push(format!("{at}.networks[{j}]: {e}")),
                }
            }
            if rule.client_to_client && context.forwards.is_some() {
                errors.push(format!(
                    "{at}.client_to_client: only TUN mode carries packets between clients"
                ));
            }
            let tier = match &rule.tier {
                None => None,
                Some(name) => match built_tiers.get(name) {
                    Some(tier) => Some(tier.clone()),
                    None => {
                        errors.push(format!(
                            "{at}.tier: no tier named {name:?} in [{prefix}tiers]"
                        ));
                        None
                    }
                },
            };
            if rule.max_sessions == Some(0) {
                errors.push(format!("{at}.max_sessions: must be at least 1"));
            }
            built.push(Rule {
                name: rule.name.clone(),
                matcher,
                grant: std::sync::Arc::new(Grant {
                    rule: rule.name.clone(),
                    forwards,
                    networks,
                    client_to_client: rule.client_to_client,
                    tier,
                    max_sessions: rule.max_sessions,
                }),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, source.as_bytes());
        let version = crate::certs_cli::hex(&digest.as_ref()[..6]);
        Ok(Policy {
            rules: built,
            version,
        })
    }
}
