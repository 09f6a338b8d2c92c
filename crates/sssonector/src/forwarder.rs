//! A forward-mode client's local listeners, one per `[[forward]]` rule, opened at start and
//! opened, moved or closed again when a reload changes the rules. Closing a listener stops
//! new connections on it; connections already forwarded carry on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use parking_lot::Mutex;
use sssonector_bufpool::BufPool;
use sssonector_tunnel::{Link, forward};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::error::Error;

/// How long a connection accepted while every link is down waits for one.
const WAIT_FOR_LINK: Duration = Duration::from_secs(10);

struct Listening {
    /// The `listen` text as configured (compared on reload).
    listen: String,
    addr: SocketAddr,
    task: AbortHandle,
}

/// The listeners, one task per rule; a listener closes when its rule is removed.
pub(crate) struct Forwarder {
    links: Vec<watch::Receiver<Option<Link>>>,
    pool: BufPool,
    rules: Mutex<BTreeMap<String, Listening>>,
}

impl Forwarder {
    pub(crate) fn new(links: Vec<watch::Receiver<Option<Link>>>, pool: BufPool) -> Self {
        Self {
            links,
            pool,
            rules: Mutex::new(BTreeMap::new()),
        }
    }

    /// Listens on `listen` for rule `name` (inside the runtime); returns the address bound.
    pub(crate) fn open(&self, name: &str, listen: &str) -> Result<SocketAddr, Error> {
        let failed = |error| Error::Listen {
            field: format!("forward[{name}].listen"),
            addr: listen.to_owned(),
            error,
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(failed)?;
        std_listener.set_nonblocking(true).map_err(failed)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(failed)?;
        let addr = listener.local_addr().map_err(failed)?;
        let task = tokio::spawn(forward::listen(
            listener,
            name.to_owned(),
            self.links.clone(),
            self.pool.clone(),
            WAIT_FOR_LINK,
        ))
        .abort_handle();
        let previous = self.rules.lock().insert(
            name.to_owned(),
            Listening {
                listen: listen.to_owned(),
                addr,
                task,
            },
        );
        if let Some(previous) = previous {
            previous.task.abort();
        }
        Ok(addr)
    }

    /// Brings the listeners in line with `rules` (`(name, listen)`): closes the removed,
    /// reopens the moved, opens the new. Returns what it did, one line per rule, and whether
    /// every rule could be opened (the others are applied either way).
    pub(crate) fn apply(&self, rules: &[(String, String)]) -> (Vec<String>, bool) {
        let mut said = Vec::new();
        let mut opened_all = true;
        let current: Vec<(String, String)> = self
            .rules
            .lock()
            .iter()
            .map(|(name, l)| (name.clone(), l.listen.clone()))
            .collect();
        for (name, listen) in &current {
            let kept = rules.iter().any(|(n, l)| n == name && l == listen);
            if !kept && !rules.iter().any(|(n, _)| n == name) {
                if let Some(gone) = self.rules.lock().remove(name) {
                    gone.task.abort();
                    said.push(format!("forward {name} closed"));
                }
            }
        }
        for (name, listen) in rules {
            if current.iter().any(|(n, l)| n == name && l == listen) {
                continue;
            }
            match self.open(name, listen) {
                Ok(addr) => said.push(format!("forward {name} on {addr}")),
                Err(e) => {
                    said.push(format!("forward {name} not opened: {e}"));
                    opened_all = false;
                }
            }
        }
        (said, opened_all)
    }

    /// The rules listened on, with their addresses.
    pub(crate) fn listening(&self) -> Vec<(String, SocketAddr)> {
        self.rules
            .lock()
            .iter()
            .map(|(name, l)| (name.clone(), l.addr))
            .collect()
    }
}
