//! A CA bundle and CRLs that can be replaced while the server runs, and the client
//! verifier that follows them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::BorrowedCertRevocationList;

use crate::error::CertError;
use crate::identity::provider;
use crate::reload::{History, ReloadStats, hash_files, watch_and_reload};
use crate::trust::TrustStore;

/// What a trust reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustReloaded {
    /// The files were unchanged.
    Unchanged,
    /// New CAs and CRLs are in use for new handshakes.
    Replaced {
        /// Serial numbers revoked by the new CRLs that the old ones did not revoke: end the
        /// live sessions of these certificates.
        newly_revoked: Vec<Vec<u8>>,
    },
}

struct Current {
    trust: TrustStore,
    verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<rustls::client::WebPkiServerVerifier>,
    revoked: BTreeSet<Vec<u8>>,
}

/// CAs and CRLs loaded from files that can be reloaded while in use; its
/// [`verifier`](Self::verifier) checks client certificates against whatever is loaded now.
///
/// A reload validates before swapping: every file must parse. The result lists the serials
/// the new CRLs revoke that the old ones did not, so established sessions of those
/// certificates can be ended; new handshakes of those clients are refused at once.
pub struct ReloadableTrust {
    ca_path: PathBuf,
    crl_paths: Vec<PathBuf>,
    current: RwLock<Current>,
    content_hash: AtomicU64,
    history: History,
}

impl std::fmt::Debug for ReloadableTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTrust")
            .field("ca", &self.ca_path)
            .field("crls", &self.crl_paths)
            .finish_non_exhaustive()
    }
}

impl ReloadableTrust {
    /// Loads the CA bundle and CRL files now; `name` labels the metrics.
    ///
    /// # Errors
    ///
    /// As [`TrustStore::load`].
    pub fn load(
        name: impl Into<String>,
        ca_bundle: impl AsRef<Path>,
        crl_files: &[impl AsRef<Path>],
    ) -> Result<Self, CertError> {
        let ca_path = ca_bundle.as_ref().to_path_buf();
        let crl_paths: Vec<PathBuf> = crl_files.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let hash = hash_files(&Self::paths_of(&ca_path, &crl_paths))?;
        let current = Self::build(&ca_path, &crl_paths)?;
        Ok(Self {
            ca_path,
            crl_paths,
            current: RwLock::new(current),
            content_hash: AtomicU64::new(hash),
            history: History::new(name.into()),
        })
    }

    fn paths_of<'a>(ca: &'a Path, crls: &'a [PathBuf]) -> Vec<&'a Path> {
        std::iter::once(ca)
            .chain(crls.iter().map(PathBuf::as_path))
            .collect()
    }

    fn build(ca: &Path, crls: &[PathBuf]) -> Result<Current, CertError> {
        let trust = TrustStore::load(ca, crls)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(trust.roots(), provider())
            .with_crls(trust.crls().iter().cloned())
            .build()
            .map_err(|e| CertError::Tls(format!("client verifier: {e}")))?;
        let server_verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(trust.roots(), provider())
                .with_crls(trust.crls().iter().cloned())
                .build()
                .map_err(|e| CertError::Tls(format!("server verifier: {e}")))?;
        let mut revoked = BTreeSet::new();
        for crl in trust.crls() {
            if let Ok(list) = BorrowedCertRevocationList::from_der(crl) {
                for entry in (&list).into_iter().flatten() {
                    revoked.insert(entry.serial_number.to_vec());
                }
            }
        }
        Ok(Current {
            trust,
            verifier,
            server_verifier,
            revoked,
        })
    }

    /// Reads the files again; if they changed, loads them and swaps them in.
    ///
    /// # Errors
    ///
    /// Why the new files were refused; the old CAs and CRLs stay in use.
    pub fn reload(&self) -> Result<TrustReloaded, CertError> {
        let paths = Self::paths_of(&self.ca_path, &self.crl_paths);
        let result = hash_files(&paths).and_then(|hash| {
            if hash == self.content_hash.load(Ordering::Acquire) {
                return Ok(None);
            }
            Ok(Some((hash, Self::build(&self.ca_path, &self.crl_paths)?)))
        });
        match result {
            Ok(None) => Ok(TrustReloaded::Unchanged),
            Ok(Some((hash, new))) => {
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                let newly_revoked: Vec<Vec<u8>> =
                    new.revoked.difference(&current.revoked).cloned().collect();
                *current = new;
                drop(current);
                self.content_hash.store(hash, Ordering::Release);
                self.history.replaced("CAs and CRLs");
                Ok(TrustReloaded::Replaced { newly_revoked })
            }
            Err(error) => {
                self.history.failed("CAs and CRLs", &error);
                Err(error)
            }
        }
    }

