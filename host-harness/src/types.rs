//! The public request/outcome vocabulary of the harness.

use std::net::SocketAddr;

/// The TLS side of the downstream connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// URI SANs of the client certificate, in certificate order; empty without a client cert.
    pub peer_uri_sans: Vec<String>,
    /// DNS SANs of the client certificate.
    pub peer_dns_sans: Vec<String>,
    /// Subject DN of the client certificate (RFC 2253 order), if any.
    pub peer_subject: Option<String>,
    /// SNI the client sent.
    pub sni: Option<String>,
}

impl Tls {
    /// mTLS with a client certificate whose (single) URI SAN is `uri_san`.
    pub fn peer(uri_san: &str) -> Self {
        Tls {
            peer_uri_sans: vec![uri_san.to_string()],
            ..Tls::default()
        }
    }

    /// TLS without a client certificate.
    pub fn server_only() -> Self {
        Tls::default()
    }

    /// Whether a client certificate was presented (Envoy's `connection.mtls`).
    pub fn is_mtls(&self) -> bool {
        !self.peer_uri_sans.is_empty()
            || !self.peer_dns_sans.is_empty()
            || self.peer_subject.is_some()
    }
}

/// A request as the client sends it (before the modelled HCM touches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Raw request-target (path with query), sent as is.
    pub path: String,
    pub authority: String,
    /// Headers in order; duplicates allowed. Names are lowercased by the codec model.
    pub headers: Vec<(String, String)>,
    /// Request body; empty = no body (headers carry end_of_stream).
    pub body: Vec<u8>,
    /// Request trailers; empty = none.
    pub trailers: Vec<(String, String)>,
    /// `None` = plaintext.
    pub tls: Option<Tls>,
    /// Client address; default 127.0.0.1:40000 + a per-host connection counter.
    pub source: Option<SocketAddr>,
    /// Send to this worker (index) instead of round-robin.
    pub worker: Option<usize>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            authority: "example.com".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            tls: None,
            source: None,
            worker: None,
        }
    }
    pub fn get(path: &str) -> Self {
        Request::new("GET", path)
    }
    pub fn post(path: &str) -> Self {
        Request::new("POST", path)
    }
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }
    pub fn source(mut self, addr: SocketAddr) -> Self {
        self.source = Some(addr);
        self
    }
    pub fn worker(mut self, index: usize) -> Self {
        self.worker = Some(index);
        self
    }
}

/// Headers (pseudo-headers included) and body of a request as the upstream saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RequestHead {
    /// First value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
    /// All values of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        all(&self.headers, name)
    }
}

/// What the client received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Response headers without `:status`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Who answered the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The request reached the echo upstream.
    Upstream { status: u16 },
    /// A filter, the modelled codec, or a wasm failure answered locally.
    LocalReply {
        status: u16,
        /// Envoy's response code details (e.g. `wasm_fail_stream`, the filter's details string).
        details: String,
        /// Name of the filter that answered; `None` for the codec/HCM.
        by: Option<String>,
    },
    /// A filter paused the request and nothing is left that could resume it.
    Stalled { filter: String, phase: Phase },
}

/// Callback phase of a request, as the driver records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    Log,
    Done,
}

/// One log line of a module (proxy_log or stdout/stderr through WASI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    /// Plugin name of the module that logged.
    pub plugin: String,
    pub message: String,
}

/// proxy-wasm log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub(crate) fn from_u32(v: u32) -> Option<LogLevel> {
        Some(match v {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
    pub(crate) fn as_u32(self) -> u32 {
        self as u32
    }
}

/// The result of sending one request through the chain.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The request as the upstream saw it (after filters); `None` if it never got there.
    pub upstream_request: Option<RequestHead>,
    /// What the client received.
    pub response: Response,
    /// Log lines emitted while this request was processed.
    pub logs: Vec<LogLine>,
    /// Per filter (chain order): nanoseconds spent in that filter's callbacks.
    pub filter_nanos: Vec<(String, u64)>,
    /// The worker that served the request.
    pub worker: usize,
}

impl Outcome {
    pub fn status(&self) -> u16 {
        self.response.status
    }
    pub fn reached_upstream(&self) -> bool {
        self.upstream_request.is_some()
    }
}

pub(crate) fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}
