//! Keyed limits whose state lives in Redis, so several servers share one limit.
//!
//! Each check is one round trip: a server-side Lua script runs GCRA on the key with Redis's own
//! clock (`TIME`), so servers whose clocks differ still agree. Each connection loads the script
//! once (`SCRIPT LOAD`) and then calls it by the digest Redis returns (`EVALSHA`), falling back
//! to `EVAL` if Redis has forgotten it. The client speaks just enough RESP for this over a few pooled connections, which keeps
//! the dependency tree lean.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics::Counter;
use sssonector_core::RateLimited;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::error::{ConfigError, Rejected};
use crate::limiter::{Admitted, Metrics};
use crate::quota::Quota;

/// GCRA in microseconds on Redis's clock. ARGV: emission interval, burst tolerance, increment.
/// Returns {admitted (0/1), remaining units, wait in microseconds}.
const SCRIPT: &str = r"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local inc = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + inc
local ahead = new_tat - now
if ahead <= tau then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor(ahead / 1000) + 1)
  return {1, math.floor((tau - ahead) / t), 0}
end
return {0, math.floor((tau - (tat - now)) / t), ahead - tau}
";

/// What to do when Redis cannot be reached or answers with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit the request: availability over strictness.
    Open,
    /// Refuse the request as if limited, asking the caller to retry after the given time.
    Closed(Duration),
}

/// A keyed limiter whose state is kept in Redis and shared by every server using the same
/// Redis, prefix and quota.
///
/// Resolution is one microsecond (at most a million units per second per key).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use sssonector_ratelimit::{FailurePolicy, Quota, RedisLimiter};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisLimiter::builder("127.0.0.1:6379".parse()?)
///     .prefix("api")
///     .quota(Quota::per_second(100)?.with_burst(20)?)
///     .on_failure(FailurePolicy::Open)
///     .build()?;
/// match limiter.check_key("tenant-42").await {
///     Ok(admitted) => println!("{} left", admitted.remaining()),
///     Err(refused) => println!("retry after {:?}", refused.retry_after),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    prefix: String,
    quota: Quota,
    t_us: u64,
    tau_us: u64,
    burst: u64,
    timeout: Duration,
    failure: FailurePolicy,
    pool: Box<[Mutex<Option<Connection>>]>,
    next: AtomicUsize,
    metrics: Metrics,
    errors: Counter,
}

