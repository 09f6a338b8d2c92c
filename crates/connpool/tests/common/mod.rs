//! A manager whose endpoints can be told to fail, hang, or fail health checks, and whose
//! connections count themselves, so tests see every leak.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use sssonector_connpool::Manager;

/// What an endpoint does when asked to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Accept,
    Refuse,
    Hang,
}

#[derive(Debug, Clone)]
pub(crate) struct Faulty {
    pub(crate) behaviour: Arc<Mutex<Vec<Behaviour>>>,
    pub(crate) failing_checks: Arc<Mutex<Vec<bool>>>,
    /// Connect attempts per endpoint.
    pub(crate) attempts: Arc<Mutex<Vec<usize>>>,
    /// Connections alive (made and not yet dropped).
    pub(crate) alive: Arc<AtomicUsize>,
    /// How long each health check takes.
    pub(crate) check_time: Arc<Mutex<std::time::Duration>>,
}

impl Faulty {
    pub(crate) fn new(endpoints: usize) -> Self {
        Self {
            behaviour: Arc::new(Mutex::new(vec![Behaviour::Accept; endpoints])),
            failing_checks: Arc::new(Mutex::new(vec![false; endpoints])),
            attempts: Arc::new(Mutex::new(vec![0; endpoints])),
            alive: Arc::new(AtomicUsize::new(0)),
            check_time: Arc::new(Mutex::new(std::time::Duration::ZERO)),
        }
    }

    pub(crate) fn slow_checks(&self, time: std::time::Duration) {
        *self.check_time.lock() = time;
    }

    pub(crate) fn set(&self, endpoint: usize, behaviour: Behaviour) {
        self.behaviour.lock()[endpoint] = behaviour;
    }

    pub(crate) fn fail_checks(&self, endpoint: usize, fail: bool) {
        self.failing_checks.lock()[endpoint] = fail;
    }

    pub(crate) fn attempts(&self, endpoint: usize) -> usize {
        self.attempts.lock()[endpoint]
    }

    pub(crate) fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) endpoint: usize,
    pub(crate) broken: AtomicBool,
    alive: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Manager for Faulty {
    type Endpoint = usize;
    type Connection = Conn;
    type Error = io::Error;

    async fn connect(&self, endpoint: &usize) -> io::Result<Conn> {
        let behaviour = {
            self.attempts.lock()[*endpoint] += 1;
            self.behaviour.lock()[*endpoint]
        };
        match behaviour {
            Behaviour::Accept => {
                self.alive.fetch_add(1, Ordering::SeqCst);
                Ok(Conn {
                    endpoint: *endpoint,
                    broken: AtomicBool::new(false),
                    alive: Arc::clone(&self.alive),
                })
            }
            Behaviour::Refuse => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("endpoint {endpoint} refused"),
            )),
            Behaviour::Hang => std::future::pending().await,
        }
    }

    async fn check(&self, conn: &mut Conn) -> io::Result<()> {
        let time = *self.check_time.lock();
        if !time.is_zero() {
            tokio::time::sleep(time).await;
        }
        if self.failing_checks.lock()[conn.endpoint] {
            Err(io::Error::other("health check failed"))
        } else {
            Ok(())
        }
    }

    fn is_broken(&self, conn: &mut Conn) -> bool {
        conn.broken.load(Ordering::SeqCst)
    }
}
