//! Blocks shared by several servers, fail2ban-style: each server reports strikes against a key
//! (a source address, an account), and `strikes` of them within `window` — from any server —
//! block the key for `block`, doubled for each repeat until `forgive` passes without one, up
//! to `max_block`. The counting, the escalation and the block are one script on Redis's clock,
//! so concurrent strikes from several servers earn exactly one block. Each new block is
//! published, so every server watching learns of it at once; a watcher that (re)connects first
//! reads the blocks already in force.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::store::{RedisStore, StoreError};
use crate::error::ConfigError;

/// Strikes, escalation and the block, in milliseconds on Redis's clock.
///
/// KEYS: the strike list, the block, the escalation level. ARGV: strikes, window, first
/// block, longest block, forgive, reason, channel, message prefix (the key's length and the
/// key). Returns {outcome (0 counted, 1 blocked now, 2 already blocked), strikes in the
/// window or block time left, level, reason}.
const SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local held = redis.call('GET', KEYS[2])
if held then
  local level, reason = string.match(held, '^(%d+) (.*)$')
  return {2, redis.call('PTTL', KEYS[2]), tonumber(level) or 1, reason or ''}
end
local strikes = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('RPUSH', KEYS[1], now)
redis.call('LTRIM', KEYS[1], -strikes, -1)
redis.call('PEXPIRE', KEYS[1], window)
local recent = 0
for _, at in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if now - tonumber(at) < window then recent = recent + 1 end
end
if recent < strikes then
  return {0, recent, 0, ''}
end
redis.call('DEL', KEYS[1])
local level = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
local length = tonumber(ARGV[3]) * math.pow(2, math.min(level - 1, 30))
if length > tonumber(ARGV[4]) then length = tonumber(ARGV[4]) end
length = math.floor(length)
redis.call('SET', KEYS[2], level .. ' ' .. ARGV[6], 'PX', length)
redis.call('PUBLISH', ARGV[7], level .. ' ' .. length .. ' ' .. ARGV[8] .. ARGV[6])
return {1, length, level, ARGV[6]}
";

/// Blocks read per round trip while catching up.
const SCAN_BATCH: usize = 500;

/// A block in force.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Block {
    /// What is blocked.
    pub key: String,
    /// How long it has left (as of when it was read or announced).
    pub remaining: Duration,
    /// Blocks in a row for this key, 1 for the first.
    pub level: u32,
    /// The reason given with the strike that earned it.
    pub reason: String,
}

/// What a strike did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strike {
    /// Counted; `strikes` within the window so far.
    Counted {
        /// Strikes within the window, this one included.
        strikes: u32,
    },
    /// This strike earned a block.
    Blocked(Block),
    /// The key was already blocked; the strike was not counted.
    AlreadyBlocked(Block),
}

/// Strikes and blocks kept in Redis, shared by every server using the same store and prefix.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use sssonector_ratelimit::{RedisBlocklist, RedisStore, Strike};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379").build()?;
/// let blocklist = RedisBlocklist::builder(store)
///     .prefix("edge")
///     .strikes(10, Duration::from_secs(60))
///     .block(Duration::from_secs(60), Duration::from_secs(3600))
///     .build()?;
/// // Learn of every server's blocks...
/// let mut watch = blocklist.watch(100_000);
/// tokio::spawn(async move {
///     while let Some(block) = watch.recv().await {
///         println!("{} blocked for {:?}", block.key, block.remaining);
///     }
/// });
/// // ...and report strikes.
/// if let Strike::Blocked(block) = blocklist.strike("192.0.2.7", "bad handshake").await? {
///     println!("level {} block", block.level);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBlocklist {
    inner: Arc<Inner>,
}

struct Inner {
    store: RedisStore,
    script: redis::Script,
    prefix: String,
    strikes: u32,
    window: Duration,
    block: Duration,
    max_block: Duration,
    forgive: Duration,
}

