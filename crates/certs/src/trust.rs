//! Trusted CAs and CRLs, and checking a certificate against them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, EndEntityCert, KeyUsage, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};

use crate::error::{CertError, Source, Usage};
use crate::identity::{Identity, provider};
use crate::load::{self, Input};

/// The CAs a peer's certificate must chain to, and the CRLs that revoke certificates.
#[derive(Debug, Clone)]
pub struct TrustStore {
    cas: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    ca_source: Source,
}

impl TrustStore {
    /// Loads a PEM bundle of CA certificates and, optionally, PEM CRL files.
    ///
    /// # Errors
    ///
    /// [`CertError`] naming the file that cannot be read or parsed, or a CA certificate that
    /// cannot serve as a trust anchor.
    pub fn load(
        ca_bundle: impl AsRef<Path>,
        crl_files: &[impl AsRef<Path>],
    ) -> Result<Self, CertError> {
        let mut crls = Vec::new();
        for file in crl_files {
            crls.extend(checked_crls(Input::File(file.as_ref()))?);
        }
        Self::build(Input::File(ca_bundle.as_ref()), crls)
    }

    /// The same from PEM text in memory.
    ///
    /// # Errors
    ///
    /// As [`TrustStore::load`].
    pub fn from_pem(ca_pem: &str, crl_pems: &[&str]) -> Result<Self, CertError> {
        let mut crls = Vec::new();
        for pem in crl_pems {
            crls.extend(checked_crls(Input::Text(pem))?);
        }
        Self::build(Input::Text(ca_pem), crls)
    }

    fn build(
        cas: Input<'_>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Self, CertError> {
        let ca_certs = load::certs(cas)?;
        let mut roots = RootCertStore::empty();
        for ca in &ca_certs {
            roots.add(ca.clone()).map_err(|e| CertError::Invalid {
                origin: cas.source(),
                problem: format!("not usable as a CA: {e}"),
            })?;
        }
        Ok(Self {
            cas: ca_certs,
            roots: Arc::new(roots),
            crls,
            ca_source: cas.source(),
        })
    }

    /// The trusted CAs as rustls uses them.
    pub fn roots(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.roots)
    }

    /// The CRLs.
    pub fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crls
    }

    /// Where the CA bundle came from.
    pub fn source(&self) -> &Source {
        &self.ca_source
    }

    /// When the first of the CA certificates expires (`None` if their dates cannot be read).
    pub fn ca_not_after(&self) -> Option<SystemTime> {
        self.cas
            .iter()
            .filter_map(|ca| crate::x509::serial_and_validity(ca).map(|(_, _, end)| end))
            .min()
    }

    /// The earliest next-update time of the loaded CRLs: by then a fresh CRL must be loaded.
    pub fn crl_next_update(&self) -> Option<SystemTime> {
        self.crls
            .iter()
            .filter_map(|crl| crate::x509::crl_next_update(crl))
            .min()
    }

    /// Checks `identity`'s chain as a peer would at `now`: it leads to one of these CAs, every
    /// certificate in it is within its validity period, the leaf allows `usage`, and no
    /// loaded CRL revokes any certificate in it (a certificate whose status no CRL covers is
    /// accepted here; servers built by [`server_config`](crate::server_config) deny it).
    ///
    /// # Errors
    ///
    /// [`CertError::Expired`], [`CertError::NotYetValid`], [`CertError::UntrustedChain`],
    /// [`CertError::WrongKeyUsage`], [`CertError::Revoked`] or [`CertError::Invalid`],
    /// naming the certificate's file.
    pub fn verify(
        &self,
        identity: &Identity,
        usage: Usage,
        now: SystemTime,
    ) -> Result<(), CertError> {
        let source = identity.source().clone();
        let chain = identity.chain();
        let invalid = |problem: String| CertError::Invalid {
            origin: source.clone(),
            problem,
        };
        let leaf = EndEntityCert::try_from(&chain[0]).map_err(|e| invalid(e.to_string()))?;
        let anchors: Vec<_> = self
            .cas
            .iter()
            .filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok())
            .collect();
        let parsed: Vec<CertRevocationList<'_>> = self
            .crls
            .iter()
            .filter_map(|crl| {
                BorrowedCertRevocationList::from_der(crl)
                    .ok()
                    .map(Into::into)
            })
            .collect();
        let refs: Vec<&CertRevocationList<'_>> = parsed.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&refs).ok().map(|builder| {
            builder
                .with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .build()
        });
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let key_usage = match usage {
            Usage::Server => KeyUsage::server_auth(),
            Usage::Client => KeyUsage::client_auth(),
        };
        let provider = provider();
        let result = leaf.verify_for_usage(
            provider.signature_verification_algorithms.all,
            &anchors,
            &chain[1..],
            UnixTime::since_unix_epoch(since_epoch),
            key_usage,
            revocation,
            None,
        );
        let to_system = |t: UnixTime| SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs());
        match result {
            Ok(_) => Ok(()),
            Err(webpki::Error::CertExpired { not_after, .. }) => Err(CertError::Expired {
                origin: source,
                not_after: to_system(not_after),
            }),
            Err(webpki::Error::CertNotValidYet { not_before, .. }) => Err(CertError::NotYetValid {
                origin: source,
                not_before: to_system(not_before),
            }),
            // A CA with the right name but another key (an impostor) fails on the signature.
            Err(webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey) => {
                Err(CertError::UntrustedChain(source))
            }
            Err(webpki::Error::CertRevoked) => Err(CertError::Revoked(source)),
            Err(webpki::Error::RequiredEkuNotFoundContext(_)) => Err(CertError::WrongKeyUsage {
                origin: source,
                usage,
            }),
            Err(other) => Err(invalid(other.to_string())),
        }
    }
}

/// The CRLs in `input`, each checked to parse; an error names `input` (the CRL's file).
fn checked_crls(input: Input<'_>) -> Result<Vec<CertificateRevocationListDer<'static>>, CertError> {
    let crls = load::crls(input)?;
    for crl in &crls {
        BorrowedCertRevocationList::from_der(crl).map_err(|e| CertError::Invalid {
            origin: input.source(),
            problem: format!("CRL: {e}"),
        })?;
    }
    Ok(crls)
}
