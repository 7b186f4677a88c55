//! meshward jwt-authn: a thin proxy-wasm adapter over `jwt_authn_core`.
//!
//! Per VM (= per worker thread): one [`Root`] context owns the configured [`Stage`] (the
//! compiled config with its verified-token cache and the remote-JWKS scheduler); [`Request`]
//! contexts share it through an `Rc`. The work is the [`stage`] (shared with the bundle,
//! `meshward.wasm`); this file is the standalone filter's shell: the entry point, the root
//! context (whose callbacks drive the key scheduler), the request context.
//!
//! Every host call goes through `meshward_host`, which returns host statuses as values (the SDK's
//! calls panic on statuses they do not expect), so each failure is handled and the filter fails
//! closed.

pub mod stage;

use std::rc::Rc;

use jwt_authn_core::Config;
use meshward_host::{RequestView, StageResult};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use stage::Stage;

/// Whether this build exports the standalone filter's entry point (cargo feature `standalone`,
/// on by default; the bundle turns it off and checks this, since two entry points cannot link).
pub const STANDALONE: bool = cfg!(feature = "standalone");

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
proxy_wasm::main! {{
    meshward_host::init_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(Root::new(context_id)) });
}}

// The callbacks this module handles: the request headers, and the root context's JWKS fetches
// (responses, the shared-queue wake-up, the refresh timer). scripts/build-wasm.sh drops the SDK's
// exports of the others, so that Envoy does not enter the VM for them (meshward_host::callbacks!).
#[cfg(feature = "standalone")]
meshward_host::callbacks!(
    "proxy_on_request_headers",
    "proxy_on_http_call_response",
    "proxy_on_queue_ready",
    "proxy_on_tick",
);

pub struct Root {
    stage: Option<Rc<Stage>>,
    context_id: u32,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            stage: None,
            context_id,
        }
    }
}

/// The standalone filter's decider: a parked request decided again is resumed if it may go on.
fn decide_and_resume(stage: &Stage) -> impl FnMut(u32, bool) + '_ {
    move |waiter, expired| {
        // The header map is read again: nothing has changed it while the request waited.
        let mut view = RequestView::standalone();
        if stage.decide_parked(&mut view, waiter, expired) == StageResult::Continue {
            stage::resume(waiter);
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        if let Some(stage) = &self.stage {
            stage.on_http_call_response(token_id, body_size, &mut decide_and_resume(stage));
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(config) =
            meshward_host::configure(stage::NAME, plugin_configuration_size, Config::parse)
        else {
            return false;
        };
        let Some(stage) = Stage::configure(config, self.context_id) else {
            return false;
        };
        self.stage = Some(Rc::new(stage));
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(stage) = &self.stage {
            stage.on_queue_ready(queue_id, &mut decide_and_resume(stage));
        }
    }

    fn on_tick(&mut self) {
        if let Some(stage) = &self.stage {
            stage.on_tick(&mut decide_and_resume(stage));
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            stage: self.stage.clone(),
            context_id,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub struct Request {
    stage: Option<Rc<Stage>>,
    context_id: u32,
}

impl Drop for Request {
    fn drop(&mut self) {
        // The stream is gone (answered, or reset by the client): it waits for nothing any more.
        if let Some(stage) = &self.stage {
            stage.request_gone(self.context_id);
        }
    }
}

// Requests never make callouts (see `jwt_authn_core::schedule`), so they get no callout
// responses.
impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let result = match &self.stage {
            Some(stage) => {
                stage.on_request_headers(&mut RequestView::standalone(), self.context_id)
            }
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

    const INLINE: &str = r#"{"jwtRules":[{"issuer":"https://idp.example.com",
        "jwks":"{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"alg\":\"HS256\",\"k\":\"bWVzaHdhcmQtZml4dHVyZS1obWFjLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm\"}]}"}]}"#;

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = Root::new(1);
        assert!(!root.on_configure(INLINE.len()));
        assert!(root.stage.is_none());
    }

    #[test]
    fn an_unconfigured_filter_answers_too() {
        let mut http = Request {
            stage: None,
            context_id: 2,
        };
        assert_eq!(http.on_http_request_headers(3, true), Action::Pause);
    }
}
