//! SPIFFE IDs, parsed with the strict rules of go-spiffe v2 (`spiffeid.FromString`).
//!
//! A peer's identity is the URI SAN of its certificate. Everything authorization decides rests on
//! it, so anything that is not a canonical SPIFFE ID is refused rather than repaired: a lenient
//! parser would let two different strings name the same workload (or one string name two), and a
//! policy written against one spelling would miss the other.
//!
//! Rules (SPIFFE-ID.md, go-spiffe `spiffeid/id.go`):
//! - the scheme prefix `spiffe://` is matched case-sensitively (stricter than RFC 3986, like
//!   go-spiffe);
//! - the trust domain is non-empty and only `[a-z0-9.-_]`: no uppercase, no userinfo (`@`), no
//!   port (`:`), no percent-encoding (`%`);
//! - the path is empty or `/`-separated segments of `[a-zA-Z0-9.-_]`: no empty segment (so no
//!   `//` and no trailing `/`), no `.` or `..` segment, no percent-encoding, no query (`?`) and no
//!   fragment (`#`);
//! - at most [`MAX_ID_LEN`] bytes in all (the spec's "must support up to 2048 bytes"; go-spiffe
//!   has no limit) and at most [`MAX_TRUST_DOMAIN_LEN`] bytes of trust domain (the spec's limit;
//!   go-spiffe does not check it either).

use std::fmt;

/// The scheme prefix, matched byte for byte.
pub const SCHEME_PREFIX: &str = "spiffe://";
/// Longest accepted SPIFFE ID, in bytes.
pub const MAX_ID_LEN: usize = 2048;
/// Longest accepted trust domain, in bytes (SPIFFE-ID.md §2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A valid SPIFFE ID: `spiffe://<trust_domain><path>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// The whole ID, kept so that matching against `spiffe://…` patterns needs no allocation.
    id: String,
    /// Length of `spiffe://<trust_domain>` within `id`; the path starts there.
    path_start: usize,
}

/// Why a string is not a SPIFFE ID. One variant per class of go-spiffe's invalid inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpiffeIdError {
    Empty,
    TooLong,
    /// Does not start with `spiffe://` exactly.
    WrongScheme,
    MissingTrustDomain,
    TrustDomainTooLong,
    /// A byte outside `[a-z0-9.-_]` in the trust domain (uppercase, `:`, `@`, `%`, `?`, UTF-8, …).
    BadTrustDomainChar,
    /// `//` inside the path, or a path that is just `/`.
    EmptySegment,
    /// A `.` or `..` segment.
    DotSegment,
    TrailingSlash,
    /// A byte outside `[a-zA-Z0-9.-_]` in a path segment (`%`, `?`, `#`, `~`, UTF-8, …).
    BadPathChar,
}

impl fmt::Display for SpiffeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Empty => "empty",
            Self::TooLong => "longer than 2048 bytes",
            Self::WrongScheme => "scheme is not `spiffe://`",
            Self::MissingTrustDomain => "trust domain is missing",
            Self::TrustDomainTooLong => "trust domain is longer than 255 bytes",
            Self::BadTrustDomainChar => {
                "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
            }
            Self::EmptySegment => "path cannot contain empty segments",
            Self::DotSegment => "path cannot contain dot segments",
            Self::TrailingSlash => "path cannot have a trailing slash",
            Self::BadPathChar => {
                "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
            }
        };
        f.write_str(text)
    }
}

impl std::error::Error for SpiffeIdError {}

fn is_trust_domain_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

fn is_path_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

