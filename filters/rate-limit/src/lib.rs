//! meshward rate-limit: a thin proxy-wasm adapter over `rate_limit_core`.
//!
//! on_configure: parse the config, create the shared-data slot table if absent (see
//! docs/rate-limit.md for why creation happens here), define the counters. Per request: the
//! core's `decide` picks and charges the buckets; then continue (headers added on the response)
//! or reject. The work is the [`stage`] (shared with the bundle, `meshward.wasm`); this file is
//! the standalone filter's shell: the entry point, the root context, the request context.
//!
//! Every host call goes through `meshward_host`, which returns host statuses as values (the SDK's
//! calls panic on statuses they do not expect).

mod counters;
pub mod stage;

use std::rc::Rc;

use meshward_host::{RequestView, StageResult};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use rate_limit_core::Config;

use stage::{PerRequest, Stage};

/// Whether this build exports the standalone filter's entry point (cargo feature `standalone`,
/// on by default; the bundle turns it off and checks this, since two entry points cannot link).
pub const STANDALONE: bool = cfg!(feature = "standalone");

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
proxy_wasm::main! {{
    meshward_host::init_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

// The callbacks this module handles: the request headers, and the response headers
// (`x-ratelimit-*`). scripts/build-wasm.sh drops the SDK's exports of the others, so that Envoy
// does not enter the VM for them (meshward_host::callbacks!).
#[cfg(feature = "standalone")]
meshward_host::callbacks!("proxy_on_request_headers", "proxy_on_response_headers");

/// The root context: the configured stage, shared by every request of this VM.
#[derive(Default)]
pub struct Root {
    stage: Option<Rc<Stage>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(config) =
            meshward_host::configure(stage::NAME, plugin_configuration_size, Config::parse)
        else {
            return false;
        };
        let Some(stage) = Stage::configure(config) else {
            return false;
        };
        self.stage = Some(Rc::new(stage));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            stage: self.stage.clone(),
            state: PerRequest::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The per-request context.
pub struct Request {
    stage: Option<Rc<Stage>>,
    state: PerRequest,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let result = match &self.stage {
            Some(stage) => {
                stage.on_request_headers(&mut RequestView::standalone(), &mut self.state)
            }
            // Not configured (Envoy does not create contexts then): fail closed.
            None => stage::unconfigured(&mut self.state),
        };
        match result {
            StageResult::Continue => Action::Continue,
            StageResult::Replied | StageResult::Paused => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        stage::on_response_headers(&mut self.state);
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = Root::default();
        assert!(!root.on_configure(10));
        assert!(root.stage.is_none());
    }

    #[test]
    fn an_unconfigured_request_is_answered_not_forwarded() {
        let mut req = Request {
            stage: None,
            state: PerRequest::default(),
        };
        assert_eq!(req.on_http_request_headers(3, true), Action::Pause);
        assert!(req.state.replied());
    }
}
