//! Arbitrary text and bytes into the certificate loaders (PEM certificates, keys, CA
//! bundles, CRLs; DER peer certificates; a CA restoring its CRL): errors, never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sssonector_certs::{
    CertificateAuthority, Identity, PeerIdentity, Source, TrustStore, Validity,
};

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate("fuzz CA", Validity::days(1)).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let _ = PeerIdentity::from_der(data);
    let text = String::from_utf8_lossy(data);
    // Two parts, split at the first NUL: a certificate (or bundle) and a key (or CRL).
    let (a, b) = text.split_once('\0').unwrap_or((&text, ""));
    let _ = Identity::from_pem(a, b);
    let _ = TrustStore::from_pem(a, &[b]);
    let _ = ca().restore_crl(a, Source::Memory);
});
