//! systemd's readiness protocol (`Type=notify`): `READY=1`, `RELOADING=1`, `STOPPING=1` and
//! `STATUS=…` sent as datagrams to `$NOTIFY_SOCKET`. Outside systemd (no variable) it does
//! nothing. Written with the standard library's Unix datagram socket, so no dependency.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where notifications go, if anywhere.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    target: Option<Target>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// A Linux abstract socket (`@name`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`.
    pub(crate) fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|value| {
            let bytes = value.as_encoded_bytes();
            match bytes.first() {
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(Target::Path(PathBuf::from(value))),
                _ => None,
            }
        });
        Self { target }
    }

    /// Sends `state` (for example `READY=1\nSTATUS=serving`); failures are logged, never
    /// fatal.
    pub(crate) fn send(&self, state: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let result = UnixDatagram::unbound().and_then(|socket| match target {
            Target::Path(path) => socket.send_to(state.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// `RELOADING=1` with the time of the reload, which `Type=notify-reload` services must
    /// give (systemd 253+).
    pub(crate) fn reloading(&self) {
        match monotonic_usec() {
            Some(usec) => self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
            None => self.send("RELOADING=1"),
        }
    }
}

/// The time since boot in microseconds, from /proc/uptime (no libc call). It is
/// CLOCK_BOOTTIME, equal to CLOCK_MONOTONIC on a server that never suspended.
fn monotonic_usec() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "whole microseconds of a few days' uptime fit f64's 53-bit mantissa exactly enough"
    )]
    Some((seconds * 1e6) as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("sss-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some(Target::Path(path.clone())),
        };
        notifier.send("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        notifier.reloading();
        let n = listener.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"RELOADING=1\nMONOTONIC_USEC="));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
