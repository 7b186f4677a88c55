//! The modelled HTTP connection manager (HCM), HTTP/1 codec and router: everything Envoy does
//! to a request before the first filter and to a response after the last one.
//!
//! Kept in one module so it can be calibrated against real Envoy in one place; each point below
//! was observed in Envoy 1.40 by the rig's tests (`tests/tests/envoy_rig.rs`):
//! - Codec limits (HTTP/1): Envoy counts the **whole raw request head** — request line, every
//!   `name: value\r\n` line (Host included) and the final CRLF — against
//!   `max_request_headers_kb * 1024`; one byte over ⇒ `431 Request Header Fields Too Large` before
//!   any filter. More than `max_headers_count` header lines (Host counts) ⇒ 431. The harness
//!   rebuilds the head exactly as the rig's HTTP/1.1 client writes it (`host`, the headers,
//!   `content-length` for a body, POST or PUT, and `connection: close`).
//! - Request-target: a `#` anywhere ⇒ 400 with an empty body; a target that is not origin-form
//!   (`a/b`, `*`) or has a byte outside visible ASCII ⇒ 400 `Bad Request`. `%2F`, `\`, `//`, dot
//!   segments pass through unchanged (no `normalize_path`, no `merge_slashes`).
//! - Header values: a control byte other than HTAB (0x00–0x08, 0x0A–0x1F, 0x7F) ⇒ 400 `Bad Request`
//!   before any filter; HTAB inside a value passes; spaces and tabs around a value are trimmed, so
//!   filters and the upstream see `a b` for `  a b  ` (`tests/scenarios/codec/header-values.yaml`).
//! - Header names are lowercased (HTTP/1 codec). Pseudo-headers `:authority` (from `Host`),
//!   `:path`, `:method`, `:scheme` (`https` on TLS, else `http`) come first; `host` is not a
//!   separate entry.
//! - HCM adds `x-forwarded-proto` (the scheme) and `x-request-id` (a fresh UUID v4) when the client
//!   did not send them.
//! - Remote address: with `use_remote_address: false` (Envoy's default, and the rig's) Envoy takes
//!   the downstream remote address — the `source.address` property — from the **last**
//!   `x-forwarded-for` entry when there is one (port 0), not from the connection. With
//!   `use_remote_address: true` it is the connection's peer. See [`remote_address`].
//! - The router adds `x-envoy-expected-rq-timeout-ms: 15000` to what the upstream sees and
//!   `x-envoy-upstream-service-time` to upstream responses; HCM adds `server: envoy` after the
//!   filters, on every response.

use super::{DownstreamTransport, HeaderMap};
use crate::request::Request;

/// The listener / HCM settings both the harness and the Envoy rig use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// HCM `max_request_headers_kb` (Envoy default 60).
    pub max_request_headers_kb: u32,
    /// HCM `common_http_protocol_options.max_headers_count` (Envoy default 100).
    pub max_headers_count: u32,
    /// Listener port (`destination.port`).
    pub port: u16,
    /// Listener address (`destination.address` without port).
    pub address: std::net::IpAddr,
    /// HCM `use_remote_address` (Envoy default false: the remote address comes from
    /// `x-forwarded-for`).
    pub use_remote_address: bool,
    /// Which downstream connections the listener takes (Istio PeerAuthentication's mode); a
    /// refused one never reaches the codec. Default [`DownstreamTransport::Any`].
    pub transport: DownstreamTransport,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            max_request_headers_kb: 60,
            max_headers_count: 100,
            port: 10000,
            address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            use_remote_address: false,
            transport: DownstreamTransport::Any,
        }
    }
}

/// A codec-level refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodecReject {
    pub status: u16,
    pub details: &'static str,
    pub body: &'static str,
}

/// Checks the request the way Envoy's HTTP/1 codec does, before any filter.
pub(crate) fn check_codec(settings: &ListenerSettings, req: &Request) -> Result<(), CodecReject> {
    check_target(&req.path)?;
    check_header_values(req)?;
    let limit = settings.max_request_headers_kb as usize * 1024;
    if raw_head_len(req) > limit {
        return Err(too_large("http1.headers_too_large"));
    }
    if header_lines(req) > settings.max_headers_count as usize {
        return Err(too_large("http1.too_many_headers"));
    }
    Ok(())
}

