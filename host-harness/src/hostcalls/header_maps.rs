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

/// Whether `kind` names a callout response's map (HTTP, or gRPC metadata).
fn is_callout_map(kind: MapType) -> bool {
    matches!(
        kind,
        MapType::HttpCallResponseHeaders
            | MapType::HttpCallResponseTrailers
            | MapType::GrpcCallInitialMetadata
            | MapType::GrpcCallTrailingMetadata
    )
}

/// Runs `f` on header map `kind` as Envoy's `getConstMap` gives it to the current filter (reads):
/// `Err` is the status Envoy answers when the map is not there for it now (`Stream::read_map`).
fn read_map<T>(c: &mut C<'_>, kind: i32, f: impl FnOnce(&HeaderMap) -> T) -> Result<T, Status> {
    let kind = MapType::try_from(kind as u32).map_err(|_| Status::BAD_ARGUMENT)?;
    if is_callout_map(kind) {
        return with_callout_map(c, kind, |m| f(m));
    }
    let filter = c.data().cur_vm;
    let stream = c.data().stream().ok_or(Status::BAD_ARGUMENT)?;
    stream
        .read_map(kind, filter)
        .map(f)
        .ok_or_else(|| stream.missing_map_status())
}

/// Runs `f` on header map `kind` as Envoy's `getMap` gives it to the current filter (changes and
/// sizes): BadArgument when the filter does not hold it now (`Stream::write_map`).
fn write_map<T>(
    c: &mut C<'_>,
    kind: i32,
    f: impl FnOnce(&mut HeaderMap) -> T,
) -> Result<T, Status> {
    let kind = MapType::try_from(kind as u32).map_err(|_| Status::BAD_ARGUMENT)?;
    if is_callout_map(kind) {
        return with_callout_map(c, kind, f);
    }
    let filter = c.data().cur_vm;
    let stream = c.data_mut().stream_mut().ok_or(Status::BAD_ARGUMENT)?;
    stream
        .write_map(kind, filter)
        .map(f)
        .ok_or(Status::BAD_ARGUMENT)
}

/// Like [`write_map`] for a change to the map: a callout response's maps are read-only in Envoy
/// (its `getMap` has no mutable callout maps): BadArgument, the response unchanged.
fn change_map<T>(
    c: &mut C<'_>,
    kind: i32,
    f: impl FnOnce(&mut HeaderMap) -> T,
) -> Result<T, Status> {
    if MapType::try_from(kind as u32).is_ok_and(is_callout_map) {
        return Err(Status::BAD_ARGUMENT);
    }
    write_map(c, kind, f)
}

/// Runs `f` on the callout response's map `kind` while a response is delivered.
fn with_callout_map<T>(
    c: &mut C<'_>,
    kind: MapType,
    f: impl FnOnce(&mut HeaderMap) -> T,
) -> Result<T, Status> {
    if matches!(
        kind,
        MapType::GrpcCallInitialMetadata | MapType::GrpcCallTrailingMetadata
    ) {
        let grpc = &c.data().grpc;
        let pairs = if kind == MapType::GrpcCallInitialMetadata {
            grpc.initial.clone()
        } else {
            grpc.trailing.clone()
        };
        let mut m = HeaderMap::from_pairs(pairs.ok_or(Status::BAD_ARGUMENT)?);
        return Ok(f(&mut m));
    }
    let Some(callout) = c.data_mut().callout.as_mut() else {
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
    Ok(result)
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
    let bytes = read_map(c, map_type, HeaderMap::serialize).unwrap_or_default();
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
    res(change_map(c, map_type, |m| {
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
    let value = match read_map(c, map_type, |m| m.get(&key).map(|v| v.to_vec())) {
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
    res(change_map(c, map_type, |m| op(m, &key, &value)))
}

pub(super) fn proxy_remove_header_map_value(
    c: &mut C<'_>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
) -> R {
    valid_map_type!(map_type);
    let key = read!(c, key_data, key_size);
    res(change_map(c, map_type, |m| m.remove(&key)))
}

pub(super) fn proxy_get_header_map_size(c: &mut C<'_>, map_type: i32, return_size: i32) -> R {
    // Envoy answers the map's byteSize() (Σ name + value), not the number of entries.
    // Envoy sizes through `getMap`, the map the filter could change.
    match write_map(c, map_type, |m| m.byte_size() as u32) {
        Ok(n) => res(put_u32(c, return_size, n)),
        Err(s) => st(s),
    }
}
