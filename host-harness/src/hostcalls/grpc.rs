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
use crate::envoy_model::grpc::{
    metadata_is_valid, service_ref, EnvoyGrpc, Failure, GrpcRequest, GrpcTarget, ServiceRef,
};
use crate::envoy_model::text;
use crate::envoy_model::{CalloutRequest, GrpcRoute};
use crate::vm::GrpcOp;
use crate::Status;

/// Envoy's callout kinds, the low two bits of a token.
const KIND_MASK: u32 = 3;
const KIND_CALL: u32 = 1;
const KIND_STREAM: u32 = 2;

/// Where a call or stream goes.
enum Route {
    /// The cluster's gRPC server.
    Server(String, std::net::SocketAddr),
    /// Envoy takes the call (it has a token: InternalFailure for the dispatch) and fails it at
    /// once, with this close.
    Fails(Failure),
    /// Envoy answers the dispatch with this status and no token.
    Refused(Status),
    /// Nothing listens: Envoy takes the call (Ok, a token) and its router's connection is
    /// refused.
    Down,
    /// A modelled HTTP cluster: Envoy takes the call and reads the cluster's answer as gRPC.
    Http(String),
}

/// Where a call or stream goes, with the `GrpcService`'s `authority` and `skip_envoy_headers`.
fn resolve(c: &C<'_>, service: &[u8]) -> Result<(Route, EnvoyGrpc), wasmtime::Error> {
    let (grpc, checked) = match service_ref(service) {
        ServiceRef::ClusterName(name) => (
            EnvoyGrpc {
                cluster_name: name,
                ..EnvoyGrpc::default()
            },
            true,
        ),
        ServiceRef::Proto(grpc) => (grpc, false),
        ServiceRef::NoClient => {
            return Err(wasmtime::Error::msg(format!(
                "harness: the service `{}` parses as a serialized GrpcService naming no client; \
                 Envoy 1.40 aborts on it (panic: unset oneof) — not modelled",
                String::from_utf8_lossy(service).escape_debug()
            )))
        }
        ServiceRef::GoogleGrpc => {
            return Err(wasmtime::Error::msg(
                "harness: a GrpcService with `google_grpc` (Google's C++ gRPC client) is not \
                 modelled; name an Envoy cluster instead",
            ))
        }
    };
    let cluster = grpc.cluster_name.clone();
    let route = match c.data().shared.clusters.grpc_route(&cluster) {
        Some(GrpcRoute::Server(address)) => Route::Server(cluster, address),
        Some(GrpcRoute::Down) => Route::Down,
        // A bare name Envoy does not know: ParseFailure (its TODO keeps the 0.1 status).
        None if checked => Route::Refused(Status::PARSE_FAILURE),
        None => Route::Fails(Failure::no_cluster()),
        Some(GrpcRoute::Http) if checked => Route::Http(cluster),
        Some(GrpcRoute::Http | GrpcRoute::Unmodelled) => {
            return Err(wasmtime::Error::msg(format!(
                "harness: gRPC to the cluster `{cluster}` is not modelled: it is not a gRPC \
                 server (give it `grpc: <address>` of a real one)"
            )))
        }
    };
    Ok((route, grpc))
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
    let (route, grpc) = match resolve(c, &service) {
        Ok((Route::Refused(status), _)) => return st(status),
        Ok(resolved) => resolved,
        Err(e) => return Err(e),
    };
    let metadata = limited_pairs(&metadata);
    let stream = unary.is_none();
    // cpp-host makes every callout on the root context: the exchange is the VM's, whichever
    // context started it, and its callbacks come to the root context.
    let (thread, filter, context) = (c.data().thread, c.data().cur_vm, c.data().vm().root_ctx);
    let token = {
        let core = &c.data().vm().core;
        if stream {
            core.next_grpc_stream()
        } else {
            core.next_grpc_call()
        }
    };
    if let Err(s) = put_u32(c, return_token, token) {
        return st(s);
    }
    let target = GrpcTarget {
        thread,
        filter,
        context,
        token,
    };
    let failure = match route {
        Route::Fails(ref f) => Some(f.clone()),
        _ if !metadata_is_valid(&metadata) => Some(Failure::invalid_metadata()),
        _ => None,
    };
    c.data_mut().vm_mut().grpc.insert(
        token,
        GrpcOp {
            stream,
            ..GrpcOp::default()
        },
    );
    if let Some(failure) = failure {
        c.data().shared.grpc.fail(target, &failure, !stream);
        return st(Status::INTERNAL_FAILURE);
    }
    if let Route::Http(cluster) = &route {
        if stream {
            return Err(wasmtime::Error::msg(format!(
                "harness: a gRPC stream to the cluster `{cluster}` is not modelled: it is not a \
                 gRPC server (give it `grpc: <address>` of a real one)"
            )));
        }
        let request = CalloutRequest {
            cluster: cluster.clone(),
            headers: vec![
                (":method".into(), "POST".into()),
                (
                    ":path".into(),
                    format!("/{}/{}", text(&service_name), text(&method)),
                ),
                (":authority".into(), cluster.clone()),
                ("content-type".into(), "application/grpc".into()),
            ],
            body: unary.map(|(m, _)| m).unwrap_or_default(),
            trailers: Vec::new(),
            timeout: Duration::ZERO,
        };
        let (status, message) = c.data().shared.clusters.grpc_over_http(request);
        let failure = Failure::upstream(status, message);
        c.data().shared.grpc.fail(target, &failure, true);
        return st(Status::OK);
    }
    if let Route::Down = route {
        c.data()
            .shared
            .grpc
            .fail(target, &Failure::connect_refused(), !stream);
        return st(Status::OK);
    }
    let Route::Server(cluster, address) = route else {
        return st(Status::INTERNAL_FAILURE);
    };
    let request = GrpcRequest {
        target,
        address,
        authority: grpc.authority.unwrap_or(cluster),
        skip_envoy_headers: grpc.skip_envoy_headers,
        service: text(&service_name).into_owned(),
        method: text(&method).into_owned(),
        metadata,
        // A call's timeout, 0 included (Envoy sends `grpc-timeout: 0m`, and sets no timer).
        unary: unary.map(|(m, ms)| (m, (ms > 0).then(|| Duration::from_millis(u64::from(ms))))),
    };
    if let Err(e) = c.data().shared.grpc.start(request) {
        return Err(wasmtime::Error::msg(e));
    }
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

/// The exchange `token` of the VM (its root context's).
fn target(c: &C<'_>, token: u32) -> GrpcTarget {
    GrpcTarget {
        thread: c.data().thread,
        filter: c.data().cur_vm,
        context: c.data().vm().root_ctx,
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
    let Some(op) = c.data().vm().grpc.get(&token).copied() else {
        return st(Status::NOT_FOUND);
    };
    if op.remote_closed {
        return Err(dangling("proxy_grpc_send", token));
    }
    // A send with end of stream half-closes the stream, but Envoy does not mark it closed
    // locally (only `proxy_grpc_close` does): its entry then outlives the server's close.
    c.data().shared.grpc.send(t, message, end_stream != 0);
    st(Status::OK)
}

/// Envoy 1.40 keeps a stream's entry after the server closed it unless the module had called
/// `proxy_grpc_close` first; its handle then points at a deleted stream, and a send, close or
/// cancel on it uses freed memory (answering Ok). Refused by name rather than answered.
fn dangling(call: &str, token: u32) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "harness: {call} on the gRPC stream {token} after the server closed it is not modelled: \
         in Envoy 1.40 it acts on a deleted stream (a use after free); close a stream with \
         proxy_grpc_close before the server does, or stop using its token after \
         proxy_on_grpc_close"
    ))
}

pub(super) fn proxy_grpc_cancel(c: &mut C<'_>, token: i32) -> R {
    let token = token as u32;
    if !matches!(token & KIND_MASK, KIND_CALL | KIND_STREAM) {
        return st(Status::BAD_ARGUMENT);
    }
    let t = target(c, token);
    match c.data_mut().vm_mut().grpc.remove(&token) {
        None => return st(Status::NOT_FOUND),
        Some(op) if op.remote_closed => return Err(dangling("proxy_grpc_cancel", token)),
        Some(_) => {}
    }
    c.data().shared.grpc.cancel(t);
    st(Status::OK)
}

pub(super) fn proxy_grpc_close(c: &mut C<'_>, token: i32) -> R {
    let token = token as u32;
    let t = target(c, token);
    let key = token;
    match token & KIND_MASK {
        // A call: closing it is cancelling it.
        KIND_CALL => proxy_grpc_cancel(c, token as i32),
        KIND_STREAM => {
            let Some(op) = c.data().vm().grpc.get(&key).copied() else {
                return st(Status::NOT_FOUND);
            };
            if op.remote_closed {
                return Err(dangling("proxy_grpc_close", token));
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
