//! The four TCP configurations: each an mTLS `tcp_proxy` listener to the echo upstream, with no
//! filter, a no-op wasm network filter, spiffe-authz-tcp with `tcp-10.json`, or the network RBAC
//! filters istiod would render for the same policies.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use meshward_rig::{tcp_listener_with, Certs, TcpTransport, WasmFilter};

/// The policies, relative to the repository.
pub const POLICY: &str = "policies/spiffe-authz/tcp-10.json";
/// A SPIFFE ID `tcp-10.json` denies (policy `deny-blocked-sources`): the sanity checks' refused
/// client.
pub const DENIED_SPIFFE_ID: &str = "spiffe://cluster.local/ns/legacy/sa/batch-exporter";
/// The rig's one cluster, to the echo upstream.
const CLUSTER: &str = "upstream";

/// One measured configuration: a listener and what is in front of its `tcp_proxy`.
pub struct TcpSetup {
    pub name: &'static str,
    /// Envoy listener `bench-<listener>`.
    pub listener: &'static str,
    /// `floor`, `meshward` or `native`.
    pub side: &'static str,
    /// Network filters before `tcp_proxy` (Envoy JSON).
    pub filters: Vec<Value>,
    /// The wasm modules among them.
    pub modules: Vec<PathBuf>,
}

impl TcpSetup {
    /// The Envoy listener (its name starts with `bench-`). TLS with the rig's certificates and
    /// a `tls_inspector`; a client certificate is asked for and verified, not required, so that
    /// a client without one reaches the filters (the listener-level requirement would otherwise
    /// refuse it before spiffe-authz-tcp's `requireMtls` could).
    pub fn listener_json(&self, certs: &Certs) -> Result<Value> {
        tcp_listener_with(
            &format!("bench-{}", self.listener),
            self.filters.clone(),
            CLUSTER,
            TcpTransport::Tls,
            Some(certs),
            0,
        )
    }
}

fn module(wasm_dir: &Path, file: &str) -> Result<PathBuf> {
    let path = wasm_dir.join(file);
    if !path.is_file() {
        return Err(anyhow!(
            "{} is missing: run scripts/build-wasm.sh (or pass --wasm-dir)",
            path.display()
        ));
    }
    Ok(path)
}

fn wasm(listener: &str, name: &str, module: &Path, config: &str) -> Result<Value> {
    // One VM per listener.
    WasmFilter::new(name, module, config)
        .vm_id(&format!("{listener}.{name}"))
        .to_network_json()
}

/// The four configurations, in table order.
pub fn plan(wasm_dir: &Path, repo: &Path) -> Result<Vec<TcpSetup>> {
    let policy_path = repo.join(POLICY);
    let policy = std::fs::read_to_string(&policy_path)
        .with_context(|| format!("reading {}", policy_path.display()))?;
    let raw: spiffe_authz_core::RawConfig =
        serde_json::from_str(&policy).with_context(|| format!("parsing {POLICY}"))?;
    let native = meshward_mesh::network_rbac_filters(&raw)
        .with_context(|| format!("rendering {POLICY} as network RBAC"))?;
    let noop = module(wasm_dir, "meshward_test_sdk_network.wasm")?;
    let authz = module(wasm_dir, "spiffe_authz_tcp.wasm")?;
    Ok(vec![
        TcpSetup {
            name: "tcp_proxy only",
            listener: "tcp-proxy",
            side: "floor",
            filters: Vec::new(),
            modules: Vec::new(),
        },
        TcpSetup {
            name: "no-op network wasm",
            listener: "noop",
            side: "floor",
            // An empty configuration: no option of sdk-network's changes a byte (it still counts
            // its callbacks in metrics).
            filters: vec![wasm("noop", "sdk-network", &noop, "")?],
            modules: vec![noop],
        },
        TcpSetup {
            name: "spiffe-authz-tcp (tcp-10.json)",
            listener: "spiffe-authz-tcp",
            side: "meshward",
            filters: vec![wasm(
                "spiffe-authz-tcp",
                "spiffe-authz-tcp",
                &authz,
                &policy,
            )?],
            modules: vec![authz],
        },
        TcpSetup {
            name: "network RBAC (tcp-10 as istiod renders it)",
            listener: "network-rbac",
            side: "native",
            filters: native,
            modules: Vec::new(),
        },
    ])
}
