//! Test module `hostcall-cost`: on every request's headers it makes one kind of host call `N`
//! times, so that a real Envoy's CPU per request, minus that of a module that makes none, divided
//! by `N`, is the price of one such call (`meshward bench abi`).
//!
//! Plugin configuration: `{"call": "<kind>", "times": N}`, kinds in [`Kind`]. Every call goes through the SDK's
//! `hostcalls` functions, as the filters' do, so a call that hands a buffer back also pays the
//! host's allocation callback into the module. If any call fails, the request gets a local `500`
//! (`x-hostcall-cost-error: <kind>`), so that a benchmark measuring a failing call fails instead.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(CostRoot { plan: None })
    });
}}

/// Keeps `LogLevel` used on native builds too.
pub const LOG_LEVEL: LogLevel = LogLevel::Warn;

/// The shared-data key `shared-data-get` reads (written once at configuration).
const SHARED_KEY: &str = "meshward.hostcall-cost";

/// One kind of host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `proxy_increment_metric` on a counter defined at configuration.
    Metric,
    /// `proxy_get_property(connection.uri_san_peer_certificate)`: a string handed back.
    Property,
    /// `proxy_get_property(destination.port)`: an integer handed back (8 bytes).
    PropertyPort,
    /// `proxy_get_header_map_value(request, "x-tenant")`.
    Header,
    /// `proxy_get_header_map_pairs(request)`: every request header, serialized.
    HeaderMap,
    /// `proxy_replace_header_map_value(request, "x-hostcall-cost", "1")`.
    ReplaceHeader,
    /// `proxy_get_current_time_nanoseconds`.
    Time,
    /// `proxy_get_shared_data` of a 16-byte value.
    SharedDataGet,
    /// `proxy_set_property(meshward_cost, …)` (a filter-state write).
    SetProperty,
    /// No host call: a 256-byte heap allocation, written and freed (the guest's allocator, as
    /// the filters use it per request), to compare V8's speed on guest code with the harness's.
    Alloc,
    /// No host call: FNV-1a over 256 bytes (plain guest arithmetic and memory reads).
    Hash,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Metric,
        Kind::Property,
        Kind::PropertyPort,
        Kind::Header,
        Kind::HeaderMap,
        Kind::ReplaceHeader,
        Kind::Time,
        Kind::SharedDataGet,
        Kind::SetProperty,
        Kind::Alloc,
        Kind::Hash,
    ];

    /// The name used in the plugin configuration.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Metric => "metric",
            Kind::Property => "property",
            Kind::PropertyPort => "property-port",
            Kind::Header => "header",
            Kind::HeaderMap => "header-map",
            Kind::ReplaceHeader => "replace-header",
            Kind::Time => "time",
            Kind::SharedDataGet => "shared-data-get",
            Kind::SetProperty => "set-property",
            Kind::Alloc => "alloc",
            Kind::Hash => "hash",
        }
    }

    /// The ABI function the kind calls, and on what.
    pub fn call(self) -> &'static str {
        match self {
            Kind::Metric => "proxy_increment_metric",
            Kind::Property => "proxy_get_property connection.uri_san_peer_certificate",
            Kind::PropertyPort => "proxy_get_property destination.port",
            Kind::Header => "proxy_get_header_map_value (request, one header)",
            Kind::HeaderMap => "proxy_get_header_map_pairs (request, every header)",
            Kind::ReplaceHeader => "proxy_replace_header_map_value (request)",
            Kind::Time => "proxy_get_current_time_nanoseconds",
            Kind::SharedDataGet => "proxy_get_shared_data (16 bytes)",
            Kind::SetProperty => "proxy_set_property (filter state)",
            Kind::Alloc => "no host call: allocate, write and free 256 bytes",
            Kind::Hash => "no host call: FNV-1a over 256 bytes",
        }
    }

    /// Whether the kind makes a host call (the others are guest work only).
    pub fn is_host_call(self) -> bool {
        !matches!(self, Kind::Alloc | Kind::Hash)
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    call: String,
    times: u32,
}

/// `{"call": "<kind>", "times": N}` → the kind and N.
pub fn parse_config(config: &str) -> Result<(Kind, u32), String> {
    let c: Config = serde_json::from_str(config).map_err(|e| format!("configuration: {e}"))?;
    let kind = Kind::parse(&c.call).ok_or_else(|| format!("unknown call {:?}", c.call))?;
    Ok((kind, c.times))
}

#[derive(Clone, Copy)]
struct Plan {
    kind: Kind,
    n: u32,
    metric: u32,
}

pub struct CostRoot {
    plan: Option<Plan>,
}

impl Context for CostRoot {}

impl RootContext for CostRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = match hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        ) {
            Ok(bytes) => String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned(),
            Err(_) => return false,
        };
        let (kind, n) = match parse_config(&config) {
            Ok(plan) => plan,
            Err(e) => {
                log::error!("hostcall-cost: {e}");
                return false;
            }
        };
        let Ok(metric) = hostcalls::define_metric(MetricType::Counter, "hostcall_cost.calls")
        else {
            return false;
        };
        if hostcalls::set_shared_data(SHARED_KEY, Some(b"0123456789abcdef"), None).is_err() {
            return false;
        }
        self.plan = Some(Plan { kind, n, metric });
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Cost(self.plan?)))
    }
}

struct Cost(Plan);

impl Cost {
    /// One call of the plan's kind; `false` if the host refused it.
    fn call(&self) -> bool {
        let p = &self.0;
        match p.kind {
            Kind::Metric => hostcalls::increment_metric(p.metric, 1).is_ok(),
            Kind::Property => {
                hostcalls::get_property(vec!["connection", "uri_san_peer_certificate"])
                    .is_ok_and(|v| v.is_some())
            }
            Kind::PropertyPort => {
                hostcalls::get_property(vec!["destination", "port"]).is_ok_and(|v| v.is_some())
            }
            Kind::Header => hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-tenant")
                .is_ok_and(|v| v.is_some()),
            Kind::HeaderMap => {
                hostcalls::get_map(MapType::HttpRequestHeaders).is_ok_and(|m| !m.is_empty())
            }
            Kind::ReplaceHeader => {
                hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-hostcall-cost", Some("1"))
                    .is_ok()
            }
            Kind::Time => hostcalls::get_current_time().is_ok(),
            Kind::SharedDataGet => {
                hostcalls::get_shared_data(SHARED_KEY).is_ok_and(|(v, _)| v.is_some())
            }
            Kind::SetProperty => {
                hostcalls::set_property(vec!["meshward_cost"], Some(b"spiffe://x/y")).is_ok()
            }
            Kind::Alloc => {
                let v = std::hint::black_box(vec![0x5au8; 256]);
                v.len() == 256
            }
            Kind::Hash => {
                let bytes = std::hint::black_box([0x5au8; 256]);
                let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                std::hint::black_box(h) != 0
            }
        }
    }
}

impl Context for Cost {}

impl HttpContext for Cost {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for _ in 0..self.0.n {
            if !self.call() {
                let _ = hostcalls::send_http_response(
                    500,
                    vec![("x-hostcall-cost-error", self.0.kind.name())],
                    None,
                );
                return Action::Pause;
            }
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_config(r#"{"call": "metric", "times": 50}"#),
            Ok((Kind::Metric, 50))
        );
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        assert!(parse_config(r#"{"call": "metric"}"#).is_err());
        assert!(parse_config(r#"{"call": "metric", "times": 1, "x": 1}"#).is_err());
        assert!(parse_config(r#"{"call": "nope", "times": 5}"#)
            .unwrap_err()
            .contains("nope"));
    }
}
