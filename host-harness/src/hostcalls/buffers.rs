//! Buffers: the VM and plugin configuration (the latter only while configuring), request and
//! response bodies (when Envoy lets a filter see them), and a callout's response body.

use meshward_abi::BufferType;

use super::{out, put_u32, read, res, st, C, R};
use crate::Status;

/// A readable buffer of `kind` for the current context; NotFound when Envoy has none.
fn get_buffer(c: &C<'_>, kind: BufferType) -> Result<Vec<u8>, Status> {
    let data = c.data();
    let vm = data.vm();
    match kind {
        BufferType::VmConfiguration => Ok(vm.info.vm_config.clone()),
        BufferType::PluginConfiguration if data.in_config => Ok(vm.info.plugin_config.clone()),
        BufferType::HttpCallResponseBody => data
            .callout
            .as_ref()
            .map(|r| r.body.clone())
            .ok_or(Status::NOT_FOUND),
        BufferType::GrpcReceiveBuffer => data.grpc.message.clone().ok_or(Status::NOT_FOUND),
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => Ok(data
            .stream()
            .ok_or(Status::NOT_FOUND)?
            .body(kind, data.cur_vm)
            .to_vec()),
        BufferType::DownstreamData | BufferType::UpstreamData => super::network::buffer(data, kind),
        _ => Err(Status::NOT_FOUND),
    }
}

/// A buffer type the guest named, or BadArgument.
fn buffer_type(raw: i32) -> Result<BufferType, Status> {
    BufferType::try_from(raw as u32).map_err(|_| Status::BAD_ARGUMENT)
}

pub(super) fn proxy_get_buffer_bytes(
    c: &mut C<'_>,
    buffer_type_: i32,
    start: i32,
    max_size: i32,
    return_data: i32,
    return_size: i32,
) -> R {
    let buf = match buffer_type(buffer_type_).and_then(|kind| get_buffer(c, kind)) {
        Ok(b) => b,
        Err(s) => return st(s),
    };
    let (start, max) = (start as u32 as usize, max_size as u32 as usize);
    if start.checked_add(max).is_none() {
        return st(Status::BAD_ARGUMENT);
    }
    let slice = buf.get(start..).unwrap_or_default();
    let slice = slice.get(..max.min(slice.len())).unwrap_or_default();
    out(c, slice, return_data, return_size)
}

pub(super) fn proxy_get_buffer_status(
    c: &mut C<'_>,
    buffer_type_: i32,
    return_length: i32,
    return_flags: i32,
) -> R {
    let buf = match buffer_type(buffer_type_).and_then(|kind| get_buffer(c, kind)) {
        Ok(b) => b,
        Err(s) => return st(s),
    };
    res(put_u32(c, return_length, buf.len() as u32).and_then(|_| put_u32(c, return_flags, 0)))
}

pub(super) fn proxy_set_buffer_bytes(
    c: &mut C<'_>,
    buffer_type_: i32,
    start: i32,
    size: i32,
    value_data: i32,
    value_size: i32,
) -> R {
    let kind = match buffer_type(buffer_type_) {
        Ok(kind) => kind,
        Err(s) => return st(s),
    };
    let is_body = matches!(
        kind,
        BufferType::HttpRequestBody | BufferType::HttpResponseBody
    );
    if !is_body {
        if let Err(s) = get_buffer(c, kind) {
            return st(s);
        }
    }
    let data = read!(c, value_data, value_size);
    let (start, len) = (start as u32 as usize, size as u32 as usize);
    let filter = c.data().cur_vm;
    let state = c.data_mut();
    let target = match kind {
        // A body the filter does not hold now is immutable to it (Envoy's `Buffer::copyFrom`
        // without a buffer instance): BadArgument.
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => match state.stream_mut() {
            Some(s) => s.body_mut(kind, filter).ok_or(Status::BAD_ARGUMENT),
            None => Err(Status::NOT_FOUND),
        },
        // Envoy hands a callout's response body, and a gRPC message, to the callback
        // read-only: BadArgument.
        BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => {
            Err(Status::BAD_ARGUMENT)
        }
        BufferType::DownstreamData | BufferType::UpstreamData => {
            super::network::buffer_mut(state, kind).ok_or(Status::NOT_FOUND)
        }
        _ => return st(Status::BAD_ARGUMENT),
    };
    match target {
        Ok(buf) => res(splice(buf, start, len, &data)),
        Err(s) => st(s),
    }
}

/// Envoy `Buffer::copyFrom` (since 1.20): at 0, drain `length` bytes (all there are, at most)
/// and prepend — a prefix replaced, the whole body when `length` covers it, a plain prepend for
/// 0; at or past the end, append; anywhere else BadArgument.
fn splice(buf: &mut Vec<u8>, start: usize, length: usize, data: &[u8]) -> Result<(), Status> {
    if start == 0 {
        let drained = length.min(buf.len());
        buf.splice(..drained, data.iter().copied());
        Ok(())
    } else if start >= buf.len() {
        buf.extend_from_slice(data);
        Ok(())
    } else {
        Err(Status::BAD_ARGUMENT)
    }
}

#[cfg(test)]
mod tests {
    use super::splice;
    use crate::Status;

    #[test]
    fn splice_follows_envoy_buffer_rules() {
        let mut b = b"body".to_vec();
        splice(&mut b, 0, 0, b">").unwrap();
        assert_eq!(b, b">body");
        splice(&mut b, 5, 0, b"<").unwrap();
        assert_eq!(b, b">body<");
        splice(&mut b, 0, 6, b"new").unwrap();
        assert_eq!(b, b"new");
        splice(&mut b, 0, 2, b"XYZ").unwrap();
        assert_eq!(b, b"XYZw");
        assert_eq!(splice(&mut b, 1, 1, b"x"), Err(Status::BAD_ARGUMENT));
    }
}
