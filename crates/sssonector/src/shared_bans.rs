//! Bans shared by several servers through Redis (`[bans.redis]`): each server sends its
//! failures to one count in Redis, so failures at any server earn one ban, escalating as a
//! local one does; every server hears of each ban at once (and reads those in force when it
//! connects) and imposes it, ending the source's live sessions. While Redis cannot be
//! reached, each server counts its failures on its own.

use std::net::IpAddr;

use sssonector_ratelimit::{RedisBlocklist, Strike};
use tokio::sync::{mpsc, watch};

use crate::abuse::{Failure, Shield};
use crate::bans::MAX_SOURCES;

/// Failures waiting for Redis at most; beyond this they are counted locally.
const QUEUE: usize = 4096;

/// `shield` sending its failures to `blocklist` and imposing the bans it announces, until
/// `stop`. Clone the returned shield, not the one passed in.
pub(crate) fn start(
    shield: Shield,
    blocklist: RedisBlocklist,
    stop: &watch::Receiver<bool>,
) -> Shield {
    let (queue, failures) = mpsc::channel(QUEUE);
    let shield = shield.with_shared(queue);
    tracing::info!(
        redis = blocklist.store().name(),
        "bans are shared through redis"
    );
    tokio::spawn(count(
        shield.clone(),
        blocklist.clone(),
        failures,
        stop.clone(),
    ));
    tokio::spawn(learn(shield.clone(), blocklist, stop.clone()));
    shield
}

/// Counts each failure in Redis; imposes the ban a failure earns (or finds in force).
async fn count(
    shield: Shield,
    blocklist: RedisBlocklist,
    mut failures: mpsc::Receiver<Failure>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let failure = tokio::select! {
            failure = failures.recv() => match failure {
                Some(failure) => failure,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let key = failure.source.to_string();
        match blocklist.strike(&key, &failure.reason).await {
            Ok(Strike::Blocked(block) | Strike::AlreadyBlocked(block)) => {
                shield.impose(failure.source, block.remaining, block.level, &block.reason);
            }
            Ok(_) => {}
            Err(error) => {
                metrics::counter!("sssonector_bans_shared_errors_total", "error" => "redis")
                    .increment(1);
                tracing::debug!(%error, source = %failure.source, "counting a failure locally");
                shield.count_here(failure.source, &failure.reason);
            }
        }
    }
}

/// Imposes every ban announced through Redis, and those in force when the watch connects.
async fn learn(shield: Shield, blocklist: RedisBlocklist, mut stop: watch::Receiver<bool>) {
    let mut blocks = blocklist.watch(MAX_SOURCES);
    loop {
        let block = tokio::select! {
            block = blocks.recv() => match block {
                Some(block) => block,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        match block.key.parse::<IpAddr>() {
            Ok(source) => shield.impose(source, block.remaining, block.level, &block.reason),
            Err(_) => tracing::debug!(
                key = block.key,
                "ignoring a shared ban that names no address"
            ),
        }
    }
}
