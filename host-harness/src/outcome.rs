//! What happened to a request — verdict, what the upstream saw, what the client got, logs: the
//! output vocabulary of the harness.

/// proxy-wasm log levels (the ABI's `proxy_log_level_t`).
pub use meshward_abi::LogLevel;

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
    /// The listener refused the connection (TLS mode, see [`crate::DownstreamTransport`]): no
    /// HTTP response at all (status 0), and neither the codec nor any filter saw the request.
    Refused { reason: String },
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
    /// Per filter (chain order): `env.proxy_*` host calls its callbacks made for this request
    /// (WASI calls not counted).
    pub filter_hostcalls: Vec<(String, u64)>,
    /// Per filter (chain order): wasm instructions its callbacks executed for this request
    /// (wasmtime fuel); all 0 unless [`meter_guest_instructions`](crate::meter_guest_instructions)
    /// was called first (`meshward bench --fuel`).
    pub filter_fuel: Vec<(String, u64)>,
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
