//! meshward rate-limit: a thin proxy-wasm adapter over `rate_limit_core`.
//!
//! on_configure: parse the config, create the shared-data slot table if absent (see
//! docs/rate-limit.md for why creation happens here), define the metrics. Per request: pick the
//! bucket from connection properties / headers / the jwt-authn identity, run the CAS loop on the
//! bucket's shared-data entry, then continue (headers added on the response) or reject.

mod host;
mod metrics;

use std::rc::Rc;

use meshward_common::identity::{RequestIdentity, PROPERTY_PATH};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use rate_limit_core::headers::{rate_limit_headers, rejection_headers, REJECT_BODY};
use rate_limit_core::keys::{choose, ip_of_address};
use rate_limit_core::{
    init_table, run_cas_loop, Config, Decision, LoopOutcome, RequestFacts, SetError, SharedStore,
    SlotEvent, SlotRef, StoreError, Stored, TableKeys,
};

use metrics::{Counter, Metrics};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// What every request of one configured plugin shares (per VM).
struct Runtime {
    cfg: Config,
    keys: TableKeys,
    seed: [u8; 16],
    metrics: Metrics,
}

#[derive(Default)]
pub struct Root {
    runtime: Option<Rc<Runtime>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let cfg = match Config::parse(&bytes) {
            Ok(cfg) => cfg,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let plugin = match host::get_property(&["plugin_name"]) {
            Ok(Some(name)) => String::from_utf8_lossy(&name).into_owned(),
            _ => "rate-limit".to_string(),
        };
        let keys = TableKeys::new(&plugin, &cfg);
        let mut fresh_seed = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut fresh_seed) {
            log::error!("rate-limit: no random source for the table seed: {e}");
            return false;
        }
        let seed = match init_table(&mut HostStore, &keys, &cfg, fresh_seed) {
            Ok((seed, init)) => {
                log::debug!(
                    "rate-limit: table ready ({} entries created, {} existing)",
                    init.created,
                    init.existing
                );
                seed
            }
            Err(e) => {
                log::error!("rate-limit: cannot create the shared-data table: {e:?}");
                return false;
            }
        };
        self.runtime = Some(Rc::new(Runtime {
            cfg,
            keys,
            seed,
            metrics: Metrics::define(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            runtime: self.runtime.clone(),
            headers: None,
            replied: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Envoy's shared data through the status-safe host calls.
struct HostStore;

impl SharedStore for HostStore {
    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError> {
        match host::get_shared_data(key) {
            Ok(found) => Ok(found.map(|(value, cas)| Stored { value, cas })),
            Err(status) => Err(StoreError::Status(status)),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        match host::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(host::CAS_MISMATCH) => Err(SetError::CasMismatch),
            Err(status) => Err(SetError::Status(status)),
        }
    }

    fn creation_cas(&mut self) -> u32 {
        let mut b = [0u8; 4];
        match getrandom::fill(&mut b) {
            Ok(()) => u32::from_le_bytes(b).max(1),
            // Without randomness, the low bits of the clock are still unlikely to equal a cas.
            Err(_) => host::now_ns().map_or(0x5bd1_e995, |t| (t as u32).max(1)),
        }
    }
}

pub struct Request {
    runtime: Option<Rc<Runtime>>,
    /// Headers to add to the response (an allowed, enforced request).
    headers: Option<Vec<(&'static str, String)>>,
    /// This filter answered the request itself (its own response callback then runs too).
    replied: bool,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(rt) = self.runtime.clone() else {
            // Not configured (Envoy does not create contexts then): fail closed.
            return self.reject(503, &[], "rate-limit not configured");
        };
        let mut facts = HostFacts::default();
        let choice = choose(&rt.cfg, &mut facts);
        let slot = SlotRef::locate(&rt.cfg, rt.seed, &choice);
        let bucket = rt
            .cfg
            .bucket(slot.bucket)
            .copied()
            .unwrap_or(rt.cfg.default_bucket);
        let now = match host::now_ns() {
            Ok(now) => now,
            Err(status) => {
                log::warn!("rate-limit: clock unavailable (status {status}): failing closed");
                rt.metrics.bump(Counter::StoreErrors);
                return self.fail_closed(&rt, bucket.max_tokens());
            }
        };
        match run_cas_loop(
            &mut HostStore,
            &rt.keys.entry(slot.entry),
            &slot,
            now,
            &rt.cfg,
        ) {
            LoopOutcome::Decided {
                decided,
                late_create,
                ..
            } => {
                if late_create {
                    rt.metrics.bump(Counter::LateCreates);
                }
                match decided.event {
                    Some(SlotEvent::Evicted) => rt.metrics.bump(Counter::Evictions),
                    Some(SlotEvent::Reclaimed) => rt.metrics.bump(Counter::Reclaimed),
                    Some(SlotEvent::Reset) => {
                        log::warn!("rate-limit: replaced an unreadable table entry")
                    }
                    Some(SlotEvent::Claimed) | None => {}
                }
                self.act(&rt, &decided.decision)
            }
            LoopOutcome::RetriesExhausted => {
                rt.metrics.bump(Counter::CasRetriesExhausted);
                self.fail_closed(&rt, bucket.max_tokens())
            }
            LoopOutcome::StoreFailure(e) => {
                log::warn!("rate-limit: shared data failed ({e:?}): failing closed");
                rt.metrics.bump(Counter::StoreErrors);
                self.fail_closed(&rt, bucket.max_tokens())
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.replied {
            for (name, value) in self.headers.take().unwrap_or_default() {
                if let Err(status) = host::replace_header(host::RESPONSE_HEADERS, name, &value) {
                    log::debug!("rate-limit: cannot set {name} (status {status})");
                }
            }
        }
        Action::Continue
    }
}

impl Request {
    fn act(&mut self, rt: &Runtime, d: &Decision) -> Action {
        if d.allowed {
            rt.metrics.bump(Counter::Allowed);
            if !rt.cfg.shadow {
                self.headers = Some(rate_limit_headers(rt.cfg.headers, d));
            }
            return Action::Continue;
        }
        if rt.cfg.shadow {
            // Dry run: counted, never rejected, invisible to the client.
            rt.metrics.bump(Counter::ShadowLimited);
            return Action::Continue;
        }
        rt.metrics.bump(Counter::Limited);
        let headers = rejection_headers(rt.cfg.headers, d);
        self.reject(u32::from(rt.cfg.status), &headers, REJECT_BODY)
    }

    /// The bucket state is unknown (host error, CAS retries exhausted): reject, unless in shadow.
    fn fail_closed(&mut self, rt: &Runtime, limit: u32) -> Action {
        if rt.cfg.shadow {
            return Action::Continue;
        }
        let unknown = Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs: 1,
            retry_after_secs: 1,
            window_secs: 1,
        };
        let headers = rejection_headers(rt.cfg.headers, &unknown);
        self.reject(u32::from(rt.cfg.status), &headers, REJECT_BODY)
    }

    fn reject(&mut self, status: u32, headers: &[(&str, String)], body: &str) -> Action {
        self.replied = true;
        if let Err(s) = host::send_local_response(status, headers, body) {
            // Nothing else can answer the request; pausing it forever would hang the client,
            // so log and stop iteration: Envoy's stream timeout then resets it.
            log::error!("rate-limit: local reply failed (status {s})");
        }
        Action::Pause
    }
}

/// Request facts read from the host on demand (each property once at most).
#[derive(Default)]
struct HostFacts {
    identity: Option<Option<RequestIdentity>>,
}

fn property_string(path: &[&str]) -> Option<String> {
    match host::get_property(path) {
        Ok(Some(bytes)) => String::from_utf8(bytes).ok(),
        _ => None,
    }
}

impl RequestFacts for HostFacts {
    fn source_principal(&mut self) -> Option<String> {
        // Identity from the verified connection only, never from a header.
        let mtls = matches!(host::get_property(&["connection", "mtls"]), Ok(Some(b)) if b.first() == Some(&1));
        if !mtls {
            return None;
        }
        property_string(&["connection", "uri_san_peer_certificate"]).filter(|s| !s.is_empty())
    }

    fn source_ip(&mut self) -> Option<String> {
        property_string(&["source", "address"]).and_then(|a| ip_of_address(&a))
    }

    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        host::get_header(host::REQUEST_HEADERS, name).ok().flatten()
    }

    fn identity(&mut self) -> Option<RequestIdentity> {
        self.identity
            .get_or_insert_with(|| match host::get_property(PROPERTY_PATH) {
                Ok(Some(bytes)) => RequestIdentity::from_bytes(&bytes),
                _ => None,
            })
            .clone()
    }

    fn path(&mut self) -> Option<String> {
        host::get_header(host::REQUEST_HEADERS, ":path")
            .ok()
            .flatten()
            // Lossy: a non-UTF-8 path still meets `match.paths` (and fails to normalize there).
            .map(|p| String::from_utf8_lossy(&p).into_owned())
    }

    fn method(&mut self) -> Option<String> {
        host::get_header(host::REQUEST_HEADERS, ":method")
            .ok()
            .flatten()
            .and_then(|m| String::from_utf8(m).ok())
    }
}
