//! Local replies, stream control and outgoing HTTP calls.

use std::time::Duration;

use crate::abi::{self, ptr_or_null, BufferType, MapType, StreamType};
use crate::headers::{self, HeaderPairs};
use crate::{buffers, wire, Status};

/// Answer the current request locally with `status`, `body` and extra `headers`.
///
/// `details` becomes the response code details in Envoy's access log (no whitespace).
/// `grpc_status` is the gRPC status to report, if any. A header map too large to serialize, or a
/// gRPC status beyond `i32`, is [`Status::BAD_ARGUMENT`] (the host is not asked).
/// After OK, return `Action::Pause` from the callback: the reply replaces the upstream's.
pub fn send_local_response<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(N, V)],
    grpc_status: Option<u32>,
) -> Result<(), Status> {
    let headers = wire::encode_map(headers).ok_or(Status::BAD_ARGUMENT)?;
    let grpc_status = match grpc_status {
        // The ABI's "no gRPC status" is -1.
        None => -1,
        Some(code) => i32::try_from(code).map_err(|_| Status::BAD_ARGUMENT)?,
    };
    // SAFETY: pointers and lengths of live buffers (or null with length 0).
    Status::check(unsafe {
        abi::proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            ptr_or_null(body),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status,
        )
    })
}

/// Resume a stream paused by returning `Action::Pause` (`proxy_continue_stream`).
pub fn continue_stream(stream: StreamType) -> Result<(), Status> {
    // SAFETY: plain value.
    Status::check(unsafe { abi::proxy_continue_stream(stream as u32) })
}

/// Resume the paused request.
pub fn resume_http_request() -> Result<(), Status> {
    continue_stream(StreamType::HttpRequest)
}

/// Resume the paused response.
pub fn resume_http_response() -> Result<(), Status> {
    continue_stream(StreamType::HttpResponse)
}

/// Close (reset) a stream (`proxy_close_stream`): the last resort when even a local reply fails.
pub fn close_stream(stream: StreamType) -> Result<(), Status> {
    // SAFETY: plain value.
    Status::check(unsafe { abi::proxy_close_stream(stream as u32) })
}

/// Send an HTTP request to the cluster `upstream`; the token that `on_http_call_response` will
/// be called with. `headers` must include `:method`, `:path` and `:authority` (Envoy answers
/// BAD_ARGUMENT otherwise, and for an unknown cluster). `timeout` is rounded down to whole
/// milliseconds and capped at `u32::MAX` ms.
pub fn dispatch_http_call<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    upstream: &str,
    headers: &[(N, V)],
    body: Option<&[u8]>,
    trailers: &[(N, V)],
    timeout: Duration,
) -> Result<u32, Status> {
    let headers = wire::encode_map(headers).ok_or(Status::BAD_ARGUMENT)?;
    let trailers = wire::encode_map(trailers).ok_or(Status::BAD_ARGUMENT)?;
    let body = body.unwrap_or_default();
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut token = 0;
    // SAFETY: pointers and lengths of live buffers; the out-param is a live local.
    Status::check(unsafe {
        abi::proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            ptr_or_null(body),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// The headers of the response to an HTTP call (in `on_http_call_response`). Empty when the
/// call failed (the host reports that with zero headers).
pub fn http_call_response_headers() -> Result<HeaderPairs, Status> {
    headers::get_map(MapType::HttpCallResponseHeaders)
}

/// One header of the response to an HTTP call, e.g. `:status`.
pub fn http_call_response_header(name: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Status> {
    headers::get_map_value(MapType::HttpCallResponseHeaders, name)
}

/// Up to `max_size` bytes of the response body of an HTTP call (`body_size` from the callback).
/// Empty when there is none.
pub fn http_call_response_body(max_size: usize) -> Result<Vec<u8>, Status> {
    Ok(buffers::get_buffer(BufferType::HttpCallResponseBody, 0, max_size)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_status_beyond_i32_is_refused_before_any_host_call() {
        let no_headers: &[(&str, &[u8])] = &[];
        assert_eq!(
            send_local_response(200, "x", b"", no_headers, Some(u32::MAX)),
            Err(Status::BAD_ARGUMENT)
        );
        // Natively the host is absent: a valid call reaches the stub.
        assert_eq!(
            send_local_response(403, "x", b"denied", &[("x-a", b"1")], None),
            Err(Status::UNIMPLEMENTED)
        );
    }
}
