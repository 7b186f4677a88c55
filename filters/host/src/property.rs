//! Properties (`proxy_get_property` / `proxy_set_property`) and Envoy's value encodings.

use crate::abi::{self, returned_buffer};
use crate::{wire, Status};

/// The property at `path` (e.g. `&["connection", "mtls"]`); `None` if the host has none.
/// A segment containing a NUL is [`Status::BAD_ARGUMENT`] (the host is not asked).
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    with_property_path(path, |path| {
        // SAFETY: pointer and length of a live buffer; the out-params are returned_buffer's.
        returned_buffer(|data, size| unsafe {
            abi::proxy_get_property(path.as_ptr(), path.len(), data, size)
        })
    })
}

/// Set the property at `path` (in Envoy: a filter state object `wasm.<path>`).
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    with_property_path(path, |path| {
        // SAFETY: pointers and lengths of live buffers.
        Status::check(unsafe {
            abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
        })
    })
}

/// Call `f` with `segments` encoded as the host expects ([`wire::property_path`]), on the stack
/// when they fit (every property a filter reads does: a property read is a few per request, and
/// each was a heap allocation); [`Status::BAD_ARGUMENT`] for a segment with a NUL.
fn with_property_path<R>(
    segments: &[&str],
    f: impl FnOnce(&[u8]) -> Result<R, Status>,
) -> Result<R, Status> {
    let mut buf = [0u8; 128];
    let mut len = 0usize;
    for (i, segment) in segments.iter().enumerate() {
        if segment.as_bytes().contains(&0) {
            return Err(Status::BAD_ARGUMENT);
        }
        let separator: &[u8] = if i == 0 { b"" } else { b"\0" };
        for part in [separator, segment.as_bytes()] {
            let end = len.saturating_add(part.len());
            match buf.get_mut(len..end) {
                Some(slot) => slot.copy_from_slice(part),
                // Longer than the stack buffer: the heap, as the encoding itself does.
                None => {
                    let path = wire::property_path(segments).ok_or(Status::BAD_ARGUMENT)?;
                    return f(&path);
                }
            }
            len = end;
        }
    }
    f(buf.get(..len).unwrap_or_default())
}

/// A string property (e.g. `connection.uri_san_peer_certificate`); `None` if not UTF-8.
pub fn decode_string(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value).ok()
}

/// An integer property (e.g. `source.port`, `connection.id`, `request.time` in ns): exactly
/// 8 bytes, little-endian. `None` for any other size.
pub fn decode_i64(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

/// [`decode_i64`] for properties that are never negative.
pub fn decode_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.try_into().ok()?))
}

/// A boolean property (e.g. `connection.mtls`): exactly one byte, 0 or 1. `None` otherwise.
pub fn decode_bool(value: &[u8]) -> Option<bool> {
    match value {
        [0] => Some(false),
        [1] => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_paths_are_encoded_as_the_wire_encoding_does_on_the_stack_or_not() {
        let long = "x".repeat(200);
        let cases: [&[&str]; 6] = [
            &["connection", "uri_san_peer_certificate"],
            &["a"],
            &[],
            &["", ""],
            &["wasm", long.as_str()],
            &["a", "b\0c"],
        ];
        for segments in cases {
            let got = with_property_path(segments, |p| Ok(p.to_vec()));
            let want = wire::property_path(segments).ok_or(Status::BAD_ARGUMENT);
            assert_eq!(got, want, "{segments:?}");
        }
    }

    #[test]
    fn integers_are_eight_bytes_little_endian() {
        assert_eq!(decode_i64(&8080i64.to_le_bytes()), Some(8080));
        assert_eq!(decode_i64(&(-2i64).to_le_bytes()), Some(-2));
        assert_eq!(decode_u64(&[1, 0, 0, 0, 0, 0, 0, 0]), Some(1));
        assert_eq!(decode_u64(&[0, 0, 0, 0, 0, 0, 0, 1]), Some(1 << 56));
        assert_eq!(decode_u64(&u64::MAX.to_le_bytes()), Some(u64::MAX));
        for len in [0, 1, 4, 7, 9, 16] {
            assert_eq!(decode_i64(&vec![1; len]), None, "{len} bytes");
            assert_eq!(decode_u64(&vec![1; len]), None, "{len} bytes");
        }
    }

    #[test]
    fn booleans_are_one_byte_zero_or_one() {
        assert_eq!(decode_bool(&[0]), Some(false));
        assert_eq!(decode_bool(&[1]), Some(true));
        assert_eq!(decode_bool(&[2]), None);
        assert_eq!(decode_bool(&[]), None);
        assert_eq!(decode_bool(&[1, 0]), None);
        assert_eq!(decode_bool(b"true"), None);
    }

    #[test]
    fn strings_must_be_utf8() {
        assert_eq!(
            decode_string(b"spiffe://cluster.local/ns/a/sa/b"),
            Some("spiffe://cluster.local/ns/a/sa/b")
        );
        assert_eq!(decode_string(b""), Some(""));
        assert_eq!(decode_string(b"\xff"), None);
    }

    #[test]
    fn a_nul_in_a_segment_is_refused_before_any_host_call() {
        // Natively every host call is UNIMPLEMENTED: BAD_ARGUMENT proves the host was not asked.
        assert_eq!(get_property(&["a\0b"]), Err(Status::BAD_ARGUMENT));
        assert_eq!(set_property(&["x", "\0"], b"v"), Err(Status::BAD_ARGUMENT));
        assert_eq!(get_property(&["a", "b"]), Err(Status::UNIMPLEMENTED));
    }
}
