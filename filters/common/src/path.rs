//! Request-path normalization for authorization, built so that what is matched is unambiguous.
//!
//! Path rules have been bypassed again and again by spellings that the proxy and the application
//! read differently: `//admin`, `/a/../admin`, `/%2e%2e/admin` (CVE-2019-9901), `%2F` and `%5C`
//! (CVE-2021-29492), `#frag` and `?q` (CVE-2021-32779, CVE-2020-8595), and path parameters:
//! Tomcat, Jetty and Undertow drop `;params` from every segment, so `/public/..;/admin` is
//! `/admin` to them and `/public/..;/admin` to everyone else. [`normalize`] turns the raw
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
//!    case) ⇒ [`PathError::EscapedSlash`] (Envoy's `REJECT_REQUEST` for escaped slashes); `%3B`
//!    (any case) ⇒ [`PathError::PathParameter`] in every mode (whether a decoded `;` starts a
//!    parameter depends on the backend, so no reading of it is safe); escapes of unreserved
//!    characters (`ALPHA DIGIT - . _ ~`) are decoded (RFC 3986 §6.2.2.2); every other escape is
//!    kept, with its hex digits upper-cased (§6.2.2.1) so that `%3a` and `%3A` are one path.
//! 5. Path parameters, per [`PathParameters`]: with [`PathParameters::Reject`] (the default, as
//!    Spring Security's `StrictHttpFirewall`) a literal `;` anywhere in the path ⇒
//!    [`PathError::PathParameter`]; with [`PathParameters::Strip`] every segment loses everything
//!    from its first `;` (what Tomcat does), *before* dot segments are resolved, so
//!    `/public/..;/admin` is `/admin` and `/admin;x/users` is `/admin/users`. Parameter text is
//!    checked by steps 3 and 4 like the rest of the path before it is dropped.
//! 6. Empty segments are removed (`//` ⇒ `/`, Envoy's `merge_slashes`), then `.` and `..` are
//!    resolved (RFC 3986 `remove_dot_segments`; `..` at the root stays at the root). A trailing `/`
//!    is kept, and a trailing `.`/`..` segment leaves one.
//!
//! Escapes are decoded exactly once: `%252F` becomes nothing more than `%252F`. An application that
//! decodes twice sees `/` where we saw `%2F`; that is the application's bug and out of our reach.
//!
//! **Invariant** (tested below and by `tests/tests/path_family.rs` on the built filter): the path
//! that is authorized is the path the upstream receives, and no common backend reads it as another
//! path. The caller forwards [`NormalizedPath::forward_target`] whenever [`NormalizedPath::changed`]
//! (spiffe-authz does, the lesson of CVE-2019-9901), and that target is a fixed point:
//! `normalize(forward_target)` gives the same path and query and reports no change. A canonical
//! path holds no `;`, no `%3B`, `%2F`, `%5C`, `%00`, `\`, no `//`, no dot segment and no escaped
//! unreserved character, so decoding it once (Tomcat, Jetty, Spring, Express, Go `net/http`,
//! nginx, Python servers), dropping `;params`, merging slashes or resolving dots leaves its
//! segments as they are.

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
    /// A `;` in the path with [`PathParameters::Reject`], or `%3B`/`%3b` in any mode: a path
    /// parameter, which Tomcat/Jetty/Undertow drop and other backends keep.
    PathParameter,
}

/// What to do with path parameters (`/a;x=1/b`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathParameters {
    /// Refuse any `;` (or `%3B`) in the path: [`PathError::PathParameter`]. The default.
    #[default]
    Reject,
    /// Remove `;…` from every segment before dot segments are resolved; the stripped path is the
    /// canonical one (and so the one forwarded). `%3B` is still refused.
    Strip,
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
            Self::PathParameter => "path parameter (`;` or %3B) in path",
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

/// Normalize a raw `:path` with the default rules ([`PathParameters::Reject`]); see the module
/// docs.
pub fn normalize(raw: &str) -> Result<NormalizedPath, PathError> {
    normalize_with(raw, PathParameters::Reject)
}

