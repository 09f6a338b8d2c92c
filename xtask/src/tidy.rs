//! Tidy checks, run as tests (`cargo test -p xtask`, part of `cargo xtask ci`): rules review
//! kept having to enforce by hand, checked over every file git tracks.
//!
//! - Every lint allowance says why: `#[allow(…, reason = "…")]` (or `expect`).
//! - Links in Markdown files point inside the repository, at files that exist; nothing refers
//!   to the directories beside it.
//! - Published docs (READMEs, the CHANGELOG, `//!` and `///` comments) describe the code as it
//!   is, not the history of the work that produced it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// The files git tracks, relative to the root, with their text (binary files left out).
fn tracked(extensions: &[&str]) -> Vec<(PathBuf, String)> {
    let root = root();
    let out = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output()
        .expect("git ls-files (the tidy checks read the files git tracks)");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|f| extensions.iter().any(|e| f.ends_with(e)))
        .filter_map(|f| {
            let text = std::fs::read_to_string(root.join(f)).ok()?;
            Some((PathBuf::from(f), text))
        })
        .collect()
}

/// The lint attributes in `text` (`#[allow(`, `#![expect(`…) without a `reason`, as
/// `(line, attribute)`.
fn allowances_without_reason(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for opener in ["#[allow(", "#![allow(", "#[expect(", "#![expect("] {
        let mut from = 0;
        while let Some(at) = text[from..].find(opener).map(|i| from + i) {
            from = at + opener.len();
            // The attribute runs to the parenthesis that closes the opener's.
            let mut depth = 1;
            let end = text[from..]
                .char_indices()
                .find_map(|(i, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(from + i)
                })
                .unwrap_or(text.len());
            let attribute = &text[at..=end.min(text.len() - 1)];
            // Mentions of the syntax in comments and strings are not attributes.
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let before = text[line_start..at].trim();
            if before.is_empty() && !attribute.contains("reason") {
                let line = text[..at].matches('\n').count() + 1;
                found.push((line, attribute.to_owned()));
            }
        }
    }
    found
}

/// The targets of Markdown links in `text`: `[label](target)`, without `#anchor`s, web
/// addresses and e-mail.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split('#').next().unwrap_or("").trim();
            let external = ["http://", "https://", "mailto:"]
                .iter()
                .any(|p| target.starts_with(p));
            if !target.is_empty() && !external {
                targets.push((n + 1, target.to_owned()));
            }
            rest = &rest[end..];
        }
    }
    targets
}

/// Phrases that tell how the code got here rather than what it is.
const HISTORY: &[&str] = &[
    "round 1",
    "round 2",
    "round 3",
    "numbered round",
    "before the fix",
    "after the fix",
];

/// More such phrases, for docs other than the CHANGELOG (whose entries say what changed).
const HISTORY_OUTSIDE_CHANGELOG: &[&str] =
    &["previously", "used to be", "than before", "went from"];

/// Whether `line` gives a figure from before ("… (was 0.72×)").
fn was_a_figure(line: &str) -> bool {
    line.match_indices("was ").any(|(at, _)| {
        line[at + 4..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// The lines of published docs in `text` (all of a Markdown file; `//!` and `///` lines of a
/// Rust file), with their numbers.
fn published_lines(path: &Path, text: &str) -> Vec<(usize, String)> {
    let markdown = path.extension().is_some_and(|e| e == "md");
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            markdown || t.starts_with("//!") || t.starts_with("///")
        })
        .map(|(n, l)| (n + 1, l.to_lowercase()))
        .collect()
}

/// Whether `path` is published with a crate, or read by users as the project's docs.
fn is_published(path: &Path) -> bool {
    let s = path.to_string_lossy();
    let in_crate = s.starts_with("crates/") && !s.contains("/tests/") && !s.contains("/benches/");
    let top_doc = !s.contains('/') && s.ends_with(".md");
    in_crate || top_doc || s.starts_with("docs/")
}

#[test]
fn every_lint_allowance_says_why() {
    let mut bad = Vec::new();
    for (path, text) in tracked(&[".rs"]) {
        for (line, attribute) in allowances_without_reason(&text) {
            bad.push(format!("{}:{line}: {attribute}", path.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "lint allowances without a reason (write `#[allow(lint, reason = \"why\")]`):\n{}",
        bad.join("\n")
    );
}

#[test]
fn links_stay_in_the_repository_and_resolve() {
    let root = root().canonicalize().unwrap();
    let mut bad = Vec::new();
    for (path, text) in tracked(&[".md", ".rs", ".toml"]) {
        for (n, line) in text.lines().enumerate() {
            // Spelled in two pieces so that this file does not match itself.
            if line.contains(concat!("..", "/shared")) {
                bad.push(format!(
                    "{}:{}: refers to a directory outside the repository",
                    path.display(),
                    n + 1
                ));
            }
        }
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let dir = root.join(&path).parent().unwrap().to_path_buf();
        for (line, target) in link_targets(&text) {
            match dir.join(&target).canonicalize() {
                Ok(resolved) if resolved.starts_with(&root) => {}
                Ok(_) => bad.push(format!(
                    "{}:{line}: `{target}` is outside the repository",
                    path.display()
                )),
                Err(_) => bad.push(format!(
                    "{}:{line}: `{target}` does not exist",
                    path.display()
                )),
            }
        }
    }
    assert!(bad.is_empty(), "links:\n{}", bad.join("\n"));
}

#[test]
fn published_docs_describe_the_present() {
    let mut bad = Vec::new();
    for (path, text) in tracked(&[".md", ".rs"]) {
        if !is_published(&path) {
            continue;
        }
        let changelog = path == Path::new("CHANGELOG.md");
        for (line, lower) in published_lines(&path, &text) {
            let more = if changelog {
                &[][..]
            } else {
                HISTORY_OUTSIDE_CHANGELOG
            };
            if let Some(phrase) = HISTORY.iter().chain(more).find(|p| lower.contains(*p)) {
                bad.push(format!("{}:{line}: \"{phrase}\"", path.display()));
            } else if !changelog && was_a_figure(&lower) {
                bad.push(format!(
                    "{}:{line}: an earlier figure (\"was N\")",
                    path.display()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "published docs telling the history of the work (it belongs in commit messages):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checks_find_what_they_look_for() {
    let text = "#[allow(dead_code)]\nfn a() {}\n#[allow(clippy::x, reason = \"why\")]\n// #[allow(y)]\n#![expect(\n    z\n)]\n";
    let found = allowances_without_reason(text);
    assert_eq!(
        found.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [1, 5],
        "{found:?}"
    );
    let md = "see [a](b.md#x), [web](https://x.y) and [c](../c.md)\n```\n[not](a link)\n```\n";
    assert_eq!(
        link_targets(md),
        [(1, "b.md".to_owned()), (1, "../c.md".to_owned())]
    );
    assert!(was_a_figure("0.62× deadpool's; was 0.72–0.86×"));
    assert!(!was_a_figure("the window was grown to 16 MiB"));
    assert!(is_published(Path::new("crates/tunnel/README.md")));
    assert!(!is_published(Path::new("crates/tunnel/tests/link.rs")));
}
