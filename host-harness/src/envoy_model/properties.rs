//! `proxy_get_property` / `proxy_set_property` with Envoy's attribute names and encodings:
//! path segments are NUL-separated, and a NUL ending the path only ends its last segment (the C++
//! SDK terminates every segment); strings are raw bytes; integers 8-byte little-endian; booleans
//! one byte; maps are serialized as proxy-wasm pairs. Unknown attributes → NotFound; a bare
//! top-level map (`request`, `xds`, …) or an empty path → SerializationFailure, as Envoy 1.40
//! answers (tests/scenarios/conformance/runtime/properties*.yaml).
//!
//! `set_property(path, value)` stores Envoy filter state `wasm.<path>` for the request;
//! `get_property` looks an unknown first segment up in that filter state (so a later filter in
//! the same request reads `get_property([name])` of what an earlier one set with `[name]`).

use super::hcm::http_to_grpc_status;
use super::{Connection, HeaderMap};
use crate::Status;

/// Envoy's top-level attribute tokens: an unknown first segment is a filter-state lookup.
/// (Kept as the harness had them; several are no longer top-level in 1.40 and read NotFound there
/// too unless a filter set them as filter state.)
const TOKENS: &[&str] = &[
    "metadata",
    "request",
    "response",
    "connection",
    "upstream",
    "node",
    "source",
    "destination",
    "listener_direction",
    "listener_metadata",
    "cluster_name",
    "cluster_metadata",
    "route_name",
    "route_metadata",
    "plugin_name",
    "upstream_host_metadata",
    "plugin_root_id",
    "plugin_vm_id",
    "connection_id",
    "filter_state",
    "xds",
];

/// The plugin that asks (`plugin_name`, `plugin_root_id`, `plugin_vm_id`).
pub(crate) struct Plugin<'a> {
    pub name: &'a str,
    pub root_id: &'a str,
    pub vm_id: &'a str,
}

/// What the request attributes are read from: the stream of the calling context implements it,
/// so this model of Envoy's attributes does not depend on how the harness keeps a stream.
pub(crate) trait StreamFacts {
    fn connection(&self) -> &Connection;
    /// `None` when the calling filter no longer holds them (its `request.*` header attributes
    /// are then NotFound, as in Envoy).
    fn request_headers(&self) -> Option<&HeaderMap>;
    fn request_body_len(&self) -> usize;
    /// Wall time the request started (ns since the epoch).
    fn start_ns(&self) -> u64;
    fn response_headers(&self) -> Option<&HeaderMap>;
    fn response_body_len(&self) -> usize;
    /// Envoy's response code details once the request is answered (`via_upstream` for the
    /// upstream's answer).
    fn code_details(&self) -> Option<&str>;
    /// Filter state set by `proxy_set_property` (key = the raw path bytes).
    fn filter_state(&self, key: &[u8]) -> Option<&[u8]>;
    /// Response body bytes received so far (Envoy counts them as they arrive: 0 while the
    /// response headers are being decoded).
    fn response_body_received(&self) -> usize {
        self.response_body_len()
    }
}

/// The route the harness's listener has, as the rig's Envoy configures it: one virtual host
/// `all` (route configuration `all`) with one unnamed route to the cluster `upstream`.
const ROUTE_CLUSTER: &str = "upstream";
const VIRTUAL_HOST: &str = "all";
/// Where the harness's echo upstream "is" and the address its connection "comes from": Envoy's
/// are ephemeral, so cases check only their format (`N.N.N.N:N`).
const UPSTREAM_ADDRESS: &str = "127.0.0.1:10001";
const UPSTREAM_PORT: i64 = 10001;
const UPSTREAM_LOCAL_ADDRESS: &str = "127.0.0.1:40001";

/// The listener's own certificate, as the rig's Envoy serves it (meshward-rig `Certs`): subject
/// `CN=localhost`, SANs DNS `localhost` and IP 127.0.0.1, no URI SAN.
const LOCAL_SUBJECT: &str = "CN=localhost";
const LOCAL_DNS_SAN: &str = "localhost";

