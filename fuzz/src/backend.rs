//! How permissive backends read a request path, modelled independently of
//! `meshward_common::path`: the "no common backend reads it as another path" half of the path
//! invariant (issue 12, finding 1).
//!
//! Each reading takes the raw request-target and returns the path segments the application
//! routes on. The readings differ in the order of the steps, as real servers do:
//! - [`Reading::StripThenDecode`]: Tomcat/Jetty/Undertow — `;params` are cut from each raw segment
//!   (so `%3B` is data), then each segment is percent-decoded (`%2F` decodes to a `/` *inside* a
//!   segment);
//! - [`Reading::DecodeThenSplit`]: a server that decodes the whole path once first (so `%2F` and
//!   `%3B` become separators), then splits and cuts `;params`;
//! - [`Reading::DecodeNoParams`]: decode once, split, no `;params` rule (Express, Go, most WSGI).
//!
//! All of them merge `//`, resolve `.`/`..` (never above the root) and ignore a trailing `/`,
//! query and fragment.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    StripThenDecode,
    DecodeThenSplit,
    DecodeNoParams,
}

pub const READINGS: [Reading; 3] = [
    Reading::StripThenDecode,
    Reading::DecodeThenSplit,
    Reading::DecodeNoParams,
];

/// The path part of a request-target: before `#`, then before `?`.
pub fn path_part(target: &[u8]) -> &[u8] {
    let end = target
        .iter()
        .position(|&b| b == b'#' || b == b'?')
        .unwrap_or(target.len());
    &target[..end]
}

/// Decode every valid `%xx` once; a malformed escape stays as it is.
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn cut_params(segment: &[u8]) -> &[u8] {
    match segment.iter().position(|&b| b == b';') {
        Some(at) => &segment[..at],
        None => segment,
    }
}

/// Merge empty segments and resolve dot segments (RFC 3986 §5.2.4 on segment lists).
fn resolve(segments: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for s in segments {
        match s.as_slice() {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(s),
        }
    }
    out
}

/// The segments a backend routes on for this raw request-target.
pub fn read(target: &[u8], reading: Reading) -> Vec<Vec<u8>> {
    let path = path_part(target);
    let segments: Vec<Vec<u8>> = match reading {
        Reading::StripThenDecode => path
            .split(|&b| b == b'/')
            .map(|s| percent_decode(cut_params(s)))
            .collect(),
        Reading::DecodeThenSplit => percent_decode(path)
            .split(|&b| b == b'/')
            .map(|s| cut_params(s).to_vec())
            .collect(),
        Reading::DecodeNoParams => percent_decode(path)
            .split(|&b| b == b'/')
            .map(<[u8]>::to_vec)
            .collect(),
    };
    resolve(segments)
}

/// The segments the authorized (normalized) path denotes: split on `/`, decode each segment once.
/// A normalized path has no `//`, no dot segments, no `%2F`, so this is the path's meaning.
pub fn authorized_segments(normalized: &str) -> Vec<Vec<u8>> {
    normalized
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn readings() {
        let t = b"/public/..;/admin";
        assert_eq!(read(t, Reading::StripThenDecode), segs(&["admin"]));
        assert_eq!(read(t, Reading::DecodeThenSplit), segs(&["admin"]));
        assert_eq!(
            read(t, Reading::DecodeNoParams),
            segs(&["public", "..;", "admin"])
        );
        let t = b"/a%2Fb/%2e%2e/c?x#y";
        assert_eq!(read(t, Reading::StripThenDecode), segs(&["c"]));
        assert_eq!(read(t, Reading::DecodeThenSplit), segs(&["a", "c"]));
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%41%zz%"), b"A%zz%");
        assert_eq!(authorized_segments("/a/%3A/"), segs(&["a", ":"]));
    }
}
