//! meshward jwt-authn: a thin proxy-wasm adapter over `jwt_authn_core`.
//!
//! Per VM (= per worker thread): one root context owns the compiled config, the verified-token
//! cache, the remote JWKS state of each `jwksUri` rule and the list of requests paused while keys
//! are fetched. HTTP contexts share it through an `Rc`. Remote JWKS fetches are coordinated across
//! workers through shared data (see `jwt_authn_core::remote`). Every host call goes through
//! `proxy_wasm::hostcalls` so that a failing host status is handled here (the SDK's trait helpers
//! unwrap), and the filter fails closed.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use jwt_authn_core::config::KeySource;
use jwt_authn_core::engine::{denial, KeyLookup, Keys, Request, Stats, Verdict};
use jwt_authn_core::remote::{FetchOutcome, RemoteJwks, SharedStore, Trigger};
use jwt_authn_core::{AuthError, Authenticator, Config};
use log::{error, info, warn};
use meshward_common::identity::PROPERTY_PATH;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(JwtRoot::new(context_id)) });
}}

/// Tick period while any rule uses a remote JWKS: drives refresh and the paused-request deadlines.
const TICK: Duration = Duration::from_millis(500);
/// Largest JWKS response body read.
const MAX_BODY: usize = jwt_authn_core::jwk::MAX_JWKS_BYTES;

#[derive(Default)]
struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    fetch_success: Option<u32>,
    fetch_failed: Option<u32>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let m = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Self {
            allowed: m("jwt_authn.allowed"),
            denied: m("jwt_authn.denied"),
            fetch_success: m("jwt_authn.jwks_fetch_success"),
            fetch_failed: m("jwt_authn.jwks_fetch_failed"),
            cache_hit: m("jwt_authn.jwt_cache_hit"),
            cache_miss: m("jwt_authn.jwt_cache_miss"),
        }
    }

    fn add(id: Option<u32>, n: u32) {
        if let (Some(id), true) = (id, n > 0) {
            // A metric that cannot be updated is not a reason to change the verdict.
            let _ = hostcalls::increment_metric(id, i64::from(n));
        }
    }
}

/// A request paused while keys are fetched.
struct Waiter {
    context_id: u32,
    deadline_ms: u64,
    /// (rule, epoch seen when paused)
    epochs: Vec<(usize, u64)>,
}

/// What one VM shares between its root and HTTP contexts.
struct Vm {
    auth: Authenticator,
    /// Indexed like `config.rules`; `None` for inline-JWKS rules.
    remotes: Vec<Option<RemoteJwks>>,
    waiters: Vec<Waiter>,
    /// Outstanding JWKS fetches: callout token → rule.
    inflight: Vec<(u32, usize)>,
    owner: u64,
    metrics: Metrics,
}

type Shared = Rc<RefCell<Option<Vm>>>;

struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Some((value, cas)),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
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

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A per-VM random identity for the fetch lease (two VMs must not think they hold the same lease).
fn random_owner() -> u64 {
    RandomState::new().hash_one(now_ms()).max(1)
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

impl Context for JwtRoot {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        on_fetch_response(&self.shared, token_id, body_size);
        resolve_waiters(&self.shared, false);
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

impl RootContext for JwtRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                error!("jwt-authn: cannot read the plugin configuration: {status:?}");
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
        if remotes.iter().any(Option::is_some) && hostcalls::set_tick_period(TICK).is_err() {
            error!("jwt-authn: cannot set the tick period needed for remote JWKS");
            return false;
        }
        *self.shared.borrow_mut() = Some(Vm {
            auth: Authenticator::new(config),
            remotes,
            waiters: Vec::new(),
            inflight: Vec::new(),
            owner: random_owner(),
            metrics: Metrics::define(),
        });
        true
    }

    fn on_tick(&mut self) {
        let now = now_ms();
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
        resolve_waiters(&self.shared, true);
        let _ = hostcalls::set_effective_context(self.context_id);
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
        if let Ok(mut guard) = self.shared.try_borrow_mut() {
            if let Some(vm) = guard.as_mut() {
                vm.waiters.retain(|w| w.context_id != self.context_id);
            }
        }
    }
}

