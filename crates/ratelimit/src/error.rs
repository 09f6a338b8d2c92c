//! Errors: invalid configuration, and refusals.

use std::fmt;

use sssonector_core::RateLimited;

/// A limiter configuration that cannot work.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A quota with a zero count or period admits nothing.
    #[error("a quota needs a count and a period above zero")]
    ZeroRate,
    /// A zero burst would refuse every request.
    #[error("a quota's burst must be at least 1")]
    ZeroBurst,
    /// A limiter needs at least one quota.
    #[error("a limiter needs at least one quota")]
    NoQuota,
    /// A keyed limiter's key cap or shard count is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A ratio outside its range.
    #[error("{field} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The setting at fault.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The smallest allowed value.
        min: f64,
        /// The largest allowed value.
        max: f64,
    },
    /// An adaptive controller's floor is above its ceiling.
    #[error("adaptive floor {floor} is above ceiling {ceiling}")]
    FloorAboveCeiling {
        /// The floor, per second.
        floor: f64,
        /// The ceiling, per second.
        ceiling: f64,
    },
    /// A tier named in a mapping does not exist.
    #[error("unknown tier `{0}`")]
    UnknownTier(String),
    /// A Redis store's URL or TLS settings are unusable.
    #[error("redis store {store}: {reason}")]
    Redis {
        /// The store's URL, its password hidden.
        store: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a weighted check was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// Over the limit now; capacity returns after `retry_after`.
    Limited(RateLimited),
    /// The cost is larger than the burst, so it can never be admitted at once.
    InsufficientCapacity {
        /// The cost asked for.
        requested: u64,
        /// The largest cost the tightest quota admits.
        burst: u64,
    },
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Limited(l) => l.fmt(f),
            Rejected::InsufficientCapacity { requested, burst } => write!(
                f,
                "a cost of {requested} can never be admitted: the burst is {burst}"
            ),
        }
    }
}

impl std::error::Error for Rejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Rejected::Limited(l) => Some(l),
            Rejected::InsufficientCapacity { .. } => None,
        }
    }
}

impl From<RateLimited> for Rejected {
    fn from(l: RateLimited) -> Self {
        Rejected::Limited(l)
    }
}
