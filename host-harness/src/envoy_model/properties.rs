//! `proxy_get_property` / `proxy_set_property` with Envoy's attribute names and encodings:
//! path segments are NUL-separated; strings are raw bytes; integers 8-byte little-endian;
//! booleans one byte; maps are serialized as proxy-wasm pairs. Unknown attributes → NotFound.
//!
//! `set_property(path, value)` stores Envoy filter state `wasm.<path>` for the request;
//! `get_property` looks an unknown first segment up in that filter state (so a later filter in
//! the same request reads `get_property([name])` of what an earlier one set with `[name]`).

use super::{Connection, HeaderMap};
use crate::Status;

/// Envoy's top-level attribute tokens: an unknown first segment is a filter-state lookup.
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
    let segs: Vec<&[u8]> = path.split(|b| *b == 0).collect();
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
        "connection_id" if rest.is_empty() => Ok(uint(s.connection().id)),
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
                "subject_peer_certificate" => tls
                    .and_then(|t| t.peer_subject.clone())
                    .ok_or(Status::NOT_FOUND)?
                    .into_bytes(),
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
                let lower = name.to_ascii_lowercase();
                let values: Vec<&[u8]> = s
                    .request_headers()
                    .ok_or(Status::NOT_FOUND)?
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
        _ => Err(Status::NOT_FOUND),
    }
}

fn response(s: &dyn StreamFacts, rest: &[&str]) -> Result<Vec<u8>, Status> {
    let h = s.response_headers().ok_or(Status::NOT_FOUND)?;
    match rest {
        ["code"] => {
            let code: i64 = h
                .get_str(":status")
                .and_then(|v| v.parse().ok())
                .ok_or(Status::NOT_FOUND)?;
            Ok(int(code))
        }
        ["headers"] => Ok(h.serialize()),
        ["headers", name] => h
            .get(name.as_bytes())
            .map(|v| v.to_vec())
            .ok_or(Status::NOT_FOUND),
        ["code_details"] => s
            .code_details()
            .map(|d| d.as_bytes().to_vec())
            .ok_or(Status::NOT_FOUND),
        ["size"] => Ok(int(s.response_body_len() as i64)),
        _ => Err(Status::NOT_FOUND),
    }
}