impl RedisBlocklist {
    /// A builder for a blocklist kept in `store`.
    pub fn builder(store: RedisStore) -> RedisBlocklistBuilder {
        RedisBlocklistBuilder {
            store,
            prefix: Cow::Borrowed("sssonector"),
            strikes: 10,
            window: Duration::from_secs(60),
            block: Duration::from_secs(60),
            max_block: Duration::from_secs(3600),
            forgive: Duration::from_secs(24 * 3600),
        }
    }

    /// The store the blocklist is kept in.
    pub fn store(&self) -> &RedisStore {
        &self.inner.store
    }

    /// Reports a strike against `key`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when Redis cannot be reached in time or answers oddly; the caller then
    /// decides on its own (for example by counting locally).
    pub async fn strike(&self, key: &str, reason: &str) -> Result<Strike, StoreError> {
        let inner = &*self.inner;
        let keys = [
            self.name("strikes", key),
            self.name("block", key),
            self.name("level", key),
        ];
        let channel = self.channel();
        let tag = format!("{}:{key}", key.len());
        let (outcome, amount, level, reason): (i64, i64, i64, String) = inner
            .store
            .run(|mut connection| {
                let mut invocation = inner.script.key(&keys[..]);
                invocation
                    .arg(inner.strikes)
                    .arg(millis(inner.window))
                    .arg(millis(inner.block))
                    .arg(millis(inner.max_block))
                    .arg(millis(inner.forgive))
                    .arg(reason)
                    .arg(&channel)
                    .arg(&tag);
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await?;
        let block = || Block {
            key: key.to_owned(),
            remaining: Duration::from_millis(u64::try_from(amount).unwrap_or(0)),
            level: u32::try_from(level).unwrap_or(u32::MAX).max(1),
            reason: reason.clone(),
        };
        match outcome {
            0 => Ok(Strike::Counted {
                strikes: u32::try_from(amount).unwrap_or(0),
            }),
            1 => Ok(Strike::Blocked(block())),
            2 => Ok(Strike::AlreadyBlocked(block())),
            other => Err(inner
                .store
                .bad_reply(format!("strike script returned outcome {other}"))),
        }
    }

    /// The block on `key`, if one is in force.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when Redis cannot be reached in time.
    pub async fn blocked(&self, key: &str) -> Result<Option<Block>, StoreError> {
        let name = self.name("block", key);
        let (held, left): (Option<String>, i64) = self
            .inner
            .store
            .run(|mut connection| {
                let name = &name;
                async move {
                    redis::pipe()
                        .get(name)
                        .pttl(name)
                        .query_async(&mut connection)
                        .await
                }
            })
            .await?;
        Ok(held.and_then(|held| parse_held(key, &held, left)))
    }

    /// The blocks in force, at most `limit` of them.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when Redis cannot be reached in time.
    pub async fn list(&self, limit: usize) -> Result<Vec<Block>, StoreError> {
        let store = &self.inner.store;
        let head = self.name("block", "");
        let pattern = format!("{}*", escape_glob(&head));
        let mut cursor = 0_u64;
        let mut blocks = Vec::new();
        loop {
            let (next, names): (u64, Vec<String>) = store
                .run(|mut connection| {
                    let pattern = &pattern;
                    async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(SCAN_BATCH)
                            .query_async(&mut connection)
                            .await
                    }
                })
                .await?;
            if !names.is_empty() {
                let held: Vec<(Option<String>, i64)> = store
                    .run(|mut connection| {
                        let mut pipe = redis::pipe();
                        for name in &names {
                            pipe.get(name).pttl(name);
                        }
                        async move { pipe.query_async(&mut connection).await }
                    })
                    .await?;
                for (name, (value, left)) in names.iter().zip(held) {
                    let key = name.strip_prefix(&head).unwrap_or(name);
                    if let Some(block) = value.and_then(|v| parse_held(key, &v, left)) {
                        blocks.push(block);
                        if blocks.len() >= limit {
                            return Ok(blocks);
                        }
                    }
                }
            }
            if next == 0 {
                return Ok(blocks);
            }
            cursor = next;
        }
    }

    /// Ends the block on `key` (and forgets its strikes and escalation) on every server's
    /// next read; watchers are not told.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when Redis cannot be reached in time.
    pub async fn unblock(&self, key: &str) -> Result<bool, StoreError> {
        let names = [
            self.name("strikes", key),
            self.name("block", key),
            self.name("level", key),
        ];
        let removed: i64 = self
            .inner
            .store
            .run(|mut connection| {
                let names = &names;
                async move { connection.del(&names[..]).await }
            })
            .await?;
        Ok(removed > 0)
    }

    /// Every new block from any server, starting with those already in force (at most
    /// `catch_up` of them, read again after each reconnect). The watch reconnects by itself
    /// with a jittered backoff; dropping it stops it.
    pub fn watch(&self, catch_up: usize) -> BlockWatch {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(watch(self.clone(), catch_up, tx));
        BlockWatch { rx, task }
    }

    fn name(&self, kind: &str, key: &str) -> String {
        format!("{}:{kind}:{key}", self.inner.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:blocks", self.inner.prefix)
    }
}

impl fmt::Debug for RedisBlocklist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("RedisBlocklist")
            .field("store", &inner.store.name())
            .field("prefix", &inner.prefix)
            .field("strikes", &inner.strikes)
            .field("window", &inner.window)
            .field("block", &inner.block)
            .field("max_block", &inner.max_block)
            .finish_non_exhaustive()
    }
}

