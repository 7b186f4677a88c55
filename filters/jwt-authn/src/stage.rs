//! The jwt-authn stage: per VM (= per worker thread) one [`Stage`] owns the compiled config with
//! its verified-token cache ([`Authenticator`]) and the remote-JWKS [`Scheduler`]. Everything
//! about fetching keys (who fetches, who waits, when a wait ends, what a failure does, the
//! cross-worker lease in shared data) is decided by the scheduler, a sans-IO state machine in the
//! core (`jwt_authn_core::schedule`): the stage only turns callbacks into its events and carries
//! out its effects with host calls. The standalone filter (`lib.rs`) and the bundle
//! (`meshward.wasm`) both run it.
//!
//! A request may have to wait for keys ([`StageResult::Paused`]). When the scheduler decides it
//! again (in a root callback: `on_tick`, `on_queue_ready`, `on_http_call_response`), the stage
//! switches to the request's context and calls the embedder's *decider* with the request's
//! context id; the decider runs [`Stage::decide_parked`] on the request's view and, if the
//! request may go on, whatever comes after (the standalone filter resumes it; the bundle first
//! runs its later stages).
//!
//! Host failures fail closed: a request whose headers, clock or header/identity updates the host
//! refuses is denied.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use jwt_authn_core::config::KeySource;
use jwt_authn_core::engine::{self, denial, Denial, Stats, Verdict};
use jwt_authn_core::host_verify::{HostRefusal, HostVerifier, SignatureHost};
use jwt_authn_core::logtext::{loggable, MAX_LOGGED_CHARS};
use jwt_authn_core::remote::FetchOutcome;
use jwt_authn_core::schedule::{Effect, Event, Reply, Scheduler, MAX_BODY};
use jwt_authn_core::{AuthError, Authenticator, Config};
use log::{error, info, warn};
use meshward_common::identity::PROPERTY_PATH;
use meshward_host::{Counters, HostStore, RequestView, StageResult, Status, StreamType};

/// The filter's name: its log prefix and its counters' owner.
pub const NAME: &str = "jwt-authn";

/// The filter's counters, indexes into [`Counters`] (names documented in docs/jwt-authn.md).
mod counter {
    pub const ALLOWED: usize = 0;
    pub const DENIED: usize = 1;
    pub const FETCH_SUCCESS: usize = 2;
    pub const FETCH_FAILED: usize = 3;
    pub const CACHE_HIT: usize = 4;
    pub const CACHE_MISS: usize = 5;

    /// In index order.
    pub const NAMES: [&str; 6] = [
        "jwt_authn.allowed",
        "jwt_authn.denied",
        "jwt_authn.jwks_fetch_success",
        "jwt_authn.jwks_fetch_failed",
        "jwt_authn.jwt_cache_hit",
        "jwt_authn.jwt_cache_miss",
    ];
}

fn define_counters() -> Counters {
    Counters::define(NAME, counter::NAMES)
}

/// Add `n` to a counter; nothing (no host call) for 0, most requests' cache statistics.
fn count(counters: &Counters, index: usize, n: u32) {
    if n > 0 {
        counters.add(index, u64::from(n));
    }
}

/// Most queue items drained per `on_queue_ready` (they are only wake-ups).
const MAX_DRAIN: usize = 1024;

/// What the embedder does when the scheduler decides a parked request again: called with the
/// request's context id (already the effective context) and whether its wait ran out.
pub type Decider<'a> = &'a mut dyn FnMut(u32, bool);

/// The verifier of one configured jwt-authn. Built here and nowhere else, so that how tokens are
/// verified is decided in one place: signatures go to Envoy's `verify_signature` foreign function
/// where the host has it (probed at the first token; see `jwt_authn_core::host_verify`).
fn new_authenticator(config: Config) -> Authenticator {
    Authenticator::new(config).with_host(HostVerifier::new(Box::new(EnvoyVerifySignature)))
}

