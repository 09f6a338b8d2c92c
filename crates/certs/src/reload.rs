//! Certificates that can be replaced while the server runs: validate, then swap.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::SignatureScheme;
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;

use crate::error::{CertError, Usage};
use crate::identity::Identity;
use crate::trust::TrustStore;
use crate::x509;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reloaded {
    /// The files were unchanged; nothing was parsed.
    Unchanged,
    /// New material passed validation and is in use for new handshakes.
    Replaced {
        /// The new leaf's serial number.
        serial: Vec<u8>,
    },
}

/// Counters of a reloadable identity's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadStats {
    /// Reloads that replaced the material.
    pub replaced: u64,
    /// Reloads refused because the new files failed to load or validate.
    pub failed: u64,
    /// The last refusal, if the last reload failed.
    pub last_error: Option<String>,
}

struct Current {
    certified: Arc<CertifiedKey>,
    not_before: Option<SystemTime>,
    not_after: Option<SystemTime>,
    serial: Vec<u8>,
}

/// What to ask an [`Issuer`] for when renewing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalRequest {
    /// A server certificate's names (DNS names and IP addresses), or a client's identity as
    /// the only entry.
    pub names: Vec<String>,
    /// Server or client.
    pub usage: Usage,
    /// How long the new certificate is valid.
    pub validity: Duration,
}

/// Issues certificates for renewal: a local CA ([`LocalCaIssuer`]), or an ACME or corporate
/// CA client of your own.
pub trait Issuer: Send + Sync {
    /// A new certificate and key for `request`.
    fn issue(
        &self,
        request: &RenewalRequest,
    ) -> impl Future<Output = Result<crate::Issued, CertError>> + Send;
}

/// Renews from a [`CertificateAuthority`](crate::CertificateAuthority) held in this process:
/// for self-managed deployments.
#[derive(Debug, Clone)]
pub struct LocalCaIssuer(pub Arc<crate::CertificateAuthority>);

impl Issuer for LocalCaIssuer {
    async fn issue(&self, request: &RenewalRequest) -> Result<crate::Issued, CertError> {
        let validity = crate::Validity::between(
            SystemTime::now() - Duration::from_secs(60),
            SystemTime::now() + request.validity,
        );
        match request.usage {
            Usage::Server => {
                let names: Vec<&str> = request.names.iter().map(String::as_str).collect();
                self.0.issue_server(&names, validity)
            }
            Usage::Client => {
                let identity = request.names.first().map_or("client", String::as_str);
                self.0.issue_client(identity, validity)
            }
        }
    }
}

/// When to warn that a certificate is about to expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryPolicy {
    thresholds: Vec<Duration>,
}

impl Default for ExpiryPolicy {
    /// Warn at 30 days, 7 days and 1 day left.
    fn default() -> Self {
        Self::new([30, 7, 1].map(|d| Duration::from_secs(d * 86_400)))
    }
}

impl ExpiryPolicy {
    /// Warn as the time left falls below each of `thresholds`.
    pub fn new(thresholds: impl IntoIterator<Item = Duration>) -> Self {
        let mut thresholds: Vec<Duration> = thresholds.into_iter().collect();
        thresholds.sort_unstable();
        thresholds.dedup();
        Self { thresholds }
    }

    /// The tightest threshold that `left` is below, if any.
    pub fn crossed(&self, left: Duration) -> Option<Duration> {
        self.thresholds.iter().copied().find(|t| left < *t)
    }
}

/// A certificate and key loaded from two files that can be reloaded while in use.
///
/// New files are parsed and checked before they take effect: the key must match, and with a
/// [`TrustStore`] the chain must verify for its use now (not expired, trusted, right key
/// usage, not revoked). A bad file is refused, counted, and the old material stays in use.
/// Handshakes already done are untouched; new ones use the new certificate. Use it as the
/// certificate resolver of a rustls configuration ([`server_config_reloading_identity`]).
///
/// [`server_config_reloading_identity`]: crate::server_config_reloading_identity
pub struct ReloadableIdentity {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// A DER OCSP response to staple, reloaded with the certificate.
    ocsp_path: Option<PathBuf>,
    usage: Usage,
    trust: Option<TrustStore>,
    current: RwLock<Current>,
    /// Hash of the two files' contents when last loaded: an unchanged reload parses nothing.
    content_hash: AtomicU64,
    history: History,
    expiry: ExpiryPolicy,
    /// The tightest threshold already warned about for the certificate in use.
    warned: Mutex<Option<Duration>>,
}

