//! Test module `sdk-http`: the HTTP stream as a module written against the Rust SDK sees it, in
//! each phase — which header maps and bodies it may read or change, how bodies arrive, local
//! replies, the access-log phase — reported through response headers and metrics so the same
//! scenario files check it in the harness and in Envoy 1.40 (issue #16, `## HTTP stream` of
//! docs/harness-fidelity.md).
//!
//! Driven by the request header `x-sdk`: commands separated by `;`, each `phase:op` or
//! `phase:op=arg`, numbered from 0 in order; `<tag>@phase:op…` runs only in the filter whose tag
//! (its plugin configuration, default `sdk`) is `<tag>`. Phases: `reqh`, `reqb`, `reqt` (request
//! headers, body, trailers), `resph`, `respb`, `respt`, `log`. A command runs each time its
//! phase's callback runs. Results of request-side and `resph` commands become the response
//! header `x-<tag>-r<N>` (added in `on_http_response_headers`; a command that ran more than once
//! gives its results joined with ` | `); results of `respb`, `respt` and `log` commands increment
//! the counter `sdk.<tag>.r<N>.<result>` (the result with every byte outside `[A-Za-z0-9]` made
//! `_`).
//!
//! Ops (arguments split on `/`; a map is `req`, `reqt`, `resp` or `respt`; a body `req` or `resp`):
//! - `get=<map>/<name>`, `pairs=<map>`, `size=<map>`, `add=<map>/<name>/<value>`,
//!   `replace=<map>/<name>/<value>`, `remove=<map>/<name>`: the raw host call; result
//!   `Ok:<value>` / `Ok:<pair count>` / `Ok` or the status name (`BadArgument`, `NotFound`, …);
//! - `sdk-get=<map>/<name>`, `sdk-pairs=<map>`: the same through the SDK, as an ordinary module
//!   does it (the SDK panics on a status it does not expect: a trap);
//! - `prop=<a.b.c>`: `proxy_get_property` of the segments; `Ok:<value>` or the status;
//! - `body=<body>`: `proxy_get_buffer_bytes(0, all)`; `Ok:<content>` or the status;
//! - `set-body=<body>/<start>/<length>/<data>`: `proxy_set_buffer_bytes`; the status;
//! - `local=<status>`: `send_http_response(status, [x-sdk-local: <tag>], "sdk local reply")`,
//!   then the callback pauses; `local-raw=<status>/<grpc status>/<details>`: the raw
//!   `proxy_send_local_response` with that gRPC status (-1 = none) and details;
//! - `continue`: `proxy_continue_stream(HttpRequest)`; the status;
//! - `pause`: the callback returns Pause; `buffer` (body phases): Pause until end of stream.
//!
//! Always: the response header `x-<tag>-trace` lists the request-side callbacks as they ran
//! (`reqh:<eos>`, `reqb:<size>:<eos>`, `reqt:<count>`); counters `sdk.<tag>.create`, `.log`,
//! `.done`, `.delete` count the lifecycle, `sdk.<tag>.respb` / `.respb_eos` / `.respt` the
//! response callbacks. The tag is the plugin configuration (default `sdk`).

#![allow(clashing_extern_declarations)]

use std::ptr::null_mut;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(SdkRoot { tag: "sdk".to_string() })
    });
}}

/// Keeps `LogLevel` used on native builds too.
pub const LOG_LEVEL: LogLevel = LogLevel::Trace;

