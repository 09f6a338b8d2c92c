//! One Redis, reached through the `redis` crate's connection manager.
//!
//! Commands share one multiplexed connection, so concurrent commands are pipelined and a
//! command given up on (its deadline passed, its future dropped) cannot leave a reply for the
//! next one to read: replies are matched to commands in order by the connection itself. After
//! a connection-level failure the store rests for a while — commands fail at once instead of
//! each waiting out its deadline — and then tries again.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Counter;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult};

use crate::error::ConfigError;

/// Why a command to Redis failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No answer within the store's timeout.
    #[error("redis at {store} did not answer within {timeout:?}")]
    Timeout {
        /// The store, its password hidden.
        store: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// A recent failure: the store is resting and did not try.
    #[error("redis at {store} failed {ago:?} ago; not tried again yet")]
    Resting {
        /// The store, its password hidden.
        store: String,
        /// How long since the failure.
        ago: Duration,
    },
    /// Redis, or the connection to it, refused the command.
    #[error("redis at {store}: {source}")]
    Redis {
        /// The store, its password hidden.
        store: String,
        /// What the client reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A reply of a shape the script never sends.
    #[error("redis at {store} sent an unexpected reply: {detail}")]
    Reply {
        /// The store, its password hidden.
        store: String,
        /// What was wrong with it.
        detail: String,
    },
}

/// A Redis that limiters and blocklists keep their state in. Clones share one connection.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_ratelimit::RedisStore;
///
/// let store = RedisStore::builder("redis://limits:secret@127.0.0.1:6379/2")
///     .timeout(Duration::from_millis(50))
///     .build()?;
/// // The password never appears in logs or errors.
/// assert_eq!(store.name(), "redis://limits:***@127.0.0.1:6379/2");
/// # Ok::<(), sssonector_ratelimit::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    name: String,
    timeout: Duration,
    rest: Duration,
    manager: Mutex<Option<ConnectionManager>>,
    /// When the last connection-level failure happened, while resting after it.
    failed_at: Mutex<Option<Instant>>,
    errors: Counter,
}

impl RedisStore {
    /// A builder for the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            username: None,
            password: None,
            timeout: Duration::from_millis(100),
            rest: Duration::from_secs(1),
            root_certificates: None,
            client_identity: None,
        }
    }

    /// The store's URL with its password replaced by `***`: safe to log.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How long a command may take.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// A new client for a connection of its own (subscriptions need one).
    pub(crate) fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    /// Runs `op` on the shared connection within the store's deadline. An `op` that fails
    /// because the connection dropped (Redis restarted since the last command) runs once more
    /// on the connection the manager opens in its place.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let inner = &*self.inner;
        if let Some(ago) = self.resting() {
            return Err(StoreError::Resting {
                store: inner.name.clone(),
                ago,
            });
        }
        let manager = self.manager()?;
        let attempt = async {
            match op(manager.clone()).await {
                Err(e) if e.is_connection_dropped() || e.is_unrecoverable_error() => {
                    op(manager).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(inner.timeout, attempt).await {
            Ok(Ok(value)) => {
                self.recovered();
                Ok(value)
            }
            Ok(Err(e)) => {
                if connection_failure(&e) {
                    self.failed(&e.to_string());
                } else {
                    inner.errors.increment(1);
                }
                Err(self.error(e))
            }
            Err(_) => {
                self.failed("no answer in time");
                Err(StoreError::Timeout {
                    store: inner.name.clone(),
                    timeout: inner.timeout,
                })
            }
        }
    }

    pub(crate) fn error(&self, e: RedisError) -> StoreError {
        StoreError::Redis {
            store: self.inner.name.clone(),
            source: Box::new(e),
        }
    }

    pub(crate) fn bad_reply(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Reply {
            store: self.inner.name.clone(),
            detail: detail.into(),
        }
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        let inner = &*self.inner;
        let mut slot = inner.manager.lock();
        if let Some(manager) = &*slot {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(inner.timeout))
            .set_response_timeout(Some(inner.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(inner.rest);
        let manager = ConnectionManager::new_lazy_with_config(inner.client.clone(), config)
            .map_err(|e| self.error(e))?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    fn resting(&self) -> Option<Duration> {
        let failed_at = (*self.inner.failed_at.lock())?;
        let ago = failed_at.elapsed();
        (ago < self.inner.rest).then_some(ago)
    }

    fn failed(&self, error: &str) {
        let inner = &*self.inner;
        inner.errors.increment(1);
        let first = inner.failed_at.lock().replace(Instant::now()).is_none();
        if first {
            tracing::warn!(redis = %inner.name, error, rest = ?inner.rest, "redis unavailable");
        }
    }

    fn recovered(&self) {
        if self.inner.failed_at.lock().take().is_some() {
            tracing::info!(redis = %self.inner.name, "redis reachable again");
        }
    }
}

fn connection_failure(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.inner.name)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisStore`].
pub struct RedisStoreBuilder {
    url: String,
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
    rest: Duration,
    root_certificates: Option<Vec<u8>>,
    client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("timeout", &self.timeout)
            .field("rest", &self.rest)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The ACL user to log in as, overriding the URL's.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password, overriding the URL's (read it from a file rather than putting it in a
    /// URL that may be logged elsewhere).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// How long one command may take before it fails (default 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a connection-level failure, how long commands fail at once before Redis is tried
    /// again (default 1 s).
    pub fn rest_after_failure(mut self, rest: Duration) -> Self {
        self.rest = rest;
        self
    }

    /// PEM certificates to trust for a `rediss://` store instead of the system's.
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates = Some(pem.into());
        self
    }

    /// A PEM certificate chain and private key to present to a `rediss://` store that asks
    /// for client certificates.
    pub fn tls_client_identity(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_identity = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// Builds the store; it connects on first use.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Redis`] for a URL that does not parse, TLS settings on a non-TLS URL,
    /// or certificates that do not parse; [`ConfigError::Zero`] for a zero timeout.
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::Zero("timeout"));
        }
        let invalid = |info: Option<&ConnectionInfo>, reason: String| ConfigError::Redis {
            store: info.map_or_else(|| redact_url(&self.url), redacted),
            reason,
        };
        let mut info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| invalid(None, e.to_string()))?;
        if self.username.is_some() || self.password.is_some() {
            let mut settings = info.redis_settings().clone();
            if let Some(username) = &self.username {
                settings = settings.set_username(username);
            }
            if let Some(password) = &self.password {
                settings = settings.set_password(password);
            }
            info = info.set_redis_settings(settings);
        }
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        let client = if self.root_certificates.is_some() || self.client_identity.is_some() {
            if !tls {
                return Err(invalid(
                    Some(&info),
                    "TLS certificates need a rediss:// URL".into(),
                ));
            }
            let certificates = redis::TlsCertificates {
                client_tls: self
                    .client_identity
                    .clone()
                    .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                root_cert: self.root_certificates.clone(),
            };
            redis::Client::build_with_tls(info.clone(), certificates)
        } else {
            redis::Client::open(info.clone())
        }
        .map_err(|e| invalid(Some(&info), e.to_string()))?;
        let name = redacted(&info);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                errors: metrics::counter!("sssonector_ratelimit_redis_store_errors_total", "store" => name.clone()),
                name,
                timeout: self.timeout,
                rest: self.rest,
                manager: Mutex::new(None),
                failed_at: Mutex::new(None),
            }),
        })
    }
}

