//! `RateLimit-Policy`, `RateLimit` and `Retry-After` header values from limiter state.
//!
//! The `RateLimit` fields follow the IETF HTTPAPI draft "RateLimit header fields for HTTP"
//! (structured fields: `"name";q=100;w=60` and `"name";r=42;t=7`). Values are plain strings,
//! so any HTTP library can use them.

use std::time::Duration;

use sssonector_core::RateLimited;

use crate::quota::Quota;

/// The `RateLimit-Policy` value for `quota` under policy `name`: the quota (`q`) per window
/// (`w`, whole seconds, at least 1).
///
/// # Examples
///
/// ```
/// use sssonector_ratelimit::{headers, Quota};
///
/// let q = Quota::per_minute(100)?;
/// assert_eq!(headers::rate_limit_policy("default", &q), "\"default\";q=100;w=60");
/// # Ok::<(), sssonector_ratelimit::ConfigError>(())
/// ```
pub fn rate_limit_policy(name: &str, quota: &Quota) -> String {
    format!(
        "{};q={};w={}",
        sf_string(name),
        quota.count(),
        ceil_secs(quota.period()).max(1)
    )
}

/// The `RateLimit` value: `remaining` units (`r`) of policy `name`, fully reset in `reset` (`t`,
/// whole seconds rounded up).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_ratelimit::headers;
///
/// assert_eq!(
///     headers::rate_limit("default", 42, Duration::from_millis(6_100)),
///     "\"default\";r=42;t=7"
/// );
/// ```
pub fn rate_limit(name: &str, remaining: u64, reset: Duration) -> String {
    format!("{};r={remaining};t={}", sf_string(name), ceil_secs(reset))
}

/// The `Retry-After` value (delay-seconds, rounded up so a client never retries early) for a
/// refusal.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sssonector_ratelimit::{headers, RateLimited};
///
/// assert_eq!(headers::retry_after(&RateLimited::new(Duration::from_millis(1_200))), "2");
/// ```
pub fn retry_after(limited: &RateLimited) -> String {
    ceil_secs(limited.retry_after).to_string()
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A structured-field string: quoted, with `\` and `"` escaped and anything outside printable
/// ASCII dropped (the format allows nothing else).
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_windows_rounded_up() {
        let q = Quota::new(5, Duration::from_millis(1500)).unwrap();
        assert_eq!(
            rate_limit_policy("a\"b\\c\u{e9}", &q),
            r#""a\"b\\c";q=5;w=2"#
        );
        assert_eq!(rate_limit("x", 0, Duration::ZERO), "\"x\";r=0;t=0");
    }
}
