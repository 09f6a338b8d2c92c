//! The retry policy: how many attempts, how long between them, which errors, within which limits.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::Counter;
use sssonector_core::{Classify, DefaultClassifier, ErrorClass, Rng};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::error::{ConfigError, Failure, GiveUpReason};
use crate::plan::{Plan, intern};

/// What to do when an error carries a `retry_after` (an open circuit, a rate limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryAfterPolicy {
    /// Wait at least `retry_after` (longer if the backoff says so); give up if that passes the
    /// deadline.
    #[default]
    Honor,
    /// Honour waits up to the given length; give up at once on longer ones.
    HonorUpTo(Duration),
    /// Give up at once on any error carrying `retry_after`: the caller prefers failing fast to
    /// waiting for a dependency that said it is unavailable.
    FailFast,
    /// Use the backoff schedule as if the error carried no hint.
    Ignore,
}

/// What a retry hook is told before each retry's wait.
#[non_exhaustive]
pub struct RetryEvent<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// The attempt that just failed (1 is the first call).
    pub attempt: u32,
    /// The wait before the next attempt.
    pub delay: Duration,
    /// How the failure was classified.
    pub class: ErrorClass,
    /// The failure, for logging.
    pub failure: &'a dyn fmt::Display,
}

impl fmt::Debug for RetryEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryEvent")
            .field("policy", &self.policy)
            .field("attempt", &self.attempt)
            .field("delay", &self.delay)
            .field("class", &self.class)
            .field("failure", &format_args!("{}", self.failure))
            .finish()
    }
}

type Hook = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// A retry policy: limits, backoff, classification, budget and hooks.
///
/// Built with [`RetryPolicy::builder`]; [`RetryPolicy::default`] gives 3 retries with
/// exponential backoff from 100 ms, ×2, capped at 5 s, ±20 % jitter, no deadline, no budget.
///
/// Cloning is cheap, and clones share the budget, the random source and the metrics. A policy
/// with none of these (no name, budget, hook or seed) is a plain value: the tower layer then
/// carries it into each response future without touching shared memory, which is what keeps its
/// per-call overhead at or below `tower::retry`'s.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_retry::{Backoff, RetryBudget, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .name("inventory")
///     .max_retries(5)
///     .backoff(Backoff::exponential(Duration::from_millis(50)))
///     .deadline(Duration::from_secs(10))
///     .attempt_timeout(Duration::from_secs(2))
///     .budget(RetryBudget::new(0.2, 10)?)
///     .build()?;
/// assert_eq!(policy.max_retries(), 5);
/// # Ok::<(), sssonector_retry::ConfigError>(())
/// ```
pub struct RetryPolicy<C = DefaultClassifier> {
    /// The interned plan; a placeholder when the plan lives in `shared` (see [`Self::plan`]).
    plan: &'static Plan,
    pub(crate) shared: Option<Arc<Shared>>,
    pub(crate) classifier: C,
}

/// What clones of a policy share.
pub(crate) struct Shared {
    /// The plan, when the intern table was full.
    pub(crate) plan: Option<Plan>,
    pub(crate) name: Cow<'static, str>,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) rng: Option<Rng>,
    pub(crate) on_retry: Option<Hook>,
    pub(crate) metrics: Option<Metrics>,
}

pub(crate) struct Metrics {
    pub(crate) attempts: Counter,
    pub(crate) retries: Counter,
    pub(crate) give_ups: [Counter; 6],
    pub(crate) budget_exhausted: Counter,
}

impl Metrics {
    fn register(name: &str) -> Self {
        let policy = name.to_owned();
        Self {
            attempts: metrics::counter!("sssonector_retry_attempts_total", "policy" => policy.clone()),
            retries: metrics::counter!("sssonector_retry_retries_total", "policy" => policy.clone()),
            give_ups: GiveUpReason::ALL.map(|reason| {
                metrics::counter!(
                    "sssonector_retry_give_ups_total",
                    "policy" => policy.clone(),
                    "reason" => reason.as_str()
                )
            }),
            budget_exhausted: metrics::counter!(
                "sssonector_retry_budget_exhausted_total",
                "policy" => policy
            ),
        }
    }
}

thread_local! {
    /// Jitter for policies without a seeded generator of their own: one generator per thread,
    /// so unseeded policies share nothing between threads.
    static THREAD_RNG: Rng = Rng::from_entropy();
}