/// Envoy's `verify_signature` (BoringSSL), through `proxy_call_foreign_function`.
struct EnvoyVerifySignature;

impl SignatureHost for EnvoyVerifySignature {
    fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, HostRefusal> {
        match meshward_host::call_foreign_function("verify_signature", arguments) {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(HostRefusal::NotFound),
            Err(status) => Err(HostRefusal::Failed(status.0)),
        }
    }
}

/// What one VM's jwt-authn keeps: the verifier, the key scheduler, where fetches are made from.
struct Vm {
    auth: Authenticator,
    sched: Scheduler,
    /// The root context: fetches are dispatched from it (see `jwt_authn_core::schedule`).
    root_context: u32,
    /// This VM's own queue: enqueueing wakes this VM's root context (`on_queue_ready`).
    wake_queue: Option<u32>,
    counters: Counters,
}

/// One configured jwt-authn (per VM).
pub struct Stage {
    vm: RefCell<Vm>,
}

impl Stage {
    /// The stage for a parsed config, made in the root context `root_context`: sets the tick
    /// period and opens the wake-up queue the remote JWKS need. `None` (logged) when the host
    /// refuses the tick period: `on_configure` then fails.
    pub fn configure(config: Config, root_context: u32) -> Option<Self> {
        for (i, rule) in config.rules.iter().enumerate() {
            if let KeySource::Inline(set) = &rule.keys {
                for why in &set.skipped {
                    warn!("jwt-authn: jwtRules[{i}].jwks: skipped {why}");
                }
            }
        }
        let sched = Scheduler::new(&config, random_owner());
        let mut wake_queue = None;
        for effect in sched.start() {
            match effect {
                Effect::SetTickPeriod(period) => {
                    if let Err(status) = meshward_host::set_tick_period(period) {
                        error!(
                            "jwt-authn: cannot set the tick period needed for remote JWKS \
                             (host status {status})"
                        );
                        return None;
                    }
                }
                Effect::OpenWakeQueue(name) => match meshward_host::register_shared_queue(&name) {
                    Ok(id) => wake_queue = Some(id),
                    Err(status) => warn!(
                        "jwt-authn: no fetch queue (host status {status}); fetches start on \
                             the next tick"
                    ),
                },
                // `start` asks for nothing else.
                _ => {}
            }
        }
        Some(Self::new(config, sched, root_context, wake_queue))
    }

    fn new(config: Config, sched: Scheduler, root_context: u32, wake_queue: Option<u32>) -> Self {
        Self {
            vm: RefCell::new(Vm {
                auth: new_authenticator(config),
                sched,
                root_context,
                wake_queue,
                counters: define_counters(),
            }),
        }
    }

    /// Decide on the request of context `context_id` (the current one): `Continue`, `Replied`
    /// (denied), or `Paused` (waiting for keys; the decider is called when it is decided again).
    pub fn on_request_headers(&self, req: &mut RequestView, context_id: u32) -> StageResult {
        self.process(req, context_id, false)
    }

    /// Decide again on a parked request (from the decider). `expired`: it has waited for keys as
    /// long as allowed.
    pub fn decide_parked(&self, req: &mut RequestView, waiter: u32, expired: bool) -> StageResult {
        self.process(req, waiter, expired)
    }