// The raw ABI, for statuses the SDK would panic on.
extern "C" {
    fn proxy_get_header_map_value(
        t: u32,
        k: *const u8,
        ks: usize,
        r: *mut *mut u8,
        rs: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(t: u32, r: *mut *mut u8, rs: *mut usize) -> u32;
    fn proxy_get_header_map_size(t: u32, r: *mut usize) -> u32;
    fn proxy_add_header_map_value(t: u32, k: *const u8, ks: usize, v: *const u8, vs: usize) -> u32;
    fn proxy_replace_header_map_value(
        t: u32,
        k: *const u8,
        ks: usize,
        v: *const u8,
        vs: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(t: u32, k: *const u8, ks: usize) -> u32;
    fn proxy_get_property(p: *const u8, ps: usize, r: *mut *mut u8, rs: *mut usize) -> u32;
    fn proxy_get_buffer_bytes(t: u32, s: usize, m: usize, r: *mut *mut u8, rs: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(t: u32, s: usize, l: usize, d: *const u8, ds: usize) -> u32;
    fn proxy_send_local_response(
        code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(t: u32) -> u32;
}

fn status_name(s: u32) -> String {
    match s {
        0 => "Ok".into(),
        1 => "NotFound".into(),
        2 => "BadArgument".into(),
        3 => "SerializationFailure".into(),
        4 => "ParseFailure".into(),
        7 => "Empty".into(),
        8 => "CasMismatch".into(),
        10 => "InternalFailure".into(),
        12 => "Unimplemented".into(),
        n => format!("Status{n}"),
    }
}

/// Takes ownership of a host-allocated buffer (the SDK's allocator gave it).
fn owned(p: *mut u8, n: usize) -> Vec<u8> {
    if p.is_null() {
        Vec::new()
    } else {
        unsafe { Vec::from_raw_parts(p, n, n) }
    }
}

fn map_type(name: &str) -> u32 {
    match name {
        "req" => 0,
        "reqt" => 1,
        "resp" => 2,
        "respt" => 3,
        _ => 99,
    }
}

fn body_type(name: &str) -> u32 {
    match name {
        "req" => 0,
        "resp" => 1,
        _ => 99,
    }
}

fn count(tag: &str, what: &str) {
    let name = format!("sdk.{tag}.{what}");
    let id = proxy_wasm::hostcalls::define_metric(MetricType::Counter, &name).unwrap();
    proxy_wasm::hostcalls::increment_metric(id, 1).unwrap();
}

fn sanitize(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s.chars().take(48).collect()
}

pub struct SdkRoot {
    tag: String,
}

impl Context for SdkRoot {}

impl RootContext for SdkRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let tag = config.trim().trim_matches('"').trim();
        if !tag.is_empty() {
            self.tag = tag.to_string();
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        count(&self.tag, "create");
        Some(Box::new(SdkStream {
            tag: self.tag.clone(),
            cmds: Vec::new(),
            results: Vec::new(),
            trace: Vec::new(),
        }))
    }
}

struct Cmd {
    idx: usize,
    phase: String,
    op: String,
    arg: String,
}

pub struct SdkStream {
    tag: String,
    cmds: Vec<Cmd>,
    /// Results waiting for the response headers.
    results: Vec<(usize, String)>,
    trace: Vec<String>,
}

impl Drop for SdkStream {
    fn drop(&mut self) {
        count(&self.tag, "delete");
    }
}

impl Context for SdkStream {
    fn on_done(&mut self) -> bool {
        count(&self.tag, "done");
        true
    }
}

impl SdkStream {
    /// Runs the commands of `phase` (`eos`: the callback's end_of_stream); the action.
    fn run(&mut self, phase: &str, eos: bool) -> Action {
        let mut action = Action::Continue;
        let mut out = Vec::new();
        for cmd in self.cmds.iter().filter(|c| c.phase == phase) {
            let args: Vec<&str> = cmd.arg.splitn(4, '/').collect();
            let arg = |i: usize| args.get(i).copied().unwrap_or("");
            let result = match cmd.op.as_str() {
                "get" => get(map_type(arg(0)), arg(1)),
                "pairs" => pairs(map_type(arg(0))),
                "size" => {
                    let mut n = 0usize;
                    let s = unsafe { proxy_get_header_map_size(map_type(arg(0)), &mut n) };
                    with_status(s, || n.to_string())
                }
                "add" | "replace" => {
                    let (k, v) = (arg(1), arg(2));
                    let t = map_type(arg(0));
                    let s = unsafe {
                        if cmd.op == "add" {
                            proxy_add_header_map_value(t, k.as_ptr(), k.len(), v.as_ptr(), v.len())
                        } else {
                            proxy_replace_header_map_value(
                                t,
                                k.as_ptr(),
                                k.len(),
                                v.as_ptr(),
                                v.len(),
                            )
                        }
                    };
                    status_name(s)
                }
                "remove" => {
                    let k = arg(1);
                    status_name(unsafe {
                        proxy_remove_header_map_value(map_type(arg(0)), k.as_ptr(), k.len())
                    })
                }
                "sdk-get" => {
                    let v = match arg(0) {
                        "req" => self.get_http_request_header(arg(1)),
                        "reqt" => self.get_http_request_trailer(arg(1)),
                        "resp" => self.get_http_response_header(arg(1)),
                        _ => self.get_http_response_trailer(arg(1)),
                    };
                    match v {
                        Some(v) => format!("Some:{v}"),
                        None => "None".to_string(),
                    }
                }
                "sdk-pairs" => {
                    let v = match arg(0) {
                        "req" => self.get_http_request_headers(),
                        "reqt" => self.get_http_request_trailers(),
                        "resp" => self.get_http_response_headers(),
                        _ => self.get_http_response_trailers(),
                    };
                    format!("n:{}", v.len())
                }
                "prop" => {
                    let path = cmd.arg.replace('.', "\0");
                    let (mut p, mut n) = (null_mut(), 0usize);
                    let s =
                        unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut p, &mut n) };
                    let v = owned(p, n);
                    with_status(s, || render(&v))
                }
                "body" => {
                    let (mut p, mut n) = (null_mut(), 0usize);
                    let s = unsafe {
                        proxy_get_buffer_bytes(body_type(arg(0)), 0, 1 << 20, &mut p, &mut n)
                    };
                    let v = owned(p, n);
                    with_status(s, || render(&v))
                }
                "set-body" => {
                    let start = arg(1).parse().unwrap_or(0);
                    let len = arg(2).parse().unwrap_or(0);
                    let d = arg(3);
                    status_name(unsafe {
                        proxy_set_buffer_bytes(body_type(arg(0)), start, len, d.as_ptr(), d.len())
                    })
                }
                "local" => {
                    let code = arg(0).parse().unwrap_or(500);
                    self.send_http_response(
                        code,
                        vec![("x-sdk-local", self.tag.as_str())],
                        Some(b"sdk local reply"),
                    );
                    action = Action::Pause;
                    "Ok".to_string()
                }
                "local-raw" => {
                    let code = arg(0).parse().unwrap_or(500);
                    let grpc: i32 = arg(1).parse().unwrap_or(-1);
                    let details = arg(2);
                    let body = b"sdk local reply";
                    let s = unsafe {
                        proxy_send_local_response(
                            code,
                            details.as_ptr(),
                            details.len(),
                            body.as_ptr(),
                            body.len(),
                            std::ptr::null(),
                            0,
                            grpc,
                        )
                    };
                    action = Action::Pause;
                    status_name(s)
                }
                "continue" => status_name(unsafe { proxy_continue_stream(0) }),
                "pause" => {
                    action = Action::Pause;
                    "Ok".to_string()
                }
                "buffer" => {
                    if !eos {
                        action = Action::Pause;
                    }
                    "Ok".to_string()
                }
                other => format!("unknown-op:{other}"),
            };
            out.push((cmd.idx, result));
        }
        match phase {
            "respb" | "respt" | "log" => {
                for (idx, r) in out {
                    count(&self.tag, &format!("r{idx}.{}", sanitize(&r)));
                }
            }
            _ => self.results.extend(out),
        }
        action
    }
}

fn with_status(s: u32, ok: impl FnOnce() -> String) -> String {
    if s == 0 {
        format!("Ok:{}", ok())
    } else {
        status_name(s)
    }
}

fn get(t: u32, key: &str) -> String {
    let (mut p, mut n) = (null_mut(), 0usize);
    let s = unsafe { proxy_get_header_map_value(t, key.as_ptr(), key.len(), &mut p, &mut n) };
    let v = owned(p, n);
    with_status(s, || render(&v))
}

fn pairs(t: u32) -> String {
    let (mut p, mut n) = (null_mut(), 0usize);
    let s = unsafe { proxy_get_header_map_pairs(t, &mut p, &mut n) };
    let v = owned(p, n);
    let count = if v.len() >= 4 {
        u32::from_le_bytes([v[0], v[1], v[2], v[3]])
    } else {
        0
    };
    with_status(s, || count.to_string())
}

/// A value for a header: printable UTF-8 as is, else `hex:<lowercase hex>`.
pub fn render(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
        _ => {
            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
            format!("hex:{hex}")
        }
    }
}