impl Context for JwtHttp {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        on_fetch_response(&self.shared, token_id, body_size);
        resolve_waiters(&self.shared, false);
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

impl HttpContext for JwtHttp {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match process(&self.shared, self.context_id, false) {
            Step::Continue => Action::Continue,
            Step::Replied | Step::Paused => Action::Pause,
        }
    }
}

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

fn reply(status: u32, body: &str, www_authenticate: &str) -> Step {
    let headers = vec![
        ("www-authenticate", www_authenticate),
        ("content-type", "text/plain"),
    ];
    if hostcalls::send_http_response(status, headers, Some(body.as_bytes())).is_err() {
        // Could not answer: stop the request instead of letting it through.
        let _ = hostcalls::reset_http_request();
    }
    Step::Replied
}

/// Decide on the request of the current effective context and act on the verdict.
/// `expired_wait`: it has waited for keys as long as allowed.
fn process(shared: &Shared, context_id: u32, expired_wait: bool) -> Step {
    let headers = match hostcalls::get_map(MapType::HttpRequestHeaders) {
        Ok(h) => h,
        Err(status) => {
            error!("jwt-authn: cannot read request headers: {status:?}");
            return reply(401, AuthError::VerificationFail.message(), "Bearer");
        }
    };
    let path = header(&headers, ":path").unwrap_or_default();
    let scheme = header(&headers, "x-forwarded-proto")
        .or_else(|| header(&headers, ":scheme"))
        .unwrap_or_else(|| "http".to_string());
    let authority = header(&headers, ":authority").unwrap_or_default();
    let now = now_ms();
    let mut stats = Stats::default();

    let mut guard = shared.borrow_mut();
    let Some(vm) = guard.as_mut() else {
        return reply(401, AuthError::VerificationFail.message(), "Bearer");
    };
    // Client-supplied copies of output headers never pass, token or not.
    for name in &vm.auth.config.output_headers {
        if hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None).is_err() {
            return reply(401, AuthError::VerificationFail.message(), "Bearer");
        }
    }
    let request = Request {
        headers: &headers,
        path: &path,
        scheme: &scheme,
        authority: &authority,
    };
    let verdict = {
        let lookup = Lookup {
            remotes: &vm.remotes,
            now_ms: now,
        };
        vm.auth
            .decide(&request, now / 1000, &lookup, expired_wait, &mut stats)
    };
    Metrics::add(vm.metrics.cache_hit, stats.cache_hits);
    Metrics::add(vm.metrics.cache_miss, stats.cache_misses);
    match verdict {
        Verdict::Allow {
            identity,
            remove_headers,
            set_headers,
        } => {
            let mut ok = true;
            for name in &remove_headers {
                ok &= hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None).is_ok();
            }
            for (name, value) in &set_headers {
                ok &= hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                    .is_ok();
            }
            if let Some(identity) = identity {
                ok &= hostcalls::set_property(PROPERTY_PATH.to_vec(), Some(&identity.to_bytes()))
                    .is_ok();
            }
            if !ok {
                error!("jwt-authn: host refused a header or property update; denying");
                Metrics::add(vm.metrics.denied, 1);
                let d = denial(AuthError::VerificationFail, &request);
                return reply(d.status, d.body, &d.www_authenticate);
            }
            Metrics::add(vm.metrics.allowed, 1);
            Step::Continue
        }
        Verdict::Deny(d) => {
            Metrics::add(vm.metrics.denied, 1);
            reply(d.status, d.body, &d.www_authenticate)
        }
        Verdict::Wait { rules, refetch } => {
            let owner = vm.owner;
            let mut fetch = Vec::new();
            let mut bound = 0u64;
            let mut epochs = Vec::new();
            for &rule in &rules {
                if let Some(Some(remote)) = vm.remotes.get_mut(rule) {
                    let trigger = if refetch.contains(&rule) {
                        Trigger::UnknownKid
                    } else {
                        Trigger::NeedKeys
                    };
                    if remote.poll(&mut HostStore, now, owner, trigger) {
                        fetch.push(rule);
                    }
                    bound = bound.max(remote.wait_bound_ms());
                    epochs.push((rule, remote.epoch()));
                }
            }
            vm.waiters.retain(|w| w.context_id != context_id);
            vm.waiters.push(Waiter {
                context_id,
                deadline_ms: now.saturating_add(bound),
                epochs,
            });
            drop(guard);
            for rule in fetch {
                dispatch_fetch(shared, rule);
            }
            Step::Paused
        }
    }
}

