//! Arbitrary text into the configuration parser and checker, as `sssonector check-config`
//! reads a file: problems or a parse error, never a panic. After the first NUL come
//! environment overrides, one `NAME=VALUE` a line (`SSSONECTOR_SERVER__LISTEN=…`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (file, env) = text.split_once('\0').unwrap_or((&text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    for problem in sssonector::fuzzing::config(file, env) {
        assert!(!problem.is_empty(), "a problem with no message");
    }
});
