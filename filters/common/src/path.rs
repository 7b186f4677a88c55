//! Request-path normalization for authorization, built so that what is matched is unambiguous.
//!
//! Path rules have been bypassed again and again by spellings that the proxy and the application
//! read differently: `//admin`, `/a/../admin`, `/%2e%2e/admin` (CVE-2019-9901), `%2F` and `%5C`
//! (CVE-2021-29492), `#frag` and `?q` (CVE-2021-32779, CVE-2020-8595). [`normalize`] turns the raw
//! request-target into one canonical path, or refuses it:
//!
//! 1. Only origin-form targets (`/…`) are accepted; anything else ⇒ [`PathError::NotOriginForm`].
//! 2. The fragment (from the first `#`) is dropped, then the query (from the first `?`) is split
//!    off and kept verbatim for forwarding; neither takes part in matching.
//! 3. Control characters, space and DEL ⇒ [`PathError::ControlCharacter`]; a literal `\` ⇒
//!    [`PathError::Backslash`]. Istio's BASE mode turns `\` into `/`; we refuse instead, because
//!    applications disagree on whether `\` separates segments, and a request whose meaning depends
//!    on the reader must not be authorized by either reading.
//! 4. Percent-escapes, in one pass: a malformed one (`%`, `%4`, `%zz`) ⇒
//!    [`PathError::InvalidPercentEncoding`]; `%00` ⇒ [`PathError::EncodedNul`]; `%2F`/`%5C` (any
//!    case) ⇒ [`PathError::EscapedSlash`] (Envoy's `REJECT_REQUEST` for escaped slashes); escapes of
//!    unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded (RFC 3986 §6.2.2.2); every other
//!    escape is kept, with its hex digits upper-cased (§6.2.2.1) so that `%3a` and `%3A` are one
//!    path.
//! 5. Empty segments are removed (`//` ⇒ `/`, Envoy's `merge_slashes`), then `.` and `..` are
//!    resolved (RFC 3986 `remove_dot_segments`; `..` at the root stays at the root). A trailing `/`
//!    is kept, and a trailing `.`/`..` segment leaves one.
//!
//! Escapes are decoded exactly once: `%252F` becomes nothing more than `%252F`. An application that
//! decodes twice sees `/` where we saw `%2F`; that is the application's bug and out of our reach.
//!
//! The caller decides what to forward. spiffe-authz forwards the normalized path (plus the original
//! query) whenever it differs from the raw one, so that the request it authorized is the request
//! the upstream receives (the lesson of CVE-2019-9901); see [`NormalizedPath::forward_target`].

use std::fmt;

/// Why a request path is refused. Every variant is a 400 for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// No `:path` at all.
    Missing,
    /// Not `/…` (absolute-form, authority-form, `*`, empty).
    NotOriginForm,
    /// `%2F`/`%2f`/`%5C`/`%5c`: an encoded slash or backslash.
    EscapedSlash,
    /// `%00`.
    EncodedNul,
    /// `%` not followed by two hex digits.
    InvalidPercentEncoding,
    /// A literal `\`.
    Backslash,
    /// A byte below 0x21 (control characters and space) or DEL.
    ControlCharacter,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "missing :path",
            Self::NotOriginForm => "path does not start with `/`",
            Self::EscapedSlash => "escaped slash or backslash (%2F, %5C) in path",
            Self::EncodedNul => "encoded NUL (%00) in path",
            Self::InvalidPercentEncoding => "invalid percent-encoding in path",
            Self::Backslash => "backslash in path",
            Self::ControlCharacter => "control character in path",
        })
    }
}

impl std::error::Error for PathError {}

/// A request path in canonical form, and the query that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    path: String,
    query: Option<String>,
    /// Whether `path?query` differs from the raw request-target.
    changed: bool,
}

