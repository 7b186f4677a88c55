//! meshward bundle (`meshward.wasm`): the whole meshward chain in one proxy-wasm module.
//!
//! Its configuration ([`BundleConfig`]) has one optional section per check, each exactly the
//! configuration of the separate filter. Per request the enabled checks run in chain order —
//! header-limits, jwt-authn, spiffe-authz, rate-limit — in one HTTP context, over one
//! [`RequestView`]: the request header map is read once, each property at most once, and the
//! identity jwt-authn verified is handed to spiffe-authz and rate-limit in memory (it is still
//! published as the `meshward_request_auth` property, for other filters). The checks are the
//! adapters' own stages (`<filter>::stage`): nothing is copied, so statuses, bodies, headers,
//! metrics and log lines are the separate filters'.
//!
//! One root context per VM serves every section: jwt-authn's key scheduler is the only one that
//! uses root callbacks (ticks, its wake-up queue, JWKS responses), so they go to it. When
//! jwt-authn parks a request to wait for keys, the bundle keeps the request's view; when the
//! scheduler decides it again, the bundle runs jwt-authn on it and then the later checks before
//! resuming the stream. See docs/bundle.md.

mod config;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use meshward_host::{RequestView, StageResult};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

pub use config::{BundleConfig, SECTIONS};

/// The bundle's name: its log prefix (configuration errors), the scenario format's
/// `filter: meshward`.
pub const NAME: &str = "meshward";

// Two `_initialize` exports cannot link: a wasm build of the bundle must not pull in an adapter
// built with its `standalone` feature (cargo unifies features within one invocation; build the
// bundle in its own, as scripts/build-wasm.sh does).
#[cfg(target_arch = "wasm32")]
const _: () = assert!(
    !header_limits::STANDALONE
        && !jwt_authn::STANDALONE
        && !spiffe_authz::STANDALONE
        && !rate_limit::STANDALONE,
    "build meshward-bundle in a cargo invocation of its own (the adapters without `standalone`)"
);

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // Envoy filters by its own wasm log level; pass everything to it (header-limits logs its
    // refusals at debug).
    meshward_host::init_logger(log::LevelFilter::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(Root::new(context_id)) });
}}

// The callbacks this module handles, those of its four stages: request headers, response headers
// (rate-limit), and jwt-authn's JWKS fetches. scripts/build-wasm.sh drops the SDK's exports of the
// others, so that Envoy does not enter the VM for them (meshward_host::callbacks!).
meshward_host::callbacks!(
    "proxy_on_request_headers",
    "proxy_on_response_headers",
    "proxy_on_http_call_response",
    "proxy_on_queue_ready",
    "proxy_on_tick",
);

/// The enabled checks of one VM, and the requests jwt-authn parked.
struct Bundle {
    header_limits: Option<header_limits::stage::Stage>,
    jwt_authn: Option<jwt_authn::stage::Stage>,
    spiffe_authz: Option<spiffe_authz::stage::Stage>,
    rate_limit: Option<rate_limit::stage::Stage>,
    /// Requests waiting for jwt-authn's keys, by context id: their state is needed when the
    /// scheduler decides them again from a root callback.
    parked: RefCell<HashMap<u32, Shared>>,
}

/// What the bundle keeps of one request.
struct PerRequest {
    view: RequestView,
    rate_limit: rate_limit::stage::PerRequest,
}

impl PerRequest {
    fn new() -> Self {
        Self {
            view: RequestView::bundled(),
            rate_limit: rate_limit::stage::PerRequest::default(),
        }
    }
}

/// A request's state, held by its HTTP context and, while it is parked, by the bundle.
type Shared = Rc<RefCell<PerRequest>>;

impl Bundle {
    /// Build the enabled stages, in chain order; `None` if one of them cannot start (logged by
    /// it): `on_configure` then fails.
    fn configure(config: BundleConfig, root_context: u32) -> Option<Self> {
        let header_limits = config.header_limits.map(header_limits::stage::Stage::new);
        let jwt_authn = match config.jwt_authn {
            Some(c) => Some(jwt_authn::stage::Stage::configure(c, root_context)?),
            None => None,
        };
        let spiffe_authz = config.spiffe_authz.map(spiffe_authz::stage::Stage::new);
        let rate_limit = match config.rate_limit {
            Some(c) => Some(rate_limit::stage::Stage::configure(c)?),
            None => None,
        };
        Some(Self {
            header_limits,
            jwt_authn,
            spiffe_authz,
            rate_limit,
            parked: RefCell::new(HashMap::new()),
        })
    }