    /// The request of `context_id` is gone (answered, or reset by the client): it waits for
    /// nothing any more.
    pub fn request_gone(&self, context_id: u32) {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.sched.handle(
                &mut HostStore,
                None,
                Event::WaiterGone { waiter: context_id },
            );
        }
    }

    /// The root context's `on_http_call_response`: a JWKS fetch answered.
    pub fn on_http_call_response(&self, token_id: u32, body_size: usize, decide: Decider<'_>) {
        let reply = read_reply(body_size);
        self.run(
            bookkeeping_now_ms(),
            Event::FetchResponse {
                token: token_id,
                reply,
            },
            decide,
        );
    }

    /// The root context's `on_queue_ready`: a request asked for a fetch.
    pub fn on_queue_ready(&self, queue_id: u32, decide: Decider<'_>) {
        // The items are only wake-ups: drain them; the scheduler knows what requests asked for.
        for _ in 0..MAX_DRAIN {
            match meshward_host::dequeue_shared_queue(queue_id) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.run(now_ms().ok(), Event::QueueReady, decide);
    }

    /// The root context's `on_tick`.
    pub fn on_tick(&self, decide: Decider<'_>) {
        // Without a clock nothing is scheduled and every parked request is ended (denied).
        self.run(now_ms().ok(), Event::Tick, decide);
    }

    /// Feed one callback's event to the scheduler and carry out everything it asks for,
    /// follow-on work included.
    fn run(&self, now: Option<u64>, event: Event<'_>, decide: Decider<'_>) {
        self.answer(now, event, decide);
        loop {
            let next = self.vm.borrow_mut().sched.next_effect(&mut HostStore);
            let Some(effect) = next else { break };
            self.carry_out(effect, decide);
        }
    }

    /// Report an event (a callback's, or the answer to an effect) and carry out what it asks for
    /// at once.
    fn answer(&self, now: Option<u64>, event: Event<'_>, decide: Decider<'_>) {
        let effects = self
            .vm
            .borrow_mut()
            .sched
            .handle(&mut HostStore, now, event);
        for effect in effects {
            self.carry_out(effect, decide);
        }
    }

    /// Carry out one effect of the scheduler with host calls.
    fn carry_out(&self, effect: Effect, decide: Decider<'_>) {
        match effect {
            Effect::ActAsRoot => {
                let root = self.vm.borrow().root_context;
                restore_context(root);
            }
            Effect::Dispatch {
                rule,
                cluster,
                headers,
                timeout,
            } => {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                match meshward_host::dispatch_http_call(&cluster, &headers, None, &[], timeout) {
                    Ok(token) => self.answer(None, Event::Dispatched { rule, token }, decide),
                    // A synchronous failure (unknown cluster) counts as a failed fetch.
                    Err(status) => self.answer(
                        bookkeeping_now_ms(),
                        Event::DispatchRefused {
                            rule,
                            status: status.to_string(),
                        },
                        decide,
                    ),
                }
            }
            Effect::Fetched { uri, outcome } => {
                log_outcome(&uri, &outcome);
                self.vm.borrow().counters.increment(match outcome {
                    FetchOutcome::Installed { .. } => counter::FETCH_SUCCESS,
                    FetchOutcome::Failed(_) => counter::FETCH_FAILED,
                });
            }
            Effect::Decide { waiter, expired } => {
                if let Err(status) = meshward_host::set_effective_context(waiter) {
                    // The request is gone (or unreachable): nothing to decide.
                    warn!("jwt-authn: cannot switch to request {waiter} (host status {status})");
                    return;
                }
                decide(waiter, expired);
            }
            Effect::WakeRoot => wake_root(&self.vm.borrow()),
            // Set up in `configure`; `DecideAgain` is answered inside `process`.
            Effect::SetTickPeriod(_) | Effect::OpenWakeQueue(_) | Effect::DecideAgain => {}
        }
    }

    /// Decide on the request of the current effective context and act on the verdict.
    /// `expired_wait`: it has waited for keys as long as allowed.
    fn process(&self, req: &mut RequestView, context_id: u32, expired_wait: bool) -> StageResult {
        // Held while the request is edited below: the core borrows its text, and an edit copies
        // the view's map rather than the snapshot (no text copy of every header per request).
        let snapshot = match req.header_snapshot() {
            Ok(snapshot) => snapshot,
            Err(status) => {
                error!("jwt-authn: cannot read request headers (host status {status})");
                return deny_unread();
            }
        };
        let lossy: Vec<(String, String)>;
        let headers: Vec<(&str, &str)> = match text_headers(snapshot.pairs()) {
            Some(headers) => headers,
            None => {
                lossy = lossy_headers(snapshot.pairs());
                lossy
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect()
            }
        };
        let request = engine::Request::from_headers(&headers);
        let now = match now_ms() {
            Ok(now) => now,
            Err(status) => {
                // Expiry and not-before cannot be checked without a clock.
                error!("jwt-authn: host clock unavailable (host status {status}); denying");
                let d = denial(AuthError::VerificationFail, &request);
                return reply(d.status, d.body, &d.www_authenticate);
            }
        };
        let mut stats = Stats::default();
        let Ok(mut guard) = self.vm.try_borrow_mut() else {
            // Only re-entry could hold it; never decide on half-updated state.
            error!("jwt-authn: re-entered while deciding; denying");
            return deny_unread();
        };
        // Through the guard once, so that the fields borrow apart.
        let vm = &mut *guard;
        // Client-supplied copies of output headers never pass, token or not, in any spelling a
        // backend folds into the output name (`X_JWT_SUB`, `x-jwt_sub` for `x-jwt-sub`).
        for name in vm.auth.config.spoofed_output_headers(&headers) {
            if let Err(status) = req.remove_header(name.as_bytes()) {
                error!(
                    "jwt-authn: cannot remove header `{}` (host status {status}); denying",
                    loggable(&name, MAX_LOGGED_CHARS)
                );
                return deny_unread();
            }
        }
        // The verdict is taken on this VM's copy of the keys. When it says "wait", the scheduler
        // first adopts what other workers put in shared data; if that alone changed the keys (or
        // recorded a failure) and no fetch is started, the request is decided again at once
        // rather than paused for a change that has already happened (it would otherwise wait out
        // its deadline, `timeout + 1 s`). At most one retry.
        let mut retried = false;
        loop {
            let verdict = {
                let keys = vm.sched.keys_at(now);
                vm.auth
                    .decide(&request, now / 1000, &keys, expired_wait, &mut stats)
            };
            match verdict {
                Verdict::Allow {
                    identity_bytes,
                    remove_headers,
                    set_headers,
                    ..
                } => {
                    count_cache(vm, &stats);
                    let mut refused = None;
                    for name in &remove_headers {
                        if let Err(status) = req.remove_header(name.as_bytes()) {
                            refused.get_or_insert((name.as_str(), status));
                        }
                    }
                    for (name, value) in &set_headers {
                        if let Err(status) = req.replace_header(name.as_bytes(), value.as_bytes()) {
                            refused.get_or_insert((name.as_str(), status));
                        }
                    }
                    if let Some(bytes) = identity_bytes {
                        // Through the view: later stages of the bundle read it from there.
                        if let Err(status) = req.publish_property(PROPERTY_PATH, &bytes) {
                            refused.get_or_insert(("the request identity", status));
                        }
                    }
                    if let Some((what, status)) = refused {
                        error!(
                            "jwt-authn: host refused to update {what} (host status {status}); \
                             denying"
                        );
                        vm.counters.increment(counter::DENIED);
                        let d = denial(AuthError::VerificationFail, &request);
                        return reply(d.status, d.body, &d.www_authenticate);
                    }
                    vm.counters.increment(counter::ALLOWED);
                    return StageResult::Continue;
                }
                Verdict::Deny(d) => {
                    count_cache(vm, &stats);
                    vm.counters.increment(counter::DENIED);
                    log_denial(&d, &request);
                    return reply(d.status, d.body, &d.www_authenticate);
                }
                Verdict::Wait { rules, refetch } => {
                    let wanted = Event::KeysWanted {
                        waiter: context_id,
                        rules: &rules,
                        refetch: &refetch,
                        may_decide_again: !retried,
                    };
                    let effects = vm.sched.handle(&mut HostStore, Some(now), wanted);
                    if effects.contains(&Effect::DecideAgain) {
                        retried = true;
                        stats = Stats::default();
                        continue;
                    }
                    count_cache(vm, &stats);
                    // Parked; the only other answer to `KeysWanted` is a wake-up for the root.
                    if effects.contains(&Effect::WakeRoot) {
                        wake_root(vm);
                    }
                    return StageResult::Paused;
                }
            }
        }
    }
}

