//! The rate-limit stage: per request, the core's `decide` picks the buckets from connection
//! properties / headers / the jwt-authn identity (read on demand from a [`RequestView`]) and runs
//! the CAS loop on each bucket's shared-data entry; then continue (headers added on the response)
//! or reject. The standalone filter (`lib.rs`) and the bundle (`meshward.wasm`) both run it.
//!
//! A host error on anything the decision needs (a fact the bucket choice read, the clock, shared
//! data) fails closed.

use meshward_common::identity::{RequestIdentity, PROPERTY_PATH};
use meshward_host::{Counters, HeaderPairs, HostStore, MapType, RequestView, StageResult, Status};
use rate_limit_core::headers::{rate_limit_headers, rejection_headers, REJECT_BODY};
use rate_limit_core::keys::ip_of_address;
use rate_limit_core::{
    decide, init_table, ChargeOutcome, Config, Decision, IdentityFact, RequestFacts, SlotEvent,
    TableKeys, Unchargeable, Verdict,
};

use crate::counters::{define_counters, Counter};

/// The filter's name: its log prefix and its counters' owner.
pub const NAME: &str = "rate-limit";

/// The table's namespace when the host has no `plugin_name`.
pub(crate) const DEFAULT_PLUGIN_NAME: &str = "rate-limit";

/// One configured rate-limit (per VM): the config, the shared-data table and counters.
pub struct Stage {
    config: Config,
    keys: TableKeys,
    seed: [u8; 16],
    /// Indexed by [`Counter`].
    counters: Counters,
}

/// What the stage keeps of one request until its response.
#[derive(Debug, Default)]
pub struct PerRequest {
    /// Headers to add to the response (an allowed, enforced request).
    headers: Option<Vec<(&'static str, String)>>,
    /// This filter answered the request itself (its own response callback then runs too).
    replied: bool,
}

impl PerRequest {
    /// Whether the stage answered the request itself.
    pub fn replied(&self) -> bool {
        self.replied
    }
}

impl Stage {
    /// The stage for a parsed config: creates the shared-data slot table if absent (see
    /// docs/rate-limit.md for why creation happens here) and defines the counters. `None`
    /// (logged) when the plugin name or the table cannot be had: `on_configure` then fails.
    pub fn configure(config: Config) -> Option<Self> {
        let plugin = match property(&["plugin_name"]) {
            Ok(Some(name)) => String::from_utf8_lossy(&name).into_owned(),
            Ok(None) => DEFAULT_PLUGIN_NAME.to_string(),
            Err(status) => {
                // The name keys the shared table: guessing could share it with another plugin.
                log::error!("rate-limit: cannot read plugin_name (host status {status})");
                return None;
            }
        };
        let keys = TableKeys::new(&plugin, &config);
        let mut fresh_seed = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut fresh_seed) {
            log::error!("rate-limit: no random source for the table seed: {e}");
            return None;
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
                return None;
            }
        };
        Some(Self::new(config, keys, seed))
    }

    pub(crate) fn new(config: Config, keys: TableKeys, seed: [u8; 16]) -> Self {
        Self {
            config,
            keys,
            seed,
            counters: define_counters(),
        }
    }

    /// Charge the request's buckets: `Continue` (the response gets the rate-limit headers) or
    /// `Replied` (limited, or the bucket state is unknown).
    pub fn on_request_headers(&self, req: &mut RequestView, state: &mut PerRequest) -> StageResult {
        let count = |counter: Counter| self.counters.increment(counter as usize);
        let mut facts = HostFacts::new(req);
        let clock = || match meshward_host::current_time_nanos() {
            Ok(now) => Some(now),
            Err(status) => {
                log::warn!("rate-limit: clock unavailable (status {status}): failing closed");
                None
            }
        };
        let verdict = decide(
            &self.config,
            &mut facts,
            &self.keys,
            self.seed,
            &mut HostStore,
            clock,
        );
        // The limit a refusal without a decision reports: the default bucket's.
        let limit = self.config.default_bucket.max_tokens();
        match verdict {
            Verdict::FactUnavailable => {
                if let Some((fact, status)) = facts.host_error {
                    log::warn!(
                        "rate-limit: cannot read {fact} (host status {status}): failing closed"
                    );
                }
                count(Counter::StoreErrors);
                self.fail_closed(state, limit)
            }
            Verdict::Unchargeable(Unchargeable::TooManyValues { descriptor }) => {
                // Charging only some of the values would let the others through uncounted.
                log::warn!(
                    "rate-limit: descriptors[{descriptor}]: more than {} distinct key values: \
                     failing closed",
                    rate_limit_core::keys::MAX_KEY_VALUES
                );
                count(Counter::TooManyValues);
                self.fail_closed(state, limit)
            }
            Verdict::Unchargeable(Unchargeable::IdentityUnreadable { descriptor }) => {
                // Present but unreadable is not anonymous: it must not fall to another bucket.
                log::warn!(
                    "rate-limit: descriptors[{descriptor}]: the published identity does not \
                     parse: failing closed"
                );
                count(Counter::IdentityUnreadable);
                self.fail_closed(state, limit)
            }
            Verdict::NoClock => {
                count(Counter::StoreErrors);
                self.fail_closed(state, limit)
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
                self.act(state, &decision)
            }
            Verdict::Charged(ChargeOutcome::RetriesExhausted) => {
                count(Counter::CasRetriesExhausted);
                self.fail_closed(state, limit)
            }
            Verdict::Charged(ChargeOutcome::StoreFailure(e)) => {
                log::warn!("rate-limit: shared data failed ({e:?}): failing closed");
                count(Counter::StoreErrors);
                self.fail_closed(state, limit)
            }
        }
    }

    fn act(&self, state: &mut PerRequest, d: &Decision) -> StageResult {
        let count = |counter: Counter| self.counters.increment(counter as usize);
        if d.allowed {
            count(Counter::Allowed);
            if !self.config.shadow {
                state.headers = Some(rate_limit_headers(self.config.headers, d));
            }
            return StageResult::Continue;
        }
        if self.config.shadow {
            // Dry run: counted, never rejected, invisible to the client.
            count(Counter::ShadowLimited);
            return StageResult::Continue;
        }
        count(Counter::Limited);
        let headers = rejection_headers(self.config.headers, d);
        reject(state, u32::from(self.config.status), &headers, REJECT_BODY)
    }

    /// The bucket state is unknown (host error, CAS retries exhausted): reject, unless in shadow.
    fn fail_closed(&self, state: &mut PerRequest, limit: u32) -> StageResult {
        if self.config.shadow {
            return StageResult::Continue;
        }
        let unknown = Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs: 1,
            retry_after_secs: 1,
            window_secs: 1,
        };
        let headers = rejection_headers(self.config.headers, &unknown);
        reject(state, u32::from(self.config.status), &headers, REJECT_BODY)
    }
}

