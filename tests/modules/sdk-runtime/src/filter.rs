//! The filter (wasm only: some reports call the host's functions directly, to see statuses the
//! SDK would panic on).

use std::cell::RefCell;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RuntimeRoot) });
}}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_status(
        status_code: *mut u32,
        message_data: *mut *mut u8,
        message_size: *mut usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
}

/// How many times the host called the exported `main` (cpp-host calls it once, after
/// `_initialize`, in every VM it starts).
static MAIN_CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A WASI reactor's `main`, as a C or TinyGo module exports it.
#[no_mangle]
pub extern "C" fn main(_argc: i32, _argv: i32) -> i32 {
    MAIN_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // Host calls from start-up code, chosen by the VM's environment (readable at start-up).
    match std::env::var("MESHWARD_RT_START").as_deref() {
        Ok("log") => {
            proxy_wasm::hostcalls::log(proxy_wasm::types::LogLevel::Info, "rt: main").unwrap()
        }
        Ok("time") => {
            proxy_wasm::hostcalls::get_current_time().unwrap();
        }
        _ => {}
    }
    0
}

thread_local! {
    /// What `on_vm_start` saw when it asked for the plugin configuration.
    static VM_START: RefCell<String> = const { RefCell::new(String::new()) };
}

/// `proxy_get_status` as `<code>:<message>` (or `status:<n>` if the call itself failed).
fn get_status() -> String {
    let mut code = 0u32;
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes the code, and a buffer it allocated with this module's allocator
    // (or null) and its size.
    unsafe {
        let s = proxy_get_status(&mut code, &mut data, &mut size);
        if s != 0 {
            return format!("status:{s}");
        }
        let message = if data.is_null() {
            Vec::new()
        } else {
            Vec::from_raw_parts(data, size, size)
        };
        format!("{code}:{}", String::from_utf8_lossy(&message))
    }
}

/// The plugin configuration buffer (type 7) as `<status>[:<size>]`.
fn plugin_configuration() -> String {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: as in `get_status`.
    unsafe {
        let s = proxy_get_buffer_bytes(7, 0, usize::MAX, &mut data, &mut size);
        if !data.is_null() {
            drop(Vec::from_raw_parts(data, size, size));
        }
        if s == 0 {
            format!("0:{size}")
        } else {
            s.to_string()
        }
    }
}

struct RuntimeRoot;

impl Context for RuntimeRoot {}

impl RootContext for RuntimeRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let seen = plugin_configuration();
        VM_START.with(|v| *v.borrow_mut() = seen);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.register_shared_queue("q");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Runtime::default()))
    }
}

#[derive(Default)]
struct Runtime {
    /// Tokens of the callouts still to answer, in dispatch order.
    tokens: Vec<u32>,
    answered: usize,
    /// `x-rt-callout-mutate: add|replace|remove|body`: try to change the callout's response in
    /// its callback.
    mutate: Option<String>,
}

impl Context for Runtime {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, _body: usize, _t: usize) {
        let i = self.tokens.iter().position(|t| *t == token).unwrap_or(99);
        let status = if num_headers == 0 {
            "none".to_string()
        } else {
            self.get_http_call_response_header(":status")
                .unwrap_or_default()
        };
        self.add_http_request_header(&format!("x-rt-callout-status-{i}"), &status);
        self.add_http_request_header(&format!("x-rt-get-status-{i}"), &get_status());
        if let Some(op) = self.mutate.clone() {
            self.try_to_change_the_callout_response(i, &op);
        }
        self.answered += 1;
        if self.answered == self.tokens.len() {
            self.resume_http_request();
        }
    }
}

impl Runtime {
    /// Adds, replaces and removes a callout response header, sets its body, and reports each
    /// status and what the headers and body read back as afterwards.
    fn try_to_change_the_callout_response(&self, i: usize, op: &str) {
        use proxy_wasm::hostcalls;
        use proxy_wasm::types::{BufferType, MapType};
        // Raw calls: the SDK's wrappers panic on any status but Ok, and the status is the point.
        let map = MapType::HttpCallResponseHeaders;
        let kv = |k: &str, v: &str| (k.as_ptr(), k.len(), v.as_ptr(), v.len());
        // SAFETY: pointers and lengths of live strings, as the ABI takes them.
        let status = unsafe {
            match op {
                "add" => {
                    let (k, kl, v, vl) = kv("x-added", "1");
                    proxy_add_header_map_value(map as u32, k, kl, v, vl)
                }
                "replace" => {
                    let (k, kl, v, vl) = kv("x-from", "changed");
                    proxy_replace_header_map_value(map as u32, k, kl, v, vl)
                }
                "remove" => proxy_remove_header_map_value(map as u32, "content-type".as_ptr(), 12),
                _ => proxy_set_buffer_bytes(
                    BufferType::HttpCallResponseBody as u32,
                    0,
                    5,
                    "changed".as_ptr(),
                    7,
                ),
            }
        };
        let seen = |name: &str| {
            hostcalls::get_map_value(map, name)
                .ok()
                .flatten()
                .unwrap_or_else(|| "<none>".to_string())
        };
        let read_body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, usize::MAX)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| "<none>".to_string());
        self.add_http_request_header(&format!("x-rt-mutate-{i}"), &format!("{op}={status}"));
        self.add_http_request_header(
            &format!("x-rt-after-{i}"),
            &format!(
                "x-added={} x-from={} content-type={} body={read_body}",
                seen("x-added"),
                seen("x-from"),
                seen("content-type")
            ),
        );
    }
}

