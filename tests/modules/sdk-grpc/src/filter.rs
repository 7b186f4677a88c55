//! The filter (wasm only: the bad-token and raw-dispatch reports call the host's functions
//! directly, to see statuses the SDK would panic on).

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    // The SDK's own trace lines (a callback for a token it does not know) reach the host's log.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(GrpcRoot) });
}}

/// The test server's service.
const SERVICE: &str = "meshward.test.Echo";

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        message_data: *const u8,
        message_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_grpc_send(token: u32, message_data: *const u8, message_size: usize, end: u32) -> u32;
    fn proxy_grpc_close(token: u32) -> u32;
    fn proxy_grpc_cancel(token: u32) -> u32;
}

fn log(message: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Info, &format!("sdk-grpc: {message}"));
}

/// `%XX` escapes decoded (so that a header can carry bytes a header value cannot).
fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if let (b'%', Some(hex)) = (bytes[i], hex) {
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Text fit for a header value: newlines as `;`, other control bytes as `?`.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| match c {
            '\n' => ';',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// `x-grpc-meta: k=v,k=v` as name/value byte pairs.
fn metadata(spec: Option<String>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    spec.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

/// The proxy-wasm pairs encoding of the SDK (`utils::serialize_map_bytes`), for the raw call.
fn serialize_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

struct GrpcRoot;

impl Context for GrpcRoot {}

impl RootContext for GrpcRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::<Grpc>::default())
    }
}

/// What `x-grpc-stream`'s `<end>` asked for.
#[derive(Default, PartialEq)]
enum End {
    #[default]
    Close,
    CloseCall,
    Cancel,
    Open,
}

#[derive(Default)]
struct Grpc {
    /// The `x-grpc-call` token.
    call: Option<u32>,
    /// The witness call after a cancel.
    witness: Option<u32>,
    /// The `x-grpc-stream` token, what `<end>` was, how many messages were sent.
    stream: Option<u32>,
    end: End,
    sent: usize,
    on_message: Option<String>,
    /// Callbacks in order (`response`, `witness`, `initial`, `message`, `trailing`, `close`).
    events: Vec<String>,
    initial: Option<String>,
    initial_names: Option<String>,
    trailing: Option<String>,
    trailing_names: Option<String>,
    messages: Vec<String>,
    status_seen: Vec<String>,
    /// `x-grpc-tokens`: the tokens, and how many answers are still due.
    token_list: Vec<String>,
    waiting: Vec<u32>,
    /// The request was resumed; later callbacks only go to `late`.
    resumed: bool,
    late: Vec<String>,
}

impl Grpc {
    fn add(&self, name: &str, value: &str) {
        self.add_http_request_header(name, value);
    }

    fn resume(&mut self) {
        self.resumed = true;
        self.resume_http_request();
    }

    /// `get_grpc_status` as `<code>:<message or <none>>`.
    fn status_text(&self) -> String {
        let (code, message) = self.get_grpc_status();
        format!(
            "{code}:{}",
            message.map_or_else(|| "<none>".to_string(), |m| printable(m.as_bytes()))
        )
    }

    /// A callback after the request resumed: recorded for the response headers.
    fn late(&mut self, what: String) -> bool {
        if self.resumed {
            log(&format!("late callback {what}"));
            self.late.push(what);
        }
        self.resumed
    }

    /// Dispatches the witness call a cancel is checked against.
    fn witness(&mut self, cluster: &str) -> bool {
        let meta: Vec<(&str, &[u8])> = vec![("x-echo-sleep-ms", b"300")];
        match self.dispatch_grpc_call(
            cluster,
            SERVICE,
            "Unary",
            meta,
            Some(b"witness"),
            Duration::from_secs(5),
        ) {
            Ok(token) => {
                self.witness = Some(token);
                self.add("x-grpc-witness-token", &token.to_string());
                true
            }
            Err(s) => {
                self.add("x-grpc-witness", &format!("error:{s:?}"));
                false
            }
        }
    }

    fn report_events(&self) {
        self.add("x-grpc-events", &self.events.join(","));
    }

