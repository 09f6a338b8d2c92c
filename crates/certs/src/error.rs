//! What can go wrong with certificates, naming the file (or `in-memory`) at fault.

use std::path::PathBuf;
use std::time::SystemTime;

/// Where some certificate material came from: a file, or memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read from this file.
    File(PathBuf),
    /// Given as PEM text in memory.
    Memory,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Memory => f.write_str("in-memory PEM"),
        }
    }
}

/// A certificate, key, CA or CRL that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The file could not be read.
    #[error("{origin}: cannot read: {error}")]
    Io {
        /// The file.
        origin: Source,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// No certificate in the file.
    #[error("{0}: no certificate found (expected a PEM \"CERTIFICATE\" block)")]
    NoCertificate(Source),
    /// No private key in the file.
    #[error("{0}: no private key found (expected PKCS#8, RSA or EC PEM)")]
    NoKey(Source),
    /// No CRL in the file.
    #[error("{0}: no CRL found (expected a PEM \"X509 CRL\" block)")]
    NoCrl(Source),
    /// The PEM text is malformed.
    #[error("{origin}: malformed PEM: {problem}")]
    Pem {
        /// The file.
        origin: Source,
        /// What is wrong.
        problem: String,
    },
    /// The private key is not the one the certificate was issued for.
    #[error("{key}: private key does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: Source,
        /// The key file.
        key: Source,
    },
    /// The key cannot be used for signing (unsupported type, or malformed).
    #[error("{0}: unsupported or malformed private key: {1}")]
    BadKey(Source, String),
    /// The certificate has expired.
    #[error("{origin}: certificate expired at {}", display_time(*not_after))]
    Expired {
        /// The certificate file.
        origin: Source,
        /// When it expired.
        not_after: SystemTime,
    },
    /// The certificate is not valid yet.
    #[error("{origin}: certificate not valid until {}", display_time(*not_before))]
    NotYetValid {
        /// The certificate file.
        origin: Source,
        /// When it becomes valid.
        not_before: SystemTime,
    },
    /// The certificate's chain does not lead to a trusted CA.
    #[error("{0}: certificate chain does not lead to a trusted CA")]
    UntrustedChain(Source),
    /// The certificate does not allow the use it is put to.
    #[error("{origin}: certificate is not for {usage} (wrong extended key usage)")]
    WrongKeyUsage {
        /// The certificate file.
        origin: Source,
        /// The use it was checked for.
        usage: Usage,
    },
    /// The certificate is revoked by a loaded CRL.
    #[error("{0}: certificate is revoked")]
    Revoked(Source),
    /// The certificate or a CRL is invalid in another way.
    #[error("{origin}: invalid: {problem}")]
    Invalid {
        /// The file at fault.
        origin: Source,
        /// What webpki or rustls reported.
        problem: String,
    },
    /// Generating a certificate, key or CRL failed.
    #[error("generating {what}: {error}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// rcgen's error.
        #[source]
        error: rcgen::Error,
    },
    /// Building a TLS configuration failed.
    #[error("building the TLS configuration: {0}")]
    Tls(String),
}

/// What a certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Usage {
    /// A server's certificate (TLS server authentication).
    Server,
    /// A client's certificate (TLS client authentication).
    Client,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Usage::Server => "TLS server authentication",
            Usage::Client => "TLS client authentication",
        })
    }
}

/// Seconds since the Unix epoch, in UTC: plain and sortable, with no date library.
fn display_time(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => {
            let when = time::OffsetDateTime::from_unix_timestamp(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            );
            match when {
                Ok(when) => format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                    when.year(),
                    u8::from(when.month()),
                    when.day(),
                    when.hour(),
                    when.minute(),
                    when.second()
                ),
                Err(_) => format!("unix time {}", d.as_secs()),
            }
        }
        Err(_) => "before 1970".into(),
    }
}
