//! Certificates for mutual TLS: generate, load, validate, and build rustls configurations.
//!
//! - [`CertificateAuthority`] generates a private CA, server certificates (DNS and IP
//!   names), client certificates (identity in the common name) and CRLs that revoke them.
//! - [`Identity`] loads a PEM chain and its key and checks they belong together;
//!   [`TrustStore`] loads CA bundles and CRLs and [`verifies`](TrustStore::verify) a chain
//!   as a peer would. Every error names the file at fault and the problem: no certificate,
//!   malformed PEM, key mismatch, expired, not yet valid, untrusted chain, wrong key usage,
//!   revoked.
//! - [`server_config`] requires and verifies client certificates (whole chain, CRLs,
//!   unknown revocation status denied); [`client_config`] verifies the server and presents
//!   the client's certificate. TLS 1.3 only unless TLS 1.2 is asked for; ALPN.
//!
//! # Example
//!
//! ```
//! use std::time::SystemTime;
//! use sssonector_certs::{CertificateAuthority, Identity, TrustStore, Usage, Validity};
//!
//! let ca = CertificateAuthority::generate("example CA", Validity::days(365))?;
//! let server = ca.issue_server(&["localhost", "127.0.0.1"], Validity::days(30))?;
//!
//! let identity = Identity::from_pem(&server.cert_pem, &server.key_pem)?;
//! let trust = TrustStore::from_pem(ca.cert_pem(), &[])?;
//! trust.verify(&identity, Usage::Server, SystemTime::now())?;
//!
//! // A client certificate is not a server certificate.
//! let client = ca.issue_client("alice", Validity::days(30))?;
//! let alice = Identity::from_pem(&client.cert_pem, &client.key_pem)?;
//! let err = trust.verify(&alice, Usage::Server, SystemTime::now()).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "in-memory PEM: certificate is not for TLS server authentication (wrong extended key usage)"
//! );
//! # Ok::<(), sssonector_certs::CertError>(())
//! ```

mod error;
mod generate;
mod identity;
mod load;
mod peer;
mod reload;
mod reload_trust;
mod tls;
mod trust;
mod write;
mod x509;

pub use error::{CertError, Source, Usage};
pub use generate::{CertificateAuthority, ClientNames, Issued, Validity};
pub use identity::Identity;
pub use peer::{PeerIdentity, PeerIdentityError};
pub use reload::{
    ExpiryPolicy, Issuer, LocalCaIssuer, ReloadStats, ReloadableIdentity, Reloaded, RenewalRequest,
};
pub use reload_trust::{ReloadableTrust, TrustReloaded};
pub use tls::{
    TlsOptions, client_config, client_config_reloading_identity_and_trust, server_config,
    server_config_reloading_identity, server_config_reloading_identity_and_trust,
};
pub use trust::TrustStore;

/// The subject common name of a DER certificate: for a client certificate from
/// [`CertificateAuthority::issue_client`], its identity. A server uses it to tell clients
/// apart (for example to give each a fixed tunnel address) after the handshake verified the
/// certificate.
///
/// ```
/// use sssonector_certs::{CertificateAuthority, Validity, Identity, common_name};
///
/// let ca = CertificateAuthority::generate("test CA", Validity::days(1))?;
/// let alice = ca.issue_client("alice", Validity::days(1))?;
/// let identity = Identity::from_pem(&alice.cert_pem, &alice.key_pem)?;
/// assert_eq!(common_name(&identity.chain()[0]).as_deref(), Some("alice"));
/// # Ok::<(), sssonector_certs::CertError>(())
/// ```
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    x509::common_name(cert_der)
}

/// The serial number of a DER certificate (big-endian bytes, as
/// [`TrustReloaded::Replaced`]'s `newly_revoked` lists them), so a server can end the live
/// sessions of certificates a new CRL revokes.
pub fn serial_number(cert_der: &[u8]) -> Option<Vec<u8>> {
    x509::serial_and_validity(cert_der).map(|(serial, _, _)| serial)
}