impl std::fmt::Debug for ReloadableIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableIdentity")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

/// The reload history both reloadable kinds keep, counted and logged the same way.
#[derive(Debug)]
pub(crate) struct History {
    name: String,
    stats: Mutex<ReloadStats>,
}

impl History {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            stats: Mutex::new(ReloadStats::default()),
        }
    }

    /// The name labelling metrics and logs.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// New material of kind `what` is in use.
    pub(crate) fn replaced(&self, what: &str) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.replaced += 1;
        stats.last_error = None;
        metrics::counter!("sssonector_certs_reloads_total", "name" => self.name.clone(), "result" => "replaced").increment(1);
        tracing::info!(name = %self.name, what, "reloaded");
    }

    /// New material of kind `what` was refused; the old stays.
    pub(crate) fn failed(&self, what: &str, error: &CertError) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.failed += 1;
        stats.last_error = Some(error.to_string());
        metrics::counter!("sssonector_certs_reloads_total", "name" => self.name.clone(), "result" => "failed").increment(1);
        tracing::warn!(name = %self.name, what, %error, "reload refused; keeping what is in use");
    }

    pub(crate) fn snapshot(&self) -> ReloadStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A hash of the files' contents: a reload of unchanged files parses nothing.
pub(crate) fn hash_files(paths: &[&Path]) -> Result<u64, CertError> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|error| CertError::Io {
            origin: crate::Source::File(path.to_path_buf()),
            error,
        })?;
        bytes.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

impl ReloadableIdentity {
    /// Loads and validates the files now; `name` labels the metrics.
    ///
    /// # Errors
    ///
    /// As [`Identity::load`], and [`TrustStore::verify`] when `trust` is given.
    pub fn load(
        name: impl Into<String>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        usage: Usage,
        trust: Option<TrustStore>,
    ) -> Result<Self, CertError> {
        let (cert_path, key_path) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let hash = hash_files(&[&cert_path, &key_path])?;
        let current = Self::validate(&cert_path, &key_path, None, usage, trust.as_ref())?;
        Ok(Self {
            cert_path,
            key_path,
            ocsp_path: None,
            usage,
            trust,
            current: RwLock::new(current),
            content_hash: AtomicU64::new(hash),
            history: History::new(name.into()),
            expiry: ExpiryPolicy::default(),
            warned: Mutex::new(None),
        })
    }