/// What the codec does with the request-target (observed: see the module docs).
fn check_target(target: &str) -> Result<(), CodecReject> {
    if target.contains('#') {
        return Err(CodecReject {
            status: 400,
            details: "http1.invalid_url",
            body: "",
        });
    }
    let origin_form = target.starts_with('/');
    let visible = target.bytes().all(|b| (0x21..0x7f).contains(&b));
    if !origin_form || !visible {
        return Err(CodecReject {
            status: 400,
            details: "http1.codec_error",
            body: "Bad Request",
        });
    }
    Ok(())
}

/// The codec refuses a header value holding a control byte other than HTAB (observed: see the
/// module docs; NUL, CR and LF cannot even be written into a line by an honest client).
fn check_header_values(req: &Request) -> Result<(), CodecReject> {
    let control = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    if req.headers.iter().any(|(_, v)| v.bytes().any(control)) {
        return Err(CodecReject {
            status: 400,
            details: "http1.invalid_characters",
            body: "Bad Request",
        });
    }
    Ok(())
}

/// A header value as the codec hands it on: optional whitespace (SP, HTAB) around it removed.
fn trim_ows(value: &str) -> &str {
    value.trim_matches(|c| c == ' ' || c == '\t')
}

/// Whether the client sends a `content-length` line (the rig's client does for a body, POST, PUT).
fn sends_content_length(req: &Request) -> bool {
    let framed = req.headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    !framed && (!req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT"))
}

/// Bytes of the request head as the rig's HTTP/1.1 client writes it.
fn raw_head_len(req: &Request) -> usize {
    const CRLF: usize = 2;
    let request_line = req.method.len() + 1 + req.path.len() + " HTTP/1.1".len() + CRLF;
    let line = |name: usize, value: usize| name + ": ".len() + value + CRLF;
    let host = line("host".len(), req.authority.len());
    let headers: usize = req
        .headers
        .iter()
        .map(|(n, v)| line(n.len(), v.len()))
        .sum();
    let content_length = if sends_content_length(req) {
        line("content-length".len(), req.body.len().to_string().len())
    } else {
        0
    };
    let connection = line("connection".len(), "close".len());
    request_line + host + headers + content_length + connection + CRLF
}

/// Header lines the codec counts (Host included).
fn header_lines(req: &Request) -> usize {
    1 + req.headers.len() + usize::from(sends_content_length(req)) + 1
}

/// The downstream remote address Envoy reports as `source.address`.
pub(crate) fn remote_address(
    settings: &ListenerSettings,
    peer: std::net::SocketAddr,
    req: &Request,
) -> std::net::SocketAddr {
    if settings.use_remote_address {
        return peer;
    }
    let last_xff = req
        .headers
        .iter()
        .rfind(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .and_then(|(_, v)| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok());
    match last_xff {
        Some(ip) => std::net::SocketAddr::new(ip, 0),
        None => peer,
    }
}

fn too_large(details: &'static str) -> CodecReject {
    CodecReject {
        status: 431,
        details,
        body: "Request Header Fields Too Large",
    }
}

/// The request body as the codec hands it on. A `transfer-encoding: chunked` body (the scenario
/// gives it as the client writes it) is decoded: the chunks' data, with its trailers dropped, as
/// Envoy's HTTP/1 codec drops them while `enable_trailers` is off (the default). A chunked body
/// that does not parse is passed on as written: the codec's 400 for it is not modelled.
pub(crate) fn request_body(req: &Request) -> Vec<u8> {
    let chunked = req.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
    });
    let body = req.body.as_slice();
    if !chunked {
        return body.to_vec();
    }
    decode_chunked(body).unwrap_or_else(|| body.to_vec())
}

