//! meshward jwt-authn: a thin proxy-wasm adapter over `jwt_authn_core`.
//!
//! Per VM (= per worker thread): one root context owns the compiled config, the verified-token
//! cache, the remote JWKS state of each `jwksUri` rule and the list of requests paused while keys
//! are fetched. HTTP contexts share it through an `Rc`. Remote JWKS fetches are coordinated across
//! workers through shared data (see `jwt_authn_core::remote`).
//!
//! JWKS fetches are always dispatched from the ROOT context (its tick, its queue callback, its
//! callout callback), never from a request's: a callout belongs to the context that made it, and
//! Envoy cancels a request context's callouts when the client resets the stream, so a fetch
//! started by a request would die with it (repeatable cold-start 401s). A request that needs keys
//! takes the fetch lease, records the rule in `want_fetch`, pauses, and kicks the root through
//! this VM's own shared queue; the root dispatches, and resumes the paused requests when the
//! response lands. If the queue is unavailable the next tick (≤ 500 ms) dispatches instead. Every host call goes through
//! `meshward_host`, which returns host statuses as values (the SDK's calls panic on statuses they
//! do not expect), so each failure is handled here and the filter fails closed: a request whose
//! headers, clock or header/identity updates the host refuses is denied.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use jwt_authn_core::config::KeySource;
use jwt_authn_core::engine::{denial, Denial, KeyLookup, Keys, Request, Stats, Verdict};
use jwt_authn_core::logtext::{loggable, MAX_LOGGED_CHARS};
use jwt_authn_core::remote::{FetchOutcome, RemoteJwks, SharedStore, Trigger};
use jwt_authn_core::{AuthError, Authenticator, Config};
use log::{error, info, warn};
use meshward_common::identity::PROPERTY_PATH;
use meshward_host::{Counters, MapType, Status, StreamType};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    meshward_host::init_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(JwtRoot::new(context_id)) });
}}

/// Tick period while any rule uses a remote JWKS: drives refresh and the paused-request deadlines.
const TICK: Duration = Duration::from_millis(500);
/// Largest JWKS response body read.
const MAX_BODY: usize = jwt_authn_core::jwk::MAX_JWKS_BYTES;

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
    Counters::define("jwt-authn", counter::NAMES)
}

/// Add `n` to a counter; nothing (no host call) for 0, most requests' cache statistics.
fn count(counters: &Counters, index: usize, n: u32) {
    if n > 0 {
        counters.add(index, u64::from(n));
    }
}

/// Most queue items drained per `on_queue_ready` (they are only wake-ups).
const MAX_DRAIN: usize = 1024;

/// A request paused while keys are fetched (kept in `Vm::waiters` by context id: adding,
/// replacing and removing one is O(1), however many requests are parked).
struct Waiter {
    /// Arrival order: paused requests are resumed in the order they came.
    seq: u64,
    deadline_ms: u64,
    /// (rule, epoch seen when paused)
    epochs: Vec<(usize, u64)>,
}

/// What one VM shares between its root and HTTP contexts.
struct Vm {
    auth: Authenticator,
    /// Indexed like `config.rules`; `None` for inline-JWKS rules.
    remotes: Vec<Option<RemoteJwks>>,
    /// Paused requests by context id.
    waiters: HashMap<u32, Waiter>,
    next_seq: u64,
    /// Rules whose fetch a request decided on (lease taken) and the root has yet to dispatch.
    want_fetch: Vec<usize>,
    /// This VM's own queue: enqueueing wakes this VM's root context (`on_queue_ready`).
    kick_queue: Option<u32>,
    /// Outstanding JWKS fetches: callout token → rule.
    inflight: Vec<(u32, usize)>,
    owner: u64,
    counters: Counters,
}

type Shared = Rc<RefCell<Option<Vm>>>;

/// Envoy's shared data, as `jwt_authn_core::remote` wants it.
///
/// The core treats a value it cannot read as missing and a write that fails as lost: shared data
/// only spreads keys and fetch leases between workers, so a host error there costs an extra
/// fetch or a wait, never a verdict (requests without keys are denied).
struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match meshward_host::get_shared_data(key) {
            // An empty value (the host hands over no buffer) or a zero CAS token (nothing to
            // compare-and-swap against) cannot be a record this filter wrote: treat it as missing.
            Ok(Some((value, cas))) if !value.is_empty() && cas != 0 => Some((value, cas)),
            Ok(_) | Err(_) => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        // CAS 0 is the ABI's unconditional write.
        meshward_host::set_shared_data(key, value, cas.unwrap_or(0)).is_ok()
    }
}

