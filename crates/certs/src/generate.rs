//! Generating a private CA, server and client certificates, and CRLs (with rcgen).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::error::CertError;

/// Names a client certificate carries besides its common name, for access rules to match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientNames {
    /// The subject's organizational unit (`sssonector` when `None`).
    pub organizational_unit: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// URI subject alternative names, such as `spiffe://example.org/ns/prod/sa/web`.
    pub uris: Vec<String>,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The start.
    pub not_before: SystemTime,
    /// The end.
    pub not_after: SystemTime,
}

impl Validity {
    /// From a minute ago (for clocks slightly behind) for `days` days.
    pub fn days(days: u64) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(days * 86_400),
        }
    }

    /// Between two instants.
    pub fn between(not_before: SystemTime, not_after: SystemTime) -> Self {
        Self {
            not_before,
            not_after,
        }
    }
}

fn offset(t: SystemTime) -> OffsetDateTime {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A CA's certificate parameters: its name, and the usages of a CA.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn generate_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |error| CertError::Generate { what, error }
}

/// A certificate and its key, as PEM, with its serial number (to revoke it).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key (PKCS#8), PEM.
    pub key_pem: String,
    /// Its serial number.
    pub serial: Vec<u8>,
}

/// A private certificate authority: issues server and client certificates and signs CRLs.
///
/// ```
/// use sssonector_certs::{CertificateAuthority, Validity};
///
/// let ca = CertificateAuthority::generate("tunnel CA", Validity::days(3650))?;
/// let server = ca.issue_server(&["tunnel.example", "10.0.0.1"], Validity::days(90))?;
/// let client = ca.issue_client("alice", Validity::days(30))?;
/// ca.revoke(&client.serial);
/// let crl_pem = ca.crl(std::time::Duration::from_secs(86_400))?;
/// assert!(crl_pem.contains("BEGIN X509 CRL"));
/// # Ok::<(), sssonector_certs::CertError>(())
/// ```
#[derive(Debug)]
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
    revoked: Mutex<Vec<(Vec<u8>, SystemTime)>>,
    crl_number: Mutex<u64>,
}

impl CertificateAuthority {
    /// Generates a CA: a new ECDSA P-256 key and a self-signed certificate named `name`.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] if rcgen refuses the name or the dates.
    pub fn generate(name: &str, validity: Validity) -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(generate_error("the CA key"))?;
        let mut params = ca_params(name);
        params.not_before = offset(validity.not_before);
        params.not_after = offset(validity.not_after);
        params.serial_number = Some(serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(generate_error("the CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
            revoked: Mutex::new(Vec::new()),
            crl_number: Mutex::new(0),
        })
    }

