//! Istio's string match forms, compiled once from config and matched without allocating.
//!
//! Istio (`AuthorizationPolicy` principals, namespaces, hosts, header values, …) accepts four forms
//! of a string, and nothing else:
//!
//! | config   | matches                                                            |
//! |----------|--------------------------------------------------------------------|
//! | `abc`    | exactly `abc`                                                      |
//! | `abc*`   | strings starting with `abc`                                        |
//! | `*abc`   | strings ending with `abc`                                          |
//! | `*`      | any non-empty string (or any string at all: [`Presence::AllowEmpty`]) |
//!
//! A `*` anywhere else (`a*b`, `**`, `*a*`) is not a glob: Istio would pass it through as a
//! literal, which silently never matches what the author meant, so we reject it at config time.
//!
//! [`MatchOptions`] adds what some fields need:
//! - `ignore_case`: ASCII case folding (Istio's `hosts` use Envoy's `ignore_case`, which is ASCII).
//! - `prefix`: a fixed prefix prepended to the pattern, as Istio does for `principals`
//!   (`ns/a/sa/b` ⇒ `spiffe://ns/a/sa/b`). Istio translates `*x` with a prefix into the regex
//!   `spiffe://.*x`, so the prefix and the suffix must not overlap; and it translates a bare `*`
//!   into `.+` *without* the prefix, so presence ignores the prefix.
//! - `presence`: Istio turns `*` on a header into Envoy's `present_match`, which matches an empty
//!   value too; everywhere else `*` means non-empty.
//!
//! An empty pattern is rejected: it is almost always a templating mistake, and `*` (with the
//! caller's presence semantics) says what was meant.

use crate::ConfigError;

/// What a bare `*` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Presence {
    /// `*` matches any non-empty string (Istio's `.+`).
    #[default]
    NonEmpty,
    /// `*` matches any string, the empty one included (Envoy's `present_match`, for headers).
    AllowEmpty,
}

/// How a field's patterns are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatchOptions<'a> {
    pub ignore_case: bool,
    /// Prepended to exact, prefix and suffix patterns (not to `*`).
    pub prefix: &'a str,
    pub presence: Presence,
}

impl<'a> MatchOptions<'a> {
    /// Case-sensitive, no prefix, `*` = non-empty.
    pub const fn new() -> Self {
        Self {
            ignore_case: false,
            prefix: "",
            presence: Presence::NonEmpty,
        }
    }

    /// Match ASCII letters case-insensitively.
    pub const fn ignore_case(mut self) -> Self {
        self.ignore_case = true;
        self
    }

    /// Prepend `prefix` to exact, prefix and suffix patterns.
    pub const fn prefix(mut self, prefix: &'a str) -> Self {
        self.prefix = prefix;
        self
    }

    /// Let `*` match the empty string too.
    pub const fn allow_empty(mut self) -> Self {
        self.presence = Presence::AllowEmpty;
        self
    }
}

/// The compiled form of one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchKind {
    /// The whole string (fixed prefix included).
    Exact(String),
    /// A leading part (fixed prefix included).
    Prefix(String),
    /// Starts with `prefix` and, after it, ends with `suffix` (the two do not overlap).
    Suffix { prefix: String, suffix: String },
    /// Any string; `allow_empty` says whether the empty string counts.
    Presence { allow_empty: bool },
}

/// One compiled Istio string pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringMatcher {
    kind: MatchKind,
    ignore_case: bool,
}

impl StringMatcher {
    /// Compile `pattern` (the value of config field `field`, named in the error) under `options`.
    pub fn parse(
        field: &str,
        pattern: &str,
        options: &MatchOptions<'_>,
    ) -> Result<Self, ConfigError> {
        let kind = if pattern == "*" {
            MatchKind::Presence {
                allow_empty: options.presence == Presence::AllowEmpty,
            }
        } else if pattern.is_empty() {
            return Err(ConfigError::new(
                field,
                "empty pattern; use `*` to match any value",
            ));
        } else if let Some(head) = pattern.strip_suffix('*').filter(|h| !h.contains('*')) {
            MatchKind::Prefix(format!("{}{head}", options.prefix))
        } else if let Some(tail) = pattern.strip_prefix('*').filter(|t| !t.contains('*')) {
            MatchKind::Suffix {
                prefix: options.prefix.to_string(),
                suffix: tail.to_string(),
            }
        } else if pattern.contains('*') {
            return Err(ConfigError::new(
                field,
                format!(
                    "`{pattern}`: `*` is only allowed alone, as the last character (prefix) or as \
                     the first character (suffix)"
                ),
            ));
        } else {
            MatchKind::Exact(format!("{}{pattern}", options.prefix))
        };
        Ok(Self {
            kind,
            ignore_case: options.ignore_case,
        })
    }

    /// The compiled pattern.
    pub fn kind(&self) -> &MatchKind {
        &self.kind
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        self.matches_bytes(value.as_bytes())
    }

    /// Whether `value` matches; for header values, which need not be UTF-8.
    pub fn matches_bytes(&self, value: &[u8]) -> bool {
        match &self.kind {
            MatchKind::Exact(s) => self.eq(value, s.as_bytes()),
            MatchKind::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| self.eq(head, p.as_bytes())),
            MatchKind::Suffix { prefix, suffix } => {
                // `prefix.*suffix`: the two parts must fit side by side, without overlapping.
                let Some(rest) = value.get(prefix.len()..) else {
                    return false;
                };
                let head_ok = value
                    .get(..prefix.len())
                    .is_some_and(|h| self.eq(h, prefix.as_bytes()));
                let tail_ok = rest
                    .len()
                    .checked_sub(suffix.len())
                    .and_then(|start| rest.get(start..))
                    .is_some_and(|t| self.eq(t, suffix.as_bytes()));
                head_ok && tail_ok
            }
            MatchKind::Presence { allow_empty } => *allow_empty || !value.is_empty(),
        }
    }

    fn eq(&self, a: &[u8], b: &[u8]) -> bool {
        if self.ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }
}

