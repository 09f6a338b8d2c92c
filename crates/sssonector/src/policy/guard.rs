//! The access in force, and what each identity holds under it: its sessions, counted for
//! `max_sessions`, and its tier's budgets, shared by all of its connections. A new policy is
//! swapped in whole; each live session then re-applies it ([`Guard::reapply`]): the newest
//! sessions beyond a lowered `max_sessions` end, a tier whose rates changed is re-rated in
//! place, and a session whose pacing cannot follow (it gained or lost a tier, or a direction
//! of one) ends so that its client reconnects under the new terms.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use sssonector_certs::PeerIdentity;
use sssonector_ratelimit::{Pacing, Quota};
use tokio::sync::watch;

use super::{Access, Tier, Verdict};

/// What one identity holds now: its sessions (by admission order), and its tier with the
/// budgets (upload, download) every one of its tiered connections shares.
#[derive(Default)]
struct Holding {
    sessions: BTreeSet<u64>,
    tier: Option<(Tier, Budgets)>,
}

/// Upload and download budgets: clones of a `Pacing` share one budget.
pub(crate) type Budgets = (Option<Pacing>, Option<Pacing>);

type Table = Arc<Mutex<HashMap<String, Holding>>>;

/// The access in force, swapped whole on reload; live sessions watch it and apply a change
/// at once. Clones share it.
#[derive(Clone)]
pub(crate) struct Guard {
    access: watch::Sender<Arc<Access>>,
    sessions: Table,
    admitted: Arc<AtomicU64>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("access", &*self.access.borrow())
            .finish_non_exhaustive()
    }
}

/// One of an identity's sessions, counted while it lives.
#[must_use = "the session stops counting when this is dropped"]
pub(crate) struct SessionSlot {
    sessions: Table,
    id: SlotId,
}

/// Which session a slot is, for [`Guard::reapply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotId {
    name: String,
    /// Admission order: the newest sessions go first when the limit is lowered.
    order: u64,
    /// Whether the session is paced by its identity's tier budgets.
    tiered: bool,
}

impl SessionSlot {
    pub(crate) fn id(&self) -> SlotId {
        self.id.clone()
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock();
        if let Some(holding) = sessions.get_mut(&self.id.name) {
            holding.sessions.remove(&self.id.order);
            if holding.sessions.is_empty() {
                sessions.remove(&self.id.name);
            }
        }
    }
}

/// A session let in.
pub(crate) struct Admitted {
    pub(crate) verdict: Verdict,
    pub(crate) slot: SessionSlot,
    /// Its tier's budgets, shared with the identity's other sessions; `None` without a tier.
    pub(crate) budgets: Option<Budgets>,
}

/// Why a peer was refused at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No rule matches it.
    NoRule,
    /// Its rule's `max_sessions` are all in use.
    SessionLimit(usize),
}

/// What a live session must do under a new policy (beyond its grants, which it reads from
/// its verdict).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reapplied {
    /// Nothing.
    Keep,
    /// Its identity's tier now has these rates; the shared budgets were changed in place.
    Rerated(Tier),
    /// It is beyond its identity's new `max_sessions` (this many): end it.
    OverLimit(usize),
    /// Its pacing cannot follow the new tier in place: end it, so its client reconnects
    /// under the new one.
    Reconnect,
}

impl Guard {
    pub(crate) fn new(access: Access) -> Self {
        Self {
            access: watch::channel(Arc::new(access)).0,
            sessions: Arc::default(),
            admitted: Arc::default(),
        }
    }

    /// The access in force now.
    pub(crate) fn access(&self) -> Arc<Access> {
        Arc::clone(&self.access.borrow())
    }

