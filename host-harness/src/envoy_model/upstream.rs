//! The modelled upstream: an echo server answering 200 with a JSON description of the request it
//! received (the same shape as the Envoy rig's echo server).

use std::borrow::Cow;

use serde::Serialize;

use super::{text, HeaderMap};

/// The echo body. Borrowed fields, serialized straight to bytes: this runs once per request that
/// reaches the upstream, so it is on the bench's hot path.
#[derive(Serialize)]
struct Echo<'a> {
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    headers: Vec<[Cow<'a, str>; 2]>,
    body: Cow<'a, str>,
}

/// Builds the echo response (headers as the upstream sends them, body).
pub(crate) fn echo(request_headers: &HeaderMap, body: &[u8]) -> (HeaderMap, Vec<u8>) {
    fn value(v: Option<&[u8]>) -> Cow<'_, str> {
        text(v.unwrap_or_default())
    }
    // HTTP/1 upstream: :authority travels as Host, other pseudo-headers are in the request line.
    let host = [
        Cow::Borrowed("host"),
        value(request_headers.get(b":authority")),
    ];
    let headers = std::iter::once(host)
        .chain(
            request_headers
                .entries()
                .iter()
                .filter(|(n, _)| !n.starts_with(b":"))
                .map(|(n, v)| [text(n), text(v)]),
        )
        .collect();
    let echo = Echo {
        method: value(request_headers.get(b":method")),
        path: value(request_headers.get(b":path")),
        headers,
        body: text(body),
    };
    // Serializing borrowed strings into a Vec cannot fail; an empty body would be the only
    // outcome of an impossible error.
    let out = serde_json::to_vec(&echo).unwrap_or_default();
    let mut map = HeaderMap::response();
    map.add(b":status", b"200");
    map.add(b"content-type", b"application/json");
    map.add(b"content-length", out.len().to_string().as_bytes());
    (map, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_describes_the_request_with_host_first_and_no_pseudo_headers() {
        let req = HeaderMap::from_pairs([
            (":authority", "svc"),
            (":path", "/a?b"),
            (":method", "POST"),
            (":scheme", "http"),
            ("x-a", "1\"2"),
        ]);
        let (head, body) = echo(&req, b"hi");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "method": "POST", "path": "/a?b",
                "headers": [["host", "svc"], ["x-a", "1\"2"]], "body": "hi"
            })
        );
        assert_eq!(
            head.get(b"content-length"),
            Some(body.len().to_string().as_bytes())
        );
    }
}
