//! Just enough DER to read a certificate's serial number and validity period, for expiry
//! monitoring and renewal (webpki checks validity but does not expose it).

use std::time::{Duration, SystemTime};

/// One DER element: its tag and contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The serial number and validity period (not before, not after) of a DER certificate.
pub(crate) fn serial_and_validity(cert: &[u8]) -> Option<(Vec<u8>, SystemTime, SystemTime)> {
    let (tag, certificate, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (mut tag, mut body, mut rest) = element(tbs)?;
    if tag == VERSION {
        (tag, body, rest) = element(rest)?;
    }
    if tag != INTEGER {
        return None;
    }
    let serial = body.to_vec();
    let (_signature, _, rest) = element(rest)?;
    let (_issuer, _, rest) = element(rest)?;
    let (tag, validity, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag_a, not_before, rest) = element(validity)?;
    let (tag_b, not_after, _) = element(rest)?;
    Some((serial, time(tag_a, not_before)?, time(tag_b, not_after)?))
}

/// A DER CRL's next-update time, if it has one.
pub(crate) fn crl_next_update(crl: &[u8]) -> Option<SystemTime> {
    let (tag, list, _) = element(crl)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(list)?;
    if tag != SEQUENCE {
        return None;
    }
    let (mut tag, _, mut rest) = element(tbs)?;
    if tag == INTEGER {
        // The version; the signature algorithm follows.
        (tag, _, rest) = element(rest)?;
    }
    if tag != SEQUENCE {
        return None;
    }
    let (_issuer, _, rest) = element(rest)?;
    let (_this_update, _, rest) = element(rest)?;
    let (tag, next_update, _) = element(rest)?;
    time(tag, next_update)
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 12 => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<u8>().ok();
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let at = date
        .with_hms(field(4)?, field(6)?, field(8)?)
        .ok()?
        .assume_utc();
    let secs = at.unix_timestamp();
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The subject's first common name (OID 2.5.4.3) of a DER certificate, if it has one.
pub(crate) fn common_name(cert: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, certificate, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, tbs, _) = element(certificate)?;
    let (mut tag, _, mut rest) = element(tbs)?;
    if tag == VERSION {
        (tag, _, rest) = element(rest)?;
    }
    if tag != INTEGER {
        return None;
    }
    let (_signature, _, rest) = element(rest)?;
    let (_issuer, _, rest) = element(rest)?;
    let (_validity, _, rest) = element(rest)?;
    let (_, mut subject, _) = element(rest)?;
    while !subject.is_empty() {
        let (_set, mut set, next) = element(subject)?;
        subject = next;
        while !set.is_empty() {
            let (_, pair, next) = element(set)?;
            set = next;
            let (oid_tag, oid, value) = element(pair)?;
            if oid_tag == 0x06 && oid == CN {
                let (_, text, _) = element(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
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