    /// Watches for a new access policy.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Access>> {
        self.access.subscribe()
    }

    /// Puts `access` in force; sessions watching apply it at once.
    pub(crate) fn replace(&self, access: Access) {
        self.access.send_replace(Arc::new(access));
    }

    /// Admits a new session of `peer`: its verdict, a slot counted against its rule's
    /// `max_sessions`, and its tier's shared budgets; or why it is refused.
    pub(crate) fn admit(&self, peer: &PeerIdentity) -> Result<Admitted, Denied> {
        let verdict = self.access().verdict(peer);
        let (limit, tier) = match &verdict {
            Verdict::Refused => return Err(Denied::NoRule),
            Verdict::Granted(grant) => (grant.max_sessions, grant.tier.clone()),
            Verdict::All => (None, None),
        };
        let name = peer.name().to_owned();
        let mut sessions = self.sessions.lock();
        let holding = sessions.entry(name.clone()).or_default();
        if limit.is_some_and(|max| holding.sessions.len() >= max) {
            return Err(Denied::SessionLimit(holding.sessions.len()));
        }
        let order = self.admitted.fetch_add(1, Ordering::Relaxed);
        holding.sessions.insert(order);
        let budgets = tier.map(|tier| match &holding.tier {
            // The identity's other sessions hold this tier's budgets already: share them.
            Some((held, budgets)) if *held == tier => budgets.clone(),
            _ => {
                let budgets = (
                    crate::run::pacing(tier.upload_mbps).ok().flatten(),
                    crate::run::pacing(tier.download_mbps).ok().flatten(),
                );
                holding.tier = Some((tier, budgets.clone()));
                budgets
            }
        });
        drop(sessions);
        Ok(Admitted {
            verdict,
            slot: SessionSlot {
                sessions: Arc::clone(&self.sessions),
                id: SlotId {
                    name,
                    order,
                    tiered: budgets.is_some(),
                },
            },
            budgets,
        })
    }

    /// What the session `slot` must do under its new `verdict`.
    pub(crate) fn reapply(&self, slot: &SlotId, verdict: &Verdict) -> Reapplied {
        let (limit, wanted) = match verdict {
            Verdict::Granted(grant) => (grant.max_sessions, grant.tier.as_ref()),
            Verdict::All | Verdict::Refused => (None, None),
        };
        let mut sessions = self.sessions.lock();
        let Some(holding) = sessions.get_mut(&slot.name) else {
            return Reapplied::Keep;
        };
        if let Some(max) = limit {
            let older = holding.sessions.range(..slot.order).count();
            if older >= max {
                return Reapplied::OverLimit(max);
            }
        }
        match (&mut holding.tier, wanted, slot.tiered) {
            (_, None, false) => Reapplied::Keep,
            (Some((held, budgets)), Some(wanted), true) => {
                if held == wanted {
                    Reapplied::Keep
                } else if rerate(budgets, wanted) {
                    wanted.clone_into(held);
                    Reapplied::Rerated(wanted.clone())
                } else {
                    Reapplied::Reconnect
                }
            }
            // Gained a tier, lost one, or the budgets are another admission's.
            _ => Reapplied::Reconnect,
        }
    }
}

/// Sets `budgets` to `tier`'s rates; `false` (and nothing changed) where a direction is
/// limited on one side only, which pacing in place cannot follow.
fn rerate(budgets: &Budgets, tier: &Tier) -> bool {
    let pairs = [
        (&budgets.0, tier.upload_mbps),
        (&budgets.1, tier.download_mbps),
    ];
    let mut quotas = Vec::new();
    for (budget, mbps) in pairs {
        match (budget, mbps) {
            (Some(pacing), Some(mbps)) => {
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "a positive rate in Mbit/s; float-to-int `as` saturates"
                )]
                let bits = (mbps * 1e6) as u64;
                let Ok(quota) = Quota::bits_per_second(bits) else {
                    return false;
                };
                quotas.push((pacing, quota));
            }
            (None, None) => {}
            _ => return false,
        }
    }
    quotas.into_iter().all(|(pacing, quota)| {
        pacing
            .budgets()
            .first()
            .is_some_and(|limiter| limiter.set_quota(0, quota).is_ok())
    })
}
