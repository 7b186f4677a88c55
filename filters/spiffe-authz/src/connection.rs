//! The spiffe-authz decision for a connection: what the network filter (`spiffe-authz-tcp`,
//! filters/spiffe-authz-tcp) runs. The same core and the same pluginConfig as the HTTP filter,
//! compiled for TCP ([`Protocol::Tcp`]): only the connection's attributes exist (peer SPIFFE ID,
//! source and destination address and port, SNI), and a rule that reads an HTTP attribute is cut
//! down as istiod's TCP builder cuts it (docs/spiffe-authz.md, "TCP").
//!
//! Like Envoy's RBAC network filter, the decision is taken once, on the client's first bytes (or
//! its end of stream, if it sends none): by then the TLS handshake is over and the peer
//! certificate is known. A refused connection is closed before those bytes go anywhere: the
//! upstream that `tcp_proxy` connected sees no byte, then the close.

use meshward_host::{Counters, RequestView, StreamType};
use spiffe_authz_core::{decide, Config, Decision, Protocol};

use crate::stage::{bounded, HostFacts, HostFailure, Memos};

/// The network filter's name: its log prefix and its counters' owner.
pub const NAME: &str = "spiffe-authz-tcp";

const ALLOWED: usize = 0;
const DENIED: usize = 1;
const DRY_RUN_WOULD_DENY: usize = 2;
/// Counter of policy `i`: `spiffe_authz_tcp.policy.<name>.matched` at `POLICY_MATCHED + i`.
const POLICY_MATCHED: usize = 3;

/// Whether a connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The downstream connection was asked to close (or, failing that, stays stopped: no byte
    /// goes on either way).
    Deny,
}

/// One configured network filter: the policies compiled for TCP and their counters (per VM).
pub struct ConnectionStage {
    config: Config,
    counters: Counters,
}

/// Parse a pluginConfig for the network filter.
pub fn parse(bytes: &[u8]) -> Result<Config, meshward_common::ConfigError> {
    Config::parse_for(bytes, Protocol::Tcp)
}

impl ConnectionStage {
    /// The stage for a config compiled for TCP: defines the counters, logs what was configured
    /// and every rule istiod's TCP semantics cut down, so the operator sees it at load time.
    pub fn new(config: Config) -> Self {
        let fixed = [
            "spiffe_authz_tcp.allowed",
            "spiffe_authz_tcp.denied",
            "spiffe_authz_tcp.dry_run.would_deny",
        ]
        .map(String::from);
        let per_policy = (0..config.policy_count())
            .map(|i| format!("spiffe_authz_tcp.policy.{}.matched", config.policy_name(i)));
        let counters = Counters::define(NAME, fixed.into_iter().chain(per_policy));
        for note in config.tcp_notes() {
            log::warn!("{NAME}: {note}");
        }
        log::info!(
            "{NAME}: configured {} policies{}",
            config.policy_count(),
            if config.dry_run() { " (dry run)" } else { "" }
        );
        Self { config, counters }
    }

    /// Decide on the connection `view` reads (its properties only), count, log a refusal naming
    /// the policy, and close the connection when refused.
    pub fn on_first_data(&self, view: &mut RequestView) -> Verdict {
        // One read per connection: nothing to gain from memos kept across connections.
        match HostFacts::read(self.config.needs(), &Memos::default(), view) {
            Ok(facts) => {
                let decision = decide(&self.config, &facts);
                self.count(&decision);
                if decision.deny.is_some() {
                    log_refusal(&self.config, &decision, &facts, view);
                }
                if decision.allowed {
                    Verdict::Allow
                } else {
                    close()
                }
            }
            Err(failure) => self.host_failure(&failure),
        }
    }

    fn count(&self, decision: &Decision) {
        let counters = &self.counters;
        if let Some(i) = decision.matched_policy {
            counters.increment(POLICY_MATCHED.saturating_add(i));
        }
        for &i in &decision.audit_matched {
            counters.increment(POLICY_MATCHED.saturating_add(i));
            log::info!(
                "{NAME}: AUDIT policy `{}` matched",
                self.config.policy_name(i)
            );
        }
        if decision.dry_run_would_deny {
            counters.increment(DRY_RUN_WOULD_DENY);
        }
        counters.increment(if decision.allowed { ALLOWED } else { DENIED });
    }

    fn host_failure(&self, failure: &HostFailure) -> Verdict {
        if self.config.dry_run() {
            log::info!("{NAME}: dry run: would deny: {failure}");
            self.counters.increment(DRY_RUN_WOULD_DENY);
            self.counters.increment(ALLOWED);
            return Verdict::Allow;
        }
        log::warn!("{NAME}: denied: {failure}");
        self.counters.increment(DENIED);
        close()
    }
}

/// A connection that arrives without a configuration (Envoy does not create one then): closed.
pub fn unconfigured() -> Verdict {
    log::error!("{NAME}: denied: the filter has no configuration");
    close()
}

fn close() -> Verdict {
    if let Err(status) = meshward_host::close_stream(StreamType::Downstream) {
        // The filter still stops the bytes (StopIteration); the client gives up eventually.
        log::error!("{NAME}: cannot close the connection (host status {status}); it stays stopped");
    }
    Verdict::Deny
}

/// One line per refused connection: the policy, the peer and the source address (read here if
/// the policies did not need it: a refusal is rare, and the line is what an operator searches).
fn log_refusal(config: &Config, decision: &Decision, facts: &HostFacts, view: &mut RequestView) {
    let peer = facts
        .peer
        .as_ref()
        .filter(|_| facts.mtls)
        .map_or("none", |p| p.as_str());
    let prefix = if decision.dry_run_would_deny {
        "dry run: would have "
    } else {
        ""
    };
    let source = facts
        .source_ip
        .or_else(|| {
            let bytes = view.property(&["source", "address"]).ok()??;
            crate::stage::parse_address(std::str::from_utf8(bytes).ok()?)
        })
        .map_or_else(|| "-".to_string(), |ip| ip.to_string());
    log::info!(
        "{NAME}: {prefix}{}; peer={} source={source}",
        config.describe(decision),
        bounded(peer),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(config: &str) -> ConnectionStage {
        ConnectionStage::new(parse(config.as_bytes()).unwrap())
    }

    #[test]
    fn without_a_host_the_connection_is_refused_unless_dry_run() {
        assert_eq!(
            stage("{}").on_first_data(&mut RequestView::standalone()),
            Verdict::Deny
        );
        assert_eq!(unconfigured(), Verdict::Deny);
        assert_eq!(
            stage(r#"{"dryRun":true}"#).on_first_data(&mut RequestView::standalone()),
            Verdict::Allow
        );
    }

    #[test]
    fn the_config_is_compiled_for_tcp() {
        let config = parse(
            br#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"methods":["GET"]}}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(config.protocol(), Protocol::Tcp);
        assert!(!config.needs().method);
        assert_eq!(config.tcp_notes().len(), 1);
    }
}