    /// Every enabled check on the request headers, in order, until one does not continue.
    fn on_request_headers(&self, req: &mut PerRequest, context_id: u32) -> StageResult {
        if let Some(stage) = &self.header_limits {
            let result = stage.on_request_headers(&mut req.view);
            if result != StageResult::Continue {
                return result;
            }
        }
        if let Some(stage) = &self.jwt_authn {
            let result = stage.on_request_headers(&mut req.view, context_id);
            if result != StageResult::Continue {
                return result;
            }
        }
        self.after_jwt_authn(req)
    }

    /// The checks after jwt-authn: also what a parked request goes through once its token is
    /// decided.
    fn after_jwt_authn(&self, req: &mut PerRequest) -> StageResult {
        if let Some(stage) = &self.spiffe_authz {
            let result = stage.on_request_headers(&mut req.view);
            if result != StageResult::Continue {
                return result;
            }
        }
        if let Some(stage) = &self.rate_limit {
            return stage.on_request_headers(&mut req.view, &mut req.rate_limit);
        }
        StageResult::Continue
    }

    /// A request jwt-authn's scheduler decides again (its context is the effective one): jwt-authn
    /// on the kept view, then the later checks; resumed if all let it go on.
    fn decide_parked(&self, jwt_authn: &jwt_authn::stage::Stage, waiter: u32, expired: bool) {
        let shared = self.parked.borrow().get(&waiter).cloned();
        let shared = shared.unwrap_or_else(|| {
            // Parked by jwt-authn but not kept here: cannot happen; decide on a fresh view.
            log::warn!("meshward: request {waiter} decided again without its state");
            Rc::new(RefCell::new(PerRequest::new()))
        });
        let Ok(mut req) = shared.try_borrow_mut() else {
            log::error!("meshward: request {waiter} is busy; left paused");
            return;
        };
        let result = match jwt_authn.decide_parked(&mut req.view, waiter, expired) {
            StageResult::Continue => self.after_jwt_authn(&mut req),
            other => other,
        };
        if result == StageResult::Paused {
            // Still waiting (parked again by the scheduler): keep the state.
            return;
        }
        self.parked.borrow_mut().remove(&waiter);
        req.view = RequestView::bundled();
        if result == StageResult::Continue {
            jwt_authn::stage::resume(waiter);
        }
    }
}

