//! `proxy_get_property` / `proxy_set_property` with Envoy's attribute names and encodings:
//! path segments are NUL-separated; strings are raw bytes; integers 8-byte little-endian;
//! booleans one byte; maps are serialized as proxy-wasm pairs. Unknown attributes → NotFound.
//!
//! `set_property(path, value)` stores Envoy filter state `wasm.<path>` for the request;
//! `get_property` looks an unknown first segment up in that filter state (so a later filter in
//! the same request reads `get_property([name])` of what an earlier one set with `[name]`).

use crate::abi::Status;
use crate::hcm::ListenerSettings;
use crate::worker::{FilterInfo, Stream};

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

pub(crate) struct PropertyContext<'a> {
    pub plugin: &'a FilterInfo,
    pub stream: Option<&'a Stream>,
    pub listener: &'a ListenerSettings,
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
        .map_err(|_| Status::NotFound)?;
    let rest: Vec<&str> = segs
        .get(1..)
        .unwrap_or_default()
        .iter()
        .map(|s| std::str::from_utf8(s).map_err(|_| Status::NotFound))
        .collect::<Result<_, _>>()?;
    if !TOKENS.contains(&first) {
        let s = cx.stream.ok_or(Status::NotFound)?;
        if !rest.is_empty() {
            return Err(Status::NotFound);
        }
        return s
            .filter_state
            .get(first.as_bytes())
            .cloned()
            .ok_or(Status::NotFound);
    }
    let one = |v: Vec<u8>| {
        if rest.len() == 1 {
            Ok(v)
        } else {
            Err(Status::NotFound)
        }
    };
    match first {
        "plugin_name" if rest.is_empty() => return Ok(cx.plugin.name.as_bytes().to_vec()),
        "plugin_root_id" if rest.is_empty() => return Ok(cx.plugin.root_id.as_bytes().to_vec()),
        "plugin_vm_id" if rest.is_empty() => return Ok(cx.plugin.vm_id.as_bytes().to_vec()),
        _ => {}
    }
    let s = cx.stream.ok_or(Status::NotFound)?;
    let key = rest.first().copied().unwrap_or("");
    match first {
        "connection_id" if rest.is_empty() => Ok(uint(s.conn.id)),
        "request" => request(s, &rest),
        "response" => response(s, &rest),
        "connection" => {
            let tls = s.conn.tls.as_ref();
            let v = match key {
                "id" => uint(s.conn.id),
                "mtls" => vec![tls.map(|t| t.is_mtls()).unwrap_or(false) as u8],
                "requested_server_name" => tls
                    .and_then(|t| t.sni.clone())
                    .unwrap_or_default()
                    .into_bytes(),
                "tls_version" => match tls {
                    Some(_) => b"TLSv1.3".to_vec(),
                    None => return Err(Status::NotFound),
                },
                "uri_san_peer_certificate" => first_of(tls.map(|t| &t.peer_uri_sans))?,
                "dns_san_peer_certificate" => first_of(tls.map(|t| &t.peer_dns_sans))?,
                "subject_peer_certificate" => tls
                    .and_then(|t| t.peer_subject.clone())
                    .ok_or(Status::NotFound)?
                    .into_bytes(),
                _ => return Err(Status::NotFound),
            };
            one(v)
        }
        "source" => one(match key {
            "address" => s.conn.source.to_string().into_bytes(),
            "port" => int(s.conn.source.port() as i64),
            _ => return Err(Status::NotFound),
        }),
        "destination" => one(match key {
            "address" => s.conn.destination.to_string().into_bytes(),
            "port" => int(s.conn.destination.port() as i64),
            _ => return Err(Status::NotFound),
        }),
        "filter_state" => {
            let name = key.strip_prefix("wasm.").ok_or(Status::NotFound)?;
            one(s
                .filter_state
                .get(name.as_bytes())
                .cloned()
                .ok_or(Status::NotFound)?)
        }
        _ => {
            let _ = cx.listener;
            Err(Status::NotFound)
        }
    }
}

fn first_of(list: Option<&Vec<String>>) -> Result<Vec<u8>, Status> {
    list.and_then(|l| l.first())
        .map(|v| v.as_bytes().to_vec())
        .ok_or(Status::NotFound)
}

fn header(s: &Stream, name: &str) -> Result<Vec<u8>, Status> {
    s.req_headers
        .get(name.as_bytes())
        .map(|v| v.to_vec())
        .ok_or(Status::NotFound)
}

fn request(s: &Stream, rest: &[&str]) -> Result<Vec<u8>, Status> {
    let key = rest.first().copied().unwrap_or("");
    if key == "headers" {
        return match rest.get(1) {
            None => Ok(s.req_headers.serialize()),
            Some(name) if rest.len() == 2 => {
                let lower = name.to_ascii_lowercase();
                let values: Vec<&[u8]> = s
                    .req_headers
                    .entries()
                    .iter()
                    .filter(|(n, _)| n.as_slice() == lower.as_bytes())
                    .map(|(_, v)| v.as_slice())
                    .collect();
                if values.is_empty() {
                    Err(Status::NotFound)
                } else {
                    Ok(values.join(&b","[..]))
                }
            }
            _ => Err(Status::NotFound),
        };
    }
    if rest.len() != 1 {
        return Err(Status::NotFound);
    }
    let path = header(s, ":path").unwrap_or_default();
    match key {
        "path" => Ok(path),
        "url_path" => Ok(path
            .split(|b| *b == b'?')
            .next()
            .unwrap_or_default()
            .to_vec()),
        "query" => Ok(path
            .iter()
            .position(|b| *b == b'?')
            .map(|i| path[i + 1..].to_vec())
            .unwrap_or_default()),
        "host" => header(s, ":authority"),
        "scheme" => header(s, ":scheme"),
        "method" => header(s, ":method"),
        "referer" => header(s, "referer"),
        "useragent" => header(s, "user-agent"),
        "id" => header(s, "x-request-id"),
        "protocol" => Ok(b"HTTP/1.1".to_vec()),
        "time" => Ok(int(s.start_ns as i64)),
        "size" => Ok(int(s.req_body.len() as i64)),
        _ => Err(Status::NotFound),
    }
}

fn response(s: &Stream, rest: &[&str]) -> Result<Vec<u8>, Status> {
    let h = s.resp_headers.as_ref().ok_or(Status::NotFound)?;
    match rest {
        ["code"] => {
            let code: i64 = h
                .get_str(":status")
                .and_then(|v| v.parse().ok())
                .ok_or(Status::NotFound)?;
            Ok(int(code))
        }
        ["headers"] => Ok(h.serialize()),
        ["headers", name] => h
            .get(name.as_bytes())
            .map(|v| v.to_vec())
            .ok_or(Status::NotFound),
        ["code_details"] => match &s.verdict {
            Some(crate::types::Verdict::LocalReply { details, .. }) => {
                Ok(details.clone().into_bytes())
            }
            Some(_) => Ok(b"via_upstream".to_vec()),
            None => Err(Status::NotFound),
        },
        ["size"] => Ok(int(s.resp_body.len() as i64)),
        _ => Err(Status::NotFound),
    }
}