impl NormalizedPath {
    /// The canonical path: starts with `/`, no query, no fragment, no `//`, no dot segments.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query (without `?`), if the target had one.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Whether the raw target was not already `path[?query]` (so `:path` should be replaced).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// What to forward as `:path`: the canonical path and the original query (the fragment, which
    /// a client should never have sent, is dropped).
    pub fn forward_target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Normalize a raw `:path` (see the module docs for the rules).
pub fn normalize(raw: &str) -> Result<NormalizedPath, PathError> {
    let without_fragment = match raw.find('#') {
        Some(at) => raw.get(..at).unwrap_or_default(),
        None => raw,
    };
    let (path, query) = match without_fragment.find('?') {
        Some(at) => (
            without_fragment.get(..at).unwrap_or_default(),
            Some(
                without_fragment
                    .get(at.saturating_add(1)..)
                    .unwrap_or_default(),
            ),
        ),
        None => (without_fragment, None),
    };
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    // The query is forwarded as is, but a control character there is as unacceptable as in the
    // path (it can only come from a codec that let it through).
    if let Some(q) = query {
        if q.bytes().any(is_control) {
            return Err(PathError::ControlCharacter);
        }
    }
    let decoded = decode_unreserved(path)?;
    let canonical = remove_dot_segments(&decoded);
    // Unchanged iff the raw target is exactly `canonical[?query]` (no fragment, nothing decoded).
    let changed = match raw.strip_prefix(canonical.as_str()) {
        Some(rest) => match query {
            Some(q) => rest.strip_prefix('?') != Some(q),
            None => !rest.is_empty(),
        },
        None => true,
    };
    Ok(NormalizedPath {
        path: canonical,
        query: query.map(str::to_string),
        changed,
    })
}

fn is_control(b: u8) -> bool {
    b <= 0x20 || b == 0x7f
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 3 and 4: check every byte, decode escapes of unreserved characters, upper-case the rest.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i.saturating_add(1)).copied().and_then(hex_value);
                let lo = bytes.get(i.saturating_add(2)).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::InvalidPercentEncoding);
                };
                let value = hi.wrapping_mul(16).wrapping_add(lo);
                match value {
                    0 => return Err(PathError::EncodedNul),
                    b'/' | b'\\' => return Err(PathError::EscapedSlash),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        out.push('%');
                        out.push(char::from(
                            b"0123456789ABCDEF"
                                .get(usize::from(v >> 4))
                                .copied()
                                .unwrap_or(b'0'),
                        ));
                        out.push(char::from(
                            b"0123456789ABCDEF"
                                .get(usize::from(v & 0xf))
                                .copied()
                                .unwrap_or(b'0'),
                        ));
                    }
                }
                i = i.saturating_add(3);
            }
            b'\\' => return Err(PathError::Backslash),
            b if is_control(b) => return Err(PathError::ControlCharacter),
            _ => {
                // Copy the whole (possibly multi-byte UTF-8) character starting here; `i` is always
                // at a character boundary because every other branch consumes ASCII only.
                let ch = path.get(i..).and_then(|rest| rest.chars().next());
                let Some(ch) = ch else {
                    return Err(PathError::InvalidPercentEncoding);
                };
                out.push(ch);
                i = i.saturating_add(ch.len_utf8());
            }
        }
    }
    Ok(out)
}

