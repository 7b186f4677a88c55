//! Filter adapters must reach the host only through meshward-host: the SDK's own host-call
//! wrappers panic on unexpected statuses (see the crate docs). This scans the adapters' sources
//! (`filters/*/src/**/*.rs`, except this crate's own) for SDK host calls and own host imports.

use std::fs;
use std::path::{Path, PathBuf};

/// Methods of the SDK's `Context` / `RootContext` / `HttpContext` traits that call the host,
/// forbidden in method-call form (`.name(`). meshward-host's functions of the same name are
/// called as paths (`meshward_host::get_property(..)`), which this does not match.
const SDK_HOST_METHODS: &[&str] = &[
    // Context
    "get_current_time",
    "get_property",
    "set_property",
    "get_shared_data",
    "set_shared_data",
    "remove_shared_data",
    "register_shared_queue",
    "resolve_shared_queue",
    "dequeue_shared_queue",
    "enqueue_shared_queue",
    "dispatch_http_call",
    "get_http_call_response_headers",
    "get_http_call_response_headers_bytes",
    "get_http_call_response_header",
    "get_http_call_response_header_bytes",
    "get_http_call_response_body",
    "get_http_call_response_trailers",
    "get_http_call_response_trailers_bytes",
    "get_http_call_response_trailer",
    "get_http_call_response_trailer_bytes",
    "dispatch_grpc_call",
    "get_grpc_call_response_body",
    "cancel_grpc_call",
    "open_grpc_stream",
    "get_grpc_stream_initial_metadata",
    "get_grpc_stream_initial_metadata_value",
    "send_grpc_stream_message",
    "get_grpc_stream_message",
    "get_grpc_stream_trailing_metadata",
    "get_grpc_stream_trailing_metadata_value",
    "cancel_grpc_stream",
    "close_grpc_stream",
    "get_grpc_status",
    "call_foreign_function",
    "done",
    // RootContext
    "get_vm_configuration",
    "get_plugin_configuration",
    "set_tick_period",
    // HttpContext
    "get_http_request_headers",
    "get_http_request_headers_bytes",
    "set_http_request_headers",
    "set_http_request_headers_bytes",
    "get_http_request_header",
    "get_http_request_header_bytes",
    "set_http_request_header",
    "set_http_request_header_bytes",
    "add_http_request_header",
    "add_http_request_header_bytes",
    "remove_http_request_header",
    "get_http_request_body",
    "set_http_request_body",
    "get_http_request_trailers",
    "get_http_request_trailers_bytes",
    "set_http_request_trailers",
    "set_http_request_trailers_bytes",
    "get_http_request_trailer",
    "get_http_request_trailer_bytes",
    "set_http_request_trailer",
    "set_http_request_trailer_bytes",
    "add_http_request_trailer",
    "add_http_request_trailer_bytes",
    "remove_http_request_trailer",
    "resume_http_request",
    "reset_http_request",
    "get_http_response_headers",
    "get_http_response_headers_bytes",
    "set_http_response_headers",
    "set_http_response_headers_bytes",
    "get_http_response_header",
    "get_http_response_header_bytes",
    "set_http_response_header",
    "set_http_response_header_bytes",
    "add_http_response_header",
    "add_http_response_header_bytes",
    "remove_http_response_header",
    "get_http_response_body",
    "set_http_response_body",
    "get_http_response_trailers",
    "get_http_response_trailers_bytes",
    "set_http_response_trailers",
    "set_http_response_trailers_bytes",
    "get_http_response_trailer",
    "get_http_response_trailer_bytes",
    "set_http_response_trailer",
    "set_http_response_trailer_bytes",
    "add_http_response_trailer",
    "add_http_response_trailer_bytes",
    "remove_http_response_trailer",
    "resume_http_response",
    "reset_http_response",
    "send_http_response",
    "send_grpc_response",
    // StreamContext
    "get_downstream_data",
    "set_downstream_data",
    "resume_downstream",
    "close_downstream",
    "get_upstream_data",
    "set_upstream_data",
    "resume_upstream",
    "close_upstream",
];

/// Anything else that bypasses meshward-host: the SDK's wrappers module, its panicking logger
/// (`set_log_level`; use `meshward_host::init_logger`), and host imports of the adapter's own.
const FORBIDDEN_TEXT: &[&str] = &[
    "hostcalls",
    "set_log_level",
    "extern \"C\"",
    "wasm_import_module",
];

/// `(line number, what)` for each forbidden use in `source`. Whole-line `//` comments (which
/// include doc comments) are skipped, so the docs may name what they forbid.
fn offences(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in source.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for text in FORBIDDEN_TEXT {
            if line.contains(text) {
                found.push((index + 1, (*text).to_string()));
            }
        }
        for method in SDK_HOST_METHODS {
            let call = format!(".{method}(");
            if line.contains(&call) {
                found.push((index + 1, call));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `filters/*/src/**/*.rs`, except this crate's own sources.
fn adapter_sources() -> Vec<PathBuf> {
    let this_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    // Nothing found ⇒ the test's own guard (it must scan header-limits) fails.
    let Some(filters) = this_crate.parent() else {
        return files;
    };
    for entry in fs::read_dir(filters).into_iter().flatten().flatten() {
        let crate_dir = entry.path();
        if crate_dir.is_dir() && crate_dir != this_crate {
            rust_files(&crate_dir.join("src"), &mut files);
        }
    }
    files.sort();
    files
}

#[test]
fn adapters_make_host_calls_only_through_meshward_host() {
    let files = adapter_sources();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().expect("workspace root");
    // Guard against scanning nothing (a wrong path would make this test pass vacuously).
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("header-limits/src/lib.rs")),
        "adapter sources not found: {files:?}"
    );
    let mut report = Vec::new();
    for file in &files {
        let source = fs::read_to_string(file).expect("read adapter source");
        let shown = file
            .canonicalize()
            .ok()
            .and_then(|f| f.strip_prefix(&workspace).ok().map(Path::to_path_buf))
            .unwrap_or_else(|| file.clone());
        for (line, what) in offences(&source) {
            report.push(format!("{}:{line}: {what}", shown.display()));
        }
    }
    assert!(
        report.is_empty(),
        "adapters must call the host through meshward-host (see its crate docs), not the SDK \
         or their own imports; {} offence(s):\n{}",
        report.len(),
        report.join("\n")
    );
}

#[test]
fn the_scan_flags_sdk_calls_and_own_imports_but_not_meshward_host_or_comments() {
    let source = r#"
use proxy_wasm::hostcalls;
//! The docs may say `self.get_property(..)` and hostcalls::get_map.
    // and so may comments: proxy_wasm::set_log_level(..)
fn a(&self) {
    let x = self.get_http_request_header(":path");
    let y = self
        .get_property(vec!["source", "address"]);
    proxy_wasm::set_log_level(LogLevel::Info);
    let ok = meshward_host::get_property(&["source", "address"]);
    let ok = host::dispatch_http_call("c", &h, None, &[], t);
    self.done();
}
#[link(wasm_import_module = "env")]
extern "C" { fn proxy_log(l: u32, p: *const u8, s: usize) -> u32; }
"#;
    let found: Vec<_> = offences(source)
        .into_iter()
        .map(|(line, what)| format!("{line} {what}"))
        .collect();
    assert_eq!(
        found,
        [
            "2 hostcalls",
            "6 .get_http_request_header(",
            "8 .get_property(",
            "9 set_log_level",
            "12 .done(",
            "14 wasm_import_module",
            "15 extern \"C\"",
        ]
    );
}
