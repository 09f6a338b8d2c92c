//! Tiers and the sliding-window limiter.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::{ProptestConfig, prop_assert, proptest};
use sssonector_core::ManualClock;
use sssonector_ratelimit::{ConfigError, Quota, SlidingWindowLimiter, TieredLimiter};

#[test]
fn tiers_assign_and_fall_back_to_the_default() {
    let limiter = TieredLimiter::<&'static str>::builder()
        .tier(
            "free",
            vec![Quota::per_hour(1).unwrap().with_burst(1).unwrap()],
        )
        .tier(
            "pro",
            vec![Quota::per_hour(1).unwrap().with_burst(3).unwrap()],
        )
        .build()
        .unwrap();
    assert_eq!(
        limiter.tier_of(&"a"),
        "free",
        "the first tier is the default"
    );
    limiter.assign("a", "pro").unwrap();
    assert_eq!(limiter.tier_of(&"a"), "pro");
    for _ in 0..3 {
        limiter.check_key(&"a").unwrap();
    }
    assert!(limiter.check_key(&"a").is_err());
    limiter.check_key(&"b").unwrap();
    assert!(limiter.check_key(&"b").is_err());
    assert_eq!(
        limiter.assign("c", "gold"),
        Err(ConfigError::UnknownTier("gold".into()))
    );
    limiter.unassign(&"a");
    assert_eq!(limiter.tier_of(&"a"), "free");
    assert_eq!(limiter.quotas("pro").unwrap()[0].burst(), 3);
    assert!(TieredLimiter::<u8>::builder().build().is_err());
    assert!(
        TieredLimiter::<u8>::builder()
            .tier("x", vec![Quota::per_second(1).unwrap()])
            .default_tier("y")
            .build()
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Within any fixed window the limiter never admits more than its limit, and the admitted
    /// count over any full window length never exceeds twice the limit.
    #[test]
    fn sliding_window_respects_its_limit(
        ops in proptest::collection::vec((0u64..400, 1u64..4), 1..300),
        limit in 1u64..30,
    ) {
        let clock = ManualClock::new();
        let window_ms = 1000u64;
        let l = SlidingWindowLimiter::with_clock(limit, Duration::from_millis(window_ms), Arc::new(clock.clone())).unwrap();
        let mut now = 0u64;
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        for (advance, cost) in ops {
            clock.advance(Duration::from_millis(advance));
            now += advance;
            if l.check_n(cost).is_ok() {
                admitted.push((now, cost));
            }
            let this_window: u64 = admitted.iter().filter(|(t, _)| t / window_ms == now / window_ms).map(|(_, c)| c).sum();
            prop_assert!(this_window <= limit, "{} in one fixed window, limit {}", this_window, limit);
            let sliding: u64 = admitted.iter().filter(|(t, _)| *t + window_ms > now).map(|(_, c)| c).sum();
            prop_assert!(sliding <= 2 * limit, "{} in the last window, limit {}", sliding, limit);
        }
    }
}