impl<C: Clone> Clone for RetryPolicy<C> {
    fn clone(&self) -> Self {
        Self {
            plan: self.plan,
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for RetryPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.shared.as_deref();
        f.debug_struct("RetryPolicy")
            .field("name", &self.name())
            .field("backoff", &self.plan().backoff)
            .field("max_retries", &self.plan().max_retries)
            .field("deadline", &self.plan().deadline)
            .field("attempt_timeout", &self.plan().attempt_timeout)
            .field("retry_after", &self.plan().retry_after)
            .field("budget", &shared.and_then(|s| s.budget.as_ref()))
            .field(
                "on_retry",
                &shared.and_then(|s| s.on_retry.as_ref()).map(|_| "Fn"),
            )
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl Default for RetryPolicy<DefaultClassifier> {
    fn default() -> Self {
        RetryPolicy::builder()
            .build()
            .expect("the default retry policy is valid")
    }
}

impl RetryPolicy<DefaultClassifier> {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryPolicyBuilder<DefaultClassifier> {
        RetryPolicyBuilder {
            name: None,
            backoff: Backoff::default(),
            max_retries: 3,
            deadline: None,
            attempt_timeout: None,
            retry_after: RetryAfterPolicy::Honor,
            budget: None,
            seed: None,
            on_retry: None,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> RetryPolicy<C> {
    /// The policy's name, as used in metrics labels and logs (`"default"` when unnamed).
    pub fn name(&self) -> &str {
        self.shared.as_deref().map_or("default", |s| &s.name)
    }

    /// The maximum number of retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.plan().max_retries
    }

    /// The backoff schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.plan().backoff
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// The shared budget, if one is set.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.as_deref().and_then(|s| s.budget.as_ref())
    }

    /// Counts a new call (budget deposit, attempts metric).
    #[inline]
    pub(crate) fn begin(&self) {
        if let Some(shared) = self.shared.as_deref() {
            if let Some(budget) = &shared.budget {
                budget.deposit();
            }
            if let Some(metrics) = &shared.metrics {
                metrics.attempts.increment(1);
            }
        }
    }

    /// Counts a new call and starts its bookkeeping.
    pub(crate) fn start(&self) -> Attempts {
        self.begin();
        Attempts::new(self.plan())
    }

    /// Whether each call needs timing from its start (a deadline or attempt timeout is set).
    #[inline]
    pub(crate) fn is_timed(&self) -> bool {
        // Read from the plan rather than cached in the policy: a byte-sized field in this
        // 16-byte struct made every copy of it stall on store forwarding (measured: +5 ns/call).
        let plan = self.plan();
        plan.deadline.is_some() || plan.attempt_timeout.is_some()
    }

    /// The settings.
    #[inline]
    pub(crate) fn plan(&self) -> &Plan {
        resolve_plan(self.plan, self.shared.as_deref())
    }

    /// The interned plan (a placeholder when the plan lives in the shared state).
    #[inline]
    pub(crate) fn interned_plan(&self) -> &'static Plan {
        self.plan
    }
}

/// The plan of a policy from its parts: the shared state's own plan when the intern table was
/// full, the interned one otherwise.
#[inline]
pub(crate) fn resolve_plan<'a>(interned: &'a Plan, shared: Option<&'a Shared>) -> &'a Plan {
    match shared.and_then(|s| s.plan.as_ref()) {
        Some(plan) => plan,
        None => interned,
    }
}

impl<C> RetryPolicy<C> {}

/// Builds a [`RetryPolicy`]; every setter has a default.
pub struct RetryPolicyBuilder<C> {
    name: Option<Cow<'static, str>>,
    backoff: Backoff,
    max_retries: u32,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    retry_after: RetryAfterPolicy,
    budget: Option<RetryBudget>,
    seed: Option<u64>,
    on_retry: Option<Hook>,
    classifier: C,
}

impl<C: fmt::Debug> fmt::Debug for RetryPolicyBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicyBuilder")
            .field("name", &self.name)
            .field("backoff", &self.backoff)
            .field("max_retries", &self.max_retries)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<C> RetryPolicyBuilder<C> {
    /// Names the policy, and turns on its metrics, labelled `policy = name`. Unnamed policies
    /// record no metrics and log as `"default"`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Retries after the first attempt (default 3, so at most 4 attempts); 0 disables retrying.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Total attempts, the first included (`max_attempts(4)` is `max_retries(3)`).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_retries = attempts.saturating_sub(1);
        self
    }

    /// The backoff schedule (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A total deadline across attempts and waits, measured from the call. An attempt in flight
    /// at the deadline is abandoned, and no wait is started that would end after it.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// A timeout for each attempt; a timed-out attempt is a transient failure and is retried.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// What to do with errors carrying a `retry_after` (default [`RetryAfterPolicy::Honor`]).
    pub fn retry_after(mut self, policy: RetryAfterPolicy) -> Self {
        self.retry_after = policy;
        self
    }

    /// A budget shared with other policies or clones (default none).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Fixes the jitter's random sequence, for reproducible tests (default: a random seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A hook called before every retry's wait, with the failure and the chosen delay.
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Replaces the error classifier (default [`DefaultClassifier`], which handles
    /// `std::io::Error` and `BoxError`).
    pub fn classifier<C2>(self, classifier: C2) -> RetryPolicyBuilder<C2> {
        RetryPolicyBuilder {
            name: self.name,
            backoff: self.backoff,
            max_retries: self.max_retries,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            retry_after: self.retry_after,
            budget: self.budget,
            seed: self.seed,
            on_retry: self.on_retry,
            classifier,
        }
    }

    /// Validates the configuration and builds the policy.
    ///
    /// Metrics handles are registered here: install the `metrics` recorder before building
    /// policies.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid setting.
    pub fn build(self) -> Result<RetryPolicy<C>, ConfigError> {
        self.backoff.validate()?;
        if self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroDuration { field: "deadline" });
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroDuration {
                field: "attempt_timeout",
            });
        }
        let plan = Plan {
            backoff: self.backoff,
            max_retries: self.max_retries,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            retry_after: self.retry_after,
        };
        let interned = intern(plan);
        let needs_shared = interned.is_none()
            || self.name.is_some()
            || self.budget.is_some()
            || self.on_retry.is_some()
            || self.seed.is_some();
        let shared = needs_shared.then(|| {
            Arc::new(Shared {
                plan: interned.is_none().then_some(plan),
                metrics: self.name.as_deref().map(Metrics::register),
                name: self.name.unwrap_or(Cow::Borrowed("default")),
                budget: self.budget,
                rng: self.seed.map(Rng::with_seed),
                on_retry: self.on_retry,
            })
        });
        static PLACEHOLDER: OnceLock<Plan> = OnceLock::new();
        Ok(RetryPolicy {
            plan: interned.unwrap_or_else(|| PLACEHOLDER.get_or_init(|| plan)),
            shared,
            classifier: self.classifier,
        })
    }
}

