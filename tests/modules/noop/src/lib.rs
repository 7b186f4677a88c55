//! Test module `noop`: a proxy-wasm filter that does nothing per request. It measures the host's
//! fixed per-request cost and pins down the lifecycle of a filter that only continues.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

/// Keeps `LogLevel` used on native builds too.
pub const LOG_LEVEL: LogLevel = LogLevel::Info;

pub struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }
}

pub struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}
