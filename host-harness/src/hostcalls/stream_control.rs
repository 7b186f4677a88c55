//! Stream control: what a filter asks of its request — continue, reset, a local reply. The
//! stream records the request and the driver carries it out after the callback returns.

use meshward_abi::StreamType;

use super::{ok, read, st, C, R};
use crate::envoy_model::deserialize_pairs;
use crate::stream::LocalReply;
use crate::Status;

pub(super) fn proxy_continue_stream(c: &mut C<'_>, stream_type: i32) -> R {
    let Ok(kind) = StreamType::try_from(stream_type as u32) else {
        return st(Status::BAD_ARGUMENT);
    };
    // On a connection, Downstream and Upstream are the connection's streams.
    if super::network::stream_control(c.data_mut(), kind, false) {
        return ok();
    }
    // Envoy's HTTP context continues only the request and the response; the network streams
    // are Unimplemented there (Downstream is Ok, as Envoy answers it, and does nothing).
    if kind == StreamType::Upstream {
        return st(Status::UNIMPLEMENTED);
    }
    let filter = c.data().cur_vm;
    if let Some(s) = c.data_mut().stream_mut() {
        s.continue_stream(kind, filter);
    }
    ok()
}

pub(super) fn proxy_close_stream(c: &mut C<'_>, stream_type: i32) -> R {
    let Ok(kind) = StreamType::try_from(stream_type as u32) else {
        return st(Status::BAD_ARGUMENT);
    };
    if super::network::stream_control(c.data_mut(), kind, true) {
        return ok();
    }
    let filter = c.data().cur_vm;
    if matches!(kind, StreamType::HttpRequest | StreamType::HttpResponse) {
        if let Some(s) = c.data_mut().stream_mut() {
            s.close(filter);
        }
    }
    ok()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_send_local_response(
    c: &mut C<'_>,
    status_code: i32,
    details_data: i32,
    details_size: i32,
    body_data: i32,
    body_size: i32,
    headers_data: i32,
    headers_size: i32,
    grpc_status: i32,
) -> R {
    let details = read!(c, details_data, details_size);
    let body = read!(c, body_data, body_size);
    let headers = read!(c, headers_data, headers_size);
    let filter = c.data().cur_vm;
    if c.data().stream().is_some_and(|s| s.response_headers_sent()) {
        // Envoy resets the stream (the client has the headers and part of the body); the
        // harness's outcome has no mid-body reset, so it refuses rather than answer otherwise.
        return Err(wasmtime::Error::msg(
            "harness: send_local_response after the response headers went to the client is not \
             modelled: Envoy resets the stream there (the client sees the headers, then a reset)",
        ));
    }
    if let Some(s) = c.data_mut().stream_mut() {
        s.send_local_reply(LocalReply {
            status: status_code as u32 as u16,
            details: sanitize_details(&details),
            body,
            headers: deserialize_pairs(&headers),
            by: Some(filter),
            // Envoy takes 0..=16 (`WellKnownGrpcStatus`); the SDKs send -1 for none.
            grpc_status: (0..=16)
                .contains(&grpc_status)
                .then_some(grpc_status as u32),
        });
    }
    ok()
}

/// Response code details as Envoy stores them (`StringUtil::replaceAllEmptySpace`: every space,
/// tab, newline, carriage return, form feed and vertical tab becomes `_`).
fn sanitize_details(details: &[u8]) -> String {
    String::from_utf8_lossy(details)
        .chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn details_whitespace_becomes_underscores() {
        assert_eq!(
            super::sanitize_details(b"a b\tc\nd\re\x0bf\x0cg"),
            "a_b_c_d_e_f_g"
        );
    }
}