/// The root context: the bundle of this VM; its callbacks drive jwt-authn's key scheduler.
pub struct Root {
    bundle: Option<Rc<Bundle>>,
    context_id: u32,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            bundle: None,
            context_id,
        }
    }

    /// Run `f` with jwt-authn's stage and the bundle's decider, if jwt-authn is enabled.
    fn with_jwt_authn(
        &self,
        f: impl FnOnce(&jwt_authn::stage::Stage, jwt_authn::stage::Decider<'_>),
    ) {
        if let Some(bundle) = &self.bundle {
            if let Some(jwt_authn) = &bundle.jwt_authn {
                f(jwt_authn, &mut |waiter, expired| {
                    bundle.decide_parked(jwt_authn, waiter, expired)
                });
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        self.with_jwt_authn(|stage, decide| {
            stage.on_http_call_response(token_id, body_size, decide)
        });
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(config) =
            meshward_host::configure(NAME, plugin_configuration_size, BundleConfig::parse)
        else {
            return false;
        };
        log::info!("meshward: checks {}", config.enabled().join(" → "));
        let Some(bundle) = Bundle::configure(config, self.context_id) else {
            return false;
        };
        self.bundle = Some(Rc::new(bundle));
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        self.with_jwt_authn(|stage, decide| stage.on_queue_ready(queue_id, decide));
    }

    fn on_tick(&mut self) {
        self.with_jwt_authn(|stage, decide| stage.on_tick(decide));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            bundle: self.bundle.clone(),
            context_id,
            state: Rc::new(RefCell::new(PerRequest::new())),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The per-request context.
pub struct Request {
    bundle: Option<Rc<Bundle>>,
    context_id: u32,
    state: Shared,
}

impl Drop for Request {
    fn drop(&mut self) {
        // The stream is gone (answered, or reset by the client): it waits for nothing any more.
        if let Some(bundle) = &self.bundle {
            if let Ok(mut parked) = bundle.parked.try_borrow_mut() {
                parked.remove(&self.context_id);
            }
            if let Some(jwt_authn) = &bundle.jwt_authn {
                jwt_authn.request_gone(self.context_id);
            }
        }
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(bundle) = &self.bundle else {
            return unconfigured();
        };
        let Ok(mut req) = self.state.try_borrow_mut() else {
            // Only a re-entry could hold it; never let the request through unchecked.
            log::error!("meshward: request {} is busy; left paused", self.context_id);
            return Action::Pause;
        };
        match bundle.on_request_headers(&mut req, self.context_id) {
            StageResult::Continue => {
                // Nothing reads the request headers any more: free the copy.
                req.view = RequestView::bundled();
                Action::Continue
            }
            StageResult::Replied => {
                req.view = RequestView::bundled();
                Action::Pause
            }
            StageResult::Paused => {
                bundle
                    .parked
                    .borrow_mut()
                    .insert(self.context_id, Rc::clone(&self.state));
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let has_rate_limit = self
            .bundle
            .as_ref()
            .is_some_and(|bundle| bundle.rate_limit.is_some());
        if has_rate_limit {
            if let Ok(mut req) = self.state.try_borrow_mut() {
                rate_limit::stage::on_response_headers(&mut req.rate_limit);
            }
        }
        Action::Continue
    }
}

/// A request before a successful configuration (Envoy does not create one then): 500, never
/// forwarded unchecked.
fn unconfigured() -> Action {
    log::error!("meshward: request before a successful configuration; answering 500");
    const NO_HEADERS: &[(&str, &str)] = &[];
    if let Err(status) = meshward_host::send_local_response(
        500,
        "meshward.unconfigured",
        b"internal error",
        NO_HEADERS,
        None,
    ) {
        log::error!(
            "meshward: cannot send the 500 reply (host status {status}); request stays paused"
        );
    }
    Action::Pause
}

#[cfg(test)]
mod tests {
    //! Natively every host call fails (meshward-host's stubs answer UNIMPLEMENTED): the bundle
    //! must fail closed on each, never continue or panic.
    use super::*;

    fn bundle(config: &str) -> Bundle {
        let config = BundleConfig::parse(config.as_bytes()).unwrap();
        // Natively rate-limit cannot configure (no shared data); leave it out here.
        Bundle::configure(config, 1).unwrap()
    }

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = Root::new(1);
        assert!(!root.on_configure(10));
        assert!(root.bundle.is_none());
    }

    #[test]
    fn without_a_host_the_first_enabled_check_answers() {
        for config in [
            r#"{"headerLimits": {}, "spiffeAuthz": {}}"#,
            r#"{"jwtAuthn": {}, "spiffeAuthz": {}}"#,
            r#"{"spiffeAuthz": {}}"#,
        ] {
            let bundle = bundle(config);
            let mut req = PerRequest::new();
            assert_eq!(
                bundle.on_request_headers(&mut req, 2),
                StageResult::Replied,
                "{config}"
            );
        }
    }

    #[test]
    fn a_dry_run_alone_lets_the_request_through() {
        let bundle = bundle(r#"{"spiffeAuthz": {"dryRun": true}}"#);
        let mut req = PerRequest::new();
        assert_eq!(
            bundle.on_request_headers(&mut req, 2),
            StageResult::Continue
        );
    }

    #[test]
    fn an_unconfigured_bundle_answers() {
        let mut http = Request {
            bundle: None,
            context_id: 2,
            state: Rc::new(RefCell::new(PerRequest::new())),
        };
        assert_eq!(http.on_http_request_headers(3, true), Action::Pause);
    }

    #[test]
    fn a_gone_request_is_forgotten() {
        let bundle = Rc::new(bundle(r#"{"jwtAuthn": {}}"#));
        let state = Rc::new(RefCell::new(PerRequest::new()));
        bundle.parked.borrow_mut().insert(4, Rc::clone(&state));
        drop(Request {
            bundle: Some(Rc::clone(&bundle)),
            context_id: 4,
            state,
        });
        assert!(bundle.parked.borrow().is_empty());
    }
}