impl HttpContext for Runtime {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header("x-rt-vm-start").is_some() {
            let seen = VM_START.with(|v| v.borrow().clone());
            self.add_http_request_header("x-rt-vm-start-plugin-config", &seen);
        }
        if self.get_http_request_header("x-rt-main").is_some() {
            let calls = MAIN_CALLS.load(std::sync::atomic::Ordering::SeqCst);
            self.add_http_request_header("x-rt-main-calls", &calls.to_string());
        }
        if let Some(name) = self.get_http_request_header("x-rt-env") {
            let value = std::env::var(&name).unwrap_or_else(|_| "<unset>".to_string());
            self.add_http_request_header("x-rt-env-value", &value);
        }
        if let Some(spec) = self.get_http_request_header("x-rt-queue") {
            let (vm_id, name) = spec.split_once('/').unwrap_or(("", &spec));
            let found = match self.resolve_shared_queue(vm_id, name) {
                Some(_) => "yes",
                None => "no",
            };
            self.add_http_request_header("x-rt-queue-found", found);
        }
        // `x-rt-grpc: call|stream`: a gRPC call or stream to the cluster `grpc` (the harness
        // refuses both by name; see conformance_runtime.rs).
        if let Some(kind) = self.get_http_request_header("x-rt-grpc") {
            let status = if kind == "stream" {
                self.open_grpc_stream("grpc", "svc.Echo", "Talk", vec![])
                    .map(|_| ())
            } else {
                self.dispatch_grpc_call(
                    "grpc",
                    "svc.Echo",
                    "Say",
                    vec![],
                    Some(b"hi"),
                    Duration::from_secs(1),
                )
                .map(|_| ())
            };
            let text = match status {
                Ok(()) => "ok".to_string(),
                Err(s) => format!("error:{s:?}"),
            };
            self.add_http_request_header("x-rt-grpc-status", &text);
        }
        if let Some(t) = self.get_http_request_header("x-rt-continue") {
            let t: u32 = t.trim().parse().unwrap();
            // SAFETY: a plain host call with an integer argument.
            let s = unsafe { proxy_continue_stream(t) };
            self.add_http_request_header("x-rt-continue-status", &s.to_string());
        }
        let big = self.get_http_request_header("x-rt-callout-big");
        if let Some(spec) = self
            .get_http_request_header("x-rt-callout-headers")
            .or(big.clone())
        {
            let (cluster, n) = spec.split_once(';').unwrap();
            let n: usize = n.parse().unwrap();
            // `x-rt-callout-headers`: n extra headers; `x-rt-callout-big`: one of n KiB.
            let (names, value) = if big.is_some() {
                (vec!["x-big".to_string()], "v".repeat(n * 1024))
            } else {
                (
                    (0..n).map(|i| format!("x-h-{i}")).collect(),
                    "v".to_string(),
                )
            };
            let mut headers = vec![(":method", "GET"), (":path", "/"), (":authority", cluster)];
            headers.extend(names.iter().map(|h| (h.as_str(), value.as_str())));
            match self.dispatch_http_call(cluster, headers, None, vec![], Duration::from_secs(5)) {
                Ok(token) => {
                    self.tokens.push(token);
                    self.add_http_request_header("x-rt-dispatch", "ok");
                    return Action::Pause;
                }
                Err(s) => self.add_http_request_header("x-rt-dispatch", &format!("error:{s:?}")),
            }
        }
        self.mutate = self.get_http_request_header("x-rt-callout-mutate");
        if let Some(spec) = self.get_http_request_header("x-rt-callout") {
            let parts: Vec<&str> = spec.split(';').collect();
            let cluster = parts[0];
            let timeout = Duration::from_millis(parts[1].parse().unwrap());
            let calls: usize = parts[2].parse().unwrap();
            for i in 0..calls {
                let headers = vec![(":method", "GET"), (":path", "/"), (":authority", cluster)];
                match self.dispatch_http_call(cluster, headers, None, vec![], timeout) {
                    Ok(token) => {
                        self.tokens.push(token);
                        self.add_http_request_header(
                            &format!("x-rt-token-{i}"),
                            &token.to_string(),
                        );
                    }
                    Err(s) => self.add_http_request_header(
                        &format!("x-rt-token-{i}"),
                        &format!("error:{s:?}"),
                    ),
                }
            }
            if !self.tokens.is_empty() {
                return Action::Pause;
            }
        }
        Action::Continue
    }
}
