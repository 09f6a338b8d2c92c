//! Entry points for the fuzz targets (`fuzz/`): the configuration and policy parsers, fed text
//! as `check-config` would read it. Not a stable API.

use std::path::Path;

use crate::config;
use crate::policy::{Context, PolicySection};

/// Parses `text` as a configuration file with the environment overrides `env`
/// (`SSSONECTOR_…` pairs) and checks it as `check-config` does. Returns every problem found,
/// a parse error as the only one; empty for a valid configuration. A `policy.file` is not read.
pub fn config(text: &str, env: Vec<(String, String)>) -> Vec<String> {
    match config::from_text(text, Path::new("/fuzz/sssonector.toml"), env) {
        Ok((mut config, _)) => {
            if let Some(policy) = config.policy.as_mut() {
                policy.file = None;
            }
            config.check()
        }
        Err(e) => vec![e.to_string()],
    }
}

/// Parses `text` as a `[policy]` section and builds it against forwarding rules `web` and `db`
/// (forward mode), then against none (TUN mode). Returns the problems of both builds, a parse
/// error as the only one. A `file` key is dropped, not read.
pub fn policy(text: &str) -> Vec<String> {
    let mut section: PolicySection = match toml::from_str(text) {
        Ok(section) => section,
        Err(e) => return vec![e.to_string()],
    };
    section.file = None;
    let forwards = ["web".to_owned(), "db".to_owned()];
    let mut problems = Vec::new();
    for forwards in [Some(&forwards[..]), None] {
        if let Err(found) = section.build(Context {
            forwards,
            base: Path::new("/fuzz"),
        }) {
            problems.extend(found);
        }
    }
    problems
}