/// Normalize a raw `:path`, treating path parameters as `params` says (see the module docs).
pub fn normalize_with(raw: &str, params: PathParameters) -> Result<NormalizedPath, PathError> {
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
    let canonical = match params {
        PathParameters::Reject if decoded.contains(';') => return Err(PathError::PathParameter),
        PathParameters::Reject => remove_dot_segments(&decoded),
        PathParameters::Strip => remove_dot_segments(&strip_parameters(&decoded)),
    };
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

/// Steps 3 and 4: check every byte, decode escapes of unreserved characters, upper-case the rest.
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
                    b';' => return Err(PathError::PathParameter),
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

/// Step 5, [`PathParameters::Strip`]: drop everything from the first `;` of each segment up to the
/// segment's end. `path` is decoded already, and decoding never yields `/` or `;` (`%2F`, `%3B`
/// are refused), so the segments and parameters seen here are the raw ones.
fn strip_parameters(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or_default());
    }
    out
}

/// Step 6: merge slashes and resolve dot segments. `path` starts with `/`.
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
            "/", "/a", "/a/b", "/a/b/", "/a%20b", "/~user", "/é", "/a:b@c", "/a,b=c",
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

    fn with(raw: &str, params: PathParameters) -> Result<String, PathError> {
        normalize_with(raw, params).map(|n| n.path().to_string())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn path_parameters_are_refused_by_default() {
        for p in [
            "/public/..;/admin",
            "/public/%2e%2e;/admin",
            "/public/.;/../admin",
            "/admin;x",
            "/admin;x/users",
            "/;x/admin",
            "/a;",
            "/a;b=c",
            "/x;jsessionid=1?q",
        ] {
            assert_eq!(normalize(p).unwrap_err(), PathError::PathParameter, "{p}");
            assert_eq!(
                normalize_with(p, PathParameters::Reject).unwrap_err(),
                PathError::PathParameter,
                "{p}"
            );
        }
        // The query is not the path: `;` there is data.
        let q = normalize("/a?x=1;y=2").unwrap();
        assert_eq!((q.path(), q.query()), ("/a", Some("x=1;y=2")));
        assert!(!q.changed());
        assert!(PathError::PathParameter.to_string().contains("%3B"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn encoded_semicolons_are_refused_in_every_mode() {
        for p in [
            "/admin%3Bx",
            "/admin%3bx/users",
            "/public/..%3B/admin",
            "/%3B",
        ] {
            for mode in [PathParameters::Reject, PathParameters::Strip] {
                assert_eq!(
                    normalize_with(p, mode).unwrap_err(),
                    PathError::PathParameter,
                    "{p} {mode:?}"
                );
            }
        }
        // `%253B` is a `%` followed by `3B`, once decoded; it stays escaped.
        assert_eq!(n("/a%253B"), "/a%253B");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn strip_removes_parameters_before_dot_segments() {
        let s = |p: &str| with(p, PathParameters::Strip).unwrap();
        assert_eq!(s("/public/..;/admin"), "/admin");
        assert_eq!(s("/public/%2e%2e;/admin"), "/admin");
        assert_eq!(s("/public/.;/../admin"), "/admin");
        assert_eq!(s("/public/..;x=1/..;y/admin"), "/admin");
        assert_eq!(s("/admin;x"), "/admin");
        assert_eq!(s("/admin;x/users"), "/admin/users");
        assert_eq!(s("/;x/admin"), "/admin");
        assert_eq!(s("/;x//admin;"), "/admin");
        assert_eq!(s("/a;b;c/d;e=f,g"), "/a/d");
        assert_eq!(s("/adm;x/in"), "/adm/in");
        assert_eq!(s("/admin/;x"), "/admin/");
        assert_eq!(s("/%61dmin;%41"), "/admin");
        let n = normalize_with("/a;x/b;y?q=1;2", PathParameters::Strip).unwrap();
        assert!(n.changed());
        assert_eq!(n.forward_target(), "/a/b?q=1;2");
        // Parameter text is checked like the rest of the path before it is dropped.
        for (p, e) in [
            ("/a;%2F/b", PathError::EscapedSlash),
            ("/a;%00", PathError::EncodedNul),
            ("/a;\\x", PathError::Backslash),
            ("/a;%zz", PathError::InvalidPercentEncoding),
            ("/a;x y", PathError::ControlCharacter),
        ] {
            assert_eq!(with(p, PathParameters::Strip).unwrap_err(), e, "{p}");
        }
    }

    /// A small deterministic generator (xorshift64*), so the property tests need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    /// Random request-targets over the alphabet that matters to paths.
    fn random_target(rng: &mut Rng) -> String {
        let pieces = [
            "/", "/", "//", ".", "..", ";", ";x=1", "a", "admin", "%2e", "%2E", "%61", "%41",
            "%3b", "%3B", "%2f", "%5C", "%25", "%3a", "%7e", "~", "?", "?q=1;2", "#f", "%", "%4",
            "\\", "é", "%C3%A9", ":", "@", "-", "_", "%20", " ",
        ];
        let mut out = String::from("/");
        let len = rng.next() % 12;
        for _ in 0..len {
            out.push_str(rng.pick(&pieces));
        }
        out
    }

    /// Every `%XX` decoded once (what Tomcat, Express, Go, nginx and Python servers do before
    /// routing); `None` for a malformed escape. Lossy UTF-8: a replacement character never creates
    /// a `/`, `;` or `.`.
    fn decode_all_once(path: &str) -> Option<String> {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(b);
                i += 1;
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// A permissive backend: decode every escape once, drop `;params` per segment, merge
    /// slashes, resolve dot segments.
    fn permissive_reading(path: &str) -> Option<String> {
        let decoded = decode_all_once(path)?;
        let stripped: Vec<&str> = decoded
            .split('/')
            .map(|s| s.split(';').next().unwrap_or(""))
            .collect();
        Some(remove_dot_segments(&stripped.join("/")))
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn forwarded_targets_are_fixed_points_that_backends_read_alike() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let raw = random_target(&mut rng);
            for mode in [PathParameters::Reject, PathParameters::Strip] {
                let Ok(once) = normalize_with(&raw, mode) else {
                    continue;
                };
                accepted += 1;
                let target = once.forward_target();
                // A fixed point in both modes: what is forwarded normalizes to itself, unchanged.
                for again_mode in [PathParameters::Reject, PathParameters::Strip] {
                    let again = normalize_with(&target, again_mode).unwrap();
                    assert_eq!(again.path(), once.path(), "{raw:?} {mode:?}");
                    assert_eq!(again.query(), once.query(), "{raw:?} {mode:?}");
                    assert!(!again.changed(), "{raw:?} {mode:?} ⇒ {target:?}");
                }
                // A permissive backend's parameter stripping, slash merging and dot resolution
                // find nothing to do in the canonical path: it reads the very segments we
                // authorized, each decoded once.
                let path = once.path();
                let decoded = decode_all_once(path).unwrap();
                assert_eq!(
                    permissive_reading(path).unwrap(),
                    decoded,
                    "{raw:?} {mode:?} ⇒ {path:?}"
                );
                assert_eq!(
                    decoded.split('/').count(),
                    path.split('/').count(),
                    "{raw:?}"
                );
            }
            // And when we refuse nothing in STRIP mode, the backend reads what we matched.
            if let (Ok(strip), Some(backend)) = (
                normalize_with(&raw, PathParameters::Strip),
                raw.split(['?', '#']).next().and_then(permissive_reading),
            ) {
                assert_eq!(decode_all_once(strip.path()).unwrap(), backend, "{raw:?}");
            }
        }
        assert!(accepted > 1_000, "only {accepted} targets accepted");
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