/// Resume the request of the current effective context (a parked one the decider let go on).
pub fn resume(waiter: u32) {
    if let Err(status) = meshward_host::resume_http_request() {
        warn!("jwt-authn: could not resume request {waiter} (host status {status})");
    }
}

/// A request that arrives without a configuration: denied without being read.
pub fn unconfigured() -> StageResult {
    deny_unread()
}

/// The host's clock in milliseconds since the Unix epoch.
fn now_ms() -> Result<u64, Status> {
    meshward_host::current_time_nanos().map(|ns| ns / 1_000_000)
}

/// The clock where only key bookkeeping (not a verdict) needs it; `None` (logged) if the host has
/// no clock: the scheduler then records "at 0", which looks old, so keys and failures are
/// refetched/retried sooner, never trusted longer. Verdicts read the clock themselves and deny
/// without it (see `process`).
fn bookkeeping_now_ms() -> Option<u64> {
    now_ms()
        .map_err(|status| warn!("jwt-authn: host clock unavailable (host status {status})"))
        .ok()
}

/// A per-VM random identity for the fetch lease (two VMs must not think they hold the same lease).
fn random_owner() -> u64 {
    // RandomState is randomly keyed per VM; the clock only adds to it, so 0 without one is fine.
    RandomState::new().hash_one(now_ms().unwrap_or(0)).max(1)
}

