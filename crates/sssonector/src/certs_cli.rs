//! `sssonector certs init | issue | revoke`: a private CA, its certificates and its CRL in one
//! directory.

use std::path::Path;
use std::time::{Duration, SystemTime};

use sssonector_certs::{CertError, CertificateAuthority, Validity};

use crate::error::Error;

const DAY: u64 = 86_400;

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::file(path, "write", e))
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::File {
        path: path.to_owned(),
        action: "read",
        error,
        hint: format!(
            " (run `sssonector certs init --dir {}` first?)",
            path.parent()
                .map_or_else(|| ".".into(), |p| p.display().to_string())
        ),
    })
}

/// Lowercase hex, as serial numbers, session ids and digests are shown everywhere.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() || text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A CA operation's failure, in the context of the CA directory.
fn cert_error(dir: &Path) -> impl FnOnce(CertError) -> Error + '_ {
    move |e| Error::cert(dir.display().to_string(), e)
}

pub(crate) fn init(dir: &Path, name: &str, days: u64) -> Result<(), Error> {
    if dir.join("ca.key").exists() {
        return Err(Error::argument(
            format!("--dir {}", dir.display()),
            format!(
                "a CA already exists here ({}); remove it or choose another --dir",
                dir.join("ca.key").display()
            ),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, "create", e))?;
    let ca = CertificateAuthority::generate(name, Validity::days(days)).map_err(cert_error(dir))?;
    write(&dir.join("ca.pem"), ca.cert_pem())?;
    write(&dir.join("ca.key"), ca.key_pem())?;
    restrict(&dir.join("ca.key"))?;
    write(&dir.join("revoked.txt"), "")?;
    write(
        &dir.join("ca.crl"),
        &ca.crl(Duration::from_secs(7 * DAY))
            .map_err(cert_error(dir))?,
    )?;
    println!(
        "created CA \"{name}\" in {}: ca.pem, ca.key, ca.crl",
        dir.display()
    );
    Ok(())
}

/// Keys are readable by their owner only.
fn restrict(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::file(path, "restrict permissions", e))?;
    }
    let _ = path;
    Ok(())
}

fn load_ca(dir: &Path) -> Result<CertificateAuthority, Error> {
    let ca =
        CertificateAuthority::from_pem(&read(&dir.join("ca.pem"))?, &read(&dir.join("ca.key"))?)
            .map_err(cert_error(dir))?;
    let revoked = std::fs::read_to_string(dir.join("revoked.txt")).unwrap_or_default();
    for (n, line) in revoked.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(serial), Some(at)) = (fields.next(), fields.next()) else {
            continue;
        };
        let line = || format!("{}:{}", dir.join("revoked.txt").display(), n + 1);
        let serial = unhex(serial).ok_or_else(|| Error::field(line(), "bad serial number"))?;
        let at: u64 = at
            .parse()
            .map_err(|_| Error::field(line(), "bad revocation time"))?;
        ca.revoke_at(&serial, SystemTime::UNIX_EPOCH + Duration::from_secs(at));
    }
    // The current CRL: its number, so the next one's is higher (RFC 5280), and its entries.
    let crl_path = dir.join("ca.crl");
    if let Ok(crl) = std::fs::read_to_string(&crl_path) {
        ca.restore_crl(&crl, sssonector_certs::Source::File(crl_path.clone()))
            .map_err(cert_error(dir))?;
    }
    Ok(ca)
}

pub(crate) fn issue(
    dir: &Path,
    server: &[String],
    client: Option<&str>,
    out: Option<String>,
    days: u64,
) -> Result<(), Error> {
    let ca = load_ca(dir)?;
    let validity = Validity::days(days);
    let (issued, default_name, kind) = match client {
        Some(identity) => (
            ca.issue_client(identity, validity)
                .map_err(cert_error(dir))?,
            identity.to_owned(),
            "client",
        ),
        None => {
            let names: Vec<&str> = server.iter().map(String::as_str).collect();
            (
                ca.issue_server(&names, validity).map_err(cert_error(dir))?,
                server.first().cloned().unwrap_or_default(),
                "server",
            )
        }
    };
    let base = out.unwrap_or(default_name);
    if base.is_empty() || base.contains(['/', '\\']) {
        return Err(Error::argument(
            format!("--out {base:?}"),
            "give a plain file name",
        ));
    }
    let (cert, key) = (
        dir.join(format!("{base}.pem")),
        dir.join(format!("{base}.key")),
    );
    write(&cert, &issued.cert_pem)?;
    write(&key, &issued.key_pem)?;
    restrict(&key)?;
    println!(
        "issued {kind} certificate {} (serial {}), valid {days} days; key {}",
        cert.display(),
        hex(&issued.serial),
        key.display()
    );
    Ok(())
}

pub(crate) fn revoke(dir: &Path, serial: &str, crl_days: u64) -> Result<(), Error> {
    let bytes = unhex(serial).ok_or_else(|| {
        Error::argument(
            format!("serial {serial:?}"),
            "expected hex digits, as `issue` printed",
        )
    })?;
    let ca = load_ca(dir)?;
    if ca.revoked().iter().any(|(s, _)| *s == bytes) {
        println!("serial {serial} was already revoked; CRL rewritten");
    }
    ca.revoke(&bytes);
    let list: String = ca
        .revoked()
        .iter()
        .map(|(s, at)| {
            let secs = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{} {secs}\n", hex(s))
        })
        .collect();
    write(&dir.join("revoked.txt"), &list)?;
    let crl = ca
        .crl(Duration::from_secs(crl_days * DAY))
        .map_err(cert_error(dir))?;
    write(&dir.join("ca.crl"), &crl)?;
    println!(
        "revoked {serial}; wrote {} ({} revoked in all)",
        dir.join("ca.crl").display(),
        ca.revoked().len()
    );
    Ok(())
}