struct Lookup<'a> {
    remotes: &'a [Option<RemoteJwks>],
    now_ms: u64,
}

impl KeyLookup for Lookup<'_> {
    fn remote_keys(&self, rule: usize) -> Keys<'_> {
        match self.remotes.get(rule) {
            Some(Some(r)) => r.keys(self.now_ms),
            _ => Keys::Failed,
        }
    }

    fn may_refetch_for_kid(&self, rule: usize) -> bool {
        matches!(self.remotes.get(rule), Some(Some(r)) if r.may_refetch_for_kid(self.now_ms))
    }
}

/// The host's clock in milliseconds since the Unix epoch.
fn now_ms() -> Result<u64, Status> {
    meshward_host::current_time_nanos().map(|ns| ns / 1_000_000)
}

/// The clock where only key bookkeeping (not a verdict) needs it. 0 if the host has no clock:
/// keys and failures recorded "at 0" look old, so they are refetched/retried sooner, never
/// trusted longer; verdicts read the clock themselves and deny without it (see `process`).
fn bookkeeping_now_ms() -> u64 {
    now_ms().unwrap_or_else(|status| {
        warn!("jwt-authn: host clock unavailable (host status {status})");
        0
    })
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

pub struct JwtRoot {
    shared: Shared,
    context_id: u32,
}

impl JwtRoot {
    pub fn new(context_id: u32) -> Self {
        Self {
            shared: Rc::new(RefCell::new(None)),
            context_id,
        }
    }
}

impl JwtRoot {
    /// Dispatch the fetches requests asked for. Only ever called from this root's callbacks, with
    /// the root as the effective context, so the callouts belong to the root.
    fn dispatch_wanted(&self) {
        restore_context(self.context_id);
        let wanted: Vec<usize> = match self.shared.borrow_mut().as_mut() {
            Some(vm) => std::mem::take(&mut vm.want_fetch),
            None => return,
        };
        for rule in wanted {
            dispatch_fetch(&self.shared, rule);
        }
    }
}

impl Context for JwtRoot {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        on_fetch_response(&self.shared, token_id, body_size);
        resolve_waiters(&self.shared, false);
        // Re-decided requests may have asked for another fetch (an unknown `kid`).
        self.dispatch_wanted();
    }
}

