//! The modelled upstream: an echo server answering 200 with a JSON description of the request it
//! received (the same shape as the Envoy rig's echo server).

use crate::headers::HeaderMap;

/// Builds the echo response (headers as the upstream sends them, body).
pub(crate) fn echo(request_headers: &HeaderMap, body: &[u8]) -> (HeaderMap, Vec<u8>) {
    let method = request_headers.get_str(":method").unwrap_or_default();
    let path = request_headers.get_str(":path").unwrap_or_default();
    // HTTP/1 upstream: :authority travels as Host, other pseudo-headers are in the request line.
    let authority = request_headers.get_str(":authority").unwrap_or_default();
    let headers: Vec<[String; 2]> = std::iter::once(["host".to_string(), authority])
        .chain(
            request_headers
                .to_strings()
                .into_iter()
                .filter(|(n, _)| !n.starts_with(':'))
                .map(|(n, v)| [n, v]),
        )
        .collect();
    let json = serde_json::json!({
        "method": method,
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(body),
    });
    let out = json.to_string().into_bytes();
    let mut map = HeaderMap::default();
    map.add(b":status", b"200");
    map.add(b"content-type", b"application/json");
    map.add(b"content-length", out.len().to_string().as_bytes());
    (map, out)
}