/// Start the JWKS fetch of `rule` from the current context. A synchronous failure (unknown
/// cluster) counts as a failed fetch.
fn dispatch_fetch(shared: &Shared, rule: usize) {
    let mut guard = shared.borrow_mut();
    let Some(vm) = guard.as_mut() else { return };
    let owner = vm.owner;
    let Some(Some(remote)) = vm.remotes.get_mut(rule) else {
        return;
    };
    let spec = remote.spec.clone();
    let headers = vec![
        (":method", "GET"),
        (":path", spec.path.as_str()),
        (":authority", spec.authority.as_str()),
        ("accept", "application/json"),
    ];
    match hostcalls::dispatch_http_call(
        &spec.cluster,
        headers,
        None,
        vec![],
        Duration::from_millis(spec.timeout_ms),
    ) {
        Ok(token) => vm.inflight.push((token, rule)),
        Err(status) => {
            let outcome = remote.on_fetch_done(
                &mut HostStore,
                now_ms(),
                owner,
                Err(format!("dispatch to `{}` failed: {status:?}", spec.cluster)),
            );
            log_outcome(&spec.uri, &outcome);
            Metrics::add(vm.metrics.fetch_failed, 1);
        }
    }
}

fn log_outcome(uri: &str, outcome: &FetchOutcome) {
    match outcome {
        FetchOutcome::Installed { skipped } => {
            info!("jwt-authn: JWKS from {uri} installed");
            for why in skipped {
                warn!("jwt-authn: JWKS from {uri}: skipped {why}");
            }
        }
        FetchOutcome::Failed(why) => {
            warn!("jwt-authn: JWKS fetch from {uri} failed, keeping previous keys: {why}")
        }
    }
}

fn on_fetch_response(shared: &Shared, token_id: u32, body_size: usize) {
    let mut guard = shared.borrow_mut();
    let Some(vm) = guard.as_mut() else { return };
    let Some(pos) = vm.inflight.iter().position(|(t, _)| *t == token_id) else {
        return;
    };
    let (_, rule) = vm.inflight.swap_remove(pos);
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten();
    let body = if body_size > MAX_BODY {
        Err(format!("body of {body_size} bytes is too large"))
    } else {
        match (
            status.as_deref(),
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size),
        ) {
            (Some("200"), Ok(Some(body))) => Ok(body),
            (Some("200"), _) => Err("empty body".to_string()),
            (other, _) => Err(format!(
                "status {}",
                other.unwrap_or("none (reset or timeout)")
            )),
        }
    };
    let owner = vm.owner;
    let metrics = (vm.metrics.fetch_success, vm.metrics.fetch_failed);
    let Some(Some(remote)) = vm.remotes.get_mut(rule) else {
        return;
    };
    let outcome = remote.on_fetch_done(
        &mut HostStore,
        now_ms(),
        owner,
        body.as_deref().map_err(Clone::clone),
    );
    log_outcome(&remote.spec.uri, &outcome);
    match outcome {
        FetchOutcome::Installed { .. } => Metrics::add(metrics.0, 1),
        FetchOutcome::Failed(_) => Metrics::add(metrics.1, 1),
    }
}

/// Re-decide every paused request whose keys changed (or, on ticks, whose wait ran out), in its
/// own context, and resume the ones that may continue.
fn resolve_waiters(shared: &Shared, sync_first: bool) {
    let now = now_ms();
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
        let due: Vec<(u32, bool)> = vm
            .waiters
            .iter()
            .filter(|w| changed(w) || now >= w.deadline_ms)
            .map(|w| (w.context_id, now >= w.deadline_ms))
            .collect();
        vm.waiters
            .retain(|w| !due.iter().any(|(id, _)| *id == w.context_id));
        due
    };
    for (context_id, expired) in due {
        if hostcalls::set_effective_context(context_id).is_err() {
            continue;
        }
        if let Step::Continue = process(shared, context_id, expired) {
            if hostcalls::resume_http_request().is_err() {
                warn!("jwt-authn: could not resume request {context_id}");
            }
        }
    }
}
