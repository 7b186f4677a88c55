//! Header maps with Envoy's mutation semantics (the pairs format itself is `meshward_abi`'s).

use std::borrow::Cow;

use meshward_abi::encoding::{decode_map_lenient, encode_map};

/// Which of Envoy's header map types a map is: it decides which names are inline headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum MapKind {
    /// `RequestHeaderMapImpl`.
    Request,
    /// `ResponseHeaderMapImpl`.
    Response,
    /// Trailers and callout maps: no inline header is modelled there, every add is an entry.
    #[default]
    Other,
}

/// Inline headers of Envoy 1.40's request header map: the built-in ones (`INLINE_REQ_*` and
/// `INLINE_REQ_RESP_*` in envoy/http/header_map.h) and the custom inline headers the extensions
/// in the release binary register. An inline header is one entry: adding a value to one that
/// exists appends `,value` (`HeaderMapImpl::insertByKey` → `appendToHeader`), and the HTTP/1
/// codec adds a client's header lines the same way. The list was checked name by name against
/// Envoy 1.40 (tests/scenarios/conformance/http/inline-headers.yaml); names not in it keep one
/// entry per line.
const REQUEST_INLINE: &[&str] = &[
    ":authority",
    ":method",
    ":path",
    ":protocol",
    ":scheme",
    "accept",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "grpc-accept-encoding",
    "grpc-timeout",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "origin",
    "pragma",
    "proxy-connection",
    "proxy-status",
    "referer",
    "te",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    "x-client-trace-id",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-force-trace",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-internal",
    "x-envoy-ip-tags",
    "x-envoy-is-timeout-retry",
    "x-envoy-max-retries",
    "x-envoy-original-host",
    "x-envoy-original-path",
    "x-envoy-original-url",
    "x-envoy-retriable-header-names",
    "x-envoy-retriable-status-codes",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-stream-duration-ms",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-request-id",
];

/// Inline headers of Envoy 1.40's response header map (`INLINE_RESP_*`, `INLINE_REQ_RESP_*` and
/// the registered custom ones), checked the same way.
const RESPONSE_INLINE: &[&str] = &[
    ":status",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-max-age",
    "age",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "etag",
    "expires",
    "grpc-message",
    "grpc-status",
    "keep-alive",
    "last-modified",
    "location",
    "proxy-connection",
    "proxy-status",
    "server",
    "transfer-encoding",
    "upgrade",
    "vary",
    "via",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-degraded",
    "x-envoy-immediate-health-check-fail",
    "x-envoy-ratelimited",
    "x-envoy-upstream-canary",
    "x-envoy-upstream-healthchecked-cluster",
    "x-envoy-upstream-service-time",
    "x-request-id",
];

/// An ordered multimap of lowercased names to values (bytes, as the ABI allows any bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderMap {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    kind: MapKind,
}

impl HeaderMap {
    /// An empty request header map (inline headers merge).
    pub fn request() -> Self {
        HeaderMap {
            entries: Vec::new(),
            kind: MapKind::Request,
        }
    }

    /// An empty response header map (inline headers merge).
    pub fn response() -> Self {
        HeaderMap {
            entries: Vec::new(),
            kind: MapKind::Response,
        }
    }

    fn is_inline(&self, lower: &[u8]) -> bool {
        let list = match self.kind {
            MapKind::Request => REQUEST_INLINE,
            MapKind::Response => RESPONSE_INLINE,
            MapKind::Other => return false,
        };
        list.iter().any(|n| n.as_bytes() == lower)
    }

    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut m = HeaderMap::default();
        for (n, v) in pairs {
            m.add(n.as_ref(), v.as_ref());
        }
        m
    }

    pub fn entries(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Envoy's `byteSize()`: Σ name + value.
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// First value (Envoy's wasm `getHeaderMapValue` returns only the first).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        // Stored names are lowercase, so a case-insensitive compare equals lowercasing the key,
        // without allocating on every lookup.
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name.as_bytes()).map(|v| text(v).into_owned())
    }

    /// Envoy `addCopy` (which lowercases the key): a new entry, except for an inline header
    /// that exists, whose one entry gets `,value` appended (no comma after an empty value).
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        let lower = name.to_ascii_lowercase();
        if self.is_inline(&lower) {
            if let Some((_, v)) = self.entries.iter_mut().find(|(n, _)| *n == lower) {
                if !v.is_empty() {
                    v.push(b',');
                }
                v.extend_from_slice(value);
                return;
            }
        }
        self.entries.push((lower, value.to_vec()));
    }

    /// Envoy `setCopy` (with `http_set_copy_replace_all_headers`): remove all, then add.
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        self.remove(name);
        self.add(name, value);
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn to_strings(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(n, v)| (text(n).into_owned(), text(v).into_owned()))
            .collect()
    }

    /// The proxy-wasm pairs format: u32 count, then (u32 name_len, u32 value_len) per pair,
    /// then each name and value followed by a NUL byte.
    pub fn serialize(&self) -> Vec<u8> {
        // Only a map of over 4 GiB does not fit the format; no request gets near.
        encode_map(&self.entries).unwrap_or_default()
    }
}

/// Bytes as text, invalid UTF-8 replaced. `from_utf8_lossy` walks its chunk iterator even for
/// valid input; headers are nearly always valid, so the plain check goes first.
pub(crate) fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Pairs a guest handed over, read as Envoy reads them (cpp-host `toPairs`: malformed input is an
/// empty list).
pub(crate) fn deserialize_pairs(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    decode_map_lenient(data)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let m = HeaderMap::from_pairs([("A", "1"), ("b", "")]);
        let bytes = m.serialize();
        assert_eq!(deserialize_pairs(&bytes), m.entries().to_vec());
        assert_eq!(m.get(b"a"), Some(&b"1"[..]));
    }

    #[test]
    fn truncated_pairs_are_empty() {
        let m = HeaderMap::from_pairs([("a", "1")]);
        let bytes = m.serialize();
        assert!(deserialize_pairs(&bytes[..bytes.len() - 2]).is_empty());
    }

    #[test]
    fn inline_headers_are_one_entry_per_map_kind() {
        let mut req = HeaderMap::request();
        req.add(b"User-Agent", b"a");
        req.add(b"user-agent", b"b");
        req.add(b"x-custom", b"1");
        req.add(b"x-custom", b"2");
        req.add(b"date", b"d1");
        req.add(b"date", b"d2");
        assert_eq!(req.get(b"user-agent"), Some(&b"a,b"[..]));
        assert_eq!(req.len(), 5);
        let mut resp = HeaderMap::response();
        resp.add(b"date", b"");
        resp.add(b"date", b"d2");
        resp.add(b"user-agent", b"a");
        resp.add(b"user-agent", b"b");
        assert_eq!(resp.get(b"date"), Some(&b"d2"[..]));
        assert_eq!(resp.len(), 3);
        let mut other = HeaderMap::default();
        other.add(b"user-agent", b"a");
        other.add(b"user-agent", b"b");
        assert_eq!(other.len(), 2);
    }

    #[test]
    fn replace_removes_all_and_appends() {
        let mut m = HeaderMap::from_pairs([("a", "1"), ("b", "2"), ("a", "3")]);
        m.replace(b"A", b"9");
        assert_eq!(
            m.to_strings(),
            vec![("b".into(), "2".into()), ("a".into(), "9".into())]
        );
    }
}