/// The response of a request the stage saw: the rate-limit headers of an allowed, enforced
/// request (nothing for one it answered itself, or in shadow mode).
pub fn on_response_headers(state: &mut PerRequest) {
    if !state.replied {
        for (name, value) in state.headers.take().unwrap_or_default() {
            // Informational headers only: the request was already allowed.
            if let Err(status) =
                meshward_host::replace_map_value(MapType::HttpResponseHeaders, name, &value)
            {
                log::debug!("rate-limit: cannot set {name} (status {status})");
            }
        }
    }
}

/// A request that arrives without a configuration (Envoy does not create one then): 503.
pub fn unconfigured(state: &mut PerRequest) -> StageResult {
    reject(state, 503, &[], "rate-limit not configured")
}

fn reject(
    state: &mut PerRequest,
    status: u32,
    headers: &[(&str, String)],
    body: &str,
) -> StageResult {
    state.replied = true;
    // No response code details, as before the port.
    if let Err(s) = meshward_host::send_local_response(status, "", body.as_bytes(), headers, None) {
        // Nothing else can answer the request; pausing it forever would hang the client,
        // so log and stop iteration: Envoy's stream timeout then resets it.
        log::error!("rate-limit: local reply failed (status {s})");
    }
    StageResult::Replied
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

/// Request facts read from the view on demand (each property once at most).
///
/// `RequestFacts` answers "no value" or a value; a host error is recorded in `host_error` and
/// answered as "no value", and the request then fails closed: a fact that could not be read
/// must not move the request to another (looser) bucket.
struct HostFacts<'v> {
    view: &'v mut RequestView,
    identity: Option<IdentityFact>,
    /// The request header map (owned, as the core takes it), copied once when a header key
    /// needs it.
    headers: Option<HeaderPairs>,
    /// The first fact the host would not hand over, and its status.
    host_error: Option<(&'static str, Status)>,
}

impl<'v> HostFacts<'v> {
    fn new(view: &'v mut RequestView) -> Self {
        Self {
            view,
            identity: None,
            headers: None,
            host_error: None,
        }
    }

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

    /// A property of the view; `None` when absent or empty (see [`property`]).
    fn property(&mut self, fact: &'static str, path: &'static [&'static str]) -> Option<Vec<u8>> {
        let value = self
            .view
            .property(path)
            .map(|v| v.filter(|b| !b.is_empty()).map(<[u8]>::to_vec));
        self.read(fact, value)
    }

    fn property_string(
        &mut self,
        fact: &'static str,
        path: &'static [&'static str],
    ) -> Option<String> {
        self.property(fact, path)
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    /// One value of a pseudo-header (never repeated).
    fn request_header(&mut self, fact: &'static str, name: &str) -> Option<Vec<u8>> {
        let value = self.view.header(name);
        self.read(fact, value)
    }
}

impl RequestFacts for HostFacts<'_> {
    fn source_principal(&mut self) -> Option<String> {
        // Identity from the verified connection only, never from a header. Envoy has a peer URI
        // SAN only from a client certificate the connection presented (what `connection.mtls`
        // says), so the SAN alone answers; reading `connection.mtls` as well would cost another
        // two crossings (`meshward bench abi`).
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
            let map = self.view.headers().map(|pairs| {
                Some(
                    pairs
                        .into_iter()
                        .map(|(n, v)| (n.to_vec(), v.to_vec()))
                        .collect::<HeaderPairs>(),
                )
            });
            let pairs = self.read("the request headers", map);
            self.headers = Some(pairs.unwrap_or_default());
        }
        self.headers.as_deref().unwrap_or_default()
    }

    fn identity(&mut self) -> IdentityFact {
        if let Some(known) = &self.identity {
            return known.clone();
        }
        // In the bundle, jwt-authn's identity is known to the view without a host read.
        let identity = match self.property("the request identity", PROPERTY_PATH) {
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

    pub(crate) fn stage(config: &str) -> Stage {
        let config = Config::parse(config.as_bytes()).unwrap();
        let keys = TableKeys::new(DEFAULT_PLUGIN_NAME, &config);
        Stage::new(config, keys, [7; 16])
    }

    const ENFORCED: &str =
        r#"{"tokenBucket":{"maxTokens":5,"tokensPerFill":1,"fillInterval":"1s"}}"#;
    const SHADOW: &str = r#"{"tokenBucket":{"maxTokens":5,"tokensPerFill":1,"fillInterval":"1s"},
        "shadow":true}"#;
    const BY_HEADER: &str = r#"{"tokenBucket":{"maxTokens":5,"tokensPerFill":1,"fillInterval":"1s"},
        "descriptors":[{"key":"request.headers[x-api-key]",
            "tokenBucket":{"maxTokens":1,"tokensPerFill":1,"fillInterval":"1h"}}]}"#;

    #[test]
    fn a_configuration_without_a_host_is_refused() {
        let config = Config::parse(ENFORCED.as_bytes()).unwrap();
        assert!(Stage::configure(config).is_none());
    }

    #[test]
    fn an_unconfigured_request_is_answered_not_forwarded() {
        let mut state = PerRequest::default();
        assert_eq!(unconfigured(&mut state), StageResult::Replied);
        assert!(state.replied());
    }

    #[test]
    fn host_failures_fail_closed_when_enforcing() {
        for config in [ENFORCED, BY_HEADER] {
            let mut state = PerRequest::default();
            let mut view = RequestView::standalone();
            assert_eq!(
                stage(config).on_request_headers(&mut view, &mut state),
                StageResult::Replied,
                "{config}"
            );
            assert!(state.replied);
            assert!(state.headers.is_none());
        }
    }

    #[test]
    fn host_failures_pass_in_shadow_mode() {
        let mut state = PerRequest::default();
        let mut view = RequestView::standalone();
        assert_eq!(
            stage(SHADOW).on_request_headers(&mut view, &mut state),
            StageResult::Continue
        );
        assert!(!state.replied);
        // And the response is left alone.
        on_response_headers(&mut state);
        assert!(state.headers.is_none());
    }

    #[test]
    fn a_fact_the_host_refuses_is_no_value_and_is_recorded() {
        let mut view = RequestView::standalone();
        let mut facts = HostFacts::new(&mut view);
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
        let mut view = RequestView::standalone();
        let mut facts = HostFacts::new(&mut view);
        assert_eq!(facts.read::<u8>("x", Ok(None)), None);
        assert_eq!(facts.read("x", Ok(Some(3))), Some(3));
        assert_eq!(facts.host_error, None);
        assert_eq!(facts.read::<u8>("y", Err(Status::BAD_ARGUMENT)), None);
        assert_eq!(facts.host_error, Some(("y", Status::BAD_ARGUMENT)));
    }

    #[test]
    fn the_identity_is_read_once() {
        let mut view = RequestView::standalone();
        let mut facts = HostFacts::new(&mut view);
        assert_eq!(facts.identity(), IdentityFact::Absent);
        assert!(facts.host_error.is_some());
        facts.host_error = None;
        // Cached: the host is not asked again, so no new error.
        assert_eq!(facts.identity(), IdentityFact::Absent);
        assert_eq!(facts.host_error, None);
    }
}
