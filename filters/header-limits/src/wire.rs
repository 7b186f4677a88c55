//! Decoding of the ABI's serialized header map, without trusting its lengths:
//! `u32 count`, then `count` × (`u32 name_len`, `u32 value_len`), then for each pair
//! `name` NUL `value` NUL (all integers little-endian). Names and values stay bytes: a
//! non-UTF-8 value must still be measured (and a non-UTF-8 name must not crash us).

/// Borrow the pairs out of `bytes`; `None` if the buffer is not a well-formed map.
/// An empty buffer is an empty map (the host sends nothing for an empty map).
pub fn parse_pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(bytes, 0)?).ok()?;
    let sizes_len = count.checked_mul(8)?;
    let mut data = 4usize.checked_add(sizes_len)?;
    // Cap the allocation by what the buffer can actually hold, not by the claimed count.
    let mut pairs = Vec::with_capacity(count.min(bytes.len() / 10));
    for i in 0..count {
        let at = 4usize.checked_add(i.checked_mul(8)?)?;
        let name_len = usize::try_from(read_u32(bytes, at)?).ok()?;
        let value_len = usize::try_from(read_u32(bytes, at.checked_add(4)?)?).ok()?;
        let (name, rest) = field(bytes, data, name_len)?;
        let (value, rest) = field(bytes, rest, value_len)?;
        data = rest;
        pairs.push((name, value));
    }
    // Trailing bytes mean the host and we disagree about the format: do not guess.
    (data == bytes.len()).then_some(pairs)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// `len` bytes at `at` followed by a NUL; returns them and the offset after the NUL.
fn field(bytes: &[u8], at: usize, len: usize) -> Option<(&[u8], usize)> {
    let end = at.checked_add(len)?;
    let value = bytes.get(at..end)?;
    (*bytes.get(end)? == 0).then_some((value, end.checked_add(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encode like the host does.
    fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend((n.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend(*n);
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn round_trip_keeps_order_duplicates_and_bytes() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/"),
            (b"x-a", b"1"),
            (b"x-a", b"2"),
            (b"x-bin", b"\xff\x00\xfe"),
            (b"x-e", b""),
        ];
        assert_eq!(parse_pairs(&encode(&pairs)).unwrap(), pairs);
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(parse_pairs(b"").unwrap(), Vec::<(&[u8], &[u8])>::new());
        assert_eq!(
            parse_pairs(&encode(&[])).unwrap(),
            Vec::<(&[u8], &[u8])>::new()
        );
    }

    #[test]
    fn malformed_maps_are_refused_not_panicked_on() {
        let good = encode(&[(b"x-a", b"1"), (b"x-b", b"22")]);
        // Every truncation.
        for cut in 1..good.len() {
            assert_eq!(parse_pairs(&good[..cut]), None, "cut at {cut}");
        }
        // Trailing garbage.
        let mut long = good.clone();
        long.push(7);
        assert_eq!(parse_pairs(&long), None);
        // Missing NUL terminator.
        let mut no_nul = good.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert_eq!(parse_pairs(&no_nul), None);
        // Huge claimed count or lengths.
        assert_eq!(parse_pairs(&u32::MAX.to_le_bytes()), None);
        let mut huge_len = good;
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_pairs(&huge_len), None);
    }
}
