//! meshward rate-limit: a thin proxy-wasm adapter over `rate_limit_core`.
//!
//! on_configure: parse the config, create the shared-data slot table if absent (see
//! docs/rate-limit.md for why creation happens here), define the counters. Per request: the
//! core's `decide` picks the buckets from connection properties / headers / the jwt-authn
//! identity (read on demand through `HostFacts`) and runs the CAS loop on each bucket's
//! shared-data entry; then continue (headers added on the response) or reject.
//!
//! Every host call goes through `meshward_host`, which returns host statuses as values (the SDK's
//! calls panic on statuses they do not expect). A host error on anything the decision needs (a
//! fact the bucket choice read, the clock, shared data) fails closed.

mod counters;

use std::rc::Rc;

use meshward_common::identity::{RequestIdentity, PROPERTY_PATH};
use meshward_host::{Counters, HeaderPairs, HostStore, MapType, Status};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use rate_limit_core::headers::{rate_limit_headers, rejection_headers, REJECT_BODY};
use rate_limit_core::keys::ip_of_address;
use rate_limit_core::{
    decide, init_table, ChargeOutcome, Config, Decision, IdentityFact, RequestFacts, SlotEvent,
    TableKeys, Unchargeable, Verdict,
};

use counters::{define_counters, Counter};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    meshward_host::init_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// The table's namespace when the host has no `plugin_name`.
const DEFAULT_PLUGIN_NAME: &str = "rate-limit";

/// The root context: configuration, the shared-data table and counters, shared by every request
/// of this VM.
#[derive(Default)]
pub struct Root {
    configured: Option<Rc<Configured>>,
}

