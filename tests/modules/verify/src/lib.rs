//! Test module `verify`: per request, calls a foreign function and answers with a local reply
//! that carries what the host returned, so that a suite can compare the harness with Envoy.
//!
//! - `x-verify-args: <hex>` — the serialized arguments (for `verify_signature`, a
//!   `VerifySignatureArguments`; the test encodes it, malformed encodings included);
//! - `x-verify-function: <name>` — the function to call (default `verify_signature`).
//!
//! Reply 200 with `x-verify-status: <proxy_status_t as a number>` and, when the host handed back
//! a non-null buffer, `x-verify-result: <hex of the result bytes>` (the test decodes the
//! `VerifySignatureResult`: comparing raw bytes is stricter than comparing decoded fields).
//! Without `x-verify-args` the request continues untouched.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(VerifyRoot) });
}}

/// Keeps `LogLevel` used on native builds too.
pub const LOG_LEVEL: LogLevel = LogLevel::Warn;

pub struct VerifyRoot;

impl Context for VerifyRoot {}

impl RootContext for VerifyRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Verify))
    }
}

pub struct Verify;

impl Context for Verify {}

// The raw import, not the SDK's `call_foreign_function`: that one panics on statuses it does not
// expect and drops the result buffer of a non-Ok call, and both are what the suite compares.
#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// The status and the result buffer (`None` when the host handed back a null pointer).
#[cfg(target_arch = "wasm32")]
fn call(function: &str, args: &[u8]) -> (u32, Option<Vec<u8>>) {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer it allocated with this module's allocator (or null)
    // and its size, as proxy-wasm's own `call_foreign_function` assumes.
    unsafe {
        let status = proxy_call_foreign_function(
            function.as_ptr(),
            function.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        );
        let result = (!data.is_null()).then(|| Vec::from_raw_parts(data, size, size));
        (status, result)
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn call(_function: &str, _args: &[u8]) -> (u32, Option<Vec<u8>>) {
    (u32::MAX, None)
}

impl HttpContext for Verify {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(args) = self.get_http_request_header("x-verify-args") else {
            return Action::Continue;
        };
        let Ok(args) = hex::decode(args.trim()) else {
            self.send_http_response(400, vec![("x-verify-status", "bad hex")], None);
            return Action::Pause;
        };
        let function = self
            .get_http_request_header("x-verify-function")
            .unwrap_or_else(|| "verify_signature".to_string());
        let (status, result) = call(&function, &args);
        let status = status.to_string();
        let result = result.map(hex::encode);
        let mut headers = vec![("x-verify-status", status.as_str())];
        if let Some(result) = &result {
            headers.push(("x-verify-result", result.as_str()));
        }
        self.send_http_response(200, headers, None);
        Action::Pause
    }
}