/// The data of a chunked body (RFC 9112 §7.1), `None` if it does not parse.
fn decode_chunked(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size_hex = size_field.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailer section, then the final CRLF: all dropped.
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// The request headers the first filter sees.
pub(crate) fn request_headers(req: &Request, tls: bool) -> HeaderMap {
    let scheme = if tls { "https" } else { "http" };
    // A request map: the codec adds a client's repeated lines of an inline header to one entry.
    let mut map = HeaderMap::request();
    map.add(b":authority", req.authority.as_bytes());
    map.add(b":path", req.path.as_bytes());
    map.add(b":method", req.method.as_bytes());
    map.add(b":scheme", scheme.as_bytes());
    for (n, v) in &req.headers {
        // HTTP/1 carries the authority in Host, already mapped to :authority.
        if n.eq_ignore_ascii_case("host") {
            continue;
        }
        map.add(n.as_bytes(), trim_ows(v).as_bytes());
    }
    // The line the client writes after its headers (see `sends_content_length`): an ordinary
    // header in Envoy's map, seen by the filters and forwarded upstream.
    if sends_content_length(req) {
        map.add(b"content-length", req.body.len().to_string().as_bytes());
    }
    if map.get(b"x-forwarded-proto").is_none() {
        map.add(b"x-forwarded-proto", scheme.as_bytes());
    }
    if map.get(b"x-request-id").is_none() {
        map.add(b"x-request-id", uuid_v4().as_bytes());
    }
    map
}

/// Router additions to what the upstream receives.
pub(crate) fn router_upstream_headers(map: &mut HeaderMap) {
    map.replace(b"x-envoy-expected-rq-timeout-ms", b"15000");
}

/// Router additions to an upstream response, before the encoder filters.
pub(crate) fn router_response_headers(map: &mut HeaderMap) {
    map.add(b"x-envoy-upstream-service-time", b"0");
}

/// HCM additions after the encoder filters; the HTTP/1 codec writes `content-length: 0` for a
/// response whose headers end the stream and that has no length of its own (seen by the client
/// of a gRPC local reply in Envoy 1.40).
pub(crate) fn finalize_response_headers(map: &mut HeaderMap, body_len: usize) {
    map.replace(b"server", b"envoy");
    let status = map.get_str(":status").unwrap_or_default();
    let bodyless = matches!(status.as_str(), "204" | "304") || status.starts_with('1');
    if body_len == 0
        && !bodyless
        && map.get(b"content-length").is_none()
        && map.get(b"transfer-encoding").is_none()
    {
        map.add(b"content-length", b"0");
    }
}

/// Headers of a local reply as the encoder filters see them.
fn local_reply_headers(status: u16, body: &[u8], extra: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    // Envoy's `sendLocalReply`: `:status`, then the filter's headers, then `content-length`
    // (set, replacing any) and `content-type: text/plain` only if the filter sent none
    // (observed in Envoy 1.40: tests/scenarios/spiffe-authz/no-allow.yaml).
    let mut map = HeaderMap::response();
    map.add(b":status", status.to_string().as_bytes());
    for (n, v) in extra {
        map.add(n, v);
    }
    if !body.is_empty() {
        map.replace(b"content-length", body.len().to_string().as_bytes());
        if map.get(b"content-type").is_none() {
            map.add(b"content-type", b"text/plain");
        }
    }
    map
}

/// Whether Envoy answers this request the gRPC way (`Grpc::Common::isGrpcRequestHeaders`:
/// `content-type` is `application/grpc` or `application/grpc+…`; gRPC-Web is not).
pub(crate) fn is_grpc_request(request: &HeaderMap) -> bool {
    request.get(b"content-type").is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct == b"application/grpc" || ct.starts_with(b"application/grpc+")
    })
}

/// A local reply's headers and body. To a gRPC request Envoy answers a trailers-only response:
/// `:status 200`, `content-type: application/grpc`, `grpc-status` (the filter's, else the HTTP
/// status mapped as `Grpc::Utility::httpToGrpcStatus` maps it), the body text as
/// `grpc-message`, then the filter's headers, and no body (observed in Envoy 1.40:
/// tests/scenarios/conformance/http/local-replies.yaml).
pub(crate) fn local_reply(
    status: u16,
    body: Vec<u8>,
    extra: &[(Vec<u8>, Vec<u8>)],
    grpc_request: bool,
    grpc_status: Option<u32>,
) -> (HeaderMap, Vec<u8>) {
    if !grpc_request {
        return (local_reply_headers(status, &body, extra), body);
    }
    let grpc = grpc_status.unwrap_or_else(|| http_to_grpc_status(i64::from(status)) as u32);
    let mut map = HeaderMap::response();
    map.add(b":status", b"200");
    map.add(b"content-type", b"application/grpc");
    map.add(b"grpc-status", grpc.to_string().as_bytes());
    if !body.is_empty() {
        map.add(b"grpc-message", &grpc_message(&body));
    }
    for (n, v) in extra {
        map.add(n, v);
    }
    (map, Vec::new())
}

