//! Envoy's foreign functions around the stream (foreign.cc, 1.40): `clear_route_cache`,
//! `set_envoy_filter_state`, `declare_property`, `sign` and the CEL `expr_*` family. The harness
//! answers what it can answer as Envoy does (malformed arguments, unknown keys, missing keys) and
//! refuses the rest loudly (see [`refusal`]): their effects are not modelled.

use crate::envoy_model::protobuf::{read_len, read_tag, skip_field};
use crate::Status;

/// The filter-state object factories Envoy 1.40 registers (its node's `filter_state.object`
/// extensions): `set_envoy_filter_state` answers NotFound for any other key.
const FILTER_STATE_OBJECTS: &[&str] = &[
    "envoy.ai.llm_protocol.request",
    "envoy.ai.model.request",
    "envoy.filters.listener.original_dst.local_ip",
    "envoy.filters.listener.original_dst.remote_ip",
    "envoy.hashable_string",
    "envoy.network.application_protocols",
    "envoy.network.ip",
    "envoy.network.network_namespace",
    "envoy.network.transport_socket.http_11_proxy.info",
    "envoy.network.transport_socket.original_dst_address",
    "envoy.network.upstream_server_name",
    "envoy.network.upstream_subject_alt_names",
    "envoy.ratelimit.hits_addend",
    "envoy.router.debug_config",
    "envoy.string",
    "envoy.tcp_proxy.cluster",
    "envoy.tcp_proxy.disable_tunneling",
    "envoy.tcp_proxy.per_connection_idle_timeout_ms",
    "envoy.upstream.dynamic_host",
    "envoy.upstream.dynamic_port",
];

/// The length-delimited fields `wanted` of a protobuf message (last one wins, as in protobuf),
/// or `None` when the bytes do not parse as a message. `strings` must be UTF-8 (proto3 string).
fn fields(mut buf: &[u8], wanted: &[u32], strings: &[u32]) -> Option<Vec<(u32, Vec<u8>)>> {
    let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
    while !buf.is_empty() {
        let (field, wire) = read_tag(&mut buf)?;
        if wire == 2 && wanted.contains(&field) {
            let bytes = read_len(&mut buf)?.to_vec();
            if strings.contains(&field) {
                std::str::from_utf8(&bytes).ok()?;
            }
            out.retain(|(f, _)| *f != field);
            out.push((field, bytes));
        } else {
            skip_field(&mut buf, field, wire, 0)?;
        }
    }
    Some(out)
}

fn field(fields: &[(u32, Vec<u8>)], n: u32) -> &[u8] {
    fields
        .iter()
        .find(|(f, _)| *f == n)
        .map_or(&[][..], |(_, v)| v.as_slice())
}

/// Always Ok: the route the harness has does not depend on headers, so there is nothing to clear.
pub(super) fn clear_route_cache(_arguments: &[u8]) -> (Status, Option<Vec<u8>>) {
    (Status::OK, None)
}

/// `SetEnvoyFilterStateArguments { string path = 1; string value = 2; LifeSpan span = 3; }`:
/// unparseable ⇒ BadArgument; a key no object factory is registered for ⇒ NotFound. A registered
/// key is refused before this is called ([`refusal`]).
pub(super) fn set_envoy_filter_state(arguments: &[u8]) -> (Status, Option<Vec<u8>>) {
    match fields(arguments, &[1, 2], &[1, 2]) {
        None => (Status::BAD_ARGUMENT, None),
        Some(_) => (Status::NOT_FOUND, None),
    }
}

/// `DeclarePropertyArguments`: unparseable ⇒ BadArgument (a parseable one is refused first).
pub(super) fn declare_property(arguments: &[u8]) -> (Status, Option<Vec<u8>>) {
    match fields(arguments, &[1, 4], &[1]) {
        None => (Status::BAD_ARGUMENT, None),
        Some(_) => (Status::OK, None),
    }
}

/// `SignArguments { string hash_function = 1; bytes private_key = 2; bytes text = 3; string
/// private_key_pem = 4; }`: unparseable, or no key, or both keys ⇒ BadArgument, no result (a
/// single key is refused first).
pub(super) fn sign(_arguments: &[u8]) -> (Status, Option<Vec<u8>>) {
    (Status::BAD_ARGUMENT, None)
}

/// Why the harness will not answer this call as Envoy would, if it will not.
pub(super) fn refusal(name: &[u8], arguments: &[u8]) -> Option<String> {
    let refuse = |what: String| Some(format!("harness: foreign function {what} is not modelled"));
    match name {
        b"expr_create" | b"expr_evaluate" | b"expr_delete" => refuse(format!(
            "{} (CEL expressions)",
            String::from_utf8_lossy(name)
        )),
        b"set_envoy_filter_state" => {
            let f = fields(arguments, &[1, 2], &[1, 2])?;
            let key = String::from_utf8_lossy(field(&f, 1)).into_owned();
            FILTER_STATE_OBJECTS
                .contains(&key.as_str())
                .then(|| format!("harness: foreign function set_envoy_filter_state of the registered object `{key}` is not modelled"))
        }
        b"declare_property" => {
            fields(arguments, &[1, 4], &[1])?;
            refuse("declare_property (typed CEL state properties)".to_string())
        }
        b"sign" => {
            let f = fields(arguments, &[1, 2, 3, 4], &[1, 4])?;
            let (der, pem) = (!field(&f, 2).is_empty(), !field(&f, 4).is_empty());
            (der != pem).then(|| {
                "harness: foreign function sign with a private key is not modelled".to_string()
            })
        }
        _ => None,
    }
}
