//! gRPC calls and streams (`proxy_grpc_call`, `proxy_grpc_stream`, `_send`, `_close`,
//! `_cancel`) as Envoy 1.40's wasm `Context` answers them, made for real against the cluster's
//! gRPC server by `envoy_model::grpc`. The answers come back as callbacks `chain::events`
//! delivers.
//!
//! Statuses (Envoy's `Context::grpcCall` …): a service argument that is neither a serialized
//! `GrpcService` nor a known cluster is ParseFailure; a token of the wrong kind is BadArgument, an
//! unknown one NotFound. Tokens are per VM: calls 5, 9, 13, …, streams 6, 10, 14, ….

use std::time::Duration;

use super::callouts::limited_pairs;
use super::{note, put_u32, read, res, st, C, R};
use crate::envoy_model::grpc::{service_ref, GrpcRequest, GrpcTarget, ServiceRef};
use crate::envoy_model::text;
use crate::vm::GrpcOp;
use crate::Status;

/// Envoy's callout kinds, the low two bits of a token.
const KIND_MASK: u32 = 3;
const KIND_CALL: u32 = 1;
const KIND_STREAM: u32 = 2;

/// Where a call or stream goes: the cluster and its server, or the status Envoy answers.
fn resolve(c: &C<'_>, service: &[u8]) -> Result<(String, std::net::SocketAddr), R> {
    let (cluster, checked) = match service_ref(service) {
        ServiceRef::ClusterName(name) => (name, true),
        ServiceRef::Proto(name) => (name, false),
        ServiceRef::NoClient => return Err(st(Status::BAD_ARGUMENT)),
        ServiceRef::GoogleGrpc => {
            return Err(Err(wasmtime::Error::msg(
                "harness: a GrpcService with `google_grpc` (Google's C++ gRPC client) is not \
                 modelled; name an Envoy cluster instead",
            )))
        }
    };
    match c.data().shared.clusters.grpc_address(&cluster) {
        Some(Some(address)) => Ok((cluster, address)),
        // A bare name Envoy does not know: ParseFailure (its TODO keeps the 0.1 status).
        None if checked => Err(st(Status::PARSE_FAILURE)),
        None => Err(Err(wasmtime::Error::msg(format!(
            "harness: a GrpcService naming the unknown cluster `{cluster}` is not modelled (Envoy \
             skips its cluster check for it and fails the call later)"
        )))),
        Some(None) => Err(Err(wasmtime::Error::msg(format!(
            "harness: gRPC to the cluster `{cluster}` is not modelled: it is a modelled HTTP \
             cluster; give it `grpc: <address>` of a real gRPC server"
        )))),
    }
}

fn strings(c: &mut C<'_>, ptrs: [(i32, i32); 3]) -> Result<[Vec<u8>; 3], Status> {
    let mut out: [Vec<u8>; 3] = Default::default();
    for (slot, (p, l)) in out.iter_mut().zip(ptrs) {
        *slot = crate::vm::mem_read(&*c, p, l)?;
    }
    Ok(out)
}

