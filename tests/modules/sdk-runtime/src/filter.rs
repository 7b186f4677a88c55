//! The filter (wasm only: some reports call the host's functions directly, to see statuses the
//! SDK would panic on).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        bump(&ROOTS);
        event(format!("r{context_id}"));
        Box::new(RuntimeRoot { id: context_id })
    });
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
static MAIN_CALLS: AtomicU32 = AtomicU32::new(0);

/// A WASI reactor's `main`, as a C or TinyGo module exports it.
#[no_mangle]
pub extern "C" fn main(_argc: i32, _argv: i32) -> i32 {
    bump(&MAIN_CALLS);
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
    /// What this instance's host called, in order (`x-rt-vm-log`): `r<id>` a root context
    /// created, `s<id>:<vm configuration size>` its `on_vm_start`, `c<id>:<plugin configuration
    /// size>` its `on_configure` (HTTP contexts are left out: `x-rt-vm` counts them).
    static EVENTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Per wasm instance (module statics): every `on_configure`, `on_vm_start`, root context and
/// HTTP context this instance saw. A VM the host shares between plugins counts for all of them;
/// a fresh VM (a reload, another thread's) starts again from 0.
static CONFIGURES: AtomicU32 = AtomicU32::new(0);
static VM_STARTS: AtomicU32 = AtomicU32::new(0);
static ROOTS: AtomicU32 = AtomicU32::new(0);
static HTTP: AtomicU32 = AtomicU32::new(0);

fn bump(counter: &AtomicU32) {
    counter.fetch_add(1, Ordering::SeqCst);
}

fn count(counter: &AtomicU32) -> u32 {
    counter.load(Ordering::SeqCst)
}

fn event(e: String) {
    EVENTS.with(|v| v.borrow_mut().push(e));
}

/// Adds 1 to the decimal counter under `key` in the host's shared data (scoped by vm_id, shared
/// by every VM of the process: canaries and every thread's), compare-and-swap until it holds.
fn bump_shared(key: &str) {
    use proxy_wasm::hostcalls::{get_shared_data, set_shared_data};
    loop {
        let (value, cas) = get_shared_data(key).unwrap();
        let n = value.map_or(0, |v| shared_number(&v)) + 1;
        match set_shared_data(key, Some(n.to_string().as_bytes()), cas) {
            Ok(()) => return,
            Err(proxy_wasm::types::Status::CasMismatch) => continue,
            Err(s) => panic!("rt: set_shared_data({key}): {s:?}"),
        }
    }
}

/// Adds 1 to the counter metric `name` (defined here, by every VM that bumps it: Envoy's stats are
/// process-wide, so canaries and every thread's VM count in the one metric).
fn bump_metric(name: &str) {
    use proxy_wasm::hostcalls::{define_metric, increment_metric};
    let id = define_metric(proxy_wasm::types::MetricType::Counter, name).unwrap();
    increment_metric(id, 1).unwrap();
}

fn shared_number(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn shared(key: &str) -> u64 {
    let (value, _) = proxy_wasm::hostcalls::get_shared_data(key).unwrap();
    value.map_or(0, |v| shared_number(&v))
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

struct RuntimeRoot {
    id: u32,
}

impl Context for RuntimeRoot {}

impl RootContext for RuntimeRoot {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        bump(&VM_STARTS);
        event(format!("s{}:{vm_configuration_size}", self.id));
        bump_shared("rt.vm_starts");
        bump_metric("rt.vm_starts");
        let seen = plugin_configuration();
        VM_START.with(|v| *v.borrow_mut() = seen);
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        bump(&CONFIGURES);
        event(format!("c{}:{plugin_configuration_size}", self.id));
        bump_shared("rt.configures");
        bump_metric("rt.configures");
        self.register_shared_queue("q");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        bump(&HTTP);
        Some(Box::new(Runtime {
            id: context_id,
            root: self.id,
            ..Runtime::default()
        }))
    }
}

#[derive(Default)]
struct Runtime {
    /// This context's id and its root context's.
    id: u32,
    root: u32,
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

impl Runtime {
    /// `x-rt-vm`: this instance's counters, this context's ids and the shared counters, under a
    /// name of this plugin's.
    fn report_vm(&self) {
        let plugin = self
            .get_property(vec!["plugin_name"])
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let report = format!(
            "configures={},vm_starts={},roots={},http={},ctx={},root={},shared_configures={},shared_vm_starts={}",
            count(&CONFIGURES),
            count(&VM_STARTS),
            count(&ROOTS),
            count(&HTTP),
            self.id,
            self.root,
            shared("rt.configures"),
            shared("rt.vm_starts"),
        );
        self.add_http_request_header(&format!("x-rt-vm-{plugin}"), &report);
        let log = EVENTS.with(|v| v.borrow().join(" "));
        self.add_http_request_header(&format!("x-rt-vm-log-{plugin}"), &log);
    }

    /// `x-rt-trap: 1` (every plugin) or `x-rt-trap: <plugin name>` (that one): a panic, which the
    /// release profile's `panic = "abort"` turns into a wasm trap.
    fn maybe_trap(&self, which: &str) {
        if which == "1" {
            panic!("rt: trap requested");
        }
        let plugin = self
            .get_property(vec!["plugin_name"])
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if which == plugin {
            panic!("rt: trap requested for {plugin}");
        }
    }
}

impl HttpContext for Runtime {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(which) = self.get_http_request_header("x-rt-trap") {
            self.maybe_trap(&which);
        }
        if self.get_http_request_header("x-rt-vm").is_some() {
            self.report_vm();
        }
        if self.get_http_request_header("x-rt-vm-start").is_some() {
            let seen = VM_START.with(|v| v.borrow().clone());
            self.add_http_request_header("x-rt-vm-start-plugin-config", &seen);
        }
        if self.get_http_request_header("x-rt-main").is_some() {
            let calls = count(&MAIN_CALLS);
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