    /// Staples the DER OCSP response in `file` to the certificate, reloading it with the
    /// certificate (a changed response alone counts as a change). The response is passed to
    /// clients as it is; they check it.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or is not DER (an OCSP response is a DER SEQUENCE).
    pub fn with_ocsp_file(mut self, file: impl AsRef<Path>) -> Result<Self, CertError> {
        let path = file.as_ref().to_path_buf();
        let hash = hash_files(&[&self.cert_path, &self.key_path, &path])?;
        let current = Self::validate(
            &self.cert_path,
            &self.key_path,
            Some(&path),
            self.usage,
            self.trust.as_ref(),
        )?;
        self.ocsp_path = Some(path);
        *self.current.get_mut().unwrap_or_else(|e| e.into_inner()) = current;
        self.content_hash = AtomicU64::new(hash);
        Ok(self)
    }

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert_path.as_path(), self.key_path.as_path()];
        paths.extend(self.ocsp_path.as_deref());
        paths
    }

    /// Sets when to warn before expiry (default 30, 7 and 1 days).
    pub fn with_expiry_policy(mut self, policy: ExpiryPolicy) -> Self {
        self.expiry = policy;
        self
    }

    /// Checks the time left at `now`: logs a warning and counts
    /// `sssonector_certs_expiry_warnings_total` the first time each threshold is crossed
    /// (again for a new certificate), publishes `sssonector_certs_expiry_seconds`, and returns
    /// the threshold newly crossed, if any. [`poll`](Self::poll) calls it on every tick.
    pub fn check_expiry(&self, now: SystemTime) -> Option<Duration> {
        let left = self.expires_in(now)?;
        #[allow(clippy::cast_precision_loss, reason = "seconds, far below 2^52")]
        let seconds = left.as_secs() as f64;
        metrics::gauge!("sssonector_certs_expiry_seconds", "name" => self.history.name().to_owned())
            .set(seconds);
        let crossed = self.expiry.crossed(left)?;
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_some_and(|w| w <= crossed) {
            return None;
        }
        *warned = Some(crossed);
        tracing::warn!(
            name = %self.history.name(),
            cert = %self.cert_path.display(),
            seconds_left = left.as_secs(),
            threshold_seconds = crossed.as_secs(),
            "certificate expires soon"
        );
        metrics::counter!(
            "sssonector_certs_expiry_warnings_total",
            "name" => self.history.name().to_owned(),
            "threshold" => format!("{}s", crossed.as_secs())
        )
        .increment(1);
        Some(crossed)
    }

    fn validate(
        cert: &Path,
        key: &Path,
        ocsp: Option<&Path>,
        usage: Usage,
        trust: Option<&TrustStore>,
    ) -> Result<Current, CertError> {
        let identity = Identity::load(cert, key)?;
        let mut certified = identity.certified_key();
        if let Some(path) = ocsp {
            let source = || crate::Source::File(path.to_path_buf());
            let response = std::fs::read(path).map_err(|error| CertError::Io {
                origin: source(),
                error,
            })?;
            if response.first() != Some(&0x30) {
                return Err(CertError::Invalid {
                    origin: source(),
                    problem: "not a DER OCSP response".into(),
                });
            }
            let mut stapled = (*certified).clone();
            stapled.ocsp = Some(response);
            certified = Arc::new(stapled);
        }
        if let Some(trust) = trust {
            trust.verify(&identity, usage, SystemTime::now())?;
        }
        let (serial, not_before, not_after) = match x509::serial_and_validity(&identity.chain()[0])
        {
            Some((serial, start, end)) => (serial, Some(start), Some(end)),
            None => (Vec::new(), None, None),
        };
        Ok(Current {
            certified,
            not_before,
            not_after,
            serial,
        })
    }

    /// Reads the files again; if they changed, validates them and swaps them in.
    ///
    /// # Errors
    ///
    /// The reason the new files were refused; the old material stays in use.
    pub fn reload(&self) -> Result<Reloaded, CertError> {
        let result = hash_files(&self.paths()).and_then(|hash| {
            if hash == self.content_hash.load(Ordering::Acquire) {
                return Ok(None);
            }
            let current = Self::validate(
                &self.cert_path,
                &self.key_path,
                self.ocsp_path.as_deref(),
                self.usage,
                self.trust.as_ref(),
            )?;
            Ok(Some((hash, current)))
        });
        match result {
            Ok(None) => Ok(Reloaded::Unchanged),
            Ok(Some((hash, current))) => {
                let serial = current.serial.clone();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = current;
                self.content_hash.store(hash, Ordering::Release);
                // A new certificate earns its own warnings.
                *self.warned.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.history.replaced("certificate");
                Ok(Reloaded::Replaced { serial })
            }
            Err(error) => {
                self.history.failed("certificate", &error);
                Err(error)
            }
        }
    }

    /// A future that reloads every `period` (a content-hash poll: it notices files replaced in
    /// place, by rename, or by a symlink swap as Kubernetes secrets and certbot do) and runs
    /// [`check_expiry`](Self::check_expiry).
    /// Refusals are counted and kept in [`stats`](Self::stats); the future runs until dropped.
    pub async fn poll(self: Arc<Self>, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            let _ = self.reload();
            self.check_expiry(SystemTime::now());
        }
    }

    /// Watches the directories holding the files and reloads when anything in them changes:
    /// an edit, a rename into place, or a symlink swap (Kubernetes swaps a `..data` link in
    /// the directory of the mounted files; certbot swaps links under `live/`). The directory
    /// of each file is watched, and the one above it when that directory is itself a link.
    /// Bursts of events are gathered for 50 ms before one reload. Returns the future that
    /// does it (it owns the watch); spawn it, and use [`poll`](Self::poll) too if the files
    /// live on a file system that sends no events (some network mounts).
    ///
    /// # Errors
    ///
    /// [`CertError::Invalid`] naming the directory if it cannot be watched.
    pub fn watch(self: &Arc<Self>) -> Result<impl Future<Output = ()> + Send + 'static, CertError> {
        let paths: Vec<PathBuf> = self.paths().into_iter().map(Path::to_path_buf).collect();
        let this = Arc::clone(self);
        watch_and_reload(&paths, move || {
            let _ = this.reload();
        })
    }

    /// The reload history.
    pub fn stats(&self) -> ReloadStats {
        self.history.snapshot()
    }

    /// The leaf in use: its serial number.
    pub fn serial(&self) -> Vec<u8> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .serial
            .clone()
    }

    /// How long until the leaf in use expires (zero if it has; `None` if its dates could not
    /// be read).
    pub fn expires_in(&self, now: SystemTime) -> Option<Duration> {
        let not_after = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after?;
        Some(not_after.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// Whether the certificate in use is in its renewal window at `now`: the last
    /// `fraction` of its lifetime (a third by default in [`renew_if_due`]).
    ///
    /// [`renew_if_due`]: Self::renew_if_due
    pub fn renewal_due(&self, now: SystemTime, fraction: f64) -> bool {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        let (Some(start), Some(end)) = (current.not_before, current.not_after) else {
            return false;
        };
        let lifetime = end.duration_since(start).unwrap_or(Duration::ZERO);
        let window = lifetime.mul_f64(fraction.clamp(0.0, 1.0));
        end.checked_sub(window).is_some_and(|from| now >= from)
    }

    /// When the certificate in use has entered the last third of its lifetime, asks `issuer`
    /// for a new one, writes it over the files (each to a temporary file, synced, then renamed
    /// into place; the key readable by its owner only), and reloads. Returns the new serial when it renewed.
    ///
    /// # Errors
    ///
    /// The issuer's error, a write error naming the file, or the reload's refusal (the old
    /// certificate then stays in use).
    pub async fn renew_if_due<I: Issuer>(
        &self,
        issuer: &I,
        request: &RenewalRequest,
        now: SystemTime,
    ) -> Result<Option<Vec<u8>>, CertError> {
        if !self.renewal_due(now, 1.0 / 3.0) {
            return Ok(None);
        }
        let issued = issuer.issue(request).await?;
        // Blocking file work (and fsync) off the runtime's threads.
        let files = [
            (self.key_path.clone(), issued.key_pem, 0o600),
            (self.cert_path.clone(), issued.cert_pem, 0o644),
        ];
        tokio::task::spawn_blocking(move || {
            for (path, text, mode) in &files {
                crate::write::atomically(path, text.as_bytes(), *mode).map_err(|error| {
                    CertError::Io {
                        origin: crate::Source::File(path.clone()),
                        error,
                    }
                })?;
            }
            Ok::<(), CertError>(())
        })
        .await
        .map_err(|e| CertError::Io {
            origin: crate::Source::File(self.key_path.clone()),
            error: std::io::Error::other(format!("the writing task failed: {e}")),
        })??;
        match self.reload()? {
            Reloaded::Replaced { serial } => {
                tracing::info!(name = %self.history.name(), "certificate renewed");
                Ok(Some(serial))
            }
            Reloaded::Unchanged => Ok(None),
        }
    }

    fn certified(&self) -> Arc<CertifiedKey> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .certified,
        )
    }
}

impl rustls::server::ResolvesServerCert for ReloadableIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified())
    }
}

impl rustls::client::ResolvesClientCert for ReloadableIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Watches the directory of each path (and its parent when that directory is a symlink) and
/// returns the future that calls `reload` after each burst of events (gathered for 50 ms).
pub(crate) fn watch_and_reload<F: Fn() + Send + 'static>(
    paths: &[PathBuf],
    reload: F,
) -> Result<impl Future<Output = ()> + Send + 'static + use<F>, CertError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = watch_dirs(paths, tx)?;
    Ok(async move {
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            reload();
        }
    })
}

fn watch_dirs(
    paths: &[PathBuf],
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, CertError> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .map_err(|e| CertError::Invalid {
        origin: crate::Source::Memory,
        problem: format!("cannot start watching files: {e}"),
    })?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        let Some(dir) = path.parent() else { continue };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        dirs.push(dir.to_path_buf());
        if dir.is_symlink() {
            if let Some(above) = dir.parent() {
                dirs.push(above.to_path_buf());
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| CertError::Invalid {
                origin: crate::Source::File(dir.clone()),
                problem: format!("cannot watch this directory: {e}"),
            })?;
    }
    Ok(watcher)
}