/// A stand-in for the SHA-256 digest of the client certificate (lowercase hex, as Envoy): the
/// harness has no certificate bytes, so it digests what it knows of the certificate; cases check
/// the format only (the rig mints a new certificate per run).
fn peer_digest(t: &crate::Tls) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in t.peer_uri_sans.iter().chain(&t.peer_dns_sans) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(t.peer_subject.as_deref().unwrap_or_default().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A property the harness refuses to answer rather than answer differently from Envoy: the
/// error names it (the host call traps with it).
pub(crate) fn unmodelled_property(path: &[u8]) -> Option<String> {
    let segs = segments(path);
    let name = |segs: &[&[u8]]| {
        segs.iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(".")
    };
    match segs.as_slice() {
        // Envoy serializes its whole Node proto (build version, extension list): not reproducible.
        [b"xds", b"node", ..] => Some(format!(
            "harness: property {} (Envoy's serialized Node proto) is not modelled",
            name(&segs)
        )),
        _ => None,
    }
}

/// Envoy's walk over a property path: each NUL ends a segment, so a trailing NUL adds no empty
/// segment, but an inner empty segment (`a\0\0b`) is one.
fn segments(path: &[u8]) -> Vec<&[u8]> {
    let mut segs = Vec::new();
    let mut start = 0;
    while start < path.len() {
        let rest = path.get(start..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        segs.push(rest.get(..end).unwrap_or_default());
        start += end + 1;
    }
    segs
}

/// A map attribute read whole: Envoy cannot serialize its CEL maps.
const MAP_VALUE: Status = Status::SERIALIZATION_FAILURE;

/// An empty proxy-wasm pairs map (Envoy's answer for a map it has, with no entries).
fn empty_map() -> Vec<u8> {
    0u32.to_le_bytes().to_vec()
}

pub(crate) struct PropertyContext<'a> {
    pub plugin: Plugin<'a>,
    /// The request of the calling context; `None` in a root context.
    pub stream: Option<&'a dyn StreamFacts>,
}

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn uint(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub(crate) fn get(path: &[u8], cx: &PropertyContext<'_>) -> Result<Vec<u8>, Status> {
    let segs = segments(path);
    if segs.is_empty() {
        return Err(MAP_VALUE);
    }
    let first = std::str::from_utf8(segs.first().copied().unwrap_or_default())
        .map_err(|_| Status::NOT_FOUND)?;
    let rest: Vec<&str> = segs
        .get(1..)
        .unwrap_or_default()
        .iter()
        .map(|s| std::str::from_utf8(s).map_err(|_| Status::NOT_FOUND))
        .collect::<Result<_, _>>()?;
    if !TOKENS.contains(&first) {
        let s = cx.stream.ok_or(Status::NOT_FOUND)?;
        if !rest.is_empty() {
            return Err(Status::NOT_FOUND);
        }
        return s
            .filter_state(first.as_bytes())
            .map(<[u8]>::to_vec)
            .ok_or(Status::NOT_FOUND);
    }
    let one = |v: Vec<u8>| {
        if rest.len() == 1 {
            Ok(v)
        } else {
            Err(Status::NOT_FOUND)
        }
    };
    match first {
        "plugin_name" if rest.is_empty() => return Ok(cx.plugin.name.as_bytes().to_vec()),
        "plugin_root_id" if rest.is_empty() => return Ok(cx.plugin.root_id.as_bytes().to_vec()),
        "plugin_vm_id" if rest.is_empty() => return Ok(cx.plugin.vm_id.as_bytes().to_vec()),
        _ => {}
    }
    let s = cx.stream.ok_or(Status::NOT_FOUND)?;
    let key = rest.first().copied().unwrap_or("");
    match first {
        "metadata" => match rest.as_slice() {
            // The request's (empty) dynamic metadata proto, and its empty `filter_metadata` map.
            [] => Ok(Vec::new()),
            ["filter_metadata"] => Ok(empty_map()),
            _ => Err(Status::NOT_FOUND),
        },
        "request" | "response" | "connection" | "upstream" | "source" | "destination" | "xds"
        | "filter_state"
            if rest.is_empty() =>
        {
            Err(MAP_VALUE)
        }
        "connection_id" if rest.is_empty() => Ok(uint(s.connection().id)),
        "xds" => xds(s, &rest),
        "upstream" => upstream(s, &rest),
        "request" => request(s, &rest),
        "response" => response(s, &rest),
        "connection" => {
            let tls = s.connection().tls.as_ref();
            let v = match key {
                "id" => uint(s.connection().id),
                "mtls" => vec![tls.map(|t| t.is_mtls()).unwrap_or(false) as u8],
                "requested_server_name" => tls
                    .and_then(|t| t.sni.clone())
                    .unwrap_or_default()
                    .into_bytes(),
                "tls_version" => match tls {
                    Some(_) => b"TLSv1.3".to_vec(),
                    None => return Err(Status::NOT_FOUND),
                },
                "uri_san_peer_certificate" => first_of(tls.map(|t| &t.peer_uri_sans))?,
                "dns_san_peer_certificate" => first_of(tls.map(|t| &t.peer_dns_sans))?,
                // TLS without a client certificate: an empty subject, not NotFound.
                "subject_peer_certificate" => tls
                    .ok_or(Status::NOT_FOUND)?
                    .peer_subject
                    .clone()
                    .unwrap_or_default()
                    .into_bytes(),
                "sha256_peer_certificate_digest" => match tls {
                    Some(t) if t.is_mtls() => peer_digest(t).into_bytes(),
                    _ => return Err(Status::NOT_FOUND),
                },
                "subject_local_certificate" if tls.is_some() => LOCAL_SUBJECT.as_bytes().to_vec(),
                "dns_san_local_certificate" if tls.is_some() => LOCAL_DNS_SAN.as_bytes().to_vec(),
                _ => return Err(Status::NOT_FOUND),
            };
            one(v)
        }
        "source" => one(match key {
            "address" => s.connection().source.to_string().into_bytes(),
            "port" => int(s.connection().source.port() as i64),
            _ => return Err(Status::NOT_FOUND),
        }),
        "destination" => one(match key {
            "address" => s.connection().destination.to_string().into_bytes(),
            "port" => int(s.connection().destination.port() as i64),
            _ => return Err(Status::NOT_FOUND),
        }),
        "filter_state" => {
            let name = key.strip_prefix("wasm.").ok_or(Status::NOT_FOUND)?;
            one(s
                .filter_state(name.as_bytes())
                .map(<[u8]>::to_vec)
                .ok_or(Status::NOT_FOUND)?)
        }
        _ => Err(Status::NOT_FOUND),
    }
}

fn first_of(list: Option<&Vec<String>>) -> Result<Vec<u8>, Status> {
    list.and_then(|l| l.first())
        .map(|v| v.as_bytes().to_vec())
        .ok_or(Status::NOT_FOUND)
}

fn header(s: &dyn StreamFacts, name: &str) -> Result<Vec<u8>, Status> {
    s.request_headers()
        .and_then(|h| h.get(name.as_bytes()))
        .map(|v| v.to_vec())
        .ok_or(Status::NOT_FOUND)
}

fn request(s: &dyn StreamFacts, rest: &[&str]) -> Result<Vec<u8>, Status> {
    let key = rest.first().copied().unwrap_or("");
    if key == "headers" {
        return match rest.get(1) {
            None => Ok(s
                .request_headers()
                .map(HeaderMap::serialize)
                .unwrap_or_else(|| HeaderMap::default().serialize())),
            Some(name) if rest.len() == 2 => {
                joined(s.request_headers().ok_or(Status::NOT_FOUND)?, name)
            }
            _ => Err(Status::NOT_FOUND),
        };
    }
    if rest.len() != 1 {
        return Err(Status::NOT_FOUND);
    }
    let path = || header(s, ":path");
    match key {
        "path" => path(),
        "url_path" => Ok(path()?
            .split(|b| *b == b'?')
            .next()
            .unwrap_or_default()
            .to_vec()),
        "query" => {
            let path = path()?;
            Ok(path
                .iter()
                .position(|b| *b == b'?')
                .map(|i| path[i + 1..].to_vec())
                .unwrap_or_default())
        }
        "host" => header(s, ":authority"),
        "scheme" => header(s, ":scheme"),
        "method" => header(s, ":method"),
        "referer" => header(s, "referer"),
        "useragent" => header(s, "user-agent"),
        "id" => header(s, "x-request-id"),
        "protocol" => Ok(b"HTTP/1.1".to_vec()),
        "time" => Ok(int(s.start_ns() as i64)),
        "size" => Ok(int(s.request_body_len() as i64)),
        // Envoy reads these from the header map the asking filter still holds: gone after its
        // request phase (headers_bytes NotFound; total_size the body bytes alone).
        "headers_bytes" => s
            .request_headers()
            .map(|h| int(h.byte_size() as i64))
            .ok_or(Status::NOT_FOUND),
        "total_size" => Ok(int(
            (s.request_headers().map_or(0, HeaderMap::byte_size) + s.request_body_len()) as i64
        )),
        _ => Err(Status::NOT_FOUND),
    }
}

/// Every value of header `name` (any case), joined with `,` as Envoy's attribute does.
fn joined(h: &HeaderMap, name: &str) -> Result<Vec<u8>, Status> {
    let lower = name.to_ascii_lowercase();
    let values: Vec<&[u8]> = h
        .entries()
        .iter()
        .filter(|(n, _)| n.as_slice() == lower.as_bytes())
        .map(|(_, v)| v.as_slice())
        .collect();
    if values.is_empty() {
        Err(Status::NOT_FOUND)
    } else {
        Ok(values.join(&b","[..]))
    }
}

fn response(s: &dyn StreamFacts, rest: &[&str]) -> Result<Vec<u8>, Status> {
    let headers_bytes = s.response_headers().map_or(0, HeaderMap::byte_size);
    let received = if s.response_headers().is_some() {
        s.response_body_received()
    } else {
        0
    };
    // Before the response exists Envoy still answers the counters (0) and the maps (empty).
    match rest {
        ["flags"] => return Ok(int(0)),
        ["size"] => return Ok(int(received as i64)),
        ["headers_bytes"] => return Ok(int(headers_bytes as i64)),
        ["total_size"] => return Ok(int((headers_bytes + received) as i64)),
        ["trailers"] => return Ok(empty_map()),
        ["headers"] if s.response_headers().is_none() => return Ok(empty_map()),
        _ => {}
    }
    let h = s.response_headers().ok_or(Status::NOT_FOUND)?;
    let code = || -> Result<i64, Status> {
        h.get_str(":status")
            .and_then(|v| v.parse().ok())
            .ok_or(Status::NOT_FOUND)
    };
    match rest {
        ["code"] => Ok(int(code()?)),
        ["headers"] => Ok(h.serialize()),
        ["headers", name] => joined(h, name),
        ["code_details"] => s
            .code_details()
            .map(|d| d.as_bytes().to_vec())
            .ok_or(Status::NOT_FOUND),
        ["grpc_status"] => match h.get_str("grpc-status") {
            Some(v) => Ok(int(v.trim().parse().map_err(|_| Status::NOT_FOUND)?)),
            None => Ok(int(http_to_grpc_status(code()?))),
        },
        _ => Err(Status::NOT_FOUND),
    }
}

/// Whether the router forwarded the request and the upstream answered.
fn upstream_answered(s: &dyn StreamFacts) -> bool {
    s.code_details() == Some("via_upstream")
}

fn xds(s: &dyn StreamFacts, rest: &[&str]) -> Result<Vec<u8>, Status> {
    match rest {
        ["cluster_name"] => Ok(ROUTE_CLUSTER.as_bytes().to_vec()),
        ["virtual_host_name"] => Ok(VIRTUAL_HOST.as_bytes().to_vec()),
        // The route, the filter chain and the metadata protos exist and are empty.
        ["route_name"]
        | ["filter_chain_name"]
        | ["cluster_metadata"]
        | ["route_metadata"]
        | ["listener_metadata"]
        | ["virtual_host_metadata"] => Ok(Vec::new()),
        // `UNSPECIFIED`.
        ["listener_direction"] => Ok(int(0)),
        // Envoy 1.40 fails to serialize the host's metadata once there is a host.
        ["upstream_host_metadata"] if upstream_answered(s) => Err(MAP_VALUE),
        _ => Err(Status::NOT_FOUND),
    }
}

fn upstream(s: &dyn StreamFacts, rest: &[&str]) -> Result<Vec<u8>, Status> {
    let answered = upstream_answered(s);
    match rest {
        ["request_attempt_count"] => Ok(int(answered as i64)),
        ["address"] if answered => Ok(UPSTREAM_ADDRESS.as_bytes().to_vec()),
        ["port"] if answered => Ok(int(UPSTREAM_PORT)),
        ["local_address"] if answered => Ok(UPSTREAM_LOCAL_ADDRESS.as_bytes().to_vec()),
        ["transport_failure_reason"] if answered => Ok(Vec::new()),
        _ => Err(Status::NOT_FOUND),
    }
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn a_trailing_nul_ends_the_last_segment_and_adds_none() {
        let s = segments;
        assert_eq!(s(b"request\0path\0"), vec![&b"request"[..], b"path"]);
        assert_eq!(s(b"request\0path"), vec![&b"request"[..], b"path"]);
        assert_eq!(s(b"request\0path\0\0"), vec![&b"request"[..], b"path", b""]);
        assert_eq!(s(b"request\0\0path"), vec![&b"request"[..], b"", b"path"]);
        assert_eq!(s(b"\0"), vec![&b""[..]]);
        assert!(s(b"").is_empty());
    }
}
