//! The names a verified peer certificate carries, read once after the handshake: what access
//! rules match and what status pages and audit records show.

use std::fmt;
use std::time::{Duration, SystemTime};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a certificate's names could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("the peer certificate is not valid DER: {0}")]
    Malformed(String),
    /// The certificate names nothing: no common name, no DNS or URI subject alternative name.
    #[error("the peer certificate has no common name and no DNS or URI subject alternative name")]
    Nameless,
}

/// The identity of a peer, from its (already verified) leaf certificate.
///
/// ```
/// use sssonector_certs::{CertificateAuthority, Identity, PeerIdentity, Validity};
///
/// let ca = CertificateAuthority::generate("test CA", Validity::days(1))?;
/// let alice = ca.issue_client("alice", Validity::days(1))?;
/// let chain = Identity::from_pem(&alice.cert_pem, &alice.key_pem)?.chain().to_vec();
/// let peer = PeerIdentity::from_der(&chain[0]).unwrap();
/// assert_eq!(peer.common_name.as_deref(), Some("alice"));
/// assert_eq!(peer.name(), "alice");
/// assert_eq!(peer.sha256.len(), 64);
/// # Ok::<(), sssonector_certs::CertError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// The subject's organizational units.
    pub organizational_units: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// URI subject alternative names (`spiffe://trust-domain/path` among them).
    pub uris: Vec<String>,
    /// SHA-256 of the DER certificate, lowercase hex without separators.
    pub sha256: String,
    /// The serial number, big-endian bytes.
    pub serial: Vec<u8>,
    /// When the certificate expires.
    pub not_after: SystemTime,
}

impl PeerIdentity {
    /// Reads the names of a DER certificate.
    ///
    /// # Errors
    ///
    /// [`PeerIdentityError::Malformed`] when the bytes do not parse, and
    /// [`PeerIdentityError::Nameless`] when the certificate names nothing a rule could match.
    pub fn from_der(der: &[u8]) -> Result<Self, PeerIdentityError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| PeerIdentityError::Malformed(e.to_string()))?;
        let subject = cert.subject();
        let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
            attr.as_str().ok().map(str::to_owned)
        };
        let common_name = subject.iter_common_name().find_map(text);
        let organizational_units = subject
            .iter_organizational_unit()
            .filter_map(text)
            .collect();
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                    _ => {}
                }
            }
        }
        if common_name.is_none() && dns_names.is_empty() && uris.is_empty() {
            return Err(PeerIdentityError::Nameless);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let sha256 = hex(digest.as_ref());
        let not_after = u64::try_from(cert.validity().not_after.timestamp())
            .map_or(SystemTime::UNIX_EPOCH, |secs| {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
            });
        Ok(Self {
            common_name,
            organizational_units,
            dns_names,
            uris,
            sha256,
            serial: cert.raw_serial().to_vec(),
            not_after,
        })
    }

    /// The one name that stands for this peer in logs, leases and per-identity limits: the
    /// common name, else the first URI, else the first DNS name.
    pub fn name(&self) -> &str {
        self.common_name
            .as_deref()
            .or(self.uris.first().map(String::as_str))
            .or(self.dns_names.first().map(String::as_str))
            .unwrap_or_default()
    }

    /// The serial number as lowercase hex, as `sssonector certs issue` prints it.
    pub fn serial_hex(&self) -> String {
        hex(&self.serial)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateAuthority, ClientNames, Identity, Validity};

    #[test]
    fn reads_every_name_a_rule_can_match() {
        let ca = CertificateAuthority::generate("test CA", Validity::days(1)).unwrap();
        let names = ClientNames {
            organizational_unit: Some("ops".into()),
            dns_names: vec!["web.corp.example".into()],
            uris: vec!["spiffe://example.org/ns/prod/sa/web".into()],
        };
        let issued = ca
            .issue_client_with("web", &names, Validity::days(1))
            .unwrap();
        let chain = Identity::from_pem(&issued.cert_pem, &issued.key_pem)
            .unwrap()
            .chain()
            .to_vec();
        let peer = PeerIdentity::from_der(&chain[0]).unwrap();
        assert_eq!(peer.common_name.as_deref(), Some("web"));
        assert_eq!(peer.organizational_units, ["ops"]);
        assert_eq!(peer.dns_names, ["web.corp.example"]);
        assert_eq!(peer.uris, ["spiffe://example.org/ns/prod/sa/web"]);
        assert_eq!(peer.serial, issued.serial);
        let digest = ring::digest::digest(&ring::digest::SHA256, &chain[0]);
        assert_eq!(
            peer.sha256,
            digest
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert!(peer.not_after > SystemTime::now());
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert!(matches!(
            PeerIdentity::from_der(b"not DER"),
            Err(PeerIdentityError::Malformed(_))
        ));
    }
}
