//! Shared test helpers: tiny WAT proxy-wasm modules and the paths of the test modules.
#![allow(dead_code)]

use std::path::PathBuf;

use meshward_harness::FilterSpec;

/// The release wasm of a test module (built by
/// `cargo build --release --target wasm32-wasip1 -p meshward-test-probe -p meshward-test-noop`).
pub fn module_path(stem: &str) -> PathBuf {
    // $MESHWARD_WASM_DIR, else $CARGO_TARGET_DIR or the workspace's target, /wasm32-wasip1/release.
    let dir = meshward_rig::default_wasm_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let path = dir.join(format!("{stem}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --target wasm32-wasip1 -p meshward-test-probe -p meshward-test-noop` first",
        path.display()
    );
    path
}

pub fn probe(name: &str) -> FilterSpec {
    FilterSpec::from_file(module_path("meshward_test_probe"))
        .unwrap()
        .name(name)
}

/// Options of the generated lifecycle module.
pub struct Wat {
    /// Action returned by `proxy_on_request_headers` (0 continue, 1 pause).
    pub request_headers_action: i32,
    /// Return value of `proxy_on_configure`.
    pub configure_ok: bool,
    /// `proxy_on_request_headers` executes `unreachable`.
    pub trap_on_request: bool,
    /// Extra imports, e.g. `(import "env" "foo" (func))`.
    pub extra_imports: String,
    /// Extra module fields (functions) appended verbatim.
    pub extra: String,
    /// Body of `proxy_on_request_headers` run before returning (WAT instructions).
    pub on_request: String,
    /// Body of `proxy_on_tick`.
    pub on_tick: String,
    /// Body of `proxy_on_http_call_response` (params: ctx, token, headers, body, trailers).
    pub on_callout: String,
}

impl Default for Wat {
    fn default() -> Self {
        Wat {
            request_headers_action: 0,
            configure_ok: true,
            trap_on_request: false,
            extra_imports: String::new(),
            extra: String::new(),
            on_request: String::new(),
            on_tick: String::new(),
            on_callout: String::new(),
        }
    }
}

/// Strings the lifecycle module logs, in data-segment order.
const EVENTS: &[&str] = &[
    "context_create",
    "vm_start",
    "configure",
    "request_headers",
    "request_body",
    "request_trailers",
    "response_headers",
    "response_body",
    "log",
    "done",
    "delete",
    "tick",
    "callout",
    "configure rejected",
    "invalid memory access",
    "plugin_name",
];

/// Offset of `event`'s bytes in the module's data segment.
pub fn data_offset(event: &str) -> usize {
    let mut off = 0;
    for e in EVENTS {
        if *e == event {
            return off;
        }
        off += e.len();
    }
    panic!("unknown event {event}");
}

/// WAT instructions that log `event` at info level.
pub fn log_call(event: &str) -> String {
    let mut off = 0;
    for e in EVENTS {
        if *e == event {
            return format!(
                "(drop (call $log (i32.const 2) (i32.const {off}) (i32.const {})))",
                e.len()
            );
        }
        off += e.len();
    }
    panic!("unknown event {event}");
}

impl Wat {
    /// A module that logs (info) the name of every callback it receives.
    pub fn build(&self) -> Vec<u8> {
        let data: String = EVENTS.concat();
        let trap = if self.trap_on_request {
            "unreachable"
        } else {
            ""
        };
        let configure = if self.configure_ok {
            format!("{} (i32.const 1)", log_call("configure"))
        } else {
            format!(
                "{} {} (i32.const 0)",
                log_call("configure"),
                log_call("configure rejected")
            )
        };
        let text = format!(
            r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick_period (param i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  {extra_imports}
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 65536))
  (data (i32.const 0) "{data}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32) {cc})
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) {vs} (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) {configure})
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    {rh} {trap} {on_request} (i32.const {action}))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) {rb} (i32.const 0))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) {rt} (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) {sh} (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) {sb} (i32.const 0))
  (func (export "proxy_on_log") (param i32) {lg})
  (func (export "proxy_on_done") (param i32) (result i32) {dn} (i32.const 1))
  (func (export "proxy_on_delete") (param i32) {dl})
  (func (export "proxy_on_tick") (param $ctx i32) {tk} {on_tick})
  (func (export "proxy_on_http_call_response") (param $ctx i32) (param $token i32) (param $headers i32) (param $body i32) (param $trailers i32)
    {co} {on_callout})
  {extra}
)"#,
            extra_imports = self.extra_imports,
            data = data,
            cc = log_call("context_create"),
            vs = log_call("vm_start"),
            configure = configure,
            rh = log_call("request_headers"),
            trap = trap,
            on_request = self.on_request,
            action = self.request_headers_action,
            rb = log_call("request_body"),
            rt = log_call("request_trailers"),
            sh = log_call("response_headers"),
            sb = log_call("response_body"),
            lg = log_call("log"),
            dn = log_call("done"),
            dl = log_call("delete"),
            tk = log_call("tick"),
            on_tick = self.on_tick,
            co = log_call("callout"),
            on_callout = self.on_callout,
            extra = self.extra,
        );
        wat::parse_str(&text).unwrap_or_else(|e| panic!("bad WAT: {e}\n{text}"))
    }

    pub fn spec(&self, name: &str) -> FilterSpec {
        FilterSpec::from_bytes(self.build()).name(name)
    }
}

/// Messages of `logs` logged by `plugin`.
pub fn events(logs: &[meshward_harness::LogLine], plugin: &str) -> Vec<String> {
    logs.iter()
        .filter(|l| l.plugin == plugin)
        .map(|l| l.message.clone())
        .collect()
}
