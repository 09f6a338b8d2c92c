//! Keeps the server's leases and bans in its state file: restored at start, saved every few
//! seconds when they changed, and once more at shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sssonector_tunnel::tun::Pools;
use tokio::sync::watch;

use crate::abuse::Shield;
use crate::state::{self, Lease, SavedBan, State};

/// The server's persistent state. Clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Persist {
    path: PathBuf,
    pools: Option<Arc<Pools>>,
    shield: Shield,
    /// What was written last, so an unchanged state is not written again.
    written: Arc<Mutex<Option<State>>>,
}

impl Persist {
    /// Loads the state file at `path` and restores what still fits: a lease outside today's
    /// pools, or one another identity now holds, is dropped with a warning.
    pub(crate) fn restore(path: PathBuf, pools: Option<Arc<Pools>>, shield: Shield) -> Self {
        let saved = state::load(&path);
        let mut leases = 0;
        if let Some(pools) = &pools {
            for lease in &saved.leases {
                match pools.restore(&lease.identity, lease.address) {
                    Ok(()) => leases += 1,
                    Err(e) => tracing::warn!(
                        identity = lease.identity,
                        address = %lease.address,
                        error = %e,
                        "saved lease dropped"
                    ),
                }
            }
        }
        let now = SystemTime::now();
        let mut bans = 0;
        for ban in &saved.bans {
            if let Some(left) = ban.left(now) {
                shield.restore_ban(ban.source, left, ban.level, &ban.reason);
                bans += 1;
            }
        }
        tracing::info!(file = %path.display(), leases, bans, "state restored");
        Self {
            path,
            pools,
            shield,
            written: Arc::new(Mutex::new(Some(saved))),
        }
    }

    fn snapshot(&self) -> State {
        let leases = self.pools.as_ref().map_or_else(Vec::new, |pools| {
            pools
                .leases()
                .into_iter()
                .map(|(identity, address)| Lease { identity, address })
                .collect()
        });
        let now = SystemTime::now();
        let bans = self
            .shield
            .saved_bans()
            .into_iter()
            .map(|(source, left, level, reason)| SavedBan {
                source,
                until_unix: (now + left)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                level,
                reason,
            })
            .collect();
        State {
            version: 1,
            leases,
            bans,
        }
    }

    /// Writes the state if it changed since the last write (off the runtime).
    pub(crate) async fn save(&self) {
        let state = self.snapshot();
        if self.written.lock().as_ref() == Some(&state) {
            return;
        }
        let path = self.path.clone();
        let to_write = state.clone();
        match tokio::task::spawn_blocking(move || state::save(&path, &to_write)).await {
            Ok(Ok(())) => *self.written.lock() = Some(state),
            Ok(Err(e)) => {
                static WARN: sssonector_core::Throttle =
                    sssonector_core::Throttle::new(Duration::from_secs(60));
                if let Some(suppressed) = WARN.check() {
                    tracing::warn!(error = %e, suppressed, "cannot save the state file");
                }
            }
            Err(e) => tracing::warn!(error = %e, "the state writer failed"),
        }
    }

    /// Saves every 5 s until `stop`, then once more.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            self.save().await;
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Audit;
    use crate::bans::{BanPolicy, Bans};
    use sssonector_tunnel::Cidr;
    use sssonector_tunnel::tun::AddressPool;

    fn pools() -> Arc<Pools> {
        let net: Cidr = "10.8.0.0/24".parse().unwrap();
        Arc::new(Pools::new(vec![AddressPool::new(
            net,
            ["10.8.0.1".parse().unwrap()],
        )]))
    }

    fn shield() -> Shield {
        let bans = Bans::new(
            BanPolicy {
                failures: 1,
                window: Duration::from_secs(60),
                ban: Duration::from_secs(600),
                max_ban: Duration::from_secs(600),
            },
            Arc::new(sssonector_core::SystemClock),
        );
        Shield::new(Some(bans), 10, Audit::off())
    }

    #[tokio::test]
    async fn leases_and_bans_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("sss-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.state.json");

        let before = pools();
        let leased = before.lease("alice", &[]).unwrap();
        let shield_before = shield();
        shield_before.failure("192.0.2.7:1".parse().unwrap(), "tls");
        let persist = Persist::restore(path.clone(), Some(Arc::clone(&before)), shield_before);
        persist.save().await;

        let after = pools();
        let shield_after = shield();
        let _restored = Persist::restore(path, Some(Arc::clone(&after)), shield_after.clone());
        assert_eq!(after.leases(), vec![("alice".to_owned(), leased[0].addr)]);
        // Bob, first to come back, does not take alice's address.
        assert_ne!(after.lease("bob", &[]).unwrap()[0].addr, leased[0].addr);
        assert_eq!(after.lease("alice", &[]).unwrap()[0].addr, leased[0].addr);
        let bans = shield_after.status();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].source, "192.0.2.7");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
