//! Arbitrary text into the access-policy parser and checker (a `[policy]` section: rules,
//! matchers and globs, networks, tiers, session limits): problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for problem in sssonector::fuzzing::policy(&text) {
        assert!(!problem.is_empty(), "a problem with no message");
    }
});
