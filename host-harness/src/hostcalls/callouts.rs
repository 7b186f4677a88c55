//! HTTP callouts: `proxy_http_call` to the test's clusters (`envoy_model::Clusters`; the response
//! is delivered later as a timer event). gRPC calls and streams are in `grpc`.

use std::time::Duration;

use super::{note, put_u32, read, res, st, C, R};
use crate::envoy_model::{deserialize_pairs, text, CalloutRequest};
use crate::runtime::Event;
use crate::Status;

/// cpp-host's limits on a serialized pairs map it takes from a module.
const MAX_PAIRS: usize = 1024;
const MAX_PAIRS_BYTES: usize = 1 << 20;

/// The pairs of a map a module hands over; cpp-host reads a map over its limits as no pairs at
/// all (so a callout with one is missing `:method` and refused).
pub(super) fn limited_pairs(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let count = data
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if data.len() > MAX_PAIRS_BYTES || count > MAX_PAIRS {
        return Vec::new();
    }
    deserialize_pairs(data)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_http_call(
    c: &mut C<'_>,
    upstream_data: i32,
    upstream_size: i32,
    headers_data: i32,
    headers_size: i32,
    body_data: i32,
    body_size: i32,
    trailers_data: i32,
    trailers_size: i32,
    timeout_milliseconds: i32,
    return_token: i32,
) -> R {
    let upstream = read!(c, upstream_data, upstream_size);
    note(c, &upstream);
    let headers = read!(c, headers_data, headers_size);
    let body = read!(c, body_data, body_size);
    let trailers = read!(c, trailers_data, trailers_size);
    // cpp-host writes the token first to validate the pointer before starting anything.
    if let Err(s) = put_u32(c, return_token, 0) {
        return st(s);
    }
    let cluster = text(&upstream).into_owned();
    if let Some(crate::envoy_model::GrpcRoute::Server(address)) =
        c.data().shared.clusters.grpc_route(&cluster)
    {
        return Err(wasmtime::Error::msg(format!(
            "harness: an HTTP callout to the gRPC cluster `{cluster}` ({address}) is not modelled: \
             the harness speaks only gRPC to a `grpc` cluster; test this call in Envoy \
             (`meshward test --envoy`)"
        )));
    }
    let headers = limited_pairs(&headers);
    let has = |n: &[u8]| headers.iter().any(|(k, _)| k.as_slice() == n);
    if !c.data().shared.clusters.exists(&cluster)
        || !has(b":method")
        || !has(b":path")
        || !has(b":authority")
    {
        return st(Status::BAD_ARGUMENT);
    }
    let to_strings = |pairs: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|(n, v)| (text(&n).into_owned(), text(&v).into_owned()))
            .collect()
    };
    let request = CalloutRequest {
        cluster,
        headers: to_strings(headers),
        body,
        trailers: to_strings(limited_pairs(&trailers)),
        timeout: Duration::from_millis(u64::from(timeout_milliseconds as u32)),
    };
    let shared = c.data().shared.clone();
    let (result, delay) = shared.clusters.call(request);
    let (thread, filter) = (c.data().thread, c.data().cur_vm);
    // Envoy numbers a VM's HTTP callouts 4, 8, 12, … (the low two bits tell its callout kinds
    // apart), one counter per VM.
    let token = {
        let vm = c.data_mut().vm_mut();
        let token = vm.core.next_http_call();
        vm.callouts.insert(token, result);
        token
    };
    shared.schedule(
        delay,
        Event::Callout {
            thread,
            filter,
            token,
        },
    );
    res(put_u32(c, return_token, token))
}