impl RootContext for JwtRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match meshward_host::plugin_configuration(plugin_configuration_size) {
            Ok(b) => b,
            Err(status) => {
                error!("jwt-authn: cannot read the plugin configuration (host status {status})");
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                error!("jwt-authn: {e}");
                return false;
            }
        };
        for (i, rule) in config.rules.iter().enumerate() {
            if let KeySource::Inline(set) = &rule.keys {
                for why in &set.skipped {
                    warn!("jwt-authn: jwtRules[{i}].jwks: skipped {why}");
                }
            }
        }
        let remotes: Vec<Option<RemoteJwks>> = config
            .rules
            .iter()
            .map(|r| match &r.keys {
                KeySource::Remote(spec) => Some(RemoteJwks::new(&r.issuer, spec.clone())),
                KeySource::Inline(_) => None,
            })
            .collect();
        if remotes.iter().any(Option::is_some) {
            if let Err(status) = meshward_host::set_tick_period(TICK) {
                error!(
                    "jwt-authn: cannot set the tick period needed for remote JWKS \
                     (host status {status})"
                );
                return false;
            }
        }
        let owner = random_owner();
        let kick_queue = if remotes.iter().any(Option::is_some) {
            // A name of this VM's own: a queue shared by name would wake another worker's root.
            match meshward_host::register_shared_queue(&format!(
                "meshward.jwt-authn.fetch.{owner:016x}"
            )) {
                Ok(id) => Some(id),
                Err(status) => {
                    warn!(
                        "jwt-authn: no fetch queue (host status {status}); fetches start on the \
                         next tick"
                    );
                    None
                }
            }
        } else {
            None
        };
        *self.shared.borrow_mut() = Some(Vm {
            auth: Authenticator::new(config),
            remotes,
            waiters: HashMap::new(),
            next_seq: 0,
            want_fetch: Vec::new(),
            kick_queue,
            inflight: Vec::new(),
            owner,
            counters: define_counters(),
        });
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        // The items are only wake-ups: drain them, then dispatch what requests asked for.
        for _ in 0..MAX_DRAIN {
            match meshward_host::dequeue_shared_queue(queue_id) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.dispatch_wanted();
        // A dispatch the host refused at once counts as a failed fetch: answer its waiters now.
        resolve_waiters(&self.shared, false);
        restore_context(self.context_id);
    }

    fn on_tick(&mut self) {
        // Without a clock nothing can be scheduled; resolve_waiters still ends the paused
        // requests (denied), so none hangs.
        if let Ok(now) = now_ms() {
            let fetches: Vec<usize> = {
                let mut guard = self.shared.borrow_mut();
                let Some(vm) = guard.as_mut() else { return };
                let owner = vm.owner;
                vm.remotes
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        r.as_mut().and_then(|r| {
                            r.poll(&mut HostStore, now, owner, Trigger::Tick)
                                .then_some(i)
                        })
                    })
                    .collect()
            };
            for rule in fetches {
                dispatch_fetch(&self.shared, rule);
            }
        }
        resolve_waiters(&self.shared, true);
        // Also the fallback for requests whose queue kick did not go through.
        self.dispatch_wanted();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(JwtHttp {
            shared: Rc::clone(&self.shared),
            context_id,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct JwtHttp {
    shared: Shared,
    context_id: u32,
}

impl Drop for JwtHttp {
    fn drop(&mut self) {
        // The stream is gone (answered, or reset by the client): forget it. A fetch it asked for
        // is the root's and carries on for the requests after it.
        if let Ok(mut guard) = self.shared.try_borrow_mut() {
            if let Some(vm) = guard.as_mut() {
                vm.waiters.remove(&self.context_id);
            }
        }
    }
}

// Requests never make callouts (see the module docs), so they get no callout responses.
impl Context for JwtHttp {}

impl HttpContext for JwtHttp {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match process(&self.shared, self.context_id, false) {
            Step::Continue => Action::Continue,
            Step::Replied | Step::Paused => Action::Pause,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Continue,
    Replied,
    Paused,
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// The request headers as text. Bytes that are not UTF-8 become U+FFFD: such a token can never
/// verify (so it is denied, not mistaken for an absent one), and such a name matches no rule.
fn request_headers() -> Result<Vec<(String, String)>, Status> {
    let pairs = meshward_host::get_map(MapType::HttpRequestHeaders)?;
    Ok(pairs
        .into_iter()
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            )
        })
        .collect())
}

fn reply(status: u32, body: &str, www_authenticate: &str) -> Step {
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
    Step::Replied
}

/// Deny without having read the request.
fn deny_unread() -> Step {
    reply(401, AuthError::VerificationFail.message(), "Bearer")
}

/// Decide on the request of the current effective context and act on the verdict.
/// `expired_wait`: it has waited for keys as long as allowed.
fn process(shared: &Shared, context_id: u32, expired_wait: bool) -> Step {
    let headers = match request_headers() {
        Ok(h) => h,
        Err(status) => {
            error!("jwt-authn: cannot read request headers (host status {status})");
            return deny_unread();
        }
    };
    let path = header(&headers, ":path").unwrap_or_default();
    let scheme = header(&headers, "x-forwarded-proto")
        .or_else(|| header(&headers, ":scheme"))
        .unwrap_or_else(|| "http".to_string());
    let authority = header(&headers, ":authority").unwrap_or_default();
    let request = Request {
        headers: &headers,
        path: &path,
        scheme: &scheme,
        authority: &authority,
    };
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
    let mut guard = shared.borrow_mut();
    let Some(vm) = guard.as_mut() else {
        return deny_unread();
    };
    // Client-supplied copies of output headers never pass, token or not, in any spelling a
    // backend folds into the output name (`X_JWT_SUB`, `x-jwt_sub` for `x-jwt-sub`).
    for name in vm.auth.config.spoofed_output_headers(&headers) {
        if let Err(status) = meshward_host::remove_map_value(MapType::HttpRequestHeaders, &name) {
            error!(
                "jwt-authn: cannot remove header `{}` (host status {status}); denying",
                loggable(&name, MAX_LOGGED_CHARS)
            );
            return deny_unread();
        }
    }
    // The verdict is taken on this VM's copy of the keys. When it says "wait", the poll below
    // first adopts what other workers put in shared data; if that alone changed the keys (or
    // recorded a failure) and no fetch is started, the request is decided again at once rather
    // than paused for a change that has already happened (it would otherwise wait out its
    // deadline, `timeout + 1 s`). At most one retry.
    let mut retried = false;
    loop {
        let verdict = {
            let lookup = Lookup {
                remotes: &vm.remotes,
                now_ms: now,
            };
            vm.auth
                .decide(&request, now / 1000, &lookup, expired_wait, &mut stats)
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
                    if let Err(status) =
                        meshward_host::remove_map_value(MapType::HttpRequestHeaders, name)
                    {
                        refused.get_or_insert((name.as_str(), status));
                    }
                }
                for (name, value) in &set_headers {
                    if let Err(status) =
                        meshward_host::replace_map_value(MapType::HttpRequestHeaders, name, value)
                    {
                        refused.get_or_insert((name.as_str(), status));
                    }
                }
                if let Some(bytes) = identity_bytes {
                    if let Err(status) = meshward_host::set_property(PROPERTY_PATH, &bytes) {
                        refused.get_or_insert(("the request identity", status));
                    }
                }
                if let Some((what, status)) = refused {
                    error!(
                        "jwt-authn: host refused to update {what} (host status {status}); denying"
                    );
                    vm.counters.increment(counter::DENIED);
                    let d = denial(AuthError::VerificationFail, &request);
                    return reply(d.status, d.body, &d.www_authenticate);
                }
                vm.counters.increment(counter::ALLOWED);
                return Step::Continue;
            }
            Verdict::Deny(d) => {
                count_cache(vm, &stats);
                vm.counters.increment(counter::DENIED);
                log_denial(&d, &headers, &path);
                return reply(d.status, d.body, &d.www_authenticate);
            }
            Verdict::Wait { rules, refetch } => {
                let owner = vm.owner;
                let mut fetch = Vec::new();
                let mut adopted = false;
                let mut bound = 0u64;
                let mut epochs = Vec::new();
                for &rule in &rules {
                    if let Some(Some(remote)) = vm.remotes.get_mut(rule) {
                        let trigger = if refetch.contains(&rule) {
                            Trigger::UnknownKid
                        } else {
                            Trigger::NeedKeys
                        };
                        let before = remote.epoch();
                        if remote.poll(&mut HostStore, now, owner, trigger) {
                            fetch.push(rule);
                        }
                        adopted |= remote.epoch() != before;
                        bound = bound.max(remote.wait_bound_ms());
                        epochs.push((rule, remote.epoch()));
                    }
                }
                if adopted && fetch.is_empty() && !retried {
                    retried = true;
                    stats = Stats::default();
                    continue;
                }
                count_cache(vm, &stats);
                let seq = vm.next_seq;
                vm.next_seq = vm.next_seq.wrapping_add(1);
                vm.waiters.insert(
                    context_id,
                    Waiter {
                        seq,
                        deadline_ms: now.saturating_add(bound),
                        epochs,
                    },
                );
                if !fetch.is_empty() {
                    for rule in fetch {
                        if !vm.want_fetch.contains(&rule) {
                            vm.want_fetch.push(rule);
                        }
                    }
                    kick(vm);
                }
                return Step::Paused;
            }
        }
    }
}

