//! Protobuf's wire format, read the way C++ `ParseFromString` reads it (what Envoy does with the
//! bytes a module hands over: foreign-function arguments, a `GrpcService`): the last occurrence of
//! a field wins, unknown fields and groups are skipped, malformed data fails. Hand-written: a few
//! scalar fields do not justify a protobuf crate and a build step, and what has to match is C++'s
//! acceptance, pinned in tests.

pub(crate) fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A tag: field number (never 0, at most 2^29 - 1) and wire type.
pub(crate) fn read_tag(buf: &mut &[u8]) -> Option<(u32, u8)> {
    let tag = u32::try_from(read_varint(buf)?).ok()?;
    let field = tag >> 3;
    (field != 0).then_some((field, (tag & 7) as u8))
}

pub(crate) fn read_len<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_varint(buf)?).ok()?;
    // C++ lengths are `int`: anything above i32::MAX is malformed whatever follows.
    if len > i32::MAX as usize || len > buf.len() {
        return None;
    }
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Some(value)
}

fn take(buf: &mut &[u8], n: usize) -> Option<()> {
    *buf = buf.get(n..)?;
    Some(())
}

/// Skips an unknown field; a group runs to the end-group tag of the same field number.
pub(crate) fn skip_field(buf: &mut &[u8], field: u32, wire: u8, depth: u32) -> Option<()> {
    match wire {
        0 => read_varint(buf).map(drop),
        1 => take(buf, 8),
        2 => read_len(buf).map(drop),
        3 => {
            // protobuf's default recursion limit.
            if depth >= 100 {
                return None;
            }
            loop {
                let (inner, inner_wire) = read_tag(buf)?;
                if inner_wire == 4 {
                    return (inner == field).then_some(());
                }
                skip_field(buf, inner, inner_wire, depth + 1)?;
            }
        }
        5 => take(buf, 4),
        _ => None,
    }
}