/// Starts a call (`unary`: its message and timeout) or a stream; writes the token.
#[allow(clippy::too_many_arguments)]
fn start(
    c: &mut C<'_>,
    service: (i32, i32),
    service_name: (i32, i32),
    method: (i32, i32),
    metadata: (i32, i32),
    unary: Option<(Vec<u8>, u32)>,
    return_token: i32,
) -> R {
    let [service, service_name, method] = match strings(c, [service, service_name, method]) {
        Ok(v) => v,
        Err(s) => return st(s),
    };
    note(c, &service);
    let metadata = read!(c, metadata.0, metadata.1);
    let (cluster, address) = match resolve(c, &service) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let stream = unary.is_none();
    let (thread, filter, context) = (c.data().thread, c.data().cur_vm, c.data().ctx_id());
    let token = {
        let vm = c.data_mut().vm_mut();
        let counter = if stream {
            &mut vm.next_grpc_stream
        } else {
            &mut vm.next_grpc_call
        };
        *counter = counter.wrapping_add(4);
        *counter
    };
    if let Err(s) = put_u32(c, return_token, token) {
        return st(s);
    }
    let request = GrpcRequest {
        target: GrpcTarget {
            thread,
            filter,
            context,
            token,
        },
        address,
        authority: cluster,
        service: text(&service_name).into_owned(),
        method: text(&method).into_owned(),
        metadata: limited_pairs(&metadata),
        // Envoy: a timeout of 0 ms means no deadline.
        unary: unary.map(|(m, ms)| (m, (ms > 0).then(|| Duration::from_millis(u64::from(ms))))),
    };
    if let Err(e) = c.data().shared.grpc.start(request) {
        return Err(wasmtime::Error::msg(e));
    }
    c.data_mut().vm_mut().grpc.insert(
        (context, token),
        GrpcOp {
            stream,
            ..GrpcOp::default()
        },
    );
    st(Status::OK)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_grpc_call(
    c: &mut C<'_>,
    service_data: i32,
    service_size: i32,
    service_name_data: i32,
    service_name_size: i32,
    method_name_data: i32,
    method_name_size: i32,
    initial_metadata_data: i32,
    initial_metadata_size: i32,
    request_data: i32,
    request_size: i32,
    timeout_milliseconds: i32,
    return_token: i32,
) -> R {
    let message = read!(c, request_data, request_size);
    start(
        c,
        (service_data, service_size),
        (service_name_data, service_name_size),
        (method_name_data, method_name_size),
        (initial_metadata_data, initial_metadata_size),
        Some((message, timeout_milliseconds as u32)),
        return_token,
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_grpc_stream(
    c: &mut C<'_>,
    service_data: i32,
    service_size: i32,
    service_name_data: i32,
    service_name_size: i32,
    method_name_data: i32,
    method_name_size: i32,
    initial_metadata_data: i32,
    initial_metadata_size: i32,
    return_token: i32,
) -> R {
    start(
        c,
        (service_data, service_size),
        (service_name_data, service_name_size),
        (method_name_data, method_name_size),
        (initial_metadata_data, initial_metadata_size),
        None,
        return_token,
    )
}

/// The exchange `token` of the calling context, if it is of `kind`'s family.
fn target(c: &C<'_>, token: u32) -> GrpcTarget {
    GrpcTarget {
        thread: c.data().thread,
        filter: c.data().cur_vm,
        context: c.data().ctx_id(),
        token,
    }
}

pub(super) fn proxy_grpc_send(
    c: &mut C<'_>,
    token: i32,
    message_data: i32,
    message_size: i32,
    end_stream: i32,
) -> R {
    let token = token as u32;
    if token & KIND_MASK != KIND_STREAM {
        return st(Status::BAD_ARGUMENT);
    }
    let message = read!(c, message_data, message_size);
    let t = target(c, token);
    let Some(op) = c.data().vm().grpc.get(&(t.context, token)).copied() else {
        return st(Status::NOT_FOUND);
    };
    // After the server closed it, Envoy's handler has no stream left to send on: Ok, nothing sent.
    if !op.remote_closed {
        let end = end_stream != 0;
        c.data().shared.grpc.send(t, message, end);
        if end {
            if let Some(op) = c.data_mut().vm_mut().grpc.get_mut(&(t.context, token)) {
                op.local_closed = true;
            }
        }
    }
    st(Status::OK)
}

pub(super) fn proxy_grpc_cancel(c: &mut C<'_>, token: i32) -> R {
    let token = token as u32;
    if !matches!(token & KIND_MASK, KIND_CALL | KIND_STREAM) {
        return st(Status::BAD_ARGUMENT);
    }
    let t = target(c, token);
    if c.data_mut()
        .vm_mut()
        .grpc
        .remove(&(t.context, token))
        .is_none()
    {
        return st(Status::NOT_FOUND);
    }
    c.data().shared.grpc.cancel(t);
    st(Status::OK)
}

pub(super) fn proxy_grpc_close(c: &mut C<'_>, token: i32) -> R {
    let token = token as u32;
    let t = target(c, token);
    let key = (t.context, token);
    match token & KIND_MASK {
        // A call: closing it is cancelling it.
        KIND_CALL => proxy_grpc_cancel(c, token as i32),
        KIND_STREAM => {
            let Some(op) = c.data().vm().grpc.get(&key).copied() else {
                return st(Status::NOT_FOUND);
            };
            if op.remote_closed {
                c.data_mut().vm_mut().grpc.remove(&key);
                c.data().shared.grpc.cancel(t);
            } else {
                c.data().shared.grpc.half_close(t);
                if let Some(op) = c.data_mut().vm_mut().grpc.get_mut(&key) {
                    op.local_closed = true;
                }
            }
            res(Ok(()))
        }
        _ => st(Status::BAD_ARGUMENT),
    }
}
