//! Header maps: the request's and response's headers and trailers (through the stream), and a
//! callout response's headers and trailers while it is delivered.

use meshward_abi::MapType;

use super::{note, out, put_u32, read, res, st, C, R};
use crate::envoy_model::{deserialize_pairs, HeaderMap};
use crate::Status;

/// Returns BadArgument from the host function unless `map_type` names a map (checked before
/// guest memory is read, as Envoy does).
macro_rules! valid_map_type {
    ($map_type:expr) => {
        if MapType::try_from($map_type as u32).is_err() {
            return st(Status::BAD_ARGUMENT);
        }
    };
}

/// How a host call uses a map: Envoy reads through `getConstMap` and changes (and sizes)
/// through `getMap`, which see different maps in some phases.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Runs `f` on header map `kind` of the current context: `Err` is the status Envoy returns when
/// the map is not there for this filter now (see `Stream::read_map` / `write_map`).
fn with_map<T>(
    c: &mut C<'_>,
    kind: i32,
    access: Access,
    f: impl FnOnce(&mut HeaderMap) -> T,
) -> Result<T, Status> {
    let kind = MapType::try_from(kind as u32).map_err(|_| Status::BAD_ARGUMENT)?;
    let filter = c.data().cur_vm;
    let data = c.data_mut();
    if matches!(
        kind,
        MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers
    ) {
        let Some(callout) = data.callout.as_mut() else {
            return Err(Status::BAD_ARGUMENT);
        };
        let headers = kind == MapType::HttpCallResponseHeaders;
        let pairs = if headers {
            callout.headers.clone().unwrap_or_default()
        } else {
            callout.trailers.clone()
        };
        let mut m = HeaderMap::from_pairs(pairs);
        let result = f(&mut m);
        let entries = m.entries().to_vec();
        if headers {
            if callout.headers.is_some() || !entries.is_empty() {
                callout.headers = Some(entries);
            }
        } else {
            callout.trailers = entries;
        }
        return Ok(result);
    }
    let stream = data.stream_mut().ok_or(Status::BAD_ARGUMENT)?;
    match access {
        Access::Read => {
            let missing = stream.missing_map_status();
            match stream.read_map(kind, filter) {
                // Reads do not change the map: a copy keeps one signature for both uses.
                Some(m) => Ok(f(&mut m.clone())),
                None => Err(missing),
            }
        }
        Access::Write => stream
            .write_map(kind, filter)
            .map(f)
            .ok_or(Status::BAD_ARGUMENT),
    }
}

pub(super) fn proxy_get_header_map_pairs(
    c: &mut C<'_>,
    map_type: i32,
    return_data: i32,
    return_size: i32,
) -> R {
    valid_map_type!(map_type);
    // Envoy serializes whatever `getConstMap` gives, and a map that is not there as no pairs:
    // Ok with an empty buffer, never an error.
    let bytes = with_map(c, map_type, Access::Read, |m| m.serialize()).unwrap_or_default();
    // cpp-host: an empty map is returned as an empty buffer (pointer 0, size 0).
    let bytes = if bytes.len() <= 4 { Vec::new() } else { bytes };
    out(c, &bytes, return_data, return_size)
}

pub(super) fn proxy_set_header_map_pairs(
    c: &mut C<'_>,
    map_type: i32,
    map_data: i32,
    map_size: i32,
) -> R {
    valid_map_type!(map_type);
    let data = read!(c, map_data, map_size);
    let pairs = deserialize_pairs(&data);
    res(with_map(c, map_type, Access::Write, |m| {
        m.clear();
        for (n, v) in &pairs {
            m.add(n, v);
        }
    }))
}

pub(super) fn proxy_get_header_map_value(
    c: &mut C<'_>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
    return_value_data: i32,
    return_value_size: i32,
) -> R {
    valid_map_type!(map_type);
    let key = read!(c, key_data, key_size);
    note(c, &key);
    let value = match with_map(c, map_type, Access::Read, |m| {
        m.get(&key).map(|v| v.to_vec())
    }) {
        Ok(Some(v)) => v,
        Ok(None) => return st(Status::NOT_FOUND),
        Err(s) => return st(s),
    };
    out(c, &value, return_value_data, return_value_size)
}

pub(super) fn proxy_add_header_map_value(
    c: &mut C<'_>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
    value_data: i32,
    value_size: i32,
) -> R {
    let value = (value_data, value_size);
    set_value(c, map_type, (key_data, key_size), value, HeaderMap::add)
}

pub(super) fn proxy_replace_header_map_value(
    c: &mut C<'_>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
    value_data: i32,
    value_size: i32,
) -> R {
    let value = (value_data, value_size);
    set_value(c, map_type, (key_data, key_size), value, HeaderMap::replace)
}

/// Adds or replaces (`op`) the value of the key at `key` with the bytes at `value`.
fn set_value(
    c: &mut C<'_>,
    map_type: i32,
    key: (i32, i32),
    value: (i32, i32),
    op: fn(&mut HeaderMap, &[u8], &[u8]),
) -> R {
    valid_map_type!(map_type);
    let key = read!(c, key.0, key.1);
    let value = read!(c, value.0, value.1);
    res(with_map(c, map_type, Access::Write, |m| {
        op(m, &key, &value)
    }))
}

pub(super) fn proxy_remove_header_map_value(
    c: &mut C<'_>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
) -> R {
    valid_map_type!(map_type);
    let key = read!(c, key_data, key_size);
    res(with_map(c, map_type, Access::Write, |m| m.remove(&key)))
}

pub(super) fn proxy_get_header_map_size(c: &mut C<'_>, map_type: i32, return_size: i32) -> R {
    // Envoy answers the map's byteSize() (Σ name + value), not the number of entries.
    // Envoy sizes through `getMap`, the map the filter could change.
    match with_map(c, map_type, Access::Write, |m| m.byte_size() as u32) {
        Ok(n) => res(put_u32(c, return_size, n)),
        Err(s) => st(s),
    }
}
