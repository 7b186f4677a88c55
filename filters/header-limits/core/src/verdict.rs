//! The decision: one pass over the header map, then the first failing check in a fixed order.

use crate::config::{Config, UnderscoreAction};

/// Envoy's body for 431 (`CodeUtility::toString(431)`).
pub const TOO_LARGE_BODY: &str = "Request Header Fields Too Large";
/// Envoy's body for 400.
pub const BAD_REQUEST_BODY: &str = "Bad Request";
/// Counter of underscore headers removed under `DROP_HEADER` (one per header entry).
pub const DROPPED_UNDERSCORE_METRIC: &str = "header_limits.dropped.underscore";

/// Why a request was refused. Checks run in this order; the first failing one is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A name or value contains NUL, CR or LF (400).
    InvalidChar,
    /// A name or value contains another control byte, 0x01–0x1F or 0x7F, under
    /// `rejectControlCharacters` (400).
    ControlChar,
    /// Total bytes over `maxRequestHeadersKb` (431).
    Size,
    /// More entries than `maxHeadersCount` (431).
    Count,
    /// `:path` longer than `maxPathBytes` (431).
    PathBytes,
    /// A value longer than `maxHeaderValueBytes` (431).
    ValueBytes,
    /// A regular header name contains `_` under `REJECT_REQUEST` (400).
    Underscore,
}

impl Reason {
    /// Every reason, for defining one counter each.
    pub const ALL: [Reason; 7] = [
        Reason::InvalidChar,
        Reason::ControlChar,
        Reason::Size,
        Reason::Count,
        Reason::PathBytes,
        Reason::ValueBytes,
        Reason::Underscore,
    ];

    /// Short name used in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidChar => "invalid_char",
            Reason::ControlChar => "control_char",
            Reason::Size => "size",
            Reason::Count => "count",
            Reason::PathBytes => "path_bytes",
            Reason::ValueBytes => "value_bytes",
            Reason::Underscore => "underscore",
        }
    }

    /// The counter incremented on each rejection for this reason.
    pub const fn metric(self) -> &'static str {
        match self {
            Reason::InvalidChar => "header_limits.rejected.invalid_char",
            Reason::ControlChar => "header_limits.rejected.control_char",
            Reason::Size => "header_limits.rejected.size",
            Reason::Count => "header_limits.rejected.count",
            Reason::PathBytes => "header_limits.rejected.path_bytes",
            Reason::ValueBytes => "header_limits.rejected.value_bytes",
            Reason::Underscore => "header_limits.rejected.underscore",
        }
    }

    /// Response code details (no spaces, as Envoy requires), modelled on the codec's
    /// `http1.headers_too_large` etc., so access logs tell the filter's rejections apart.
    pub const fn details(self) -> &'static str {
        match self {
            Reason::InvalidChar => "header_limits.invalid_characters",
            Reason::ControlChar => "header_limits.control_characters",
            Reason::Size => "header_limits.headers_too_large",
            Reason::Count => "header_limits.too_many_headers",
            Reason::PathBytes => "header_limits.path_too_large",
            Reason::ValueBytes => "header_limits.header_value_too_large",
            Reason::Underscore => "header_limits.unexpected_underscore",
        }
    }

    /// 400 for malformed or forbidden names, 431 for limits (Envoy's codes).
    pub const fn status(self) -> u32 {
        match self {
            Reason::InvalidChar | Reason::ControlChar | Reason::Underscore => 400,
            Reason::Size | Reason::Count | Reason::PathBytes | Reason::ValueBytes => 431,
        }
    }

    /// Envoy's body text for [`Reason::status`].
    pub const fn body(self) -> &'static str {
        match self.status() {
            400 => BAD_REQUEST_BODY,
            _ => TOO_LARGE_BODY,
        }
    }
}

/// A refusal: the local reply to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: u32,
    pub body: &'static str,
    pub reason: Reason,
}

impl From<Reason> for Rejection {
    fn from(reason: Reason) -> Self {
        Self {
            status: reason.status(),
            body: reason.body(),
            reason,
        }
    }
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Let it through after removing every header named in `drop` (distinct names, sorted;
    /// empty and unallocated unless `DROP_HEADER` found something). `dropped_entries` counts the
    /// header entries those names cover, i.e. what the drop counter should grow by.
    Continue {
        drop: Vec<&'a [u8]>,
        dropped_entries: usize,
    },
    /// Answer with a local reply instead.
    Reject(Rejection),
}

/// The `:path` value (path and query), or empty when the map has none (e.g. CONNECT).
pub fn request_path<N: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &[(N, V)]) -> &[u8] {
    headers
        .iter()
        .find(|(n, _)| n.as_ref() == b":path")
        .map_or(&[][..], |(_, v)| v.as_ref())
}

