//! A certificate chain with its private key, checked to belong together.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use crate::error::{CertError, Source};
use crate::load::{self, Input};

/// A certificate chain (leaf first) and the private key of its leaf.
///
/// Loading checks that the key is the leaf's: a mismatch is reported at once, naming both
/// files, instead of as a failed handshake later.
#[derive(Debug, Clone)]
pub struct Identity {
    certified: Arc<CertifiedKey>,
    cert_source: Source,
}

impl Identity {
    /// Loads a PEM chain and a PEM private key from files.
    ///
    /// # Errors
    ///
    /// [`CertError`] naming the file: unreadable, no certificate or key in it, malformed
    /// PEM, an unsupported key, or a key that does not match the certificate.
    pub fn load(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, CertError> {
        Self::from_inputs(Input::File(cert.as_ref()), Input::File(key.as_ref()))
    }

    /// The same from PEM text in memory.
    ///
    /// # Errors
    ///
    /// As [`Identity::load`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        Self::from_inputs(Input::Text(cert_pem), Input::Text(key_pem))
    }

    fn from_inputs(cert: Input<'_>, key: Input<'_>) -> Result<Self, CertError> {
        let chain = load::certs(cert)?;
        let key_der = load::key(key)?;
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| CertError::BadKey(key.source(), e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(CertError::KeyMismatch {
                    cert: cert.source(),
                    key: key.source(),
                });
            }
            // The key type cannot tell its public key: nothing to compare, accept.
            Err(_) => {}
        }
        Ok(Self {
            certified: Arc::new(certified),
            cert_source: cert.source(),
        })
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// Where the certificate came from.
    pub fn source(&self) -> &Source {
        &self.cert_source
    }

    /// The chain and key as rustls uses them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }
}

/// The crypto provider every configuration here uses: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
