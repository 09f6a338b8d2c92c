//! `[bans]`: temporary bans of sources that keep failing, and `[bans.redis]`, the Redis that
//! several servers share them through.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sssonector_ratelimit::{RedisBlocklist, RedisStore};

use super::{Dur, Role, default_true};
use crate::error::Error;

/// `[bans]`: a source with `failures` refused handshakes or policy denials within `window`
/// is refused at once for `ban`, doubled on each repeat within a day, up to `max_ban`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bans {
    #[serde(default = "default_true")]
    pub(crate) enabled: bool,
    #[serde(default = "default_ban_failures")]
    pub(crate) failures: u32,
    #[serde(default = "default_ban_window")]
    pub(crate) window: Dur,
    #[serde(default = "default_ban")]
    pub(crate) ban: Dur,
    #[serde(default = "default_max_ban")]
    pub(crate) max_ban: Dur,
    /// Count failures and hold bans in Redis, shared by every server using it.
    pub(crate) redis: Option<SharedBans>,
}

/// `[bans.redis]`: failures from any server count toward one ban, and every server refuses a
/// source any of them banned.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SharedBans {
    /// `redis://[user@]host[:port][/db]`, or `rediss://` for TLS.
    pub(crate) url: String,
    /// A file holding the password (kept out of the URL and the configuration).
    pub(crate) password_file: Option<PathBuf>,
    /// PEM certificates to trust for `rediss://` instead of the system's.
    pub(crate) ca: Option<PathBuf>,
    /// A client certificate and key for a Redis that asks for one.
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    /// The key prefix: servers sharing bans use the same one.
    #[serde(default = "default_prefix")]
    pub(crate) prefix: String,
    /// How long one Redis command may take before the server counts on its own.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: Dur,
}

impl Default for Bans {
    fn default() -> Self {
        Self {
            enabled: true,
            failures: default_ban_failures(),
            window: default_ban_window(),
            ban: default_ban(),
            max_ban: default_max_ban(),
            redis: None,
        }
    }
}

fn default_ban_failures() -> u32 {
    10
}
fn default_ban_window() -> Dur {
    Dur::secs(60)
}
fn default_ban() -> Dur {
    Dur::secs(60)
}
fn default_max_ban() -> Dur {
    Dur::secs(3600)
}
fn default_prefix() -> String {
    "sssonector".to_owned()
}
fn default_timeout() -> Dur {
    Dur::millis(200)
}

impl Bans {
    /// Adds a message naming the field for each setting that cannot work.
    pub(crate) fn check(&self, role: Role, errors: &mut Vec<String>) {
        if self.max_ban < self.ban {
            errors.push(format!(
                "bans.max_ban ({}) must not be shorter than bans.ban ({})",
                self.max_ban, self.ban
            ));
        }
        if self.failures == 0 {
            errors.push("bans.failures: must be at least 1 (or set bans.enabled = false)".into());
        }
        let Some(shared) = &self.redis else { return };
        if role == Role::Client {
            errors.push("bans.redis: only a server bans sources".into());
        }
        if shared.prefix.is_empty() {
            errors.push("bans.redis.prefix: must not be empty".into());
        }
        if shared.cert.is_some() != shared.key.is_some() {
            errors.push("bans.redis.cert / bans.redis.key: give both or neither".into());
        }
        // The URL, without reading any file or touching the network.
        if let Err(e) = RedisStore::builder(shared.url.as_str()).build() {
            errors.push(format!("bans.redis.url: {e}"));
        } else if (shared.ca.is_some() || shared.cert.is_some())
            && !shared.url.starts_with("rediss://")
        {
            errors
                .push("bans.redis.ca / bans.redis.cert: TLS settings need a rediss:// url".into());
        }
    }
}

impl SharedBans {
    /// The blocklist these settings name, its files read relative to `dir`; `bans` gives the
    /// counting and escalation every server sharing it must agree on.
    pub(crate) fn blocklist(&self, dir: &Path, bans: &Bans) -> Result<RedisBlocklist, Error> {
        let read = |field: &str, path: &Path| {
            let path = dir.join(path);
            std::fs::read(&path).map_err(|error| Error::File {
                path,
                action: "read",
                error,
                hint: format!(" (bans.redis.{field})"),
            })
        };
        let mut store = RedisStore::builder(self.url.as_str()).timeout(self.timeout.0);
        if let Some(path) = &self.password_file {
            let text =
                String::from_utf8(read("password_file", path)?).map_err(|_| Error::Field {
                    field: "bans.redis.password_file".into(),
                    problem: "the password is not UTF-8".into(),
                })?;
            store = store.password(text.trim_end_matches(['\r', '\n']));
        }
        if let Some(path) = &self.ca {
            store = store.tls_root_certificates(read("ca", path)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            store = store.tls_client_identity(read("cert", cert)?, read("key", key)?);
        }
        let field = |e: sssonector_ratelimit::ConfigError| Error::Field {
            field: "bans.redis".into(),
            problem: e.to_string(),
        };
        let store = store.build().map_err(field)?;
        RedisBlocklist::builder(store)
            .prefix(format!("{}:bans", self.prefix))
            .strikes(bans.failures, bans.window.0)
            .block(bans.ban.0, bans.max_ban.0)
            .build()
            .map_err(field)
    }
}
