//! The guard around a checked-out connection.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use tokio::time::Instant;

use crate::manager::Manager;
use crate::pool::Shared;

/// A connection and what the pool tracks about it.
pub(crate) struct Live<C> {
    pub(crate) conn: C,
    pub(crate) created: Instant,
    pub(crate) idle_since: Instant,
    /// When its lifetime (with jitter) ends.
    pub(crate) expires: Option<Instant>,
    /// Set by [`Pooled::discard`]: closed on return, never handed on.
    pub(crate) doomed: bool,
    /// Set by a health check: back to the idle set with this idle time, not as just used.
    pub(crate) resume_idle_since: Option<Instant>,
}

/// A connection checked out of a [`Pool`](crate::Pool), used through `Deref`. Dropping it
/// returns the connection: to the oldest waiter, else to the idle set (unless the manager
/// says it is broken, its lifetime is over, or the pool is closed or over size: then it is
/// closed and its place goes to a waiter).
pub struct Pooled<M: Manager> {
    // `None` once given back, with `live`.
    shared: Option<Arc<Shared<M>>>,
    endpoint: usize,
    // `None` once given back.
    live: Option<Live<M::Connection>>,
}

impl<M: Manager> Pooled<M> {
    pub(crate) fn new(shared: Arc<Shared<M>>, endpoint: usize, live: Live<M::Connection>) -> Self {
        Self {
            shared: Some(shared),
            endpoint,
            live: Some(live),
        }
    }

    /// The index of the endpoint this connection goes to, in the order given to the builder.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// How long ago the connection was opened.
    pub fn age(&self) -> std::time::Duration {
        self.live().created.elapsed()
    }

    /// Closes the connection instead of returning it (after an error on it, say); its place
    /// goes to the next waiter.
    pub fn discard(mut self) {
        if let (Some(mut live), Some(shared)) = (self.live.take(), self.shared.take()) {
            // A doomed connection is closed by the return path.
            live.doomed = true;
            shared.put_back(self.endpoint, live);
        }
    }

    /// On return to the idle set, keeps `since` as its idle time (a health check, not a use).
    pub(crate) fn keep_idle_since(&mut self, since: Instant) {
        if let Some(live) = self.live.as_mut() {
            live.resume_idle_since = Some(since);
        }
    }

    /// Empties the guard (which then returns nothing on drop): its pool handle and its
    /// connection.
    pub(crate) fn take_parts(&mut self) -> (Arc<Shared<M>>, Live<M::Connection>) {
        match (self.shared.take(), self.live.take()) {
            (Some(shared), Some(live)) => (shared, live),
            _ => unreachable!("a Pooled holds its connection until dropped"),
        }
    }

    /// Whether its lifetime ended by `now`.
    pub(crate) fn expired_at(&self, now: Instant) -> bool {
        self.live().expires.is_some_and(|at| now >= at)
    }

    fn live(&self) -> &Live<M::Connection> {
        match &self.live {
            Some(live) => live,
            None => unreachable!("a Pooled holds its connection until dropped"),
        }
    }

    /// The manager, for calls that need it next to the connection.
    pub fn manager(&self) -> &M {
        match &self.shared {
            Some(shared) => shared.manager(),
            None => unreachable!("a Pooled holds its pool until dropped"),
        }
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        &self.live().conn
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        match &mut self.live {
            Some(live) => &mut live.conn,
            None => unreachable!("a Pooled holds its connection until dropped"),
        }
    }
}

impl<M: Manager> fmt::Debug for Pooled<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("endpoint", &self.endpoint)
            .field("age", &self.live.as_ref().map(|l| l.created.elapsed()))
            .finish()
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let (Some(live), Some(shared)) = (self.live.take(), self.shared.take()) {
            shared.put_back(self.endpoint, live);
        }
    }
}
