//! meshward header-limits: a thin proxy-wasm adapter over `header_limits_core`.
//!
//! On each request's headers: read the header map as bytes, let the core decide, then either
//! continue (after dropping underscore headers if so configured) or send the core's local reply.
//! The work is the [`stage`] (shared with the bundle, `meshward.wasm`); this file is the
//! standalone filter's shell: the entry point, the root context, the request context.

pub mod stage;

use std::rc::Rc;

use header_limits_core::Config;
use meshward_host::{RequestView, StageResult};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use stage::Stage;

/// Whether this build exports the standalone filter's entry point (cargo feature `standalone`,
/// on by default; the bundle turns it off and checks this, since two entry points cannot link).
pub const STANDALONE: bool = cfg!(feature = "standalone");

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
proxy_wasm::main! {{
    // Envoy filters by its own wasm log level; pass everything to it.
    meshward_host::init_logger(log::LevelFilter::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

// The callbacks this module handles: the request headers; nothing after them. scripts/build-wasm.sh
// drops the SDK's exports of the others, so that Envoy does not enter the VM for them
// (meshward_host::callbacks!).
#[cfg(feature = "standalone")]
meshward_host::callbacks!("proxy_on_request_headers");

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
        self.stage = Some(Rc::new(Stage::new(config)));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context (the SDK panics on None); an unconfigured one fails closed.
        Some(Box::new(Request {
            stage: self.stage.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The per-request context.
pub struct Request {
    stage: Option<Rc<Stage>>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let result = match &self.stage {
            Some(stage) => stage.on_request_headers(&mut RequestView::standalone()),
            None => stage::internal_error("request before a successful configuration"),
        };
        match result {
            StageResult::Continue => Action::Continue,
            StageResult::Replied | StageResult::Paused => Action::Pause,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Natively every host call fails (meshward-host's stubs answer UNIMPLEMENTED), which is
    //! exactly the host-failure path: the adapter must fail closed, never continue or panic.
    use super::*;

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = Root::default();
        assert!(!root.on_configure(10));
        assert!(root.stage.is_none());
    }

    #[test]
    fn an_unreadable_header_map_pauses_the_request() {
        let mut filter = Request {
            stage: Some(Rc::new(Stage::new(Config::default()))),
        };
        assert_eq!(filter.on_http_request_headers(3, true), Action::Pause);
    }

    #[test]
    fn an_unconfigured_filter_pauses_the_request() {
        let mut filter = Request { stage: None };
        assert_eq!(filter.on_http_request_headers(3, true), Action::Pause);
    }
}