/// Make `context_id` the effective context again after acting on other contexts' requests.
fn restore_context(context_id: u32) {
    if let Err(status) = meshward_host::set_effective_context(context_id) {
        // Later host calls of this callback would act on the last request resolved; there are
        // none after this, so only report it.
        warn!("jwt-authn: cannot restore context {context_id} (host status {status})");
    }
}

/// Wake this VM's root context so that it dispatches the wanted fetches now. Without the queue
/// (or if the host refuses) the root's next tick does it.
fn wake_root(vm: &Vm) {
    if let Some(queue) = vm.wake_queue {
        if let Err(status) = meshward_host::enqueue_shared_queue(queue, b"fetch") {
            warn!("jwt-authn: cannot wake the root (host status {status}); fetch on next tick");
        }
    }
}

/// What the host hands over of a fetch's response: the status, and the body only for a 200.
fn read_reply(body_size: usize) -> Reply {
    if body_size > MAX_BODY {
        return Reply::TooLarge(body_size);
    }
    match meshward_host::http_call_response_header(":status") {
        // The host reports a reset or timeout with no headers at all.
        Ok(None) => Reply::NoResponse,
        Err(status) => Reply::Unreadable(format!(
            "cannot read the response status (host status {status})"
        )),
        Ok(Some(status)) if !Reply::is_ok_status(&status) => Reply::Status(status),
        Ok(Some(_)) => match meshward_host::http_call_response_body(body_size) {
            Ok(body) => Reply::Body(body),
            Err(status) => {
                Reply::Unreadable(format!("cannot read the body (host status {status})"))
            }
        },
    }
}

/// Reasons may quote the JWKS server's answer (a status, a `kid`): bounded and escaped.
fn log_outcome(uri: &str, outcome: &FetchOutcome) {
    let uri = loggable(uri, MAX_LOGGED_CHARS);
    match outcome {
        FetchOutcome::Installed { skipped } => {
            info!("jwt-authn: JWKS from {uri} installed");
            for why in skipped.iter().take(16) {
                warn!(
                    "jwt-authn: JWKS from {uri}: skipped {}",
                    loggable(why, MAX_LOGGED_CHARS)
                );
            }
        }
        FetchOutcome::Failed(why) => warn!(
            "jwt-authn: JWKS fetch from {uri} failed, keeping previous keys (if not past \
             jwksMaxStale): {}",
            loggable(why, MAX_LOGGED_CHARS)
        ),
    }
}