    fn report_stream(&self) {
        self.report_events();
        let none = || "<none>".to_string();
        self.add("x-grpc-initial", &self.initial.clone().unwrap_or_else(none));
        self.add(
            "x-grpc-initial-names",
            &self.initial_names.clone().unwrap_or_else(none),
        );
        self.add("x-grpc-messages", &self.messages.join("|"));
        self.add(
            "x-grpc-trailing",
            &self.trailing.clone().unwrap_or_else(none),
        );
        self.add(
            "x-grpc-trailing-names",
            &self.trailing_names.clone().unwrap_or_else(none),
        );
        self.add("x-grpc-status-seen", &self.status_seen.join(","));
    }

    /// Metadata: its `x-echo-*` pairs `k=v` joined by `,`, and every name joined by `,`.
    fn describe(pairs: &[(String, Vec<u8>)]) -> (String, String) {
        let echo: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k.starts_with("x-echo-"))
            .map(|(k, v)| format!("{k}={}", printable(v)))
            .collect();
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        (echo.join(","), names.join(","))
    }

    fn bad_token(&self, name: &str, token: u32) {
        // SAFETY: plain host calls with an integer token and a live empty message.
        let (send, close, cancel) = unsafe {
            (
                proxy_grpc_send(token, b"x".as_ptr(), 1, 0),
                proxy_grpc_close(token),
                proxy_grpc_cancel(token),
            )
        };
        self.add(name, &format!("send={send},close={close},cancel={cancel}"));
    }

    fn tokens(&mut self, spec: &str) -> Action {
        let parts: Vec<&str> = spec.split(';').collect();
        let (grpc, http, ops) = (parts[0], parts[1], parts[2]);
        for op in ops.split(',') {
            let result = match op {
                "call" => self.dispatch_grpc_call(
                    grpc,
                    SERVICE,
                    "Unary",
                    vec![],
                    Some(b"t"),
                    Duration::from_secs(5),
                ),
                "stream" => self
                    .open_grpc_stream(grpc, SERVICE, "ServerStream", vec![])
                    .inspect(|token| self.send_grpc_stream_message(*token, Some(b"0"), true)),
                _ => self.dispatch_http_call(
                    http,
                    vec![(":method", "GET"), (":path", "/"), (":authority", http)],
                    None,
                    vec![],
                    Duration::from_secs(5),
                ),
            };
            match result {
                Ok(token) => {
                    self.waiting.push(token);
                    self.token_list.push(token.to_string());
                }
                Err(s) => self.token_list.push(format!("error:{s:?}")),
            }
        }
        if self.waiting.is_empty() {
            self.add("x-grpc-token-list", &self.token_list.join(","));
            return Action::Continue;
        }
        Action::Pause
    }

    /// One answer of `x-grpc-tokens` came; resumes on the last.
    fn token_answered(&mut self, token: u32) -> bool {
        let Some(i) = self.waiting.iter().position(|t| *t == token) else {
            return false;
        };
        self.waiting.remove(i);
        if self.waiting.is_empty() && !self.resumed {
            self.add("x-grpc-token-list", &self.token_list.join(","));
            self.resume();
        }
        true
    }

    fn call(&mut self, spec: &str) -> Action {
        let parts: Vec<&str> = spec.splitn(4, ';').collect();
        // The cluster may be a serialized GrpcService (`%XX` escapes).
        let cluster = String::from_utf8_lossy(&unescape(parts[0])).into_owned();
        let cluster = cluster.as_str();
        let (method, message) = (parts[1], parts[2]);
        let timeout: u64 = parts.get(3).and_then(|t| t.parse().ok()).unwrap_or(5000);
        let meta = metadata(self.get_http_request_header("x-grpc-meta"));
        if self.get_http_request_header("x-grpc-raw").as_deref() == Some("1") {
            let pairs = serialize_pairs(&meta);
            let mut token = 0u32;
            // SAFETY: pointers and lengths of live buffers, as the ABI takes them.
            let status = unsafe {
                proxy_grpc_call(
                    cluster.as_ptr(),
                    cluster.len(),
                    SERVICE.as_ptr(),
                    SERVICE.len(),
                    method.as_ptr(),
                    method.len(),
                    pairs.as_ptr(),
                    pairs.len(),
                    message.as_ptr(),
                    message.len(),
                    timeout as u32,
                    &mut token,
                )
            };
            self.add("x-grpc-dispatch", &format!("raw:{status}"));
            if status == 0 {
                self.add("x-grpc-token", &token.to_string());
            }
            return Action::Continue;
        }
        let meta_refs: Vec<(&str, &[u8])> = meta
            .iter()
            .map(|(k, v)| (std::str::from_utf8(k).unwrap_or("?"), v.as_slice()))
            .collect();
        let result = self.dispatch_grpc_call(
            cluster,
            SERVICE,
            method,
            meta_refs,
            Some(message.as_bytes()),
            Duration::from_millis(timeout),
        );
        let token = match result {
            Ok(token) => token,
            Err(s) => {
                self.add("x-grpc-dispatch", &format!("error:{s:?}"));
                return Action::Continue;
            }
        };
        self.call = Some(token);
        self.add("x-grpc-token", &token.to_string());
        match self.get_http_request_header("x-grpc-cancel").as_deref() {
            Some("twice") => {
                self.cancel_grpc_call(token);
                self.cancel_grpc_call(token);
                Action::Continue
            }
            Some(_) => {
                self.cancel_grpc_call(token);
                if self.witness(cluster) {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            None => Action::Pause,
        }
    }

    fn stream(&mut self, spec: &str) -> Action {
        let parts: Vec<&str> = spec.splitn(4, ';').collect();
        let (cluster, method) = (parts[0], parts[1]);
        let messages: Vec<&[u8]> = match parts.get(2).copied().unwrap_or("") {
            "" => Vec::new(),
            list => list
                .split('|')
                .map(|m| {
                    if m == "<empty>" {
                        &b""[..]
                    } else {
                        m.as_bytes()
                    }
                })
                .collect(),
        };
        self.end = match parts.get(3).copied().unwrap_or("close") {
            "close-call" => End::CloseCall,
            "cancel" => End::Cancel,
            "open" => End::Open,
            _ => End::Close,
        };
        self.on_message = self.get_http_request_header("x-grpc-on-message");
        let meta = metadata(self.get_http_request_header("x-grpc-meta"));
        let meta_refs: Vec<(&str, &[u8])> = meta
            .iter()
            .map(|(k, v)| (std::str::from_utf8(k).unwrap_or("?"), v.as_slice()))
            .collect();
        let token = match self.open_grpc_stream(cluster, SERVICE, method, meta_refs) {
            Ok(token) => token,
            Err(s) => {
                self.add("x-grpc-dispatch", &format!("error:{s:?}"));
                return Action::Continue;
            }
        };
        self.stream = Some(token);
        self.add("x-grpc-stream-token", &token.to_string());
        let last = messages.len().saturating_sub(1);
        for (i, m) in messages.iter().enumerate() {
            let end = self.end == End::Close && i == last;
            self.send_grpc_stream_message(token, Some(m), end);
        }
        self.sent = messages.len();
        match self.end {
            End::Close if messages.is_empty() => self.send_grpc_stream_message(token, None, true),
            End::CloseCall => self.close_grpc_stream(token),
            End::Cancel => self.cancel_grpc_stream(token),
            _ => {}
        }
        if let Some(then) = self.get_http_request_header("x-grpc-stream-then") {
            // SAFETY: plain host calls with an integer token and a live message.
            let status = unsafe {
                match then.as_str() {
                    "send" => proxy_grpc_send(token, b"late".as_ptr(), 4, 0),
                    "close" => proxy_grpc_close(token),
                    _ => proxy_grpc_cancel(token),
                }
            };
            self.add("x-grpc-then-status", &status.to_string());
            if then == "cancel" && status == 0 {
                // A cancelled stream gets no more callbacks: wait for a witness instead.
                self.end = End::Cancel;
            }
        }
        match self.end {
            End::Cancel => {
                if self.witness(cluster) {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            End::Open if self.sent == 0 => Action::Continue,
            _ => Action::Pause,
        }
    }
}

impl Context for Grpc {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        log(&format!(
            "on_grpc_call_response token={token} status={status_code} size={response_size}"
        ));
        if self.late(format!("response:{token}:{status_code}")) {
            return;
        }
        if self.token_answered(token) {
            return;
        }
        if Some(token) == self.witness {
            self.events.push("witness".to_string());
            if self.stream.is_some() {
                self.report_stream();
            } else {
                self.report_events();
            }
            self.resume();
            return;
        }
        self.events.push("response".to_string());
        if Some(token) != self.call {
            self.events.push(format!("unknown-token-{token}"));
            return;
        }
        let status = self.status_text();
        let body = self
            .get_grpc_call_response_body(0, response_size)
            .map_or_else(|| "<none>".to_string(), |b| printable(&b));
        self.add("x-grpc-status", &status_code.to_string());
        let message = status.split_once(':').map_or("", |(_, m)| m).to_string();
        self.add("x-grpc-get-status", &status);
        self.add("x-grpc-status-message", &message);
        self.add("x-grpc-response", &body);
        self.add("x-grpc-response-size", &response_size.to_string());
        if self.witness.is_none() {
            self.report_events();
            self.resume();
        }
    }

    fn on_grpc_stream_initial_metadata(&mut self, token: u32, num_elements: u32) {
        log(&format!("initial metadata token={token} n={num_elements}"));
        if self.late(format!("initial:{token}")) {
            return;
        }
        self.events.push("initial".to_string());
        let pairs = self.get_grpc_stream_initial_metadata();
        let (described, names) = Self::describe(&pairs);
        self.initial = Some(format!("{num_elements}:{described}"));
        self.initial_names = Some(names);
        self.status_seen
            .push(format!("initial={}", self.status_text()));
    }

    fn on_grpc_stream_message(&mut self, token: u32, message_size: usize) {
        log(&format!("message token={token} size={message_size}"));
        if self.late(format!("message:{token}")) {
            return;
        }
        self.events.push("message".to_string());
        let body = self
            .get_grpc_stream_message(0, message_size)
            .map_or_else(|| "<none>".to_string(), |b| printable(&b));
        self.messages.push(body);
        self.status_seen
            .push(format!("message={}", self.status_text()));
        if let Some(op) = self.on_message.take() {
            // SAFETY: plain host calls with an integer token.
            let status = unsafe {
                if op == "close" {
                    proxy_grpc_close(token)
                } else {
                    proxy_grpc_cancel(token)
                }
            };
            self.add("x-grpc-on-message-status", &status.to_string());
            if op == "cancel" {
                self.report_stream();
                self.resume();
                return;
            }
            // Half-closed here: wait for the close callback.
            self.end = End::CloseCall;
        }
        if self.end == End::Open && self.messages.len() >= self.sent {
            self.report_stream();
            self.resume();
        }
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token: u32, num_elements: u32) {
        log(&format!("trailing metadata token={token} n={num_elements}"));
        if self.late(format!("trailing:{token}")) {
            return;
        }
        self.events.push("trailing".to_string());
        let pairs = self.get_grpc_stream_trailing_metadata();
        let (described, names) = Self::describe(&pairs);
        self.trailing = Some(format!("{num_elements}:{described}"));
        self.trailing_names = Some(names);
        self.status_seen
            .push(format!("trailing={}", self.status_text()));
    }

    fn on_grpc_stream_close(&mut self, token: u32, status_code: u32) {
        log(&format!("close token={token} status={status_code}"));
        if self.late(format!("close:{token}:{status_code}")) {
            return;
        }
        if self.token_answered(token) {
            return;
        }
        self.events.push("close".to_string());
        let status = self.status_text();
        self.status_seen.push(format!("close={status}"));
        let message = status.split_once(':').map_or("", |(_, m)| m);
        self.add("x-grpc-close", &format!("{status_code}:{message}"));
        if self.witness.is_none() {
            self.report_stream();
            self.resume();
        }
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, _body: usize, _t: usize) {
        if self.late(format!("http:{token}")) {
            return;
        }
        self.token_answered(token);
    }
}

impl HttpContext for Grpc {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(n) = self.get_http_request_header("x-grpc-bad-token") {
            let tokens: Vec<&str> = n.split(',').map(str::trim).collect();
            for t in &tokens {
                let name = if tokens.len() == 1 {
                    "x-grpc-bad-token-status".to_string()
                } else {
                    format!("x-grpc-bad-token-{t}")
                };
                self.bad_token(&name, t.parse().unwrap_or(0));
            }
        }
        if let Some(spec) = self.get_http_request_header("x-grpc-tokens") {
            return self.tokens(&spec);
        }
        if let Some(spec) = self.get_http_request_header("x-grpc-call") {
            return self.call(&spec);
        }
        if let Some(spec) = self.get_http_request_header("x-grpc-stream") {
            return self.stream(&spec);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.late.is_empty() {
            self.add_http_response_header("x-grpc-late", &self.late.join(","));
        }
        Action::Continue
    }
}
