//! Reading PEM: certificate chains, private keys, CA bundles and CRLs.

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{CertError, Source};

/// Where PEM text comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    File(&'a Path),
    Text(&'a str),
}

impl Input<'_> {
    pub(crate) fn source(&self) -> Source {
        match self {
            Input::File(path) => Source::File(path.to_path_buf()),
            Input::Text(_) => Source::Memory,
        }
    }
}

fn pem_error(source: Source, error: pem::Error, missing: fn(Source) -> CertError) -> CertError {
    match error {
        pem::Error::Io(error) => CertError::Io {
            origin: source,
            error,
        },
        pem::Error::NoItemsFound => missing(source),
        pem::Error::MissingSectionEnd { end_marker } => CertError::Pem {
            origin: source,
            problem: format!(
                "missing end line {}",
                String::from_utf8_lossy(&end_marker).trim()
            ),
        },
        pem::Error::IllegalSectionStart { line } => CertError::Pem {
            origin: source,
            problem: format!("bad BEGIN line {}", String::from_utf8_lossy(&line).trim()),
        },
        pem::Error::Base64Decode(problem) => CertError::Pem {
            origin: source,
            problem: format!("bad base64: {problem}"),
        },
        other => CertError::Pem {
            origin: source,
            problem: other.to_string(),
        },
    }
}

/// Every certificate in the input, in order (leaf first for a chain).
pub(crate) fn certs(input: Input<'_>) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let result: Result<Vec<_>, pem::Error> = match input {
        Input::File(path) => match CertificateDer::pem_file_iter(path) {
            Ok(iter) => iter.collect(),
            Err(e) => Err(e),
        },
        Input::Text(text) => CertificateDer::pem_slice_iter(text.as_bytes()).collect(),
    };
    let certs = result.map_err(|e| pem_error(input.source(), e, CertError::NoCertificate))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate(input.source()));
    }
    Ok(certs)
}

/// The first private key in the input (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub(crate) fn key(input: Input<'_>) -> Result<PrivateKeyDer<'static>, CertError> {
    let result = match input {
        Input::File(path) => PrivateKeyDer::from_pem_file(path),
        Input::Text(text) => PrivateKeyDer::from_pem_slice(text.as_bytes()),
    };
    result.map_err(|e| pem_error(input.source(), e, CertError::NoKey))
}

/// Every CRL in the input.
pub(crate) fn crls(
    input: Input<'_>,
) -> Result<Vec<CertificateRevocationListDer<'static>>, CertError> {
    let result: Result<Vec<_>, pem::Error> = match input {
        Input::File(path) => match CertificateRevocationListDer::pem_file_iter(path) {
            Ok(iter) => iter.collect(),
            Err(e) => Err(e),
        },
        Input::Text(text) => {
            CertificateRevocationListDer::pem_slice_iter(text.as_bytes()).collect()
        }
    };
    let crls = result.map_err(|e| pem_error(input.source(), e, CertError::NoCrl))?;
    if crls.is_empty() {
        return Err(CertError::NoCrl(input.source()));
    }
    Ok(crls)
}
