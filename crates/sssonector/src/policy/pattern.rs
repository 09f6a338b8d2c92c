//! Name patterns for access rules: an exact name, or a glob where `*` stands for any run of
//! characters (none included) and `?` for one.

/// One pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// Matches this text only.
    Exact(String),
    /// Matches by `*` and `?`.
    Glob(Vec<char>),
}

impl Pattern {
    /// A pattern from its text; with `fold_case`, both it and the names it is matched against
    /// are compared in ASCII lowercase (DNS names).
    pub(crate) fn new(text: &str, fold_case: bool) -> Self {
        let text = if fold_case {
            text.to_ascii_lowercase()
        } else {
            text.to_owned()
        };
        if text.contains(['*', '?']) {
            Self::Glob(text.chars().collect())
        } else {
            Self::Exact(text)
        }
    }

    /// Whether `name` matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Glob(glob) => {
                let name: Vec<char> = name.chars().collect();
                glob_match(glob, &name)
            }
        }
    }
}

/// Iterative glob matching with one backtrack point (the last `*`): linear in the common
/// case, O(pattern × name) at worst, never exponential.
fn glob_match(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some('?') => {
                p += 1;
                n += 1;
            }
            Some(c) if *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last star swallow one more character and try again.
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_and_glob() {
        let exact = Pattern::new("alice", false);
        assert!(exact.matches("alice"));
        assert!(!exact.matches("alice2"));
        assert!(!exact.matches("Alice"));
        let dns = Pattern::new("*.Corp.Example", true);
        assert!(dns.matches("db.corp.example"));
        assert!(dns.matches("a.b.corp.example"));
        assert!(!dns.matches("corp.example"));
        assert!(!dns.matches("db.corp.example.evil"));
        let spiffe = Pattern::new("spiffe://example.org/ns/prod/*", false);
        assert!(spiffe.matches("spiffe://example.org/ns/prod/sa/web"));
        assert!(!spiffe.matches("spiffe://example.org/ns/dev/sa/web"));
        let one = Pattern::new("host-?", false);
        assert!(one.matches("host-1"));
        assert!(!one.matches("host-12"));
        assert!(Pattern::new("*", false).matches(""));
        assert!(Pattern::new("a*b*c", false).matches("aXbYbZc"));
        assert!(!Pattern::new("a*b*c", false).matches("aXbYbZ"));
    }

    /// A reference matcher by plain recursion, to check the iterative one against.
    fn reference(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => reference(&p[1..], n) || (!n.is_empty() && reference(p, &n[1..])),
            (Some('?'), Some(_)) => reference(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => reference(&p[1..], &n[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(p in "[ab*?]{0,8}", n in "[ab]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let nc: Vec<char> = n.chars().collect();
            prop_assert_eq!(glob_match(&pc, &nc), reference(&pc, &nc));
        }
    }
}
