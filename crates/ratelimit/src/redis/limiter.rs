//! Keyed GCRA limits kept in Redis: each check is one round trip running a script on Redis's
//! clock, by digest (`EVALSHA`) once Redis knows the script.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use sssonector_core::RateLimited;

use super::FailurePolicy;
use super::store::{RedisStore, StoreError};
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

/// A keyed limiter whose state is kept in Redis and shared by every server using the same
/// Redis, prefix and quota.
///
/// Resolution is one microsecond (at most a million units per second per key).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use sssonector_ratelimit::{FailurePolicy, Quota, RedisLimiter, RedisStore};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379").build()?;
/// let limiter = RedisLimiter::builder(store)
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
    store: RedisStore,
    script: redis::Script,
    prefix: String,
    quota: Quota,
    t_us: u64,
    tau_us: u64,
    burst: u64,
    failure: FailurePolicy,
    metrics: Metrics,
    errors: Counter,
}

impl RedisLimiter {
    /// A builder for a limiter kept in `store`.
    pub fn builder(store: RedisStore) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            store,
            prefix: Cow::Borrowed("sssonector"),
            quota: None,
            failure: FailurePolicy::Open,
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
        let result = match self.call(key, cost).await {
            Ok(verdict) => verdict,
            Err(e) => self.failed(key, &e),
        };
        inner.metrics.count(&result);
        result
    }

    fn failed(&self, key: &str, error: &StoreError) -> Result<Admitted, Rejected> {
        let inner = &*self.inner;
        inner.errors.increment(1);
        tracing::debug!(key, %error, policy = ?inner.failure, "rate limit store unavailable");
        match inner.failure {
            FailurePolicy::Open => Ok(Admitted::units(0)),
            FailurePolicy::Closed(retry_after) => {
                Err(Rejected::Limited(RateLimited::new(retry_after)))
            }
        }
    }

    async fn call(&self, key: &str, cost: u64) -> Result<Result<Admitted, Rejected>, StoreError> {
        let inner = &*self.inner;
        let full_key = format!("{}:{}", inner.prefix, key);
        let inc = inner.t_us.saturating_mul(cost);
        let reply: Vec<i64> = inner
            .store
            .run(|mut connection| {
                let mut invocation = inner.script.key(&full_key);
                invocation.arg(inner.t_us).arg(inner.tau_us).arg(inc);
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        match reply.as_slice() {
            [1, remaining, _] => Ok(Ok(Admitted::units(count(*remaining)))),
            [0, remaining, wait] => Ok(Err(Rejected::Limited(RateLimited::with_remaining(
                Duration::from_micros(count(*wait)),
                count(*remaining),
            )))),
            other => Err(inner
                .store
                .bad_reply(format!("limit script returned {other:?}"))),
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
            .field("store", &self.inner.store.name())
            .field("prefix", &self.inner.prefix)
            .field("quota", &self.inner.quota)
            .field("failure", &self.inner.failure)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisLimiter`].
#[derive(Debug)]
pub struct RedisLimiterBuilder {
    store: RedisStore,
    prefix: Cow<'static, str>,
    quota: Option<Quota>,
    failure: FailurePolicy,
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

    /// What to do when Redis fails (default [`FailurePolicy::Open`]).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// Builds the limiter; its store connects on first use.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] without a quota.
    pub fn build(self) -> Result<RedisLimiter, ConfigError> {
        let quota = self.quota.ok_or(ConfigError::NoQuota)?;
        let period_us = u64::try_from(quota.period().as_micros()).unwrap_or(u64::MAX);
        let t_us = period_us.div_ceil(quota.count()).max(1);
        let name = self.prefix.to_string();
        Ok(RedisLimiter {
            inner: Arc::new(Inner {
                store: self.store,
                script: redis::Script::new(SCRIPT),
                quota,
                t_us,
                tau_us: t_us.saturating_mul(quota.burst()),
                burst: quota.burst(),
                failure: self.failure,
                metrics: Metrics::register("redis", Some(&name)),
                errors: metrics::counter!("sssonector_ratelimit_redis_errors_total", "limiter" => name.clone()),
                prefix: name,
            }),
        })
    }
}