/// The decision after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Retry(Duration),
    GiveUp(GiveUpReason),
}

/// The bookkeeping of one call across its attempts; shared by [`retry`](crate::retry) and the
/// tower layer so both decide identically.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// When the call started; kept only when a deadline is set.
    started: Option<Instant>,
    /// Attempts made so far, the one in flight included.
    pub(crate) made: u32,
    previous_delay: Duration,
}

impl Attempts {
    /// The bookkeeping of a call starting now, with its first attempt in flight.
    pub(crate) fn new(plan: &Plan) -> Self {
        Attempts {
            started: plan.deadline.map(|_| Instant::now()),
            made: 1,
            previous_delay: plan.backoff.initial(),
        }
    }

    /// The timeout for the attempt about to start: the per-attempt timeout, shortened to what is
    /// left of the deadline. `None` when neither is set.
    #[inline]
    pub(crate) fn attempt_timeout(&self, plan: &Plan) -> Option<Duration> {
        let left = match (plan.deadline, self.started) {
            (Some(deadline), Some(started)) => Some(deadline.saturating_sub(started.elapsed())),
            _ => None,
        };
        match (plan.attempt_timeout, left) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        }
    }

    /// Decides what follows a failed attempt, charging the budget and recording metrics, and
    /// calls the hook and logs when it decides to retry. `repeatable` is false when the request
    /// cannot be sent again.
    pub(crate) fn on_failure<C, E>(
        &mut self,
        plan: &Plan,
        shared: Option<&Shared>,
        classifier: &C,
        failure: &Failure<E>,
        repeatable: bool,
    ) -> Decision
    where
        C: Classify<E>,
        E: fmt::Display,
    {
        let (class, retry_after) = match failure {
            Failure::Error(e) => (classifier.classify(e), classifier.retry_after(e)),
            Failure::TimedOut(_) => (ErrorClass::Transient, None),
        };
        self.judge(plan, shared, class, retry_after, repeatable, failure)
    }

    /// As [`Self::on_failure`], for a response its classifier asked to retry.
    pub(crate) fn on_response(
        &mut self,
        plan: &Plan,
        shared: Option<&Shared>,
        retry_after: Option<Duration>,
        repeatable: bool,
    ) -> Decision {
        self.judge(
            plan,
            shared,
            ErrorClass::Transient,
            retry_after,
            repeatable,
            &"response classified as retryable",
        )
    }

    fn judge(
        &mut self,
        plan: &Plan,
        shared: Option<&Shared>,
        class: ErrorClass,
        retry_after: Option<Duration>,
        repeatable: bool,
        failure: &dyn fmt::Display,
    ) -> Decision {
        let decision = if repeatable || !class.is_retryable() {
            self.decide(plan, shared, class, retry_after)
        } else {
            Decision::GiveUp(GiveUpReason::NotRepeatable)
        };
        let name = shared.map_or("default", |s| &*s.name);
        let metrics = shared.and_then(|s| s.metrics.as_ref());
        match decision {
            Decision::Retry(delay) => {
                if let Some(m) = metrics {
                    m.retries.increment(1);
                    m.attempts.increment(1);
                }
                tracing::debug!(
                    policy = name,
                    attempt = self.made,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %failure,
                    "retrying"
                );
                if let Some(hook) = shared.and_then(|s| s.on_retry.as_ref()) {
                    hook(&RetryEvent {
                        policy: name,
                        attempt: self.made,
                        delay,
                        class,
                        failure,
                    });
                }
                self.made += 1;
            }
            Decision::GiveUp(reason) => {
                if let Some(m) = metrics {
                    let index = GiveUpReason::ALL
                        .iter()
                        .position(|r| *r == reason)
                        .unwrap_or(0);
                    m.give_ups[index].increment(1);
                    if reason == GiveUpReason::Budget {
                        m.budget_exhausted.increment(1);
                    }
                }
                if reason == GiveUpReason::Permanent {
                    tracing::debug!(policy = name, attempts = self.made, error = %failure, "not retrying a permanent error");
                } else {
                    tracing::warn!(policy = name, attempts = self.made, reason = reason.as_str(), error = %failure, "giving up");
                }
            }
        }
        decision
    }

    fn decide(
        &mut self,
        plan: &Plan,
        shared: Option<&Shared>,
        class: ErrorClass,
        retry_after: Option<Duration>,
    ) -> Decision {
        if !class.is_retryable() {
            return Decision::GiveUp(GiveUpReason::Permanent);
        }
        if self.made > plan.max_retries {
            return Decision::GiveUp(GiveUpReason::Exhausted);
        }
        let mut delay = match shared.and_then(|s| s.rng.as_ref()) {
            Some(rng) => plan.backoff.delay(self.made, self.previous_delay, rng),
            None => THREAD_RNG.with(|rng| plan.backoff.delay(self.made, self.previous_delay, rng)),
        };
        if let Some(wait) = retry_after {
            match plan.retry_after {
                RetryAfterPolicy::Honor => delay = delay.max(wait),
                RetryAfterPolicy::HonorUpTo(limit) if wait <= limit => delay = delay.max(wait),
                RetryAfterPolicy::HonorUpTo(_) | RetryAfterPolicy::FailFast => {
                    return Decision::GiveUp(GiveUpReason::RetryAfter);
                }
                RetryAfterPolicy::Ignore => {}
            }
        }
        if let (Some(deadline), Some(started)) = (plan.deadline, self.started) {
            // A retry whose wait ends at or past the deadline could not run at all.
            if started.elapsed() + delay >= deadline {
                return Decision::GiveUp(GiveUpReason::Deadline);
            }
        }
        if let Some(budget) = shared.and_then(|s| s.budget.as_ref()) {
            if !budget.try_withdraw() {
                return Decision::GiveUp(GiveUpReason::Budget);
            }
        }
        self.previous_delay = delay;
        Decision::Retry(delay)
    }
}
