//! The `sssonector` command: `run` a server or client, `check-config`, `certs init | issue |
//! revoke` (a private CA, its certificates and CRL in one directory), and `demo`, which shows
//! the whole product on loopback with nothing configured.
//!
//! This library is the command itself ([`main`]); it is a library so that the fuzz targets
//! reach the configuration and policy parsers ([`fuzzing`]). Its API is not stable: depend on
//! the `sssonector-*` crates instead.

#![allow(
    clippy::print_stdout,
    reason = "a command-line program writes to standard output"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod abuse;
mod admin;
mod audit;
mod bans;
mod certs_cli;
mod config;
mod demo;
mod error;
mod forwarder;
pub mod fuzzing;
mod notify;
mod observe;
mod persist;
mod policy;
mod run;
mod serve;
mod sessions;
mod shared_bans;
mod state;
mod status;
mod telemetry;
use error::Error;

#[derive(Debug, Parser)]
#[command(
    name = "sssonector",
    version,
    about = "A layer-3 VPN and port forwarder over mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server or client from a configuration file, until SIGTERM or SIGINT (SIGHUP
    /// reloads certificates, CA and CRLs).
    Run {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Log level: error, warn, info, debug or trace.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Show the tunnel working on loopback, with nothing configured and no root: generated
    /// certificates, a server and a client in port-forward mode, a local echo target; prints
    /// throughput and connection latency beside the same without the tunnel.
    Demo {
        /// Mebibytes pushed per stream, each way.
        #[arg(long, default_value_t = 64)]
        mib: usize,
        /// Concurrent streams in the second throughput run.
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// New connections timed for the latency figure.
        #[arg(long, default_value_t = 20)]
        connections: usize,
        /// Log level: error, warn, info, debug or trace.
        #[arg(long, default_value = "warn")]
        log_level: String,
    },
    /// Keep a private CA, its certificates and its CRL in a directory.
    #[command(subcommand)]
    Certs(Certs),
    /// Show a running server's or client's sessions, certificates, bans and policy, read
    /// from its admin endpoint's `/status`.
    Status {
        /// The admin endpoint (`admin.listen` in its configuration).
        #[arg(long, default_value = "127.0.0.1:9797")]
        admin: String,
        /// A file holding the admin token (else SSSONECTOR_ADMIN_TOKEN, if set).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the JSON as the endpoint sent it.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file: syntax, every field, and that its certificates load.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Certs {
    /// Create a CA in DIR: ca.pem (give it to every peer), ca.key (keep it secret),
    /// and an empty CRL, ca.crl.
    Init {
        #[command(flatten)]
        dir: Dir,
        /// The CA's name.
        #[arg(long, default_value = "sssonector CA")]
        name: String,
        /// How long the CA is valid, in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a certificate and key signed by the CA in DIR, written as NAME.pem and NAME.key.
    Issue {
        #[command(flatten)]
        dir: Dir,
        /// A server certificate for these DNS names and IP addresses (repeat or separate by
        /// commas).
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "client",
            required_unless_present = "client"
        )]
        server: Vec<String>,
        /// A client certificate with this identity.
        #[arg(long)]
        client: Option<String>,
        /// File name for the certificate and key (default: the first server name, or the
        /// client identity).
        #[arg(long)]
        out: Option<String>,
        /// How long the certificate is valid, in days.
        #[arg(long, default_value_t = 90)]
        days: u64,
    },
    /// Revoke a certificate issued by the CA in DIR and rewrite the CRL, ca.crl.
    Revoke {
        #[command(flatten)]
        dir: Dir,
        /// The certificate's serial number (hex, as `issue` printed it).
        serial: String,
        /// How long the new CRL is valid before it must be renewed, in days.
        #[arg(long, default_value_t = 7)]
        crl_days: u64,
    },
}

#[derive(Debug, Args)]
struct Dir {
    /// The CA directory.
    #[arg(long, default_value = "pki")]
    dir: PathBuf,
}

/// Runs the command line in `std::env::args`, printing any error to standard error.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sssonector: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Run { config, log_level } => {
            logging(&log_level)?;
            telemetry::install()?;
            run_service(&config)
        }
        Command::Demo {
            mib,
            streams,
            connections,
            log_level,
        } => {
            logging(&log_level)?;
            telemetry::install()?;
            runtime()?.block_on(demo::demo(demo::DemoOptions {
                mib,
                streams,
                connections: connections.max(1),
            }))
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Status {
            admin,
            token_file,
            json,
        } => status(&admin, token_file.as_deref(), json),
        Command::Certs(Certs::Init { dir, name, days }) => certs_cli::init(&dir.dir, &name, days),
        Command::Certs(Certs::Issue {
            dir,
            server,
            client,
            out,
            days,
        }) => certs_cli::issue(&dir.dir, &server, client.as_deref(), out, days),
        Command::Certs(Certs::Revoke {
            dir,
            serial,
            crl_days,
        }) => certs_cli::revoke(&dir.dir, &serial, crl_days),
    }
}

