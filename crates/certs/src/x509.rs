//! A certificate's serial number, validity period and common name, and a CRL's next update
//! and number, read with x509-parser (the rusticata project's maintained parser, already in
//! the tree through rcgen): for expiry monitoring and renewal, which webpki does not expose.

use std::time::{Duration, SystemTime};

use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

fn system_time(t: ASN1Time) -> Option<SystemTime> {
    let secs = u64::try_from(t.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The serial number (its DER content bytes) and validity period (not before, not after)
/// of a DER certificate.
pub(crate) fn serial_and_validity(cert: &[u8]) -> Option<(Vec<u8>, SystemTime, SystemTime)> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    let validity = cert.validity();
    Some((
        cert.raw_serial().to_vec(),
        system_time(validity.not_before)?,
        system_time(validity.not_after)?,
    ))
}

/// When a DER CRL says the next one is due (`None` if it says nothing, or does not parse).
pub(crate) fn crl_next_update(crl: &[u8]) -> Option<SystemTime> {
    let (_, crl) = CertificateRevocationList::from_der(crl).ok()?;
    system_time(crl.next_update()?)
}

/// The subject's common name of a DER certificate.
pub(crate) fn common_name(cert: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    cert.subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateAuthority, Validity};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn reads_what_rcgen_wrote() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(3_000_000_000); // 2065: GeneralizedTime
        let ca = CertificateAuthority::generate("ca", Validity::between(start, end)).unwrap();
        let issued = ca
            .issue_client(
                "x",
                Validity::between(start, start + Duration::from_secs(3600)),
            )
            .unwrap();
        for (pem, not_after) in [
            (ca.cert_pem().to_owned(), end),
            (issued.cert_pem.clone(), start + Duration::from_secs(3600)),
        ] {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            let (_, a, b) = serial_and_validity(&der).unwrap();
            assert_eq!((a, b), (start, not_after));
        }
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let (serial, _, _) = serial_and_validity(&der).unwrap();
        assert_eq!(serial, issued.serial);
        assert!(serial_and_validity(b"\x30\x03\x02\x01").is_none());
    }

    #[test]
    fn reads_a_crl_next_update() {
        use rustls_pki_types::CertificateRevocationListDer;
        let ca = CertificateAuthority::generate("ca", Validity::days(10)).unwrap();
        let before = SystemTime::now();
        let pem = ca.crl(Duration::from_secs(7200)).unwrap();
        let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let next = crl_next_update(&der).unwrap();
        let expected = before + Duration::from_secs(7200);
        let diff = next
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        assert!(diff <= Duration::from_secs(2), "{diff:?}");
    }
}
