//! What can stop a `sssonector` command, each naming the file, field or input at fault.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use sssonector_certs::CertError;

use crate::admin::AdminError;
use crate::config::ConfigError;

/// A command's failure; `main` prints it after `sssonector: ` and exits 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificate material, in the context of a field or directory (`tls.cert / tls.key`).
    #[error("{context}: {error}")]
    Cert {
        context: String,
        #[source]
        error: CertError,
    },
    /// The admin endpoint, or `sssonector status` talking to it.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// A file that cannot be read or written.
    #[error("{}: cannot {action}: {error}{hint}", path.display())]
    File {
        path: PathBuf,
        action: &'static str,
        #[source]
        error: io::Error,
        /// What to do about it, if there is something to say (starting with a space).
        hint: String,
    },
    /// An address that cannot be listened on.
    #[error("{field}: cannot listen on {addr}: {error}")]
    Listen {
        field: String,
        addr: String,
        #[source]
        error: io::Error,
    },
    /// A TUN device that cannot be opened or failed.
    #[error("{field}: {error}")]
    Tun {
        field: &'static str,
        #[source]
        error: io::Error,
    },
    /// A field whose value the program cannot use (beyond what `check-config` checks).
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
    /// A command-line argument.
    #[error("{argument}: {problem}")]
    Argument { argument: String, problem: String },
    /// The metrics recorder.
    #[error("metrics: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    /// The async runtime or signal handling could not start.
    #[error("cannot start {what}: {error}")]
    Start {
        what: &'static str,
        #[source]
        error: io::Error,
    },
    /// A task the program cannot run without stopped (the TUN device, say).
    #[error("{0}")]
    Fatal(String),
    /// `demo`: a measurement that did not come back as sent.
    #[error("demo: {0}")]
    Demo(String),
    /// `demo`: a connection to an address the demo started failed.
    #[error("demo: {addr}: {error}")]
    DemoIo {
        addr: SocketAddr,
        #[source]
        error: io::Error,
    },
}

impl Error {
    /// Certificate material `error`, in the context `context`.
    pub(crate) fn cert(context: impl Into<String>, error: CertError) -> Self {
        Self::Cert {
            context: context.into(),
            error,
        }
    }

    /// A file that cannot be read or written.
    pub(crate) fn file(path: impl Into<PathBuf>, action: &'static str, error: io::Error) -> Self {
        Self::File {
            path: path.into(),
            action,
            error,
            hint: String::new(),
        }
    }

    /// A field whose value cannot be used.
    pub(crate) fn field(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        Self::Field {
            field: field.into(),
            problem: problem.to_string(),
        }
    }

    /// A command-line argument that cannot be used.
    pub(crate) fn argument(argument: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Argument {
            argument: argument.into(),
            problem: problem.into(),
        }
    }
}