    /// Loads a CA this crate generated earlier from its certificate and key (PEM). The CA
    /// certificate is used as it is; the name it signs as is read from its subject.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] if the key cannot be parsed; [`CertError::KeyMismatch`] if it
    /// is not the certificate's key; [`CertError::Pem`] if the certificate has no common name.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(generate_error("the CA key"))?;
        // The key must be the certificate's.
        let identity = crate::Identity::from_pem(cert_pem, key_pem).map_err(|e| match e {
            CertError::KeyMismatch { .. } => CertError::KeyMismatch {
                cert: crate::Source::Memory,
                key: crate::Source::Memory,
            },
            other => other,
        })?;
        let name = identity
            .chain()
            .first()
            .and_then(|cert| crate::x509::common_name(cert))
            .ok_or_else(|| CertError::Pem {
                origin: crate::Source::Memory,
                problem: "the CA certificate has no common name to sign as".into(),
            })?;
        let params = ca_params(&name);
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer: Issuer::new(params, key),
            revoked: Mutex::new(Vec::new()),
            crl_number: Mutex::new(0),
        })
    }

    /// Takes up where `crl_pem`, a CRL this CA signed earlier, left off: its revoked serials
    /// (with their dates) are revoked again, and the next [`crl`](Self::crl) gets a higher
    /// number than it (RFC 5280 requires CRL numbers to increase). Call it after
    /// [`from_pem`](Self::from_pem) with the CA's current CRL.
    ///
    /// # Errors
    ///
    /// [`CertError::Pem`] if `crl_pem` holds no CRL; [`CertError::Invalid`] if it does not
    /// parse, names another issuer, or carries no CRL number. `source` names the file in
    /// either error.
    pub fn restore_crl(&self, crl_pem: &str, source: crate::Source) -> Result<(), CertError> {
        use rustls_pki_types::CertificateRevocationListDer;
        use rustls_pki_types::pem::PemObject;
        use x509_parser::prelude::{FromDer, X509Certificate};
        use x509_parser::revocation_list::CertificateRevocationList;

        let der =
            CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes()).map_err(|e| {
                CertError::Pem {
                    origin: source.clone(),
                    problem: format!("no CRL: {e}"),
                }
            })?;
        let invalid = |problem: String| CertError::Invalid {
            origin: source.clone(),
            problem,
        };
        let (_, crl) = CertificateRevocationList::from_der(&der)
            .map_err(|e| invalid(format!("the CRL does not parse: {e}")))?;
        let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| invalid(format!("the CA certificate: {e}")))?;
        let (_, ca) = X509Certificate::from_der(&ca_der)
            .map_err(|e| invalid(format!("the CA certificate: {e}")))?;
        if crl.issuer().as_raw() != ca.subject().as_raw() {
            return Err(invalid(format!(
                "the CRL is issued by \"{}\", not by this CA (\"{}\")",
                crl.issuer(),
                ca.subject()
            )));
        }
        let digits = crl
            .crl_number()
            .ok_or_else(|| invalid("the CRL has no CRL number".into()))?
            .to_u64_digits();
        let number = match digits.as_slice() {
            [] => 0,
            [n] => *n,
            _ => return Err(invalid("the CRL number does not fit in 64 bits".into())),
        };
        for entry in crl.iter_revoked_certificates() {
            let at = u64::try_from(entry.revocation_date.timestamp())
                .map_or(SystemTime::UNIX_EPOCH, |secs| {
                    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
                });
            self.revoke_at(entry.raw_serial(), at);
        }
        let mut n = self.crl_number.lock().unwrap_or_else(|e| e.into_inner());
        *n = (*n).max(number);
        Ok(())
    }

    /// The number the last CRL signed carried (0 before the first).
    pub fn crl_number(&self) -> u64 {
        *self.crl_number.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The serial numbers revoked so far, with when.
    pub fn revoked(&self) -> Vec<(Vec<u8>, SystemTime)> {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks a certificate revoked as of `at` (for restoring a saved list).
    pub fn revoke_at(&self, serial: &[u8], at: SystemTime) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if !revoked.iter().any(|(s, _)| s == serial) {
            revoked.push((serial.to_vec(), at));
        }
    }

    /// The CA certificate, PEM: what peers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM. Keep it secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a server certificate for `names`: DNS names and IP addresses, all placed in the
    /// subject alternative names (the first is also the common name).
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] for a name that is neither a DNS name nor an IP address.
    pub fn issue_server(&self, names: &[&str], validity: Validity) -> Result<Issued, CertError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params =
            CertificateParams::new(names.clone()).map_err(generate_error("a server name"))?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, validity, "a server certificate")
    }

    /// Issues a client certificate whose identity (common name, and organizational unit
    /// `sssonector`) is `identity`.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] if rcgen refuses the identity.
    pub fn issue_client(&self, identity: &str, validity: Validity) -> Result<Issued, CertError> {
        self.issue_client_with(identity, &ClientNames::default(), validity)
    }

    /// Issues a client certificate with common name `identity` and the extra `names` that
    /// access rules can match: an organizational unit (`sssonector` when none is given), DNS
    /// and URI subject alternative names (a SPIFFE ID is a URI).
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] for a DNS name or URI that is not ASCII, or if rcgen refuses
    /// the identity.
    pub fn issue_client_with(
        &self,
        identity: &str,
        names: &ClientNames,
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, identity);
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            names.organizational_unit.as_deref().unwrap_or("sssonector"),
        );
        for dns in &names.dns_names {
            let name = Ia5String::try_from(dns.as_str()).map_err(generate_error("a DNS name"))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for uri in &names.uris {
            let name = Ia5String::try_from(uri.as_str()).map_err(generate_error("a URI"))?;
            params.subject_alt_names.push(SanType::URI(name));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity, "a client certificate")
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        validity: Validity,
        what: &'static str,
    ) -> Result<Issued, CertError> {
        let key = KeyPair::generate().map_err(generate_error("a key"))?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(validity.not_before);
        params.not_after = offset(validity.not_after);
        let serial = serial()?;
        params.serial_number = Some(serial.clone());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate_error(what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        })
    }

    /// Marks a certificate (by serial number) revoked from now on; the next [`crl`] lists it.
    ///
    /// [`crl`]: CertificateAuthority::crl
    pub fn revoke(&self, serial: &[u8]) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if !revoked.iter().any(|(s, _)| s == serial) {
            revoked.push((serial.to_vec(), SystemTime::now()));
        }
    }

    /// Signs a CRL listing every revoked certificate, valid from now for `next_update`.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] if signing fails.
    pub fn crl(&self, next_update: Duration) -> Result<String, CertError> {
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        let number = {
            let mut n = self.crl_number.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let now = SystemTime::now();
        let params = CertificateRevocationListParams {
            this_update: offset(now - Duration::from_secs(60)),
            next_update: offset(now + next_update),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: offset(*at),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(generate_error("a CRL"))?;
        crl.pem().map_err(generate_error("the CRL's PEM"))
    }
}

/// A positive 16-byte serial number from the operating system's CSPRNG (ring's
/// `SystemRandom`): unpredictable, as CA/Browser Forum rules ask of serials (at least 64 random
/// bits), so nobody can foresee the serial of a certificate not yet issued.
fn serial() -> Result<SerialNumber, CertError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Generate {
            what: "a serial number (the system's random number generator failed)",
            error: rcgen::Error::RingUnspecified,
        })?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte to strip
    Ok(SerialNumber::from_slice(&bytes))
}
