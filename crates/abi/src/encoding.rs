//! The ABI's byte encodings: serialized header maps ("pairs") and property paths.
//!
//! Header map: `u32 count`, then `count` × (`u32 name_len`, `u32 value_len`), then for each pair
//! `name` NUL `value` NUL; integers little-endian. Names and values stay bytes: a non-UTF-8 value
//! must still be measurable, and a non-UTF-8 name must not crash the filter.
//!
//! Two readers of one walk: the guest's [`decode_map`] is strict (it does not trust the host), the
//! host's [`decode_map_lenient`] reads what proxy-wasm-cpp-host's `toPairs` reads (Envoy does not
//! check the NULs or bytes left over, so the harness must not either).

/// Name/value pairs borrowed from a serialized map, in map order.
pub type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Borrow the pairs out of a serialized map; `None` if `bytes` is not a well-formed map.
///
/// Lengths come from the host and are not trusted: every offset is checked, and bytes left over
/// after the last pair make the map malformed (the host and we would disagree about the format).
/// An empty buffer and a single NUL byte are both an empty map (the spec allows either).
pub fn decode_map(bytes: &[u8]) -> Option<Pairs<'_>> {
    if bytes.is_empty() || bytes == [0] {
        return Some(Vec::new());
    }
    let (pairs, end) = walk(bytes, true)?;
    (end == bytes.len()).then_some(pairs)
}

/// The pairs as proxy-wasm-cpp-host's `toPairs` reads them: the separators are skipped unread and
/// bytes left over are ignored; anything that does not fit gives `None` (Envoy then uses an empty
/// map).
pub fn decode_map_lenient(bytes: &[u8]) -> Option<Pairs<'_>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    walk(bytes, false).map(|(pairs, _)| pairs)
}

/// The pairs of a map and the offset after the last one; with `strict`, each field must be
/// followed by a NUL.
fn walk(bytes: &[u8], strict: bool) -> Option<(Pairs<'_>, usize)> {
    let count = usize::try_from(read_u32(bytes, 0)?).ok()?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    // Each pair takes at least 10 bytes (two lengths, two NULs): cap the allocation by what the
    // buffer can hold, not by the claimed count.
    let mut pairs = Vec::with_capacity(count.min(bytes.len() / 10));
    for i in 0..count {
        let at = i.checked_mul(8)?.checked_add(4)?;
        let name_len = usize::try_from(read_u32(bytes, at)?).ok()?;
        let value_len = usize::try_from(read_u32(bytes, at.checked_add(4)?)?).ok()?;
        let (name, after_name) = field(bytes, data, name_len, strict)?;
        let (value, after_value) = field(bytes, after_name, value_len, strict)?;
        data = after_value;
        pairs.push((name, value));
    }
    Some((pairs, data))
}

/// Serialize pairs for the host; `None` if the count or a length does not fit in a `u32`.
pub fn encode_map<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Option<Vec<u8>> {
    let mut size = 4usize;
    for (name, value) in pairs {
        size = size
            .checked_add(10)?
            .checked_add(name.as_ref().len())?
            .checked_add(value.as_ref().len())?;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u32::try_from(pairs.len()).ok()?.to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&u32::try_from(name.as_ref().len()).ok()?.to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.as_ref().len()).ok()?.to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    Some(out)
}

