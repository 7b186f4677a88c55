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
///
/// # Why this one call goes through the SDK (wasm32)
///
/// The response arrives through the SDK's exported `proxy_on_http_call_response`, whose
/// dispatcher routes it by token to the context that made the call and panics ("invalid
/// token_id") on a token it did not register. Only the SDK's own `dispatch_http_call` registers
/// tokens (the dispatcher is private), so the call is made through it. Its remaining panic is
/// confined to statuses other than OK, BAD_ARGUMENT and INTERNAL_FAILURE: Envoy (cpp-host) and
/// meshward's harness answer those three, or INVALID_MEMORY_ACCESS for unreadable buffers, which
/// the live slices passed here cannot be. Header or trailer names or values that are not UTF-8
/// (the SDK takes `&str`), or maps too large to serialize, are [`Status::BAD_ARGUMENT`] before
/// the host is asked.
pub fn dispatch_http_call<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    upstream: &str,
    headers: &[(N, V)],
    body: Option<&[u8]>,
    trailers: &[(N, V)],
    timeout: Duration,
) -> Result<u32, Status> {
    wire::encode_map(headers).ok_or(Status::BAD_ARGUMENT)?;
    wire::encode_map(trailers).ok_or(Status::BAD_ARGUMENT)?;
    let headers = text_pairs(headers).ok_or(Status::BAD_ARGUMENT)?;
    let trailers = text_pairs(trailers).ok_or(Status::BAD_ARGUMENT)?;
    // Capped rather than truncated (the SDK casts `as u32`).
    let timeout = timeout.min(Duration::from_millis(u64::from(u32::MAX)));
    sdk_http_call(upstream, headers, body, trailers, timeout)
}

/// Pairs as the SDK takes them; `None` if a name or value is not UTF-8.
fn text_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Option<Vec<(&str, &str)>> {
    pairs
        .iter()
        .map(|(name, value)| {
            Some((
                std::str::from_utf8(name.as_ref()).ok()?,
                std::str::from_utf8(value.as_ref()).ok()?,
            ))
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
fn sdk_http_call(
    upstream: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    trailers: Vec<(&str, &str)>,
    timeout: Duration,
) -> Result<u32, Status> {
    // See `dispatch_http_call` for why this is the SDK's call. Its `Status` enum only ever holds
    // BAD_ARGUMENT or INTERNAL_FAILURE here; `as u32` is its ABI value.
    proxy_wasm::hostcalls::dispatch_http_call(upstream, headers, body, trailers, timeout)
        .map_err(|status| Status(status as u32))
}

/// Native stub: there is no host (and no SDK dispatcher to register with).
#[cfg(not(target_arch = "wasm32"))]
fn sdk_http_call(
    _upstream: &str,
    _headers: Vec<(&str, &str)>,
    _body: Option<&[u8]>,
    _trailers: Vec<(&str, &str)>,
    _timeout: Duration,
) -> Result<u32, Status> {
    Err(Status::UNIMPLEMENTED)
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

    #[test]
    fn http_calls_with_non_utf8_pairs_are_refused_before_any_host_call() {
        let none: &[(&[u8], &[u8])] = &[];
        let t = Duration::from_secs(1);
        let bad_value: &[(&[u8], &[u8])] = &[(b":path", b"/\xff")];
        assert_eq!(
            dispatch_http_call("c", bad_value, None, none, t),
            Err(Status::BAD_ARGUMENT)
        );
        let bad_name: &[(&[u8], &[u8])] = &[(b"x-\xc3\x28", b"1")];
        assert_eq!(
            dispatch_http_call("c", none, None, bad_name, t),
            Err(Status::BAD_ARGUMENT)
        );
        // Valid pairs reach the (native) host stub.
        let good: &[(&[u8], &[u8])] = &[(b":method", b"GET"), (b":path", b"/")];
        assert_eq!(
            dispatch_http_call("c", good, Some(b"x"), none, Duration::MAX),
            Err(Status::UNIMPLEMENTED)
        );
    }

    #[test]
    fn text_pairs_keep_order_and_refuse_any_non_utf8_byte() {
        assert_eq!(
            text_pairs(&[("a", "1"), ("b", "")]),
            Some(vec![("a", "1"), ("b", "")])
        );
        assert_eq!(text_pairs(&[(&b"a"[..], &b"\xff"[..])]), None);
    }
}