/// `grpc-message` as Envoy percent-encodes it: bytes outside printable ASCII, and `%`.
/// Envoy's `Grpc::Utility::httpToGrpcStatus`: the gRPC status of an HTTP status, for a local
/// reply to a gRPC request and for `response.grpc_status` of a response without `grpc-status`.
pub(super) fn http_to_grpc_status(http: i64) -> i64 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

fn grpc_message(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

fn uuid_v4() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_raw_head_counts_toward_the_limit() {
        let s = ListenerSettings {
            max_request_headers_kb: 1,
            ..Default::default()
        };
        // "GET / HTTP/1.1\r\n" + "host: example.com\r\n" + "connection: close\r\n" + "\r\n"
        let fixed = 16 + 19 + 19 + 2;
        let line = |v: usize| "x: ".len() + v + 2;
        let at_limit = Request::get("/").header("x", &"a".repeat(1024 - fixed - line(0)));
        assert_eq!(raw_head_len(&at_limit), 1024);
        assert!(check_codec(&s, &at_limit).is_ok());
        let over = Request::get("/").header("x", &"a".repeat(1025 - fixed - line(0)));
        assert_eq!(check_codec(&s, &over).unwrap_err().status, 431);
    }

    #[test]
    fn chunked_bodies_are_decoded_and_their_trailers_dropped() {
        let req = Request::post("/")
            .header("transfer-encoding", "chunked")
            .body("5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nx-t: 1\r\n\r\n");
        assert_eq!(request_body(&req), b"helloabc");
        let plain = Request::post("/").body("5\r\nhello");
        assert_eq!(request_body(&plain), b"5\r\nhello");
    }

    #[test]
    fn request_ids_are_random_version_4_uuids() {
        let a = uuid_v4();
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a.as_bytes()[14], b'4', "version nibble: {a}");
        assert!(
            matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "variant: {a}"
        );
        assert_ne!(a, uuid_v4());
    }

    #[test]
    fn header_count_includes_host() {
        let s = ListenerSettings {
            max_headers_count: 3,
            ..Default::default()
        };
        let two = Request::get("/").header("a", "1");
        assert!(check_codec(&s, &two).is_ok()); // host, a, connection
        let three = two.header("b", "2");
        assert_eq!(
            check_codec(&s, &three).unwrap_err().details,
            "http1.too_many_headers"
        );
    }

    #[test]
    fn control_bytes_in_values_are_refused_and_values_are_trimmed() {
        let s = ListenerSettings::default();
        for bad in ["a\u{1}b", "\u{b}", "a\u{1f}", "\u{7f}"] {
            let reject = check_codec(&s, &Request::get("/").header("x-v", bad)).unwrap_err();
            assert_eq!(
                (reject.status, reject.body),
                (400, "Bad Request"),
                "{bad:?}"
            );
        }
        let tab = Request::get("/").header("x-v", " \ta\tb \t");
        assert!(check_codec(&s, &tab).is_ok());
        let map = request_headers(&tab, false);
        assert_eq!(map.get(b"x-v"), Some(&b"a\tb"[..]));
    }

    #[test]
    fn fragments_and_odd_targets_are_refused() {
        let s = ListenerSettings::default();
        let frag = check_codec(&s, &Request::get("/a#b")).unwrap_err();
        assert_eq!((frag.status, frag.body), (400, ""));
        assert_eq!(
            check_codec(&s, &Request::get("a/b")).unwrap_err().status,
            400
        );
        assert_eq!(
            check_codec(&s, &Request::get("/a b")).unwrap_err().body,
            "Bad Request"
        );
        for ok in ["/%2Fadmin", "//admin", "/a/../b", "/a\\b", "/p?q=1"] {
            assert!(check_codec(&s, &Request::get(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn remote_address_follows_xff_unless_use_remote_address() {
        let peer: std::net::SocketAddr = "127.0.0.2:5555".parse().unwrap();
        let req = Request::get("/").header("x-forwarded-for", "203.0.113.9, 198.51.100.7");
        let mut s = ListenerSettings::default();
        assert_eq!(
            remote_address(&s, peer, &req),
            "198.51.100.7:0".parse().unwrap()
        );
        assert_eq!(remote_address(&s, peer, &Request::get("/")), peer);
        s.use_remote_address = true;
        assert_eq!(remote_address(&s, peer, &req), peer);
    }
}
