//! `sssonector certs init | issue | revoke` end to end: the files it writes verify, and a
//! revoked client is refused by the CRL it rewrites.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use sssonector_certs::{CertError, Identity, TrustStore, Usage};

mod common;
use common::TempDir;

fn sssonector(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(args)
        .output()
        .expect("run sssonector");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn serial_in(stdout: &str) -> String {
    let start = stdout.find("serial ").expect("a serial is printed") + 7;
    stdout[start..].split(')').next().unwrap().to_owned()
}

fn load(dir: &Path, name: &str) -> Identity {
    Identity::load(
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
    .unwrap()
}

#[test]
fn init_issue_and_revoke() {
    let tmp = TempDir::new("cli");
    let dir = tmp.0.join("pki");
    let d = dir.to_str().unwrap();

    let (ok, out, _) = sssonector(&["certs", "init", "--dir", d, "--name", "test CA"]);
    assert!(ok, "{out}");
    let (ok, _, err) = sssonector(&["certs", "init", "--dir", d]);
    assert!(!ok);
    assert!(err.contains("a CA already exists here"), "{err}");

    let (ok, out, err) = sssonector(&[
        "certs",
        "issue",
        "--dir",
        d,
        "--server",
        "localhost,127.0.0.1",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("issued server certificate"), "{out}");
    let (ok, out, err) = sssonector(&["certs", "issue", "--dir", d, "--client", "alice"]);
    assert!(ok, "{err}");
    let alice_serial = serial_in(&out);
    let (ok, _, err) = sssonector(&["certs", "issue", "--dir", d, "--client", "bob"]);
    assert!(ok, "{err}");

    let crl_path = [dir.join("ca.crl")];
    let trust = TrustStore::load(dir.join("ca.pem"), &crl_path).unwrap();
    let now = SystemTime::now();
    trust
        .verify(&load(&dir, "localhost"), Usage::Server, now)
        .unwrap();
    trust
        .verify(&load(&dir, "alice"), Usage::Client, now)
        .unwrap();

    let (ok, out, err) = sssonector(&["certs", "revoke", "--dir", d, &alice_serial]);
    assert!(ok, "{err}");
    assert!(out.contains("1 revoked in all"), "{out}");
    let trust = TrustStore::load(dir.join("ca.pem"), &crl_path).unwrap();
    assert!(matches!(
        trust.verify(&load(&dir, "alice"), Usage::Client, now),
        Err(CertError::Revoked(_))
    ));
    trust
        .verify(&load(&dir, "bob"), Usage::Client, now)
        .unwrap();

    // Each CRL written gets a higher number than the last, across separate runs (RFC 5280):
    // init wrote 1, the revoke above 2.
    let crl_number = || {
        use rustls_pki_types::pem::PemObject;
        use x509_parser::prelude::FromDer;
        let pem = std::fs::read(dir.join("ca.crl")).unwrap();
        let der = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(&pem).unwrap();
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        crl.crl_number().unwrap().to_u64_digits()[0]
    };
    assert_eq!(crl_number(), 2);
    let bob_serial = load(&dir, "bob").chain()[0].to_vec();
    let bob_serial = sssonector_certs::serial_number(&bob_serial).unwrap();
    let bob_hex: String = bob_serial.iter().map(|b| format!("{b:02x}")).collect();
    let (ok, out, err) = sssonector(&["certs", "revoke", "--dir", d, &bob_hex]);
    assert!(ok, "{err}");
    assert!(out.contains("2 revoked in all"), "{out}");
    assert_eq!(crl_number(), 3);

    let (ok, _, err) = sssonector(&["certs", "revoke", "--dir", d, "xyz"]);
    assert!(!ok);
    assert!(err.contains("expected hex digits"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private");
    }
}

#[test]
fn version_and_help() {
    let (ok, out, _) = sssonector(&["--version"]);
    assert!(ok);
    assert!(out.starts_with("sssonector 0."), "{out}");
    let (ok, out, _) = sssonector(&["certs", "--help"]);
    assert!(ok);
    assert!(
        out.contains("init") && out.contains("issue") && out.contains("revoke"),
        "{out}"
    );
}
