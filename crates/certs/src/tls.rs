//! rustls configurations for mutual TLS.

use std::sync::Arc;

use rustls::server::{ClientHello, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::error::CertError;
use crate::identity::{Identity, provider};
use crate::reload::ReloadableIdentity;
use crate::reload_trust::ReloadableTrust;
use crate::trust::TrustStore;

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Protocol choices for [`server_config`] and [`client_config`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Also allow TLS 1.2 (TLS 1.3 only by default).
    pub tls12: bool,
    /// ALPN protocols, most preferred first.
    pub alpn: Vec<Vec<u8>>,
}

impl TlsOptions {
    /// TLS 1.3 only, no ALPN.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows TLS 1.2 as well.
    pub fn with_tls12(mut self) -> Self {
        self.tls12 = true;
        self
    }

    /// Sets the ALPN protocols.
    pub fn with_alpn(mut self, protocols: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    fn versions(&self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        if self.tls12 {
            rustls::ALL_VERSIONS
        } else {
            TLS13_ONLY
        }
    }
}

/// A server configuration that presents `identity` and requires every client to present a
/// certificate that chains to `trust`'s CAs, is valid now, and is not revoked by its CRLs.
/// With CRLs loaded, the whole chain is checked and a certificate no CRL speaks for is
/// refused. Session resumption is off, so every handshake verifies the client afresh.
///
/// # Errors
///
/// [`CertError::Tls`] if rustls refuses the CAs, CRLs or identity.
pub fn server_config(
    identity: &Identity,
    trust: &TrustStore,
    options: &TlsOptions,
) -> Result<Arc<ServerConfig>, CertError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(trust.roots(), Arc::clone(&provider))
            .with_crls(trust.crls().iter().cloned())
            .build()
            .map_err(|e| CertError::Tls(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(options.versions())
        .map_err(|e| CertError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Fixed(identity.certified_key())));
    config.alpn_protocols.clone_from(&options.alpn);
    no_resumption(&mut config);
    Ok(Arc::new(config))
}

/// Like [`server_config`], presenting whatever `identity` holds now: reloading it changes
/// the certificate of new handshakes.
///
/// # Errors
///
/// [`CertError::Tls`] if rustls refuses the CAs or CRLs.
pub fn server_config_reloading_identity(
    identity: Arc<ReloadableIdentity>,
    trust: &TrustStore,
    options: &TlsOptions,
) -> Result<Arc<ServerConfig>, CertError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(trust.roots(), provider())
        .with_crls(trust.crls().iter().cloned())
        .build()
        .map_err(|e| CertError::Tls(format!("client verifier: {e}")))?;
    server_config_with(identity, verifier, options)
}

/// A server configuration whose certificate and whose CAs and CRLs can both be reloaded
/// while it runs: new handshakes use whatever is loaded at the time.
///
/// # Errors
///
/// [`CertError::Tls`] if rustls refuses the protocol versions.
pub fn server_config_reloading_identity_and_trust(
    identity: Arc<ReloadableIdentity>,
    trust: &Arc<ReloadableTrust>,
    options: &TlsOptions,
) -> Result<Arc<ServerConfig>, CertError> {
    server_config_with(identity, trust.verifier(), options)
}

fn server_config_with(
    identity: Arc<ReloadableIdentity>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    options: &TlsOptions,
) -> Result<Arc<ServerConfig>, CertError> {
    let provider = provider();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(options.versions())
        .map_err(|e| CertError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols.clone_from(&options.alpn);
    no_resumption(&mut config);
    Ok(Arc::new(config))
}

/// A client configuration whose certificate and whose trusted CAs and CRLs can both be
/// reloaded while it runs.
///
/// # Errors
///
/// [`CertError::Tls`] if rustls refuses the protocol versions.
pub fn client_config_reloading_identity_and_trust(
    identity: Arc<ReloadableIdentity>,
    trust: &Arc<ReloadableTrust>,
    options: &TlsOptions,
) -> Result<Arc<ClientConfig>, CertError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(options.versions())
        .map_err(|e| CertError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(trust.server_verifier())
        .with_client_cert_resolver(identity);
    config.alpn_protocols.clone_from(&options.alpn);
    Ok(Arc::new(config))
}

/// A client configuration that presents `identity` and accepts only servers whose
/// certificate chains to `trust`'s CAs, is not revoked by its CRLs, and names the server it
/// connects to.
///
/// # Errors
///
/// [`CertError::Tls`] if rustls refuses the CAs or identity.
pub fn client_config(
    identity: &Identity,
    trust: &TrustStore,
    options: &TlsOptions,
) -> Result<Arc<ClientConfig>, CertError> {
    // The CRLs count for servers too: a revoked server certificate is refused.
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(trust.roots(), provider())
            .with_crls(trust.crls().iter().cloned())
            .build()
            .map_err(|e| CertError::Tls(format!("server verifier: {e}")))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(options.versions())
        .map_err(|e| CertError::Tls(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Fixed(identity.certified_key())));
    config.alpn_protocols.clone_from(&options.alpn);
    Ok(Arc::new(config))
}

/// Presents one certificate chain, always.
/// Turns off TLS session resumption: a resumed session skips client certificate
/// verification, so a client revoked by a CRL loaded since (or whose certificate expired)
/// would keep getting in. Every handshake is a full one and checks the chain and the CRLs of
/// the moment. (Tunnels keep connections for long, so the ~0.35 ms a resumption saves per
/// connection does not matter here.)
fn no_resumption(config: &mut ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}
