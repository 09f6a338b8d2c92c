//! Tuning of the TCP connection under a session, so the kernel gives up on a dead peer in
//! step with the session: `TCP_USER_TIMEOUT` bounds how long sent data may stay unacknowledged
//! (a partition during a transfer), and TCP keepalive is the backstop for an idle
//! connection. The session's own keepalive and dead-peer deadline stay the first line.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// How a tunnel's TCP connection is tuned. The default matches the default
/// [`SessionConfig`](crate::proto::SessionConfig): a 30 s dead-peer timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpTuning {
    /// Sent data unacknowledged this long ends the connection (`TCP_USER_TIMEOUT`); an idle
    /// connection is probed after this long, three times a third of it apart. `None` leaves
    /// the kernel's defaults (about 15 minutes for unacknowledged data).
    pub dead_peer_timeout: Option<Duration>,
}

impl Default for TcpTuning {
    fn default() -> Self {
        Self::dead_peer(Duration::from_secs(30))
    }
}

impl TcpTuning {
    /// Tuned for a session whose dead-peer timeout is `timeout`.
    pub fn dead_peer(timeout: Duration) -> Self {
        Self {
            dead_peer_timeout: Some(timeout),
        }
    }

    /// The kernel's defaults (only `TCP_NODELAY` is set).
    pub fn kernel_defaults() -> Self {
        Self {
            dead_peer_timeout: None,
        }
    }

    /// Applies the tuning to `socket`, and `TCP_NODELAY` (frames are batched already).
    ///
    /// # Errors
    ///
    /// The kernel refused an option.
    pub fn apply(&self, socket: &TcpStream) -> io::Result<()> {
        socket.set_nodelay(true)?;
        let Some(timeout) = self.dead_peer_timeout.filter(|t| !t.is_zero()) else {
            return Ok(());
        };
        let socket = SockRef::from(socket);
        let keepalive = TcpKeepalive::new().with_time(timeout.max(Duration::from_secs(1)));
        #[cfg(target_os = "linux")]
        let keepalive = keepalive
            .with_interval((timeout / 3).max(Duration::from_secs(1)))
            .with_retries(3);
        socket.set_tcp_keepalive(&keepalive)?;
        #[cfg(target_os = "linux")]
        socket.set_tcp_user_timeout(Some(timeout))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_options_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        TcpTuning::dead_peer(Duration::from_secs(12))
            .apply(&socket)
            .unwrap();
        let sock = SockRef::from(&socket);
        assert!(socket.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(12));
        #[cfg(target_os = "linux")]
        {
            assert_eq!(
                sock.tcp_user_timeout().unwrap(),
                Some(Duration::from_secs(12))
            );
            assert_eq!(
                sock.tcp_keepalive_interval().unwrap(),
                Duration::from_secs(4)
            );
            assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        }
        let plain = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        TcpTuning::kernel_defaults().apply(&plain).unwrap();
        assert!(!SockRef::from(&plain).keepalive().unwrap());
    }
}