impl HttpContext for SdkStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let spec = self.get_http_request_header("x-sdk").unwrap_or_default();
        self.cmds = spec
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .filter_map(|(idx, c)| {
                let c = match c.split_once('@') {
                    Some((tag, c)) if tag == self.tag => c,
                    Some(_) => return None,
                    None => c,
                };
                let (phase, rest) = c.split_once(':').unwrap_or(("", c));
                let (op, arg) = rest.split_once('=').unwrap_or((rest, ""));
                Some(Cmd {
                    idx,
                    phase: phase.to_string(),
                    op: op.to_string(),
                    arg: arg.to_string(),
                })
            })
            .collect();
        self.trace.push(format!("reqh:{}", end_of_stream as u8));
        self.run("reqh", end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.trace
            .push(format!("reqb:{body_size}:{}", end_of_stream as u8));
        self.run("reqb", end_of_stream)
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        self.trace.push(format!("reqt:{num_trailers}"));
        self.run("reqt", true)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let action = self.run("resph", end_of_stream);
        let mut joined: Vec<(usize, String)> = Vec::new();
        for (idx, r) in std::mem::take(&mut self.results) {
            match joined.iter_mut().find(|(i, _)| *i == idx) {
                Some((_, all)) => {
                    all.push_str(" | ");
                    all.push_str(&r);
                }
                None => joined.push((idx, r)),
            }
        }
        for (idx, r) in joined {
            self.add_http_response_header(&format!("x-{}-r{idx}", self.tag), &r);
        }
        let trace = self.trace.join(" ");
        self.add_http_response_header(&format!("x-{}-trace", self.tag), &trace);
        action
    }

    fn on_http_response_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        count(&self.tag, "respb");
        if end_of_stream {
            count(&self.tag, "respb_eos");
        }
        self.run("respb", end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        count(&self.tag, "respt");
        self.run("respt", true)
    }

    fn on_log(&mut self) {
        count(&self.tag, "log");
        self.run("log", true);
    }
}