/// The request headers as text borrowed from the host's map; `None` when a name or value is not
/// UTF-8 (then [`lossy_headers`]).
fn text_headers<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<Vec<(&'a str, &'a str)>> {
    pairs
        .map(|(name, value)| {
            Some((
                std::str::from_utf8(name).ok()?,
                std::str::from_utf8(value).ok()?,
            ))
        })
        .collect()
}

/// The request headers as text, U+FFFD for bytes that are not UTF-8: such a token can never
/// verify (so it is denied, not mistaken for an absent one), and such a name matches no rule.
fn lossy_headers<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<(String, String)> {
    pairs
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect()
}

fn reply(status: u32, body: &str, www_authenticate: &str) -> StageResult {
    let headers = [
        ("www-authenticate", www_authenticate),
        ("content-type", "text/plain"),
    ];
    // No response code details: the SDK call this replaces sent none either.
    if let Err(err) =
        meshward_host::send_local_response(status, "", body.as_bytes(), &headers, None)
    {
        // Could not answer: stop the request instead of letting it through.
        error!("jwt-authn: cannot send the {status} reply (host status {err}); resetting");
        if let Err(err) = meshward_host::close_stream(StreamType::HttpRequest) {
            error!("jwt-authn: cannot reset the request either (host status {err})");
        }
    }
    StageResult::Replied
}

/// Deny without having read the request.
fn deny_unread() -> StageResult {
    reply(401, AuthError::VerificationFail.message(), "Bearer")
}

fn count_cache(vm: &Vm, stats: &Stats) {
    count(&vm.counters, counter::CACHE_HIT, stats.cache_hits);
    count(&vm.counters, counter::CACHE_MISS, stats.cache_misses);
}

/// One bounded line per refusal: what was refused and why, with the client's path and method
/// capped and escaped (a client chooses them).
fn log_denial(d: &Denial, request: &engine::Request<'_>) {
    let method = request.header(":method").unwrap_or_default();
    if d.error == AuthError::HostVerifyFailed {
        error!(
            "jwt-authn: the host's verify_signature failed; denied {} {} {}",
            d.status,
            loggable(method, 16),
            loggable(request.path, MAX_LOGGED_CHARS)
        );
        return;
    }
    info!(
        "jwt-authn: denied {} ({:?}) {} {}",
        d.status,
        d.error,
        loggable(method, 16),
        loggable(request.path, MAX_LOGGED_CHARS)
    );
}

#[cfg(test)]
mod tests {
    //! Natively every host call fails (meshward-host's stubs answer UNIMPLEMENTED): exactly the
    //! host-failure paths, which must deny (or end paused requests), never continue or panic.
    use super::*;
    use jwt_authn_core::remote::{read_shared, write_shared};