/// A property path as the host expects it: the segments joined by NUL (no trailing NUL), e.g.
/// `["connection", "mtls"]` → `connection\0mtls`. `None` if a segment itself contains a NUL,
/// which would silently address a different property.
pub fn property_path(segments: &[&str]) -> Option<Vec<u8>> {
    if segments.iter().any(|s| s.as_bytes().contains(&0)) {
        return None;
    }
    Some(segments.join("\0").into_bytes())
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// `len` bytes at `at` and the offset after the separator byte that follows them. `strict`: the
/// separator must be there and be a NUL; otherwise it is skipped unread (the last one may be
/// missing, as cpp-host never reads it).
fn field(bytes: &[u8], at: usize, len: usize, strict: bool) -> Option<(&[u8], usize)> {
    let end = at.checked_add(len)?;
    let value = bytes.get(at..end)?;
    if strict && *bytes.get(end)? != 0 {
        return None;
    }
    Some((value, end.checked_add(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pairs<'static> {
        vec![
            (b":path", b"/"),
            (b"x-a", b"1"),
            (b"x-a", b"2"),
            (b"x-bin", b"\xff\x00\xfe"),
            (b"\xc3\x28-bad-utf8-name", b"v"),
            (b"x-e", b""),
        ]
    }

    #[test]
    fn spec_example_encodes_byte_for_byte() {
        let bytes = encode_map(&[("a", "1"), ("b", "22")]).unwrap();
        let mut expected = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        expected.extend_from_slice(b"a\x001\x00b\x0022\x00");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn round_trip_keeps_order_duplicates_and_non_utf8_bytes() {
        let pairs = sample();
        assert_eq!(decode_map(&encode_map(&pairs).unwrap()).unwrap(), pairs);
    }

    #[test]
    fn empty_maps_in_every_spelling() {
        for bytes in [&b""[..], &[0][..], &[0, 0, 0, 0][..]] {
            assert_eq!(decode_map(bytes).unwrap(), Pairs::new(), "{bytes:?}");
        }
        assert_eq!(encode_map::<&str, &str>(&[]).unwrap(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let good = encode_map(&sample()).unwrap();
        for cut in 1..good.len() {
            assert_eq!(decode_map(&good[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn trailing_bytes_and_missing_nuls_are_refused() {
        let good = encode_map(&[("x-a", "1"), ("x-b", "22")]).unwrap();
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode_map(&long), None);
        let last = good.len() - 1;
        let mut no_final_nul = good.clone();
        no_final_nul[last] = b'x';
        assert_eq!(decode_map(&no_final_nul), None);
        // The NUL between the first name and its value.
        let mut no_inner_nul = good;
        no_inner_nul[4 + 16 + 3] = b'y';
        assert_eq!(decode_map(&no_inner_nul), None);
    }

    #[test]
    fn oversized_counts_and_lengths_are_refused() {
        assert_eq!(decode_map(&u32::MAX.to_le_bytes()), None);
        // A count claiming more pairs than there are size entries.
        let mut more = encode_map(&[("a", "1")]).unwrap();
        more[0] = 2;
        assert_eq!(decode_map(&more), None);
        // A count claiming fewer pairs leaves bytes over.
        let mut fewer = encode_map(&[("a", "1"), ("b", "2")]).unwrap();
        fewer[0] = 1;
        assert_eq!(decode_map(&fewer), None);
        let good = encode_map(&[("x-a", "1")]).unwrap();
        for at in [4, 8] {
            let mut huge = good.clone();
            huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            assert_eq!(decode_map(&huge), None, "length at {at}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic byte stream (xorshift): whatever it produces, decoding returns.
        let mut state = 0x9e37_79b9_u32;
        for len in 0..300usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    // Small values make plausible counts and lengths more likely.
                    (state % 7) as u8
                })
                .collect();
            if let Some(pairs) = decode_map(&bytes) {
                // Whatever decodes re-encodes to the very same bytes (or is the 1-byte empty map).
                let again = encode_map(&pairs).unwrap();
                assert!(
                    again == bytes || (pairs.is_empty() && bytes.len() <= 1),
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn the_lenient_reader_skips_separators_and_ignores_what_is_left_over() {
        let good = encode_map(&[("x-a", "1"), ("x-b", "22")]).unwrap();
        let mut long = good.clone();
        long.extend_from_slice(b"junk");
        assert_eq!(
            decode_map_lenient(&long).unwrap(),
            decode_map(&good).unwrap()
        );
        let mut no_nuls = good.clone();
        let last = no_nuls.len() - 1;
        no_nuls[last] = b'x';
        assert_eq!(decode_map_lenient(&no_nuls).unwrap().len(), 2);
        // The last separator is never read; short of it, what does not fit is refused.
        assert_eq!(
            decode_map_lenient(&good[..good.len() - 1]).unwrap().len(),
            2
        );
        for cut in 1..good.len() - 1 {
            assert_eq!(decode_map_lenient(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_map_lenient(b"").unwrap(), Pairs::new());
    }

    #[test]
    fn property_paths_are_nul_joined() {
        assert_eq!(
            property_path(&["connection", "uri_san_peer_certificate"]).unwrap(),
            b"connection\0uri_san_peer_certificate"
        );
        assert_eq!(property_path(&["source", "port"]).unwrap(), b"source\0port");
        assert_eq!(property_path(&["one"]).unwrap(), b"one");
        assert_eq!(property_path(&[]).unwrap(), b"");
        assert_eq!(property_path(&["a\0b"]), None);
    }
}