/// Compile a list of patterns, naming each failing one as `field[i]`; e.g. `principals[2]`.
pub fn parse_list(
    field: &str,
    patterns: &[String],
    options: &MatchOptions<'_>,
) -> Result<Vec<StringMatcher>, ConfigError> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| StringMatcher::parse(&format!("{field}[{i}]"), p, options))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn m(pattern: &str) -> StringMatcher {
        StringMatcher::parse("f", pattern, &MatchOptions::new()).unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn exact() {
        let x = m("abc");
        assert_eq!(x.kind(), &MatchKind::Exact("abc".into()));
        assert!(x.matches("abc"));
        assert!(!x.matches("abcd"));
        assert!(!x.matches("ab"));
        assert!(!x.matches("ABC"));
        assert!(!x.matches(""));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn prefix() {
        let x = m("abc*");
        assert_eq!(x.kind(), &MatchKind::Prefix("abc".into()));
        assert!(x.matches("abc"));
        assert!(x.matches("abcdef"));
        assert!(!x.matches("ab"));
        assert!(!x.matches("xabc"));
        assert!(!x.matches(""));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn suffix() {
        let x = m("*abc");
        assert!(x.matches("abc"));
        assert!(x.matches("xyzabc"));
        assert!(!x.matches("abcx"));
        assert!(!x.matches("bc"));
        assert!(!x.matches(""));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn presence_is_non_empty_by_default() {
        let x = m("*");
        assert!(x.matches("a"));
        assert!(!x.matches(""));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn presence_can_allow_empty() {
        let x = StringMatcher::parse("f", "*", &MatchOptions::new().allow_empty()).unwrap();
        assert!(x.matches(""));
        assert!(x.matches("a"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn case_folding_is_ascii_and_opt_in() {
        let opts = MatchOptions::new().ignore_case();
        let exact = StringMatcher::parse("f", "Example.COM", &opts).unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("example.co"));
        let prefix = StringMatcher::parse("f", "API.*", &opts).unwrap();
        assert!(prefix.matches("api.example.com"));
        let suffix = StringMatcher::parse("f", "*.Example.com", &opts).unwrap();
        assert!(suffix.matches("WWW.EXAMPLE.COM"));
        // Only ASCII folds: `É` and `é` stay distinct.
        let non_ascii = StringMatcher::parse("f", "É", &opts).unwrap();
        assert!(!non_ascii.matches("é"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn fixed_prefix_like_istio_principals() {
        let opts = MatchOptions::new().prefix("spiffe://");
        let exact = StringMatcher::parse("f", "cluster.local/ns/a/sa/b", &opts).unwrap();
        assert!(exact.matches("spiffe://cluster.local/ns/a/sa/b"));
        assert!(!exact.matches("cluster.local/ns/a/sa/b"));

        let prefix = StringMatcher::parse("f", "cluster.local/ns/a/*", &opts).unwrap();
        assert!(prefix.matches("spiffe://cluster.local/ns/a/sa/x"));
        assert!(!prefix.matches("cluster.local/ns/a/sa/x"));

        let suffix = StringMatcher::parse("f", "*/sa/b", &opts).unwrap();
        assert!(suffix.matches("spiffe://td/ns/a/sa/b"));
        assert!(!suffix.matches("http://td/ns/a/sa/b"));
        // `spiffe://.*//`: the suffix may not reuse the prefix's own slashes.
        let overlap = StringMatcher::parse("f", "*//", &opts).unwrap();
        assert!(!overlap.matches("spiffe://"));
        assert!(overlap.matches("spiffe:////"));

        // A bare `*` is `.+` without the prefix, as in Istio.
        let any = StringMatcher::parse("f", "*", &opts).unwrap();
        assert!(any.matches("dns:example.com"));
        assert!(!any.matches(""));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_values_and_bytes() {
        assert!(!m("a").matches_bytes(b""));
        assert!(m("*\u{ff}").matches_bytes("x\u{ff}".as_bytes()));
        assert!(m("a*").matches_bytes(b"a\xff\xfe"));
        assert!(!m("a*").matches_bytes(b"\xff"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn misplaced_stars_are_rejected_naming_the_field() {
        for bad in ["a*b", "**", "*a*", "a**", "**a", "*a*b"] {
            let err =
                StringMatcher::parse("rules[0].hosts[1]", bad, &MatchOptions::new()).unwrap_err();
            assert_eq!(err.field, "rules[0].hosts[1]", "{bad}");
            assert!(err.reason.contains(bad), "{bad}: {err}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_pattern_is_rejected() {
        let err = StringMatcher::parse("principals[0]", "", &MatchOptions::new()).unwrap_err();
        assert_eq!(err.field, "principals[0]");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lists_name_the_failing_element() {
        let ok = parse_list("hosts", &["a".into(), "*b".into()], &MatchOptions::new()).unwrap();
        assert_eq!(ok.len(), 2);
        let err =
            parse_list("hosts", &["a".into(), "b*c".into()], &MatchOptions::new()).unwrap_err();
        assert_eq!(err.field, "hosts[1]");
    }
}