/// What the decision reads of a request: implemented over the host by the adapter (the header map
/// it read), and over plain data (a slice or `Vec` of `(name, value)` pairs) in native tests.
pub trait RequestFacts {
    type Name: AsRef<[u8]>;
    type Value: AsRef<[u8]>;
    /// The request header map: `(name, value)` entries as the host hands them over, duplicates
    /// kept, pseudo-headers included.
    fn headers(&self) -> &[(Self::Name, Self::Value)];
    /// The `:path` value (path and query); [`request_path`] of the map by default.
    fn path(&self) -> &[u8] {
        request_path(self.headers())
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> RequestFacts for [(N, V)] {
    type Name = N;
    type Value = V;
    fn headers(&self) -> &[(N, V)] {
        self
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> RequestFacts for Vec<(N, V)> {
    type Name = N;
    type Value = V;
    fn headers(&self) -> &[(N, V)] {
        self
    }
}

/// Decide on a request: its header map and its `:path` value. One pass over the bytes;
/// allocates only when there are underscore headers to drop (the names in the verdict borrow
/// from `facts`).
pub fn decide<'a, F: RequestFacts + ?Sized>(config: &Config, facts: &'a F) -> Verdict<'a> {
    evaluate(config, facts.headers(), facts.path())
}

/// [`decide`] on the parts (the tests give a path other than the map's).
fn evaluate<'a, N: AsRef<[u8]>, V: AsRef<[u8]>>(
    limits: &Config,
    headers: &'a [(N, V)],
    path: &[u8],
) -> Verdict<'a> {
    let mut total: usize = 0;
    let mut longest_value: usize = 0;
    let mut bytes_class = ByteClass::Clean;
    let mut underscores: usize = 0;
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        total = total.saturating_add(name.len()).saturating_add(value.len());
        longest_value = longest_value.max(value.len());
        if bytes_class != ByteClass::Forbidden {
            bytes_class = bytes_class.max(classify(name)).max(classify(value));
        }
        if is_underscore_header(name) {
            underscores = underscores.saturating_add(1);
        }
    }

    // Malformed input first: it is a 400 whatever its size. Then the limits, broadest first.
    let failed = if bytes_class == ByteClass::Forbidden {
        Some(Reason::InvalidChar)
    } else if bytes_class == ByteClass::Control && limits.reject_control_characters {
        Some(Reason::ControlChar)
    } else if total > limits.max_request_headers_bytes {
        Some(Reason::Size)
    } else if headers.len() > limits.max_headers_count {
        Some(Reason::Count)
    } else if limits.max_path_bytes.is_some_and(|max| path.len() > max) {
        Some(Reason::PathBytes)
    } else if limits
        .max_header_value_bytes
        .is_some_and(|max| longest_value > max)
    {
        Some(Reason::ValueBytes)
    } else if underscores > 0
        && limits.headers_with_underscores_action == UnderscoreAction::RejectRequest
    {
        Some(Reason::Underscore)
    } else {
        None
    };
    if let Some(reason) = failed {
        return Verdict::Reject(reason.into());
    }

    if underscores == 0 || limits.headers_with_underscores_action != UnderscoreAction::DropHeader {
        return Verdict::Continue {
            drop: Vec::new(),
            dropped_entries: 0,
        };
    }
    let mut drop: Vec<&'a [u8]> = headers
        .iter()
        .map(|(n, _)| n.as_ref())
        .filter(|n| is_underscore_header(n))
        .collect();
    // Distinct names: the host's remove takes out every value of a name at once.
    drop.sort_unstable();
    drop.dedup();
    Verdict::Continue {
        drop,
        dropped_entries: underscores,
    }
}

/// The worst bytes found in a name or value, in increasing order of badness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ByteClass {
    Clean,
    /// 0x01–0x1F other than CR/LF, or 0x7F: refused under `rejectControlCharacters`. RFC 9110
    /// allows HTAB inside a value, but backends disagree on it (some split or trim there, some
    /// fold it to a space), so a policy that matched one reading can be read another way behind
    /// us; the other control bytes are never valid in a field value (obs-text 0x80–0xFF is).
    Control,
    /// NUL, CR and LF can split or truncate a header downstream of us (request smuggling);
    /// Envoy's codecs refuse them already, so this is defence in depth against a codec or host
    /// that does not. Always refused.
    Forbidden,
}

fn classify(bytes: &[u8]) -> ByteClass {
    // Fast path: almost every header is visible ASCII, space or obs-text only.
    if !has_control_byte(bytes) {
        ByteClass::Clean
    } else if memchr::memchr3(0, b'\r', b'\n', bytes).is_some() {
        ByteClass::Forbidden
    } else {
        ByteClass::Control
    }
}

/// Whether `bytes` holds a byte below 0x20 or 0x7F. Eight bytes per step (every byte of every
/// request header comes through here, and the filters are built without wasm SIMD): a byte
/// below `n` (≤ 0x80) sets its top bit in `(x - n·ONES) & !x`, and a 0x7F byte is a zero byte
/// of `x ^ 0x7F·ONES`. A borrow can only flag bytes above one that is truly flagged, so the
/// answer "some byte is" is exact (Bit Twiddling Hacks, "hasless" and "haszero").
fn has_control_byte(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            return true;
        };
        let x = u64::from_le_bytes(word);
        let below_space = x.wrapping_sub(0x20 * ONES) & !x;
        let del = x ^ (0x7F * ONES);
        let is_del = del.wrapping_sub(ONES) & !del;
        if (below_space | is_del) & HIGHS != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == 0x7F)
}

/// Envoy's rule: underscores matter in regular headers only; pseudo-headers start with `:`.
fn is_underscore_header(name: &[u8]) -> bool {
    !name.starts_with(b":") && memchr::memchr(b'_', name).is_some()
}

#[cfg(test)]
mod tests;
