//! A TUN client's device across reconnects: opened with the first session's addresses and
//! MTU and kept while the client reconnects, then brought in step with each new session —
//! the addresses the server assigned and the MTU agreed — so a client the server gives
//! another address does not go on sending traffic the server's anti-spoofing drops.
//!
//! The MTU changes in place. New addresses reopen the device (tun-rs changes IPv4 addresses
//! in place only with its netlink feature, which this crate leaves out to stay lean): the
//! device loop stops, the old device closes, and a new one opens with the session's
//! addresses; routes an operator added on the old device go with it.

use std::io;
use std::sync::Arc;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::Device;
use crate::link::Link;
use crate::proto::{Hello, TunnelAddress};

/// Told of a device loop that failed (the device is gone); the client cannot carry traffic
/// until a session reopens it.
pub type OnDeviceError = Arc<dyn Fn(io::Error) + Send + Sync>;

/// The device of a TUN client, shared by its sessions.
pub struct Client {
    name: String,
    mtu: u16,
    offload: bool,
    current: watch::Receiver<Option<Link>>,
    on_error: OnDeviceError,
    held: Mutex<Option<Held>>,
    /// The addresses the device has, for the next session's hello (read without waiting).
    requested: parking_lot::Mutex<Vec<TunnelAddress>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("offload", &self.offload)
            .field("requested", &*self.requested.lock())
            .finish_non_exhaustive()
    }
}

struct Held {
    device: Arc<Device>,
    addresses: Vec<TunnelAddress>,
    mtu: u16,
    pump: JoinHandle<()>,
}

/// What [`Client::prepare`] did to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Prepared {
    /// Opened it: the first session.
    Opened,
    /// It already had the session's addresses and MTU.
    Unchanged,
    /// Its MTU changed, in place.
    NewMtu {
        /// The MTU before.
        old: u16,
    },
    /// The server assigned other addresses: the device was reopened with them.
    Reopened {
        /// The addresses before.
        old: Vec<TunnelAddress>,
    },
}

impl Client {
    /// A client whose device is called `name` (empty: the kernel picks), with at most `mtu`
    /// and, where the kernel allows, segmentation offload. Its device loop sends what the
    /// device reads on the link `current` holds; `on_error` hears of a device that failed.
    /// Nothing is opened until the first [`prepare`](Self::prepare).
    pub fn new(
        name: impl Into<String>,
        mtu: u16,
        offload: bool,
        current: watch::Receiver<Option<Link>>,
        on_error: OnDeviceError,
    ) -> Self {
        Self {
            name: name.into(),
            mtu,
            offload,
            current,
            on_error,
            held: Mutex::new(None),
            requested: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// The addresses to ask the server for: the ones the device has (none before the first
    /// session), so a reconnecting client keeps its address where the server can.
    pub fn requested(&self) -> Vec<TunnelAddress> {
        self.requested.lock().clone()
    }

    /// Readies the device for a session whose server answered with `hello`, and returns it
    /// for the session's link loop: opens it the first time with the assigned addresses and
    /// the agreed MTU (the smaller of the server's and ours); afterwards sets a new MTU in
    /// place, and reopens it when the addresses differ.
    ///
    /// # Errors
    ///
    /// The device cannot be opened (no permission, no `/dev/net/tun`, the name is taken) or
    /// the kernel refused the MTU; the session should then end.
    pub async fn prepare(&self, hello: &Hello) -> io::Result<(Arc<Device>, Prepared)> {
        let mtu = hello.mtu.min(self.mtu);
        let mut held = self.held.lock().await;
        let prepared = match held.as_mut() {
            None => Prepared::Opened,
            Some(current) if current.addresses == hello.addresses => {
                if current.mtu == mtu {
                    return Ok((Arc::clone(&current.device), Prepared::Unchanged));
                }
                current.device.set_mtu(mtu)?;
                let old = std::mem::replace(&mut current.mtu, mtu);
                return Ok((Arc::clone(&current.device), Prepared::NewMtu { old }));
            }
            Some(_) => {
                let old = held.take().expect("matched above");
                // The loop holds the device: stop it and wait, so the device is closed
                // before one of the same name is opened.
                old.pump.abort();
                let _ = old.pump.await;
                drop(old.device);
                Prepared::Reopened { old: old.addresses }
            }
        };
        let device = super::open(&self.name, &hello.addresses, mtu, self.offload)?;
        let pump = {
            let device = Arc::clone(&device);
            let current = self.current.clone();
            let on_error = Arc::clone(&self.on_error);
            let max = self.mtu;
            tokio::spawn(async move {
                if let Err(e) = super::client_device_loop(device, current, max).await {
                    on_error(e);
                }
            })
        };
        *held = Some(Held {
            device: Arc::clone(&device),
            addresses: hello.addresses.clone(),
            mtu,
            pump,
        });
        hello.addresses.clone_into(&mut self.requested.lock());
        Ok((device, prepared))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(held) = self.held.get_mut().take() {
            held.pump.abort();
        }
    }
}
