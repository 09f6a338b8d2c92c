//! Errors returned when building a pool or taking a buffer from it.

/// Why a buffer could not be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// Taking the buffer would have put the pool over its byte budget.
    #[error(
        "buffer pool budget exhausted: {requested} bytes requested, {in_use} of {budget} bytes in use"
    )]
    BudgetExhausted {
        /// Bytes the request would have charged (its size class, or its length if oversized).
        requested: usize,
        /// Bytes pooled and outstanding when the request was refused.
        in_use: usize,
        /// The pool's budget.
        budget: usize,
    },
    /// The request is larger than the whole budget, so it could never be served.
    #[error("{requested} bytes requested, more than the pool's whole budget of {budget} bytes")]
    TooLarge {
        /// Bytes requested.
        requested: usize,
        /// The pool's budget.
        budget: usize,
    },
}

/// An invalid pool configuration, found when the pool is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No size classes were given.
    #[error("size classes must not be empty")]
    NoClasses,
    /// A size class of zero bytes.
    #[error("size class 0 is invalid: classes must be at least 1 byte")]
    ZeroClass,
    /// The same size class was given twice.
    #[error("size class {0} is listed twice")]
    DuplicateClass(usize),
    /// A size class too large to describe on this target (above 2^56 bytes, or 16 MiB on
    /// 32-bit targets).
    #[error("size class {0} is too large for this target")]
    ClassTooLarge(usize),
    /// More size classes than the pool supports.
    #[error("{0} size classes given, at most 32 are supported")]
    TooManyClasses(usize),
    /// The budget cannot hold even one buffer of the largest class.
    #[error("budget of {budget} bytes is smaller than the largest size class ({largest} bytes)")]
    BudgetTooSmall {
        /// The budget given.
        budget: usize,
        /// The largest size class.
        largest: usize,
    },
    /// The pool's name is empty.
    #[error("pool name must not be empty")]
    EmptyName,
}
