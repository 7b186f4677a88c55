//! meshward spiffe-authz: a thin proxy-wasm adapter over `spiffe_authz_core`.
//!
//! Per request it reads only what the compiled policies need from the host, asks the core for a
//! decision, counts it, and answers locally or lets the request go on. The work is the [`stage`]
//! (shared with the bundle, `meshward.wasm`); this file is the standalone filter's shell: the
//! entry point, the root context, the request context.
//!
//! Every host call goes through `meshward_host`, which returns statuses as values: the SDK's own
//! wrappers `panic!` on statuses they do not expect, and a panic in an authorization filter either
//! 503s every later request or, with `fail_open`, skips the filter.

pub mod connection;
pub mod stage;

use std::rc::Rc;

use meshward_host::{RequestView, StageResult};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use spiffe_authz_core::Config;

use stage::Stage;

/// Whether this build exports the standalone filter's entry point (cargo feature `standalone`,
/// on by default; the bundle turns it off and checks this, since two entry points cannot link).
pub const STANDALONE: bool = cfg!(feature = "standalone");

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
proxy_wasm::main! {{
    meshward_host::init_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

// The callbacks this module handles: the request headers; nothing after them. scripts/build-wasm.sh
// drops the SDK's exports of the others, so that Envoy does not enter the VM for them
// (meshward_host::callbacks!).
#[cfg(feature = "standalone")]
meshward_host::callbacks!("proxy_on_request_headers");

/// The root context: the configured stage, shared by the request contexts of this VM.
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
    /// `None` only if the host created a request context without a successful configure: every
    /// request is then denied.
    stage: Option<Rc<Stage>>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let result = match &self.stage {
            Some(stage) => stage.on_request_headers(&mut RequestView::standalone()),
            None => stage::unconfigured(),
        };
        match result {
            StageResult::Continue => Action::Continue,
            StageResult::Replied | StageResult::Paused => Action::Pause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = Root::default();
        assert!(!root.on_configure(2));
        assert!(root.stage.is_none());
    }

    #[test]
    fn a_failed_host_read_pauses_the_request_unless_dry_run() {
        let request = |config: &str| Request {
            stage: Some(Rc::new(Stage::new(
                Config::parse(config.as_bytes()).unwrap(),
            ))),
        };
        assert_eq!(
            request("{}").on_http_request_headers(3, true),
            Action::Pause
        );
        let mut unconfigured = Request { stage: None };
        assert_eq!(unconfigured.on_http_request_headers(3, true), Action::Pause);
        let mut dry = request(r#"{"dryRun":true}"#);
        assert_eq!(dry.on_http_request_headers(3, true), Action::Continue);
    }
}