impl RedisLimiter {
    /// A builder for a limiter on the Redis at `addr`.
    pub fn builder(addr: SocketAddr) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            addr,
            prefix: Cow::Borrowed("sssonector"),
            quota: None,
            timeout: Duration::from_millis(100),
            failure: FailurePolicy::Open,
            connections: 4,
        }
    }

    /// Admits one unit for `key`.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] when over the limit, or when Redis fails under
    /// [`FailurePolicy::Closed`].
    pub async fn check_key(&self, key: &str) -> Result<Admitted, RateLimited> {
        match self.check_key_n(key, 1).await {
            Ok(a) => Ok(a),
            Err(Rejected::Limited(l)) => Err(l),
            Err(_) => Err(RateLimited::new(Duration::MAX)),
        }
    }

    /// Admits `cost` units for `key`.
    ///
    /// # Errors
    ///
    /// [`Rejected::Limited`] as for [`check_key`](Self::check_key);
    /// [`Rejected::InsufficientCapacity`] when `cost` exceeds the burst.
    pub async fn check_key_n(&self, key: &str, cost: u64) -> Result<Admitted, Rejected> {
        let inner = &*self.inner;
        if cost > inner.burst {
            return Err(Rejected::InsufficientCapacity {
                requested: cost,
                burst: inner.burst,
            });
        }
        let result = match tokio::time::timeout(inner.timeout, self.call(key, cost)).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => self.failed(key, &e.to_string()),
            Err(_) => self.failed(key, &format!("no answer within {:?}", inner.timeout)),
        };
        inner.metrics.count(&result);
        result
    }

    fn failed(&self, key: &str, error: &str) -> Result<Admitted, Rejected> {
        let inner = &*self.inner;
        inner.errors.increment(1);
        tracing::warn!(redis = %inner.addr, key, error, policy = ?inner.failure, "rate limit store unavailable");
        match inner.failure {
            FailurePolicy::Open => Ok(Admitted::units(0)),
            FailurePolicy::Closed(retry_after) => {
                Err(Rejected::Limited(RateLimited::new(retry_after)))
            }
        }
    }

    async fn call(&self, key: &str, cost: u64) -> io::Result<Result<Admitted, Rejected>> {
        let inner = &*self.inner;
        let slot = &inner.pool[inner.next.fetch_add(1, Ordering::Relaxed) % inner.pool.len()];
        let mut guard = slot.lock().await;
        let full_key = format!("{}:{}", inner.prefix, key);
        let t = inner.t_us.to_string();
        let tau = inner.tau_us.to_string();
        let inc = (inner.t_us * cost).to_string();
        let args = [t.as_str(), tau.as_str(), inc.as_str()];
        // A pooled connection may have died since its last use (Redis restarted): on failure,
        // try once more on a fresh one before giving up.
        let mut fresh = false;
        let reply = loop {
            if guard.is_none() {
                *guard = Some(Connection::open(inner.addr).await?);
                fresh = true;
            }
            let connection = guard.as_mut().expect("connected above");
            match connection.evaluate(&full_key, &args).await {
                Ok(reply) => break reply,
                Err(e) => {
                    // The connection is in an unknown state: drop it.
                    *guard = None;
                    if fresh {
                        return Err(e);
                    }
                }
            }
        };
        match reply {
            Reply::Array(items) => match items.as_slice() {
                [Reply::Integer(1), Reply::Integer(remaining), _] => {
                    Ok(Ok(Admitted::units(u64::try_from(*remaining).unwrap_or(0))))
                }
                [
                    Reply::Integer(0),
                    Reply::Integer(remaining),
                    Reply::Integer(wait),
                ] => Ok(Err(Rejected::Limited(RateLimited::with_remaining(
                    Duration::from_micros(u64::try_from(*wait).unwrap_or(0)),
                    u64::try_from(*remaining).unwrap_or(0),
                )))),
                other => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected script reply {other:?}"),
                )),
            },
            Reply::Error(e) => Err(io::Error::other(format!("redis error: {e}"))),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected reply {other:?}"),
            )),
        }
    }

    /// The quota each key gets.
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("addr", &self.inner.addr)
            .field("prefix", &self.inner.prefix)
            .field("quota", &self.inner.quota)
            .field("failure", &self.inner.failure)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisLimiter`].
#[derive(Debug)]
pub struct RedisLimiterBuilder {
    addr: SocketAddr,
    prefix: Cow<'static, str>,
    quota: Option<Quota>,
    timeout: Duration,
    failure: FailurePolicy,
    connections: usize,
}

impl RedisLimiterBuilder {
    /// The key prefix (default `"sssonector"`); servers sharing a limit use the same one. Also
    /// the `limiter` metric label.
    pub fn prefix(mut self, prefix: impl Into<Cow<'static, str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The quota each key gets (required).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// How long a check may wait for Redis before the failure policy applies (default 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis fails (default [`FailurePolicy::Open`]).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// Connections kept to Redis (default 4); checks spread over them.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Builds the limiter; it connects on first use.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] without a quota, [`ConfigError::Zero`] for zero connections or
    /// timeout.
    pub fn build(self) -> Result<RedisLimiter, ConfigError> {
        let quota = self.quota.ok_or(ConfigError::NoQuota)?;
        if self.connections == 0 {
            return Err(ConfigError::Zero("connections"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Zero("timeout"));
        }
        let period_us = u64::try_from(quota.period().as_micros()).unwrap_or(u64::MAX);
        let t_us = period_us.div_ceil(quota.count()).max(1);
        let name = self.prefix.to_string();
        Ok(RedisLimiter {
            inner: Arc::new(Inner {
                addr: self.addr,
                quota,
                t_us,
                tau_us: t_us.saturating_mul(quota.burst()),
                burst: quota.burst(),
                timeout: self.timeout,
                failure: self.failure,
                pool: (0..self.connections).map(|_| Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
                metrics: Metrics::register("redis", Some(&name)),
                errors: metrics::counter!("sssonector_ratelimit_redis_errors_total", "limiter" => name.clone()),
                prefix: name,
            }),
        })
    }
}

/// A RESP reply, as far as this client needs.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

struct Connection {
    stream: BufReader<TcpStream>,
    /// The digest Redis gave the script.
    sha: String,
}

impl Connection {
    async fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut connection = Self {
            stream: BufReader::new(stream),
            sha: String::new(),
        };
        match connection.command(&["SCRIPT", "LOAD", SCRIPT]).await? {
            Reply::Bulk(Some(sha)) => {
                connection.sha = String::from_utf8_lossy(&sha).into_owned();
                Ok(connection)
            }
            Reply::Error(e) => Err(io::Error::other(format!("redis refused the script: {e}"))),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected SCRIPT LOAD reply {other:?}"),
            )),
        }
    }

    /// Runs the script on `key`, loading it again if Redis has forgotten it.
    async fn evaluate(&mut self, key: &str, args: &[&str]) -> io::Result<Reply> {
        let sha = self.sha.clone();
        let reply = self
            .command(&[&["EVALSHA", sha.as_str(), "1", key], args].concat())
            .await?;
        if matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT")) {
            return self
                .command(&[&["EVAL", SCRIPT, "1", key], args].concat())
                .await;
        }
        Ok(reply)
    }

    async fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await?;
        read_reply(&mut self.stream, 0).await
    }
}

/// Reads one reply; nesting is bounded so a hostile peer cannot exhaust the stack.
async fn read_reply(stream: &mut BufReader<TcpStream>, depth: u32) -> io::Result<Reply> {
    if depth > 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reply nested too deeply",
        ));
    }
    let mut line = Vec::new();
    stream.read_until(b'\n', &mut line).await?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated reply",
        ));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = || -> io::Result<i64> {
        body.parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad number {body:?}")))
    };
    match line[0] {
        b'+' => Ok(Reply::Simple(body.clone())),
        b'-' => Ok(Reply::Error(body.clone())),
        b':' => Ok(Reply::Integer(number()?)),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > 1 << 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bulk reply too large",
                ));
            }
            let mut data = vec![0; len + 2];
            tokio::io::AsyncReadExt::read_exact(stream, &mut data).await?;
            data.truncate(len);
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let len = number()?;
            if !(0..=16).contains(&len) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected array length",
                ));
            }
            let mut items = Vec::new();
            for _ in 0..len {
                items.push(Box::pin(read_reply(stream, depth + 1)).await?);
            }
            Ok(Reply::Array(items))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown reply type {:?}", char::from(other)),
        )),
    }
}
