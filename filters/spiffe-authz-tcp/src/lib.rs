//! meshward spiffe-authz-tcp: spiffe-authz as a network filter (`type: NETWORK` in a WasmPlugin,
//! `envoy.filters.network.wasm` in Envoy), for TCP services behind the sidecar.
//!
//! The same pluginConfig and the same core as the HTTP filter, compiled for TCP; the decision is
//! [`spiffe_authz::connection`]'s. This file is the module's shell: the entry point, the root
//! context and the per-connection context. A second module rather than a second root in
//! `spiffe_authz.wasm`: one module is one filter type, so a WasmPlugin cannot load the HTTP
//! filter as a network filter by mistake (the SDK would then panic on the first callback).

use std::rc::Rc;

use meshward_host::RequestView;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType};
use spiffe_authz::connection::{self, ConnectionStage, Verdict};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    meshward_host::init_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

// The callbacks this module handles: the first downstream bytes (the decision is taken there).
// scripts/build-wasm.sh drops the SDK's exports of the others, so that Envoy does not enter the VM
// for them (meshward_host::callbacks!).
meshward_host::callbacks!("proxy_on_downstream_data");

// spiffe-authz's own entry point must not come along (see Cargo.toml).
const _: () = assert!(!spiffe_authz::STANDALONE || !cfg!(target_arch = "wasm32"));

/// The root context: the configured stage, shared by the connections of this VM.
#[derive(Default)]
pub struct Root {
    stage: Option<Rc<ConnectionStage>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(config) = meshward_host::configure(
            connection::NAME,
            plugin_configuration_size,
            connection::parse,
        ) else {
            return false;
        };
        self.stage = Some(Rc::new(ConnectionStage::new(config)));
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Connection {
            stage: self.stage.clone(),
            verdict: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

/// The per-connection context: decides once, on the client's first bytes.
pub struct Connection {
    /// `None` only if the host created a connection without a successful configure: every
    /// connection is then closed.
    stage: Option<Rc<ConnectionStage>>,
    verdict: Option<Verdict>,
}

impl Context for Connection {}

impl StreamContext for Connection {
    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        let stage = &self.stage;
        let verdict = *self.verdict.get_or_insert_with(|| match stage {
            Some(stage) => stage.on_first_data(&mut RequestView::standalone()),
            None => connection::unconfigured(),
        });
        match verdict {
            Verdict::Allow => Action::Continue,
            // Held, never forwarded: the connection is closing.
            Verdict::Deny => Action::Pause,
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
    fn the_verdict_is_taken_once_and_a_refusal_holds_every_later_read() {
        let mut unconfigured = Connection {
            stage: None,
            verdict: None,
        };
        assert_eq!(unconfigured.on_downstream_data(3, false), Action::Pause);
        assert_eq!(unconfigured.verdict, Some(Verdict::Deny));
        assert_eq!(unconfigured.on_downstream_data(3, false), Action::Pause);
        let config = connection::parse(br#"{"dryRun":true}"#).unwrap();
        let mut dry = Connection {
            stage: Some(Rc::new(ConnectionStage::new(config))),
            verdict: None,
        };
        assert_eq!(dry.on_downstream_data(0, true), Action::Continue);
    }
}