/// What every request of one configured plugin shares (per VM).
struct Configured {
    config: Config,
    keys: TableKeys,
    seed: [u8; 16],
    /// Indexed by [`Counter`].
    counters: Counters,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(config) =
            meshward_host::configure("rate-limit", plugin_configuration_size, Config::parse)
        else {
            return false;
        };
        let plugin = match property(&["plugin_name"]) {
            Ok(Some(name)) => String::from_utf8_lossy(&name).into_owned(),
            Ok(None) => DEFAULT_PLUGIN_NAME.to_string(),
            Err(status) => {
                // The name keys the shared table: guessing could share it with another plugin.
                log::error!("rate-limit: cannot read plugin_name (host status {status})");
                return false;
            }
        };
        let keys = TableKeys::new(&plugin, &config);
        let mut fresh_seed = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut fresh_seed) {
            log::error!("rate-limit: no random source for the table seed: {e}");
            return false;
        }
        let seed = match init_table(&mut HostStore, &keys, &config, fresh_seed) {
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
        self.configured = Some(Rc::new(Configured {
            config,
            keys,
            seed,
            counters: define_counters(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            configured: self.configured.clone(),
            headers: None,
            replied: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The per-request context.
pub struct Request {
    configured: Option<Rc<Configured>>,
    /// Headers to add to the response (an allowed, enforced request).
    headers: Option<Vec<(&'static str, String)>>,
    /// This filter answered the request itself (its own response callback then runs too).
    replied: bool,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(rt) = self.configured.clone() else {
            // Not configured (Envoy does not create contexts then): fail closed.
            return self.reject(503, &[], "rate-limit not configured");
        };
        let count = |counter: Counter| rt.counters.increment(counter as usize);
        let mut facts = HostFacts::default();
        let clock = || match meshward_host::current_time_nanos() {
            Ok(now) => Some(now),
            Err(status) => {
                log::warn!("rate-limit: clock unavailable (status {status}): failing closed");
                None
            }
        };
        let verdict = decide(
            &rt.config,
            &mut facts,
            &rt.keys,
            rt.seed,
            &mut HostStore,
            clock,
        );
        // The limit a refusal without a decision reports: the default bucket's.
        let limit = rt.config.default_bucket.max_tokens();
        match verdict {
            Verdict::FactUnavailable => {
                if let Some((fact, status)) = facts.host_error {
                    log::warn!(
                        "rate-limit: cannot read {fact} (host status {status}): failing closed"
                    );
                }
                count(Counter::StoreErrors);
                self.fail_closed(&rt, limit)
            }
            Verdict::Unchargeable(Unchargeable::TooManyValues { descriptor }) => {
                // Charging only some of the values would let the others through uncounted.
                log::warn!(
                    "rate-limit: descriptors[{descriptor}]: more than {} distinct key values: \
                     failing closed",
                    rate_limit_core::keys::MAX_KEY_VALUES
                );
                count(Counter::TooManyValues);
                self.fail_closed(&rt, limit)
            }
            Verdict::Unchargeable(Unchargeable::IdentityUnreadable { descriptor }) => {
                // Present but unreadable is not anonymous: it must not fall to another bucket.
                log::warn!(
                    "rate-limit: descriptors[{descriptor}]: the published identity does not \
                     parse: failing closed"
                );
                count(Counter::IdentityUnreadable);
                self.fail_closed(&rt, limit)
            }
            Verdict::NoClock => {
                count(Counter::StoreErrors);
                self.fail_closed(&rt, limit)
            }
            Verdict::Charged(ChargeOutcome::Decided {
                decision,
                events,
                late_creates,
            }) => {
                for _ in 0..late_creates {
                    count(Counter::LateCreates);
                }
                for event in events {
                    match event {
                        SlotEvent::Evicted => count(Counter::Evictions),
                        SlotEvent::Reclaimed => count(Counter::Reclaimed),
                        SlotEvent::Reset => {
                            log::warn!("rate-limit: replaced an unreadable table entry")
                        }
                        SlotEvent::Claimed => {}
                    }
                }
                self.act(&rt, &decision)
            }
            Verdict::Charged(ChargeOutcome::RetriesExhausted) => {
                count(Counter::CasRetriesExhausted);
                self.fail_closed(&rt, limit)
            }
            Verdict::Charged(ChargeOutcome::StoreFailure(e)) => {
                log::warn!("rate-limit: shared data failed ({e:?}): failing closed");
                count(Counter::StoreErrors);
                self.fail_closed(&rt, limit)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.replied {
            for (name, value) in self.headers.take().unwrap_or_default() {
                // Informational headers only: the request was already allowed.
                if let Err(status) =
                    meshward_host::replace_map_value(MapType::HttpResponseHeaders, name, &value)
                {
                    log::debug!("rate-limit: cannot set {name} (status {status})");
                }
            }
        }
        Action::Continue
    }
}

impl Request {
    fn act(&mut self, rt: &Configured, d: &Decision) -> Action {
        let count = |counter: Counter| rt.counters.increment(counter as usize);
        if d.allowed {
            count(Counter::Allowed);
            if !rt.config.shadow {
                self.headers = Some(rate_limit_headers(rt.config.headers, d));
            }
            return Action::Continue;
        }
        if rt.config.shadow {
            // Dry run: counted, never rejected, invisible to the client.
            count(Counter::ShadowLimited);
            return Action::Continue;
        }
        count(Counter::Limited);
        let headers = rejection_headers(rt.config.headers, d);
        self.reject(u32::from(rt.config.status), &headers, REJECT_BODY)
    }

    /// The bucket state is unknown (host error, CAS retries exhausted): reject, unless in shadow.
    fn fail_closed(&mut self, rt: &Configured, limit: u32) -> Action {
        if rt.config.shadow {
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
        let headers = rejection_headers(rt.config.headers, &unknown);
        self.reject(u32::from(rt.config.status), &headers, REJECT_BODY)
    }

    fn reject(&mut self, status: u32, headers: &[(&str, String)], body: &str) -> Action {
        self.replied = true;
        // No response code details, as before the port.
        if let Err(s) =
            meshward_host::send_local_response(status, "", body.as_bytes(), headers, None)
        {
            // Nothing else can answer the request; pausing it forever would hang the client,
            // so log and stop iteration: Envoy's stream timeout then resets it.
            log::error!("rate-limit: local reply failed (status {s})");
        }
        Action::Pause
    }
}

/// A property; `None` when absent or empty (Envoy hands over no buffer for an empty value, and
/// an empty value says nothing any caller here could use).
fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    Ok(meshward_host::get_property(path)?.filter(|value| !value.is_empty()))
}

/// Published identity bytes: readable, or present but unreadable (never "absent": something was
/// published, so the request is not anonymous).
fn identity_fact(bytes: &[u8]) -> IdentityFact {
    // The readers' shared rule (meshward_common::identity): jwt-authn publishes only what this
    // reads back unchanged.
    match RequestIdentity::read(Some(bytes)) {
        Ok(Some(identity)) => IdentityFact::Present(identity),
        Ok(None) => IdentityFact::Absent,
        Err(e) => {
            log::debug!("rate-limit: published identity unreadable: {}", e.reason);
            IdentityFact::Unreadable
        }
    }
}

/// Request facts read from the host on demand (each property once at most).
///
/// `RequestFacts` answers "no value" or a value; a host error is recorded in `host_error` and
/// answered as "no value", and the request then fails closed: a fact that could not be read
/// must not move the request to another (looser) bucket.
#[derive(Default)]
struct HostFacts {
    identity: Option<IdentityFact>,
    /// The request header map, read once when a header key needs it.
    headers: Option<HeaderPairs>,
    /// The first fact the host would not hand over, and its status.
    host_error: Option<(&'static str, Status)>,
}

impl HostFacts {
    /// `Ok` results as they are; an error is recorded and becomes "no value".
    fn read<T>(&mut self, fact: &'static str, result: Result<Option<T>, Status>) -> Option<T> {
        match result {
            Ok(value) => value,
            Err(status) => {
                self.host_error.get_or_insert((fact, status));
                None
            }
        }
    }

    fn property_string(&mut self, fact: &'static str, path: &[&str]) -> Option<String> {
        self.read(fact, property(path))
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    /// One value of a pseudo-header (never repeated).
    fn request_header(&mut self, fact: &'static str, name: &str) -> Option<Vec<u8>> {
        self.read(
            fact,
            meshward_host::get_map_value(MapType::HttpRequestHeaders, name),
        )
    }
}

impl RequestFacts for HostFacts {
    fn source_principal(&mut self) -> Option<String> {
        // Identity from the verified connection only, never from a header.
        let mtls = self.read("connection.mtls", property(&["connection", "mtls"]));
        if mtls.as_deref().and_then(|b| b.first()) != Some(&1) {
            return None;
        }
        self.property_string(
            "connection.uri_san_peer_certificate",
            &["connection", "uri_san_peer_certificate"],
        )
        .filter(|s| !s.is_empty())
    }

    fn source_ip(&mut self) -> Option<String> {
        self.property_string("source.address", &["source", "address"])
            .and_then(|a| ip_of_address(&a))
    }

    fn headers(&mut self) -> &[(Vec<u8>, Vec<u8>)] {
        if self.headers.is_none() {
            // Every line: a repeated key header and its `_` spellings are all charged.
            let map = meshward_host::get_map(MapType::HttpRequestHeaders);
            let pairs = self.read("the request headers", map.map(Some));
            self.headers = Some(pairs.unwrap_or_default());
        }
        self.headers.as_deref().unwrap_or_default()
    }

    fn identity(&mut self) -> IdentityFact {
        if let Some(known) = &self.identity {
            return known.clone();
        }
        let identity = match self.read("the request identity", property(PROPERTY_PATH)) {
            None => IdentityFact::Absent,
            Some(bytes) => identity_fact(&bytes),
        };
        self.identity = Some(identity.clone());
        identity
    }

    fn path(&mut self) -> Option<String> {
        self.request_header(":path", ":path")
            // Lossy: a non-UTF-8 path still meets `match.paths` (and fails to normalize there).
            .map(|p| String::from_utf8_lossy(&p).into_owned())
    }

    fn method(&mut self) -> Option<String> {
        self.request_header(":method", ":method")
            .and_then(|m| String::from_utf8(m).ok())
    }

    fn read_failed(&self) -> bool {
        self.host_error.is_some()
    }
}

#[cfg(test)]
mod tests {
    //! Natively every host call fails (meshward-host's stubs answer UNIMPLEMENTED): exactly the
    //! host-failure paths, which must fail closed (or, in shadow mode, pass uncounted by the
    //! client), never panic.
    use super::*;

    fn request(config: &str) -> Request {
        let config = Config::parse(config.as_bytes()).unwrap();
        let keys = TableKeys::new(DEFAULT_PLUGIN_NAME, &config);
        Request {
            configured: Some(Rc::new(Configured {
                config,
                keys,
                seed: [7; 16],
                counters: define_counters(),
            })),
            headers: None,
            replied: false,
        }
    }

    const ENFORCED: &str =
        r#"{"tokenBucket":{"maxTokens":5,"tokensPerFill":1,"fillInterval":"1s"}}"#;
    const SHADOW: &str = r#"{"tokenBucket":{"maxTokens":5,"tokensPerFill":1,"fillInterval":"1s"},
        "shadow":true}"#;
    const BY_HEADER: &str = r#"{"tokenBucket":{"maxTokens":5,"tokensPerFill":1,"fillInterval":"1s"},
        "descriptors":[{"key":"request.headers[x-api-key]",
            "tokenBucket":{"maxTokens":1,"tokensPerFill":1,"fillInterval":"1h"}}]}"#;

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = Root::default();
        assert!(!root.on_configure(10));
        assert!(root.configured.is_none());
    }

    #[test]
    fn an_unconfigured_request_is_answered_not_forwarded() {
        let mut req = Request {
            configured: None,
            headers: None,
            replied: false,
        };
        assert_eq!(req.on_http_request_headers(3, true), Action::Pause);
        assert!(req.replied);
    }

    #[test]
    fn host_failures_fail_closed_when_enforcing() {
        for config in [ENFORCED, BY_HEADER] {
            let mut req = request(config);
            assert_eq!(
                req.on_http_request_headers(3, true),
                Action::Pause,
                "{config}"
            );
            assert!(req.replied);
            assert!(req.headers.is_none());
        }
    }

    #[test]
    fn host_failures_pass_in_shadow_mode() {
        let mut req = request(SHADOW);
        assert_eq!(req.on_http_request_headers(3, true), Action::Continue);
        assert!(!req.replied);
        // And the response is left alone.
        assert_eq!(req.on_http_response_headers(2, false), Action::Continue);
    }

    #[test]
    fn a_fact_the_host_refuses_is_no_value_and_is_recorded() {
        let mut facts = HostFacts::default();
        assert!(facts.headers().is_empty());
        assert_eq!(
            facts.host_error,
            Some(("the request headers", Status::UNIMPLEMENTED))
        );
        // The first failure is the one reported.
        assert_eq!(facts.source_ip(), None);
        assert_eq!(facts.identity(), IdentityFact::Absent);
        assert_eq!(facts.source_principal(), None);
        assert_eq!(facts.path(), None);
        assert_eq!(facts.method(), None);
        assert_eq!(
            facts.host_error,
            Some(("the request headers", Status::UNIMPLEMENTED))
        );
    }

    #[test]
    fn published_identity_bytes_that_do_not_parse_are_unreadable_not_absent() {
        for bytes in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            br#"{"principal":"i/s"}"#,
            b"\xff",
        ] {
            assert_eq!(identity_fact(bytes), IdentityFact::Unreadable, "{bytes:?}");
        }
        let good = br#"{"principal":"i/s","iss":"i","sub":"s","aud":[],"claims":{}}"#;
        assert!(matches!(identity_fact(good), IdentityFact::Present(_)));
    }

    #[test]
    fn facts_answered_without_the_host_record_nothing() {
        let mut facts = HostFacts::default();
        assert_eq!(facts.read::<u8>("x", Ok(None)), None);
        assert_eq!(facts.read("x", Ok(Some(3))), Some(3));
        assert_eq!(facts.host_error, None);
        assert_eq!(facts.read::<u8>("y", Err(Status::BAD_ARGUMENT)), None);
        assert_eq!(facts.host_error, Some(("y", Status::BAD_ARGUMENT)));
    }

    #[test]
    fn the_identity_is_read_once() {
        let mut facts = HostFacts::default();
        assert_eq!(facts.identity(), IdentityFact::Absent);
        assert!(facts.host_error.is_some());
        facts.host_error = None;
        // Cached: the host is not asked again, so no new error.
        assert_eq!(facts.identity(), IdentityFact::Absent);
        assert_eq!(facts.host_error, None);
    }
}