/// Step 5: merge slashes and resolve dot segments. `path` starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    // Whether the result ends in a `/` after its last segment (`/a/`, `/a/.`, `/a/b/..`).
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                stack.pop();
                trailing_slash = true;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn n(raw: &str) -> String {
        normalize(raw).unwrap().path().to_string()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn already_canonical_is_unchanged() {
        for p in [
            "/", "/a", "/a/b", "/a/b/", "/a%20b", "/~user", "/é", "/a;b=c", "/a:b@c",
        ] {
            let np = normalize(p).unwrap();
            assert_eq!(np.path(), p);
            assert!(!np.changed(), "{p}");
            assert_eq!(np.forward_target(), p);
        }
        let q = normalize("/a?x=1&y=%2F").unwrap();
        assert_eq!(q.path(), "/a");
        assert_eq!(q.query(), Some("x=1&y=%2F"));
        assert!(!q.changed());
        assert_eq!(q.forward_target(), "/a?x=1&y=%2F");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn query_and_fragment_are_not_part_of_the_path() {
        assert_eq!(n("/admin?x"), "/admin");
        assert_eq!(n("/admin#frag"), "/admin");
        assert_eq!(n("/admin#frag?x"), "/admin");
        assert_eq!(normalize("/admin#frag?x").unwrap().query(), None);
        assert_eq!(n("/admin?"), "/admin");
        assert_eq!(normalize("/admin?").unwrap().query(), Some(""));
        let f = normalize("/a?q#f").unwrap();
        assert!(f.changed());
        assert_eq!(f.forward_target(), "/a?q");
        // The query may hold anything a path may not: it is not interpreted.
        assert_eq!(normalize("/a?%2F../\\").unwrap().query(), Some("%2F../\\"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn slashes_are_merged() {
        assert_eq!(n("//admin"), "/admin");
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(n("/a//"), "/a/");
        assert_eq!(n("//"), "/");
        assert!(normalize("//admin").unwrap().changed());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn dot_segments_are_resolved() {
        assert_eq!(n("/a/../admin"), "/admin");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/../admin"), "/admin");
        assert_eq!(n("/../../.."), "/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/."), "/");
        assert_eq!(n("/a/..b/.c"), "/a/..b/.c");
        assert_eq!(n("/a/.../b"), "/a/.../b");
        assert_eq!(n("/public/..//admin"), "/admin");
        assert_eq!(n("/a/b/../../../c"), "/c");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unreserved_escapes_are_decoded_before_dots() {
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/%2e%2e/admin"), "/admin");
        assert_eq!(n("/a/%2E%2E/admin"), "/admin");
        assert_eq!(n("/%2e/x"), "/x");
        assert_eq!(n("/%7euser%5f%2D"), "/~user_-");
        // Reserved and other escapes stay escaped, with upper-case hex.
        assert_eq!(n("/a%3ab"), "/a%3Ab");
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/%25"), "/%25");
        assert_eq!(n("/%252F"), "/%252F");
        assert_eq!(n("/%C3%A9"), "/%C3%A9");
        assert!(normalize("/a%3ab").unwrap().changed());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn escaped_slashes_are_refused() {
        for p in ["/%2Fadmin", "/%2fadmin", "/a%5Cb", "/a%5cb", "/a/%2F/b?x"] {
            assert_eq!(
                normalize(p).map(|_| ()),
                Err(PathError::EscapedSlash),
                "{p}"
            );
        }
        // Only the path counts: escapes in the query or the fragment are not interpreted.
        assert_eq!(normalize("/x?y=%2F#%2F").unwrap().path(), "/x");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn nul_and_bad_escapes_are_refused() {
        assert_eq!(normalize("/a%00b").unwrap_err(), PathError::EncodedNul);
        for p in ["/a%", "/a%4", "/a%zz", "/a%4g", "/%%41", "/a%\u{e9}"] {
            assert_eq!(
                normalize(p).unwrap_err(),
                PathError::InvalidPercentEncoding,
                "{p}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn backslash_control_and_non_origin_form_are_refused() {
        assert_eq!(normalize("/a\\b").unwrap_err(), PathError::Backslash);
        assert_eq!(normalize("\\admin").unwrap_err(), PathError::NotOriginForm);
        for p in ["/a\0b", "/a b", "/a\tb", "/a\x7fb", "/a\r\nb", "/a?b c"] {
            assert_eq!(
                normalize(p).unwrap_err(),
                PathError::ControlCharacter,
                "{p:?}"
            );
        }
        for p in ["", "*", "admin", "http://h/admin", "?x", "#f"] {
            assert_eq!(normalize(p).unwrap_err(), PathError::NotOriginForm, "{p}");
        }
        assert!(PathError::EscapedSlash.to_string().contains("%2F"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn normalizing_twice_is_a_no_op() {
        for p in ["//a/./b/../c/", "/%2e%2e//x%3a/%7e", "/a?q", "/a/b/..", "/"] {
            let once = normalize(p).unwrap();
            let twice = normalize(&once.forward_target()).unwrap();
            assert_eq!(twice.path(), once.path(), "{p}");
            assert!(!twice.changed(), "{p}");
        }
    }
}