    pub(crate) const INLINE: &str = r#"{"jwtRules":[{"issuer":"https://idp.example.com",
        "jwks":"{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"alg\":\"HS256\",\"k\":\"bWVzaHdhcmQtZml4dHVyZS1obWFjLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm\"}]}"}]}"#;

    pub(crate) fn configured() -> Stage {
        let config = Config::parse(INLINE.as_bytes()).unwrap();
        let sched = Scheduler::new(&config, random_owner());
        Stage::new(config, sched, 1, None)
    }

    #[test]
    fn unreadable_headers_are_answered_not_forwarded() {
        let mut view = RequestView::standalone();
        assert_eq!(
            configured().on_request_headers(&mut view, 2),
            StageResult::Replied
        );
        assert_eq!(unconfigured(), StageResult::Replied);
    }

    #[test]
    fn headers_are_borrowed_as_text_unless_a_byte_is_not_utf8() {
        let valid: [(&[u8], &[u8]); 2] = [(b":path", b"/a"), (b"authorization", b"Bearer x.y.z")];
        assert_eq!(
            text_headers(valid.into_iter()),
            Some(vec![(":path", "/a"), ("authorization", "Bearer x.y.z")])
        );
        // One bad byte anywhere: every header through the lossy copy, the bad one with U+FFFD
        // (a token with it can never verify; a name with it matches no rule).
        let invalid: [(&[u8], &[u8]); 2] =
            [(b":path", b"/a"), (b"authorization", b"Bearer x.\xff.z")];
        assert_eq!(text_headers(invalid.into_iter()), None);
        assert_eq!(
            lossy_headers(invalid.into_iter()),
            vec![
                (":path".to_string(), "/a".to_string()),
                (
                    "authorization".to_string(),
                    "Bearer x.\u{fffd}.z".to_string()
                )
            ]
        );
    }

    #[test]
    fn without_a_clock_every_paused_request_is_ended() {
        let stage = configured();
        let wanted = Event::KeysWanted {
            waiter: 5,
            rules: &[0],
            refetch: &[],
            may_decide_again: false,
        };
        // Parked with a deadline that only a missing clock (every wait run out) reaches.
        stage
            .vm
            .borrow_mut()
            .sched
            .handle(&mut HostStore, Some(u64::MAX - 1), wanted);
        assert!(stage.vm.borrow().sched.is_parked(5));
        let mut decided = Vec::new();
        stage.on_tick(&mut |waiter, expired| decided.push((waiter, expired)));
        assert!(!stage.vm.borrow().sched.is_parked(5));
        // Natively the switch to the request fails, so the decider is not called.
        assert!(decided.is_empty());
    }

    #[test]
    fn a_gone_request_is_unparked() {
        let stage = configured();
        let wanted = Event::KeysWanted {
            waiter: 7,
            rules: &[0],
            refetch: &[],
            may_decide_again: false,
        };
        stage
            .vm
            .borrow_mut()
            .sched
            .handle(&mut HostStore, Some(1), wanted);
        assert!(stage.vm.borrow().sched.is_parked(7));
        stage.request_gone(7);
        assert!(!stage.vm.borrow().sched.is_parked(7));
    }

    #[test]
    fn a_fetch_response_the_host_will_not_hand_over_fails_the_fetch() {
        let too_big = read_reply(MAX_BODY + 1).into_body().unwrap_err();
        assert!(too_big.contains("too large"), "{too_big}");
        let unreadable = read_reply(10).into_body().unwrap_err();
        assert!(
            unreadable.contains("cannot read the response status"),
            "{unreadable}"
        );
    }

    #[test]
    fn shared_data_the_host_refuses_is_missing_and_unwritten() {
        let mut store = HostStore;
        assert_eq!(read_shared(&mut store, "k"), None);
        assert!(!write_shared(&mut store, "k", b"v", None));
        assert!(!write_shared(&mut store, "k", b"v", Some(3)));
    }

    #[test]
    fn counters_are_listed_in_index_order() {
        let counters = define_counters();
        assert_eq!(counters.name(counter::ALLOWED), Some("jwt_authn.allowed"));
        assert_eq!(counters.name(counter::DENIED), Some("jwt_authn.denied"));
        assert_eq!(
            counters.name(counter::FETCH_SUCCESS),
            Some("jwt_authn.jwks_fetch_success")
        );
        assert_eq!(
            counters.name(counter::FETCH_FAILED),
            Some("jwt_authn.jwks_fetch_failed")
        );
        assert_eq!(
            counters.name(counter::CACHE_HIT),
            Some("jwt_authn.jwt_cache_hit")
        );
        assert_eq!(
            counters.name(counter::CACHE_MISS),
            Some("jwt_authn.jwt_cache_miss")
        );
    }
}