impl SpiffeId {
    /// Parse `s` strictly. Nothing is normalised: a string that parses is already canonical.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let (trust_domain, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if trust_domain.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TrustDomainTooLong);
        }
        if !trust_domain.bytes().all(is_trust_domain_byte) {
            return Err(SpiffeIdError::BadTrustDomainChar);
        }
        validate_path(path)?;
        Ok(Self {
            id: s.to_string(),
            path_start: SCHEME_PREFIX.len() + trust_domain.len(),
        })
    }

    /// The whole ID, `spiffe://td/path`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        self.id
            .get(SCHEME_PREFIX.len()..self.path_start)
            .unwrap_or_default()
    }

    /// The path, empty or starting with `/`, e.g. `/ns/default/sa/frontend`.
    pub fn path(&self) -> &str {
        self.id.get(self.path_start..).unwrap_or_default()
    }

    /// The Istio namespace: `<ns>` of a path `/ns/<ns>/<more>`. Istio's own matcher is the regex
    /// `.*/ns/<ns>/.*`, which also finds `/ns/<ns>/` deeper in the path; we only accept it as the
    /// leading segments, where Istio's CA puts it, so a crafted deeper `/ns/x/` cannot pose as a
    /// namespace. Like Istio's regex, a segment must follow (`/ns/<ns>` alone has no namespace).
    pub fn namespace(&self) -> Option<&str> {
        let mut segments = self.segments();
        match (segments.next(), segments.next(), segments.next()) {
            (Some("ns"), Some(ns), Some(_)) => Some(ns),
            _ => None,
        }
    }

    /// The Istio service account: `<sa>` of a path that is exactly `/ns/<ns>/sa/<sa>`.
    pub fn service_account(&self) -> Option<&str> {
        let mut segments = self.segments();
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(_), Some("sa"), Some(sa), None) => Some(sa),
            _ => None,
        }
    }

    /// The path's segments (none for an ID without a path).
    fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with `/` (it was split there); skip that first separator.
    let segments = path.split('/').skip(1);
    let count = path.split('/').count().saturating_sub(1);
    for (i, segment) in segments.enumerate() {
        if segment.is_empty() {
            // go-spiffe reports a trailing `/` separately unless the path is only `/`.
            let last = i.saturating_add(1) == count;
            return Err(if last && count > 1 {
                SpiffeIdError::TrailingSlash
            } else {
                SpiffeIdError::EmptySegment
            });
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if !segment.bytes().all(is_path_byte) {
            return Err(SpiffeIdError::BadPathChar);
        }
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn err(s: &str) -> SpiffeIdError {
        SpiffeId::parse(s).unwrap_err()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn valid_ids_and_their_parts() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/frontend").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/default/sa/frontend");
        assert_eq!(id.namespace(), Some("default"));
        assert_eq!(id.service_account(), Some("frontend"));
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/frontend"
        );

        let bare = SpiffeId::parse("spiffe://td").unwrap();
        assert_eq!(bare.trust_domain(), "td");
        assert_eq!(bare.path(), "");
        assert_eq!(bare.namespace(), None);

        for ok in [
            "spiffe://a-b_c.9/Path_1/x-Y.z",
            "spiffe://td/.path",
            "spiffe://td/..path",
            "spiffe://td/...",
            "spiffe://1.2.3.4/x",
        ] {
            assert!(SpiffeId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn namespace_and_service_account_need_istio_shape() {
        let ns = |s: &str| SpiffeId::parse(s).unwrap().namespace().map(str::to_string);
        let sa = |s: &str| {
            SpiffeId::parse(s)
                .unwrap()
                .service_account()
                .map(str::to_string)
        };
        assert_eq!(ns("spiffe://td/ns/a/x"), Some("a".into()));
        assert_eq!(ns("spiffe://td/ns/a"), None);
        assert_eq!(ns("spiffe://td/x/ns/a/sa/b"), None);
        assert_eq!(ns("spiffe://td/NS/a/sa/b"), None);
        assert_eq!(sa("spiffe://td/ns/a/sa/b"), Some("b".into()));
        assert_eq!(sa("spiffe://td/ns/a/sa/b/c"), None);
        assert_eq!(sa("spiffe://td/ns/a/sb/b"), None);
        assert_eq!(sa("spiffe://td/sa/b"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty() {
        assert_eq!(err(""), SpiffeIdError::Empty);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_scheme() {
        for s in [
            "s",
            "spiffe:/",
            "Spiffe://td/x",
            "SPIFFE://td/x",
            "spiffe:td/x",
            "http://td/x",
            " spiffe://td",
        ] {
            assert_eq!(err(s), SpiffeIdError::WrongScheme, "{s}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_trust_domain() {
        for s in ["spiffe://", "spiffe:///", "spiffe:///path"] {
            assert_eq!(err(s), SpiffeIdError::MissingTrustDomain, "{s}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_segments_and_trailing_slash() {
        assert_eq!(err("spiffe://td/"), SpiffeIdError::EmptySegment);
        assert_eq!(err("spiffe://td//"), SpiffeIdError::EmptySegment);
        assert_eq!(err("spiffe://td//path"), SpiffeIdError::EmptySegment);
        assert_eq!(err("spiffe://td/a//b"), SpiffeIdError::EmptySegment);
        assert_eq!(err("spiffe://td/path/"), SpiffeIdError::TrailingSlash);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn dot_segments() {
        for p in [
            "/.",
            "/./path",
            "/path/./other",
            "/path/..",
            "/..",
            "/../path",
            "/path/../other",
        ] {
            assert_eq!(
                err(&format!("spiffe://td{p}")),
                SpiffeIdError::DotSegment,
                "{p}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn percent_encoding_userinfo_port_query_fragment() {
        assert_eq!(err("spiffe://%62ad/x"), SpiffeIdError::BadTrustDomainChar);
        assert_eq!(err("spiffe://td/%62%61%64"), SpiffeIdError::BadPathChar);
        assert_eq!(err("spiffe://td/%F0%9F%A4%AF"), SpiffeIdError::BadPathChar);
        assert_eq!(err("spiffe://user@td/x"), SpiffeIdError::BadTrustDomainChar);
        assert_eq!(err("spiffe://td:443/x"), SpiffeIdError::BadTrustDomainChar);
        assert_eq!(err("spiffe://td?q=1"), SpiffeIdError::BadTrustDomainChar);
        assert_eq!(err("spiffe://td/x?q=1"), SpiffeIdError::BadPathChar);
        assert_eq!(err("spiffe://td#f"), SpiffeIdError::BadTrustDomainChar);
        assert_eq!(err("spiffe://td/x#f"), SpiffeIdError::BadPathChar);
        assert_eq!(err("spiffe://[::1]/x"), SpiffeIdError::BadTrustDomainChar);
    }

    /// go-spiffe probes every byte value in both parts; so do we. Bytes ≥ 0x80 cannot stand alone
    /// in a `&str`, so they are probed as the UTF-8 encoding of the code point with that value
    /// (which contains that byte or its lead byte), plus every raw byte through a lossy string.
    #[wasm_bindgen_test(unsupported = test)]
    fn every_byte_in_trust_domain_and_path() {
        for b in 0u8..=255 {
            if b == b'/' {
                continue;
            }
            let c = char::from(b);
            let td = format!("spiffe://a{c}b/x");
            let path = format!("spiffe://td/a{c}b");
            let td_ok =
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_');
            let path_ok = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
            assert_eq!(
                SpiffeId::parse(&td).is_ok(),
                td_ok,
                "trust domain byte {b:#04x}"
            );
            assert_eq!(
                SpiffeId::parse(&path).is_ok(),
                path_ok,
                "path byte {b:#04x}"
            );
            if !td_ok {
                assert_eq!(err(&td), SpiffeIdError::BadTrustDomainChar, "{b:#04x}");
            }
            if !path_ok {
                assert_eq!(err(&path), SpiffeIdError::BadPathChar, "{b:#04x}");
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn utf8_is_rejected() {
        assert_eq!(err("spiffe://të/x"), SpiffeIdError::BadTrustDomainChar);
        assert_eq!(err("spiffe://td/ë"), SpiffeIdError::BadPathChar);
        assert_eq!(err("spiffe://td/🤯"), SpiffeIdError::BadPathChar);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn length_limits() {
        let head = "spiffe://td/";
        let fits = format!("{head}{}", "a".repeat(MAX_ID_LEN - head.len()));
        assert_eq!(fits.len(), MAX_ID_LEN);
        assert!(SpiffeId::parse(&fits).is_ok());
        let over = format!("{fits}a");
        assert_eq!(err(&over), SpiffeIdError::TooLong);

        let td_fits = format!("spiffe://{}", "a".repeat(MAX_TRUST_DOMAIN_LEN));
        assert!(SpiffeId::parse(&td_fits).is_ok());
        let td_over = format!("spiffe://{}", "a".repeat(MAX_TRUST_DOMAIN_LEN + 1));
        assert_eq!(err(&td_over), SpiffeIdError::TrustDomainTooLong);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn errors_display() {
        assert!(SpiffeIdError::DotSegment
            .to_string()
            .contains("dot segments"));
        assert_eq!("spiffe://td/x".parse::<SpiffeId>().unwrap().path(), "/x");
    }
}
