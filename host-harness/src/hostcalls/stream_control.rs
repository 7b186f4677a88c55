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
    if super::network::stream_control(c.data_mut(), kind, false) {
        return ok();
    }
    if let Some(s) = c.data_mut().stream_mut() {
        s.continue_stream(kind);
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
    _grpc_status: i32,
) -> R {
    let details = read!(c, details_data, details_size);
    let body = read!(c, body_data, body_size);
    let headers = read!(c, headers_data, headers_size);
    let filter = c.data().cur_vm;
    if let Some(s) = c.data_mut().stream_mut() {
        s.send_local_reply(LocalReply {
            status: status_code as u32 as u16,
            details: String::from_utf8_lossy(&details).into_owned(),
            body,
            headers: deserialize_pairs(&headers),
            by: Some(filter),
        });
    }
    ok()
}