/// `info` as a URL with the password replaced by `***`.
fn redacted(info: &ConnectionInfo) -> String {
    let settings = info.redis_settings();
    let scheme = match info.addr() {
        ConnectionAddr::TcpTls { .. } => "rediss",
        ConnectionAddr::Unix(_) => "redis+unix",
        _ => "redis",
    };
    let login = match (settings.username(), settings.password()) {
        (Some(user), Some(_)) => format!("{user}:***@"),
        (None, Some(_)) => ":***@".to_owned(),
        (Some(user), None) => format!("{user}@"),
        (None, None) => String::new(),
    };
    let addr = match info.addr() {
        ConnectionAddr::Unix(path) => path.display().to_string(),
        other => other.to_string(),
    };
    format!("{scheme}://{login}{addr}/{}", settings.db())
}

/// A URL that did not parse, its user information dropped (it may hold a password).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hide_passwords() {
        for (url, name) in [
            ("redis://127.0.0.1", "redis://127.0.0.1:6379/0"),
            (
                "redis://:pw@localhost:7000/3",
                "redis://:***@localhost:7000/3",
            ),
            (
                "redis://alice:pw@[::1]:7000",
                "redis://alice:***@::1:7000/0",
            ),
            (
                "rediss://alice@cache.example:6380",
                "rediss://alice@cache.example:6380/0",
            ),
        ] {
            let store = RedisStore::builder(url).build().unwrap();
            assert_eq!(store.name(), name, "{url}");
            assert!(!format!("{store:?}").contains("pw"));
        }
        let store = RedisStore::builder("redis://alice:pw@127.0.0.1")
            .password("other")
            .build()
            .unwrap();
        assert_eq!(store.name(), "redis://alice:***@127.0.0.1:6379/0");
    }

    #[test]
    fn bad_settings_are_refused_by_name_without_the_password() {
        let e = RedisStore::builder("http://u:secret@host")
            .build()
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("http://***@host"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        let e = RedisStore::builder("redis://127.0.0.1")
            .tls_root_certificates(b"-----BEGIN CERTIFICATE-----".to_vec())
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
        assert_eq!(
            RedisStore::builder("redis://127.0.0.1")
                .timeout(Duration::ZERO)
                .build()
                .unwrap_err(),
            ConfigError::Zero("timeout")
        );
    }
}