fn logging(level: &str) -> Result<(), Error> {
    let level: tracing::Level = level.parse().map_err(|_| {
        Error::argument(
            format!("--log-level {level:?}"),
            "use error, warn, info, debug or trace",
        )
    })?;
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Start {
            what: "the runtime",
            error,
        })
}

/// `run`: start, tell systemd we are ready, then serve signals until told to stop.
fn run_service(path: &Path) -> Result<(), Error> {
    let (config, overrides) = config::load_checked(path, std::env::vars())?;
    for applied in &overrides {
        tracing::info!("override: {applied}");
    }
    let notifier = notify::Notifier::from_env();
    runtime()?.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = |error| Error::Start {
            what: "signal handling",
            error,
        };
        let mut hup = signal(SignalKind::hangup()).map_err(signals)?;
        let mut term = signal(SignalKind::terminate()).map_err(signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(signals)?;
        let mut running = run::start(&config).await?;
        let mut status = match (running.listen, running.forwards.is_empty()) {
            (Some(addr), _) => format!("serving on {addr}"),
            (None, false) => format!(
                "forwarding {}",
                running
                    .forwards
                    .iter()
                    .map(|(name, addr)| format!("{name} on {addr}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, true) => "connecting".to_owned(),
        };
        if let Some(admin) = running.admin {
            status.push_str(&format!("; admin on {admin}"));
            tracing::info!(%admin, "admin endpoint: /metrics /healthz /readyz /status");
        }
        tracing::info!("ready: {status}");
        notifier.send(&format!("READY=1\nSTATUS={status}"));
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    notifier.reloading();
                    let outcome = running.reload();
                    tracing::info!(ok = outcome.ok, outcome = outcome.outcome, "reloaded on SIGHUP");
                    notifier.send(&format!("READY=1\nSTATUS={status}; last reload: {}", outcome.outcome));
                }
                Some(answer) = running.reloads.recv() => {
                    notifier.reloading();
                    let outcome = running.reload();
                    tracing::info!(ok = outcome.ok, outcome = outcome.outcome, "reloaded on POST /reload");
                    notifier.send(&format!("READY=1\nSTATUS={status}; last reload: {}", outcome.outcome));
                    let _ = answer.send(outcome);
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                fatal = running.fatal.recv() => {
                    let error = fatal.unwrap_or_else(|| Error::Fatal("stopped".into()));
                    notifier.send(&format!("STOPPING=1\nSTATUS={error}"));
                    return Err(error);
                }
            }
        }
        notifier.send("STOPPING=1\nSTATUS=draining");
        tracing::info!("shutting down: goodbye to every peer");
        running.shutdown().await;
        Ok(())
    })
}

fn check_config(path: &Path) -> Result<(), Error> {
    let (config, overrides) = config::load_checked(path, std::env::vars())?;
    for applied in &overrides {
        println!("override: {applied}");
    }
    if let Some(section) = &config.admin {
        let token = admin::Token::load(
            section.token_file.as_deref(),
            std::env::var(admin::TOKEN_ENV).ok(),
        )?;
        admin::check_exposure(section.listen, token.as_ref())?;
    }
    if config.role == config::Role::Server {
        match &config.policy {
            None => println!("warning: {}", run::NO_POLICY),
            Some(section) => {
                if let Ok(policy) = config.build_policy(section) {
                    println!(
                        "policy: {} rule{}, version {}",
                        policy.len(),
                        if policy.len() == 1 { "" } else { "s" },
                        policy.version
                    );
                }
            }
        }
    }
    println!(
        "{}: ok ({:?} in {:?} mode, {} forwarding rule{})",
        path.display(),
        config.role,
        config.mode,
        config.forward.len(),
        if config.forward.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `status`: fetch `/status` and print it as a table (or as JSON).
fn status(addr: &str, token_file: Option<&Path>, json: bool) -> Result<(), Error> {
    let token = match token_file {
        Some(file) => {
            Some(std::fs::read_to_string(file).map_err(|e| Error::file(file, "read", e))?)
        }
        None => std::env::var(admin::TOKEN_ENV).ok(),
    };
    let report = runtime()?.block_on(admin::fetch_status(addr, token.as_deref()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