/// New blocks as they are announced; see [`RedisBlocklist::watch`].
#[derive(Debug)]
pub struct BlockWatch {
    rx: mpsc::Receiver<Block>,
    task: JoinHandle<()>,
}

impl BlockWatch {
    /// The next block; `None` only if the watch's task ended.
    pub async fn recv(&mut self) -> Option<Block> {
        self.rx.recv().await
    }
}

impl Drop for BlockWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(blocklist: RedisBlocklist, catch_up: usize, tx: mpsc::Sender<Block>) {
    let store = blocklist.store().clone();
    let channel = blocklist.channel();
    let jitter = RandomState::new();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0_u64;
    loop {
        let connected = tokio::time::timeout(store.timeout().max(Duration::from_secs(1)), async {
            let mut pubsub = store.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match connected {
            Ok(Ok(mut pubsub)) => {
                // Subscribed first, then read what is already in force: nothing falls between.
                match blocklist.list(catch_up).await {
                    Ok(blocks) => {
                        for block in blocks {
                            if tx.send(block).await.is_err() {
                                return;
                            }
                        }
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot read the blocks in force"),
                }
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let Ok(payload) = message.get_payload::<String>() else { continue };
                            match parse_announcement(&payload) {
                                Some(block) => {
                                    if tx.send(block).await.is_err() {
                                        return;
                                    }
                                }
                                None => tracing::debug!(payload, "ignoring an unreadable block announcement"),
                            }
                        }
                        () = tx.closed() => return,
                    }
                }
                tracing::debug!(
                    redis = store.name(),
                    "block announcements ended; resubscribing"
                );
            }
            Ok(Err(e)) => {
                tracing::debug!(redis = store.name(), error = %e, "cannot subscribe to block announcements")
            }
            Err(_) => tracing::debug!(
                redis = store.name(),
                "subscribing to block announcements timed out"
            ),
        }
        attempt += 1;
        let spread =
            jitter.hash_one(attempt) % (u64::try_from(backoff.as_millis()).unwrap_or(1).max(1));
        tokio::select! {
            () = tokio::time::sleep(backoff / 2 + Duration::from_millis(spread / 2)) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// A stored block value, `"<level> <reason>"`, with its time left in milliseconds.
fn parse_held(key: &str, held: &str, left_ms: i64) -> Option<Block> {
    let left = u64::try_from(left_ms).ok().filter(|l| *l > 0)?;
    let (level, reason) = held.split_once(' ').unwrap_or((held, ""));
    Some(Block {
        key: key.to_owned(),
        remaining: Duration::from_millis(left),
        level: level.parse().ok()?,
        reason: reason.to_owned(),
    })
}

/// An announcement, `"<level> <ms> <key length>:<key><reason>"`: the length makes any key
/// and reason readable.
fn parse_announcement(text: &str) -> Option<Block> {
    let (level, rest) = text.split_once(' ')?;
    let (ms, rest) = rest.split_once(' ')?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let key = rest.get(..len)?;
    let reason = rest.get(len..)?;
    Some(Block {
        key: key.to_owned(),
        remaining: Duration::from_millis(ms.parse().ok()?),
        level: level.parse().ok()?,
        reason: reason.to_owned(),
    })
}

fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Builds a [`RedisBlocklist`].
#[derive(Debug)]
pub struct RedisBlocklistBuilder {
    store: RedisStore,
    prefix: Cow<'static, str>,
    strikes: u32,
    window: Duration,
    block: Duration,
    max_block: Duration,
    forgive: Duration,
}

impl RedisBlocklistBuilder {
    /// The key prefix (default `"sssonector"`); servers sharing blocks use the same one.
    pub fn prefix(mut self, prefix: impl Into<Cow<'static, str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// `strikes` within `window` earn a block (default 10 in 1 minute).
    pub fn strikes(mut self, strikes: u32, window: Duration) -> Self {
        self.strikes = strikes;
        self.window = window;
        self
    }

    /// The first block's length and the longest (default 1 minute, doubling up to 1 hour).
    pub fn block(mut self, first: Duration, longest: Duration) -> Self {
        self.block = first;
        self.max_block = longest;
        self
    }

    /// After this long without a block, a key's next one starts at the first length again
    /// (default 1 day).
    pub fn forgive_after(mut self, forgive: Duration) -> Self {
        self.forgive = forgive;
        self
    }

    /// Builds the blocklist; its store connects on first use.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for zero strikes or a window, block or forgive time under a
    /// millisecond; [`ConfigError::OutOfRange`] for a longest block shorter than the first.
    pub fn build(self) -> Result<RedisBlocklist, ConfigError> {
        if self.strikes == 0 {
            return Err(ConfigError::Zero("strikes"));
        }
        for (name, d) in [
            ("window", self.window),
            ("block", self.block),
            ("forgive", self.forgive),
        ] {
            if d < Duration::from_millis(1) {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_block < self.block {
            return Err(ConfigError::OutOfRange {
                field: "max_block",
                value: self.max_block.as_secs_f64(),
                min: self.block.as_secs_f64(),
                max: f64::INFINITY,
            });
        }
        Ok(RedisBlocklist {
            inner: Arc::new(Inner {
                store: self.store,
                script: redis::Script::new(SCRIPT),
                prefix: self.prefix.into_owned(),
                strikes: self.strikes,
                window: self.window,
                block: self.block,
                max_block: self.max_block,
                forgive: self.forgive,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_carry_any_key_and_reason() {
        let block = parse_announcement("3 240000 10:2001:db8::tls: bad certificate").unwrap();
        assert_eq!(block.key, "2001:db8::");
        assert_eq!(block.reason, "tls: bad certificate");
        assert_eq!(block.level, 3);
        assert_eq!(block.remaining, Duration::from_secs(240));
        assert_eq!(parse_announcement("3 240000 99:short"), None);
        assert_eq!(parse_announcement("x 1 1:a"), None);
    }

    #[test]
    fn held_values_and_globs() {
        let block = parse_held("k", "2 policy", 1500).unwrap();
        assert_eq!((block.level, block.reason.as_str()), (2, "policy"));
        assert_eq!(parse_held("k", "2 policy", -2), None, "expired or missing");
        assert_eq!(escape_glob("a*b[c]"), "a\\*b\\[c\\]");
    }
}
