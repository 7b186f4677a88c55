//! Test module `probe`: a filter driven by request headers, used to pin down host behaviour
//! (in the harness and in Envoy alike).
//!
//! - `x-probe-local-reply: <status>` → `send_http_response(status, [("x-probe", "local")], "probe local reply")`
//! - `x-probe-add-header: k=v` → adds request header `k: v`
//! - `x-probe-property: a.b.c` → request header `x-probe-property-value` = the property
//!   `["a","b","c"]`: the raw value if it is printable UTF-8, else `hex:<lowercase hex>`;
//!   `<none>` when absent
//! - `x-probe-set-property: name=value` → `set_property(["name"], value)`
//! - `x-probe-panic` → panics (a trap under panic=abort)
//!
//! - `x-probe-count: key` → increments the shared-data counter `key` with a CAS loop (u64 LE),
//!   sets `x-probe-count-value` to the value written
//! - `x-probe-callout: cluster` → `dispatch_http_call(cluster, GET /, 1 s)` and pauses; the
//!   response callback adds `x-probe-callout-status` (`:status`, or `none` for a failed call) and
//!   `x-probe-callout-body`, then resumes. A synchronous error sets `x-probe-callout-status:
//!   error:<Status>` and continues.
//!
//! Plugin configuration `tick_ms=<n>` sets the tick period; each tick increments the counter
//! metric `probe.ticks`.
//!
//! On every response it appends `x-probe-response-seen: <plugin name>`, so a test can see which
//! filters' response callbacks ran (also on local replies).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot) });
}}

/// Keeps `LogLevel` used on native builds too.
pub const LOG_LEVEL: LogLevel = LogLevel::Trace;

pub struct ProbeRoot;

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        if let Some(ms) = config.trim().strip_prefix("tick_ms=") {
            match ms.parse::<u64>() {
                Ok(ms) => {
                    self.set_tick_period(std::time::Duration::from_millis(ms));
                }
                Err(_) => {
                    log::error!("probe: bad tick_ms {ms:?}");
                    return false;
                }
            }
        } else if config.trim() == "reject" {
            log::error!("probe: configuration rejected on request");
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        if let Ok(id) = proxy_wasm::hostcalls::define_metric(
            proxy_wasm::types::MetricType::Counter,
            "probe.ticks",
        ) {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe))
    }
}

pub struct Probe;

impl Context for Probe {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let status = if num_headers == 0 {
            "none".to_string()
        } else {
            self.get_http_call_response_header(":status")
                .unwrap_or_default()
        };
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        self.add_http_request_header("x-probe-callout-status", &status);
        self.add_http_request_header("x-probe-callout-body", &render(Some(&body)));
        self.resume_http_request();
    }
}

/// CAS-increments the u64 counter `key`; returns the value written.
fn count(key: &str) -> Result<u64, String> {
    for _ in 0..100 {
        let (value, cas) =
            proxy_wasm::hostcalls::get_shared_data(key).map_err(|s| format!("{s:?}"))?;
        let current = value
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        let next = current.saturating_add(1);
        match proxy_wasm::hostcalls::set_shared_data(key, Some(&next.to_le_bytes()), cas) {
            Ok(()) => return Ok(next),
            Err(proxy_wasm::types::Status::CasMismatch) => continue,
            Err(s) => return Err(format!("{s:?}")),
        }
    }
    Err("too many CAS retries".to_string())
}

/// Renders a property value for a header.
pub fn render(value: Option<&[u8]>) -> String {
    match value {
        None => "<none>".to_string(),
        Some(v) => match std::str::from_utf8(v) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
            _ => {
                let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
                format!("hex:{hex}")
            }
        },
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header("x-probe-panic").is_some() {
            panic!("x-probe-panic");
        }
        if let Some(status) = self.get_http_request_header("x-probe-local-reply") {
            let status = status.trim().parse::<u32>().unwrap_or(500);
            log::info!("probe: local reply {status}");
            self.send_http_response(
                status,
                vec![("x-probe", "local")],
                Some(b"probe local reply"),
            );
            return Action::Pause;
        }
        if let Some(kv) = self.get_http_request_header("x-probe-add-header") {
            if let Some((k, v)) = kv.split_once('=') {
                self.add_http_request_header(k, v);
            }
        }
        if let Some(path) = self.get_http_request_header("x-probe-property") {
            let segments: Vec<&str> = path.split('.').collect();
            let value = self.get_property(segments);
            self.set_http_request_header("x-probe-property-value", Some(&render(value.as_deref())));
        }
        if let Some(kv) = self.get_http_request_header("x-probe-set-property") {
            if let Some((k, v)) = kv.split_once('=') {
                self.set_property(vec![k], Some(v.as_bytes()));
            }
        }
        if let Some(key) = self.get_http_request_header("x-probe-count") {
            let value = match count(&key) {
                Ok(v) => v.to_string(),
                Err(e) => format!("error:{e}"),
            };
            self.set_http_request_header("x-probe-count-value", Some(&value));
        }
        if let Some(cluster) = self.get_http_request_header("x-probe-callout") {
            let headers = vec![
                (":method", "GET"),
                (":path", "/"),
                (":authority", cluster.as_str()),
            ];
            match self.dispatch_http_call(
                &cluster,
                headers,
                None,
                vec![],
                std::time::Duration::from_secs(1),
            ) {
                Ok(_) => return Action::Pause,
                Err(s) => {
                    self.set_http_request_header(
                        "x-probe-callout-status",
                        Some(&format!("error:{s:?}")),
                    );
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let name = self
            .get_property(vec!["plugin_name"])
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        self.add_http_response_header("x-probe-response-seen", &name);
        Action::Continue
    }
}