fn count_cache(vm: &Vm, stats: &Stats) {
    count(&vm.counters, counter::CACHE_HIT, stats.cache_hits);
    count(&vm.counters, counter::CACHE_MISS, stats.cache_misses);
}

/// Wake this VM's root context so that it dispatches `want_fetch` now. Without the queue (or if
/// the host refuses) the root's next tick does it.
fn kick(vm: &Vm) {
    if let Some(queue) = vm.kick_queue {
        if let Err(status) = meshward_host::enqueue_shared_queue(queue, b"fetch") {
            warn!("jwt-authn: cannot wake the root (host status {status}); fetch on next tick");
        }
    }
}

/// One bounded line per refusal: what was refused and why, with the client's path and method
/// capped and escaped (a client chooses them).
fn log_denial(d: &Denial, headers: &[(String, String)], path: &str) {
    let method = header(headers, ":method").unwrap_or_default();
    info!(
        "jwt-authn: denied {} ({:?}) {} {}",
        d.status,
        d.error,
        loggable(&method, 16),
        loggable(path, MAX_LOGGED_CHARS)
    );
}

/// Start the JWKS fetch of `rule` from the current context, which is always the root context
/// (see the module docs). A synchronous failure (unknown cluster) counts as a failed fetch.
fn dispatch_fetch(shared: &Shared, rule: usize) {
    let mut guard = shared.borrow_mut();
    let Some(vm) = guard.as_mut() else { return };
    let owner = vm.owner;
    let Some(Some(remote)) = vm.remotes.get_mut(rule) else {
        return;
    };
    let spec = remote.spec.clone();
    let headers = [
        (":method", "GET"),
        (":path", spec.path.as_str()),
        (":authority", spec.authority.as_str()),
        ("accept", "application/json"),
    ];
    match meshward_host::dispatch_http_call(
        &spec.cluster,
        &headers,
        None,
        &[],
        Duration::from_millis(spec.timeout_ms),
    ) {
        Ok(token) => vm.inflight.push((token, rule)),
        Err(status) => {
            let outcome = remote.on_fetch_done(
                &mut HostStore,
                bookkeeping_now_ms(),
                owner,
                Err(format!("dispatch to `{}` failed: {status}", spec.cluster)),
            );
            log_outcome(&spec.uri, &outcome);
            vm.counters.increment(counter::FETCH_FAILED);
        }
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

/// The JWKS in the response to a fetch, or why there is none.
fn fetched_body(body_size: usize) -> Result<Vec<u8>, String> {
    if body_size > MAX_BODY {
        return Err(format!("body of {body_size} bytes is too large"));
    }
    let status = match meshward_host::http_call_response_header(":status") {
        Ok(Some(status)) => status,
        // The host reports a reset or timeout with no headers at all.
        Ok(None) => return Err("status none (reset or timeout)".to_string()),
        Err(status) => {
            return Err(format!(
                "cannot read the response status (host status {status})"
            ))
        }
    };
    if status != b"200" {
        return Err(format!("status {}", String::from_utf8_lossy(&status)));
    }
    match meshward_host::http_call_response_body(body_size) {
        Ok(body) if !body.is_empty() => Ok(body),
        Ok(_) => Err("empty body".to_string()),
        Err(status) => Err(format!("cannot read the body (host status {status})")),
    }
}

fn on_fetch_response(shared: &Shared, token_id: u32, body_size: usize) {
    let mut guard = shared.borrow_mut();
    let Some(vm) = guard.as_mut() else { return };
    let Some(pos) = vm.inflight.iter().position(|(t, _)| *t == token_id) else {
        return;
    };
    let (_, rule) = vm.inflight.swap_remove(pos);
    let body = fetched_body(body_size);
    let owner = vm.owner;
    let Some(Some(remote)) = vm.remotes.get_mut(rule) else {
        return;
    };
    let outcome = remote.on_fetch_done(
        &mut HostStore,
        bookkeeping_now_ms(),
        owner,
        body.as_deref().map_err(Clone::clone),
    );
    log_outcome(&remote.spec.uri, &outcome);
    match outcome {
        FetchOutcome::Installed { .. } => vm.counters.increment(counter::FETCH_SUCCESS),
        FetchOutcome::Failed(_) => vm.counters.increment(counter::FETCH_FAILED),
    }
}

/// Re-decide every paused request whose keys changed (or, on ticks, whose wait ran out), in its
/// own context, and resume the ones that may continue. Without a clock every wait counts as run
/// out: `process` then denies, so no request stays paused on a broken clock.
fn resolve_waiters(shared: &Shared, sync_first: bool) {
    let now = now_ms().unwrap_or(u64::MAX);
    let due: Vec<(u32, bool)> = {
        let mut guard = shared.borrow_mut();
        let Some(vm) = guard.as_mut() else { return };
        if sync_first {
            for remote in vm.remotes.iter_mut().flatten() {
                remote.sync(&HostStore);
            }
        }
        let remotes = &vm.remotes;
        let changed = |w: &Waiter| {
            w.epochs.iter().any(
                |(rule, epoch)| matches!(remotes.get(*rule), Some(Some(r)) if r.epoch() != *epoch),
            )
        };
        // One pass over the waiters, O(n); each due one is removed in O(1).
        let mut due: Vec<(u64, u32, bool)> = vm
            .waiters
            .iter()
            .filter(|(_, w)| changed(w) || now >= w.deadline_ms)
            .map(|(id, w)| (w.seq, *id, now >= w.deadline_ms))
            .collect();
        due.sort_unstable();
        for (_, id, _) in &due {
            vm.waiters.remove(id);
        }
        due.into_iter()
            .map(|(_, id, expired)| (id, expired))
            .collect()
    };
    for (context_id, expired) in due {
        if let Err(status) = meshward_host::set_effective_context(context_id) {
            // The request is gone (or unreachable): nothing to decide.
            warn!("jwt-authn: cannot switch to request {context_id} (host status {status})");
            continue;
        }
        if let Step::Continue = process(shared, context_id, expired) {
            if let Err(status) = meshward_host::resume_http_request() {
                warn!("jwt-authn: could not resume request {context_id} (host status {status})");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Natively every host call fails (meshward-host's stubs answer UNIMPLEMENTED): exactly the
    //! host-failure paths, which must deny (or end paused requests), never continue or panic.
    use super::*;

    const INLINE: &str = r#"{"jwtRules":[{"issuer":"https://idp.example.com",
        "jwks":"{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"alg\":\"HS256\",\"k\":\"bWVzaHdhcmQtZml4dHVyZS1obWFjLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm\"}]}"}]}"#;

    fn configured() -> Shared {
        let config = Config::parse(INLINE.as_bytes()).unwrap();
        Rc::new(RefCell::new(Some(Vm {
            auth: Authenticator::new(config),
            remotes: vec![None],
            waiters: HashMap::new(),
            next_seq: 0,
            want_fetch: Vec::new(),
            kick_queue: None,
            inflight: Vec::new(),
            owner: random_owner(),
            counters: define_counters(),
        })))
    }

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = JwtRoot::new(1);
        assert!(!root.on_configure(INLINE.len()));
        assert!(root.shared.borrow().is_none());
    }

    #[test]
    fn unreadable_headers_are_answered_not_forwarded() {
        assert_eq!(process(&configured(), 2, false), Step::Replied);
        let mut http = JwtHttp {
            shared: configured(),
            context_id: 2,
        };
        assert_eq!(http.on_http_request_headers(3, true), Action::Pause);
    }

    #[test]
    fn an_unconfigured_filter_answers_too() {
        let shared: Shared = Rc::new(RefCell::new(None));
        assert_eq!(process(&shared, 2, false), Step::Replied);
    }

    #[test]
    fn without_a_clock_every_paused_request_is_ended() {
        let shared = configured();
        if let Some(vm) = shared.borrow_mut().as_mut() {
            vm.waiters.insert(
                5,
                Waiter {
                    seq: 0,
                    deadline_ms: u64::MAX - 1,
                    epochs: vec![(0, 0)],
                },
            );
        }
        resolve_waiters(&shared, true);
        assert!(shared.borrow().as_ref().unwrap().waiters.is_empty());
    }

    #[test]
    fn a_fetch_response_the_host_will_not_hand_over_fails_the_fetch() {
        let too_big = fetched_body(MAX_BODY + 1).unwrap_err();
        assert!(too_big.contains("too large"), "{too_big}");
        let unreadable = fetched_body(10).unwrap_err();
        assert!(
            unreadable.contains("cannot read the response status"),
            "{unreadable}"
        );
    }

    #[test]
    fn shared_data_the_host_refuses_is_missing_and_unwritten() {
        let mut store = HostStore;
        assert_eq!(store.get("k"), None);
        assert!(!store.set("k", b"v", None));
        assert!(!store.set("k", b"v", Some(3)));
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
