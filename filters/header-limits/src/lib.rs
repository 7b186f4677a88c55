//! meshward header-limits: a thin proxy-wasm adapter over `header_limits_core`.
//!
//! On each request's headers: read the header map as bytes, let the core decide, then either
//! continue (after dropping underscore headers if so configured) or send the core's local reply.
//! Host failures fail closed: a header map the host cannot hand over (or hands over malformed),
//! or a header we were told to drop but could not, ends the request with 500 `internal error`.
//! A limit filter that let such a request through would be bypassable by whatever makes the
//! host call fail; 500 rather than 400/431 because the client did nothing wrong that we know of.

use std::rc::Rc;

use header_limits_core::{
    decide, request_path, Config, Reason, RequestFacts, Verdict, DROPPED_UNDERSCORE_METRIC,
};
use meshward_host::{wire, Counters, MapType};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

const INTERNAL_ERROR_BODY: &str = "internal error";
const INTERNAL_ERROR_DETAILS: &str = "header_limits.internal_error";

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // Envoy filters by its own wasm log level; pass everything to it.
    meshward_host::init_logger(log::LevelFilter::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// The root context: configuration and counters, shared by every request of this VM.
#[derive(Default)]
pub struct Root {
    configured: Option<Rc<Configured>>,
}

/// What every request of a configured plugin shares.
struct Configured {
    config: Config,
    /// [`Reason::ALL`]'s counters in that order, then [`DROPPED_UNDERSCORE_METRIC`].
    counters: Counters,
}

/// Index of the underscore-drop counter in [`Configured::counters`].
const DROPPED_COUNTER: usize = Reason::ALL.len();

/// Define every counter (at configure time, so they exist, at 0, before the first request).
fn define_counters() -> Counters {
    let names = Reason::ALL
        .iter()
        .map(|reason| reason.metric())
        .chain([DROPPED_UNDERSCORE_METRIC]);
    Counters::define("header-limits", names)
}

/// Index of `reason`'s rejection counter in [`Configured::counters`].
fn rejection_counter(reason: Reason) -> usize {
    // Every reason is in ALL; an impossible miss lands out of range, which Counters ignores.
    Reason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(usize::MAX)
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(config) =
            meshward_host::configure("header-limits", plugin_configuration_size, Config::parse)
        else {
            return false;
        };
        log::info!("header-limits: configured: {config:?}");
        self.configured = Some(Rc::new(Configured {
            config,
            counters: define_counters(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context (the SDK panics on None); an unconfigured one fails closed.
        Some(Box::new(Request {
            configured: self.configured.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The per-request context.
pub struct Request {
    configured: Option<Rc<Configured>>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(configured) = self.configured.as_deref() else {
            return internal_error("request before a successful configuration");
        };
        let raw = match meshward_host::get_map_raw(MapType::HttpRequestHeaders) {
            Ok(raw) => raw,
            Err(status) => {
                return internal_error(&format!(
                    "cannot read the request headers (host status {status})"
                ))
            }
        };
        let facts = match HostFacts::decode(&raw) {
            Ok(facts) => facts,
            Err(why) => return internal_error(why),
        };
        match decide(&configured.config, &facts) {
            Verdict::Continue {
                drop,
                dropped_entries,
            } => {
                for name in drop {
                    if let Err(status) =
                        meshward_host::remove_map_value(MapType::HttpRequestHeaders, name)
                    {
                        return internal_error(&format!(
                            "cannot drop header `{}` (host status {status})",
                            String::from_utf8_lossy(name)
                        ));
                    }
                }
                if dropped_entries > 0 {
                    let entries = u64::try_from(dropped_entries).unwrap_or(u64::MAX);
                    configured.counters.add(DROPPED_COUNTER, entries);
                    log::debug!(
                        "header-limits: dropped {dropped_entries} header(s) with underscores"
                    );
                }
                Action::Continue
            }
            Verdict::Reject(rejection) => {
                configured
                    .counters
                    .increment(rejection_counter(rejection.reason));
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

/// Send a local reply with no extra headers (the host adds `content-type: text/plain` to a reply
/// with a body, like Envoy's own 431) and stop the request. If even that fails, the request stays
/// paused (never forwarded): the host's stream timeout ends it.
fn reply(status: u32, details: &str, body: &str) -> Action {
    const NO_HEADERS: &[(&str, &str)] = &[];
    if let Err(err) =
        meshward_host::send_local_response(status, details, body.as_bytes(), NO_HEADERS, None)
    {
        log::error!(
            "header-limits: cannot send the {status} reply (host status {err}); request stays paused"
        );
    }
    Action::Pause
}

/// The request as the host handed it over: the header map, read once (it is all the decision
/// looks at) and decoded in place.
struct HostFacts<'raw> {
    headers: Vec<(&'raw [u8], &'raw [u8])>,
}

impl<'raw> HostFacts<'raw> {
    /// Decode the raw header map; why not, for the 500's log line.
    fn decode(raw: &'raw [u8]) -> Result<Self, &'static str> {
        let headers =
            wire::decode_map(raw).ok_or("the host sent a malformed request header map")?;
        // Envoy's codecs always give a request `:method` and `:path`; a map without them is a
        // failed read (an empty map would otherwise pass every limit), not a small request.
        let has = |name: &[u8]| headers.iter().any(|(n, _)| *n == name);
        if !has(b":method") || !has(b":path") {
            return Err("the host sent a request header map without :method or :path");
        }
        Ok(Self { headers })
    }
}

impl<'raw> RequestFacts for HostFacts<'raw> {
    type Name = &'raw [u8];
    type Value = &'raw [u8];

    fn headers(&self) -> &[(&'raw [u8], &'raw [u8])] {
        &self.headers
    }

    fn path(&self) -> &[u8] {
        request_path(&self.headers)
    }
}

#[cfg(test)]
mod tests {
    //! Natively every host call fails (meshward-host's stubs answer UNIMPLEMENTED), which is
    //! exactly the host-failure path: the adapter must fail closed, never continue or panic.
    use super::*;

    fn configured() -> Request {
        Request {
            configured: Some(Rc::new(Configured {
                config: Config::default(),
                counters: define_counters(),
            })),
        }
    }

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = Root::default();
        assert!(!root.on_configure(10));
        assert!(root.configured.is_none());
    }

    #[test]
    fn an_unreadable_header_map_pauses_the_request() {
        assert_eq!(configured().on_http_request_headers(3, true), Action::Pause);
    }

    #[test]
    fn an_unconfigured_filter_pauses_the_request() {
        let mut filter = Request { configured: None };
        assert_eq!(filter.on_http_request_headers(3, true), Action::Pause);
    }

    #[test]
    fn every_reason_and_the_drop_count_have_their_own_counter() {
        let counters = define_counters();
        assert_eq!(counters.len(), Reason::ALL.len() + 1);
        for reason in Reason::ALL {
            assert_eq!(
                counters.name(rejection_counter(reason)),
                Some(reason.metric())
            );
        }
        assert_eq!(
            counters.name(DROPPED_COUNTER),
            Some(DROPPED_UNDERSCORE_METRIC)
        );
    }
}