    /// A future that reloads every `period`, hands each non-empty list of newly revoked
    /// serials to `on_revoked`, and publishes the seconds until the first CA expires
    /// (`sssonector_certs_ca_expiry_seconds`) and until the CRLs' next update
    /// (`sssonector_certs_crl_next_update_seconds`; negative once overdue). Runs until dropped.
    pub async fn poll(
        self: Arc<Self>,
        period: Duration,
        on_revoked: impl Fn(&[Vec<u8>]) + Send + Sync + 'static,
    ) {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            if let Ok(TrustReloaded::Replaced { newly_revoked }) = self.reload() {
                if !newly_revoked.is_empty() {
                    on_revoked(&newly_revoked);
                }
            }
            let trust = self.trust();
            let now = std::time::SystemTime::now();
            #[allow(clippy::cast_precision_loss, reason = "seconds, far below 2^52")]
            let seconds = |at: std::time::SystemTime| match at.duration_since(now) {
                Ok(left) => left.as_secs() as f64,
                Err(past) => -(past.duration().as_secs() as f64),
            };
            if let Some(at) = trust.ca_not_after() {
                metrics::gauge!("sssonector_certs_ca_expiry_seconds", "name" => self.history.name().to_owned())
                    .set(seconds(at));
            }
            if let Some(at) = trust.crl_next_update() {
                metrics::gauge!(
                    "sssonector_certs_crl_next_update_seconds",
                    "name" => self.history.name().to_owned()
                )
                .set(seconds(at));
            }
        }
    }

    /// Watches the directories of the CA bundle and CRL files and reloads on any change, as
    /// [`ReloadableIdentity::watch`](crate::ReloadableIdentity::watch) does, handing newly
    /// revoked serials to `on_revoked`.
    ///
    /// # Errors
    ///
    /// [`CertError::Invalid`] naming a directory that cannot be watched.
    pub fn watch(
        self: &Arc<Self>,
        on_revoked: impl Fn(&[Vec<u8>]) + Send + Sync + 'static,
    ) -> Result<impl Future<Output = ()> + Send + 'static, CertError> {
        let paths: Vec<PathBuf> = Self::paths_of(&self.ca_path, &self.crl_paths)
            .into_iter()
            .map(Path::to_path_buf)
            .collect();
        let this = Arc::clone(self);
        watch_and_reload(&paths, move || {
            if let Ok(TrustReloaded::Replaced { newly_revoked }) = this.reload() {
                if !newly_revoked.is_empty() {
                    on_revoked(&newly_revoked);
                }
            }
        })
    }

    /// The reload history.
    pub fn stats(&self) -> ReloadStats {
        self.history.snapshot()
    }

    /// The CAs and CRLs in use now.
    pub fn trust(&self) -> TrustStore {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .trust
            .clone()
    }

    /// A client-certificate verifier for rustls that always uses the CAs and CRLs loaded now.
    /// It sends no CA names to clients (they present their only certificate anyway).
    pub fn verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(Following(Arc::clone(self)))
    }

    /// A server-certificate verifier for rustls clients that always uses the CAs and CRLs
    /// loaded now (a client that follows a CA rotation).
    pub fn server_verifier(
        self: &Arc<Self>,
    ) -> Arc<dyn rustls::client::danger::ServerCertVerifier> {
        Arc::new(FollowingServer(Arc::clone(self)))
    }

    fn server_now(&self) -> Arc<rustls::client::WebPkiServerVerifier> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .server_verifier,
        )
    }

    fn now(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .verifier,
        )
    }
}

/// Delegates every check to the verifier loaded at the time of the check.
#[derive(Debug)]
struct Following(Arc<ReloadableTrust>);

impl ClientCertVerifier for Following {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .now()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.now().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.now().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.now().supported_verify_schemes()
    }
}

/// Delegates every server check to the verifier loaded at the time of the check.
#[derive(Debug)]
struct FollowingServer(Arc<ReloadableTrust>);

impl rustls::client::danger::ServerCertVerifier for FollowingServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.0.server_now().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .server_now()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .server_now()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.server_now().supported_verify_schemes()
    }
}
