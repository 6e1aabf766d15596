//! DNS name patterns, as policies write them: Cilium's `matchName`/`matchPattern` and the
//! `domainNames` of ClusterNetworkPolicy. Names compare case-insensitively and without a
//! trailing dot. Pure.

use std::fmt;

/// A compiled name pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamePattern {
    /// What the policy wrote, for messages.
    text: String,
    /// One or more whole labels come before `labels` (Cilium's `**.` prefix, the `*.` prefix
    /// of `domainNames`).
    subdomains: bool,
    /// The labels to match, lowercase; in a label, `*` stands for any run of letters, digits,
    /// `-` and `_` (never a dot). Empty with `subdomains` false: every name.
    labels: Vec<String>,
    /// Whether `*` in a label is a wildcard (Cilium's `matchPattern`), or a literal.
    globs: bool,
}

/// Why a name or pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DNS {what} {value:?}: {reason}")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn normalize(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

fn label_chars_ok(label: &str, star: bool) -> bool {
    !label.is_empty()
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (star && c == '*'))
}

impl NamePattern {
    /// Cilium `matchName`: exactly this name.
    pub fn cilium_name(s: &str) -> Result<Self, NameError> {
        let n = normalize(s);
        if n.split('.').any(|l| !label_chars_ok(l, false)) {
            return Err(NameError {
                what: "matchName",
                value: s.to_owned(),
                reason: "expected labels of letters, digits, '-' and '_' separated by dots",
            });
        }
        Ok(Self {
            text: s.to_owned(),
            subdomains: false,
            labels: n.split('.').map(str::to_owned).collect(),
            globs: false,
        })
    }

    /// Cilium `matchPattern`: `*` matches any run of letters, digits, `-` and `_` within one
    /// label; a leading `**.` matches one or more whole labels; `*` alone matches every name.
    pub fn cilium_pattern(s: &str) -> Result<Self, NameError> {
        let n = normalize(s);
        let bad = |reason| NameError {
            what: "matchPattern",
            value: s.to_owned(),
            reason,
        };
        if n.chars().all(|c| c == '*') && !n.is_empty() {
            return Ok(Self {
                text: s.to_owned(),
                subdomains: false,
                labels: Vec::new(),
                globs: true,
            });
        }
        let (subdomains, rest) = match n.strip_prefix("**.") {
            Some(rest) => (true, rest),
            None => (false, n.as_str()),
        };
        if rest.split('.').any(|l| !label_chars_ok(l, true)) {
            return Err(bad(
                "expected labels of letters, digits, '-', '_' and '*' separated by dots",
            ));
        }
        Ok(Self {
            text: s.to_owned(),
            subdomains,
            labels: rest.split('.').map(str::to_owned).collect(),
            globs: true,
        })
    }

    /// A `domainNames` entry: an exact name, or `*.` and a name for one or more labels
    /// before it.
    pub fn domain_name(s: &str) -> Result<Self, NameError> {
        let n = normalize(s);
        let (subdomains, rest) = match n.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, n.as_str()),
        };
        if rest.split('.').count() < 2 || rest.split('.').any(|l| !label_chars_ok(l, false)) {
            return Err(NameError {
                what: "domain name",
                value: s.to_owned(),
                reason: "expected a name of two or more labels, optionally after '*.'",
            });
        }
        Ok(Self {
            text: s.to_owned(),
            subdomains,
            labels: rest.split('.').map(str::to_owned).collect(),
            globs: false,
        })
    }

    /// Whether the name matches.
    pub fn matches(&self, name: &str) -> bool {
        if self.labels.is_empty() {
            return true;
        }
        let name = normalize(name);
        let labels: Vec<&str> = name.split('.').collect();
        let n = self.labels.len();
        let fits = if self.subdomains {
            labels.len() > n
        } else {
            labels.len() == n
        };
        fits && labels[labels.len() - n..]
            .iter()
            .zip(&self.labels)
            .all(|(l, p)| {
                if self.globs {
                    glob(p.as_bytes(), l.as_bytes())
                } else {
                    *l == p
                }
            })
    }

    /// Whether any of the names matches.
    pub fn matches_any(&self, names: &[String]) -> bool {
        names.iter().any(|n| self.matches(n))
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*` matches any run of bytes (the label has no dots); other bytes match themselves. Greedy
/// with one backtrack point, so linear in practice whatever the number of stars.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &NamePattern, names: &[&str]) -> Vec<bool> {
        names.iter().map(|n| p.matches(n)).collect()
    }

    #[test]
    fn cilium_match_name_is_exact_case_insensitive_and_ignores_the_trailing_dot() {
        let p = NamePattern::cilium_name("API.pay.example.").unwrap();
        assert_eq!(
            m(
                &p,
                &[
                    "api.pay.example",
                    "api.pay.example.",
                    "x.api.pay.example",
                    "pay.example"
                ]
            ),
            [true, true, false, false]
        );
        assert!(NamePattern::cilium_name("a b.example").is_err());
    }

    #[test]
    fn cilium_star_stays_within_one_label_and_double_star_prefix_spans_labels() {
        let one = NamePattern::cilium_pattern("*.example.com").unwrap();
        assert_eq!(
            m(&one, &["a.example.com", "example.com", "a.b.example.com"]),
            [true, false, false]
        );
        let inside = NamePattern::cilium_pattern("*example.com").unwrap();
        assert_eq!(
            m(&inside, &["example.com", "myexample.com", "my.example.com"]),
            [true, true, false]
        );
        let many = NamePattern::cilium_pattern("**.example.com").unwrap();
        assert_eq!(
            m(&many, &["a.example.com", "a.b.example.com", "example.com"]),
            [true, true, false]
        );
        let all = NamePattern::cilium_pattern("*").unwrap();
        assert_eq!(m(&all, &["a", "a.b.c"]), [true, true]);
        let stars = NamePattern::cilium_pattern("a*b*c.example").unwrap();
        assert_eq!(
            m(
                &stars,
                &[
                    "abc.example",
                    "axxbyyc.example",
                    "acb.example",
                    "abcd.example"
                ]
            ),
            [true, true, false, false]
        );
        // Many stars against a long label stay quick (no exponential backtracking).
        let many = NamePattern::cilium_pattern("*a*a*a*a*a*a*a*b.example").unwrap();
        assert!(!many.matches(&format!("{}.example", "a".repeat(63))));
        assert!(NamePattern::cilium_pattern("a..example").is_err());
    }

    #[test]
    fn domain_names_wildcard_is_one_or_more_whole_labels() {
        let p = NamePattern::domain_name("*.kubernetes.io").unwrap();
        assert_eq!(
            m(
                &p,
                &[
                    "www.kubernetes.io",
                    "latest.blog.kubernetes.io",
                    "kubernetes.io",
                    "wikipedia.org"
                ]
            ),
            [true, true, false, false]
        );
        let exact = NamePattern::domain_name("kubernetes.io").unwrap();
        assert_eq!(
            m(&exact, &["kubernetes.io", "www.kubernetes.io"]),
            [true, false]
        );
        assert!(NamePattern::domain_name("localhost").is_err());
    }
}
