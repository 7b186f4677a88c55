//! meshward header-limits: a thin proxy-wasm adapter over `header_limits_core`.
//!
//! On each request's headers: read the header map as bytes, let the core decide, then either
//! continue (after dropping underscore headers if so configured) or send the core's local reply.
//! Host failures fail closed: a header map the host cannot hand over (or hands over malformed),
//! or a header we were told to drop but could not, ends the request with 500 `internal error`.
//! A limit filter that let such a request through would be bypassable by whatever makes the
//! host call fail; 500 rather than 400/431 because the client did nothing wrong that we know of.

mod host;
mod metrics;
mod wire;

use std::rc::Rc;

use header_limits_core::{evaluate, request_path, Limits, Verdict};
use metrics::Metrics;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

const INTERNAL_ERROR_BODY: &str = "internal error";
const INTERNAL_ERROR_DETAILS: &str = "header_limits.internal_error";

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // Envoy filters by its own wasm log level; pass everything to it.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// What every request of a configured plugin shares.
struct Shared {
    limits: Limits,
    metrics: Metrics,
}

#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match host::plugin_configuration(plugin_configuration_size) {
            Ok(bytes) => bytes,
            Err(status) => {
                log::error!(
                    "header-limits: cannot read the plugin configuration (host status {})",
                    status.0
                );
                return false;
            }
        };
        match Limits::from_json(&bytes) {
            Ok(limits) => {
                log::info!("header-limits: configured: {limits:?}");
                self.shared = Some(Rc::new(Shared {
                    limits,
                    metrics: Metrics::define(),
                }));
                true
            }
            Err(err) => {
                log::error!("header-limits: {err}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context (the SDK panics on None); an unconfigured one fails closed.
        Some(Box::new(Filter {
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub struct Filter {
    shared: Option<Rc<Shared>>,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.as_deref() else {
            return internal_error("request before a successful configuration");
        };
        let raw = match host::request_header_pairs() {
            Ok(raw) => raw,
            Err(status) => {
                return internal_error(&format!(
                    "cannot read the request headers (host status {})",
                    status.0
                ))
            }
        };
        let Some(headers) = wire::parse_pairs(&raw) else {
            return internal_error("the host sent a malformed request header map");
        };
        match evaluate(&shared.limits, &headers, request_path(&headers)) {
            Verdict::Continue {
                drop,
                dropped_entries,
            } => {
                for name in drop {
                    if let Err(status) = host::remove_request_header(name) {
                        return internal_error(&format!(
                            "cannot drop header `{}` (host status {})",
                            String::from_utf8_lossy(name),
                            status.0
                        ));
                    }
                }
                if dropped_entries > 0 {
                    shared.metrics.count_dropped(dropped_entries);
                    log::debug!(
                        "header-limits: dropped {dropped_entries} header(s) with underscores"
                    );
                }
                Action::Continue
            }
            Verdict::Reject(rejection) => {
                shared.metrics.count_rejection(rejection.reason);
                log::debug!(
                    "header-limits: rejected request: {} ({})",
                    rejection.reason.as_str(),
                    rejection.status
                );
                reply(rejection.status, rejection.reason.details(), rejection.body)
            }
        }
    }
}

/// Fail closed with 500 and say why in the log.
fn internal_error(why: &str) -> Action {
    log::error!("header-limits: {why}; answering 500");
    reply(500, INTERNAL_ERROR_DETAILS, INTERNAL_ERROR_BODY)
}

/// Send a local reply and stop the request. If even that fails, the request stays paused (never
/// forwarded): the host's stream timeout ends it.
fn reply(status: u32, details: &str, body: &str) -> Action {
    if let Err(err) = host::send_local_response(status, details, body) {
        log::error!(
            "header-limits: cannot send the {status} reply (host status {}); request stays paused",
            err.0
        );
    }
    Action::Pause
}
