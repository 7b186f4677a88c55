//! The harness target: a scenario's chain in meshward-harness (virtual clock, modelled clusters),
//! and the translation of scenario requests and outcomes to and from the harness's types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use meshward_harness::{
    CalloutResponse, ClockMode, Cluster, DownstreamTransport, FailStrategy, FilterSpec, Host,
    ListenerSettings, Outcome, Request, Tls, Verdict,
};

use crate::check::Observed;
use crate::model::{Case, ChainEntry, FailurePolicy, MtlsMode, RequestSpec, Scenario};
use crate::target::Target;

/// A scenario's chain in the harness: one host for every case, in order.
pub struct HarnessTarget {
    host: Host,
}

impl HarnessTarget {
    /// Build the host the scenario describes.
    pub fn start(scenario: &Scenario, wasm_dir: &Path) -> Result<Self> {
        Ok(Self {
            host: build_host(scenario, wasm_dir)?,
        })
    }

    /// The host, e.g. to read its logs after the cases.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

impl Target for HarnessTarget {
    fn run_case(&self, case: &Case) -> Result<Observed> {
        run_case(&self.host, case)
    }
}

/// Build the harness host a scenario describes.
pub fn build_host(scenario: &Scenario, wasm_dir: &Path) -> Result<Host> {
    let base = scenario.base_dir();
    let mut listener = ListenerSettings::default();
    if let Some(kb) = scenario.listener.max_request_headers_kb {
        listener.max_request_headers_kb = kb;
    }
    if let Some(n) = scenario.listener.max_headers_count {
        listener.max_headers_count = n;
    }
    if let Some(port) = scenario.listener.port {
        listener.port = port;
    }
    listener.use_remote_address = scenario.listener.use_remote_address;
    listener.transport = transport(scenario.listener.mtls);
    let mut builder = Host::builder().listener(listener);
    if let Some(n) = scenario.workers {
        builder = builder.workers(n as usize);
    }
    if let Some(clock) = scenario.clock {
        builder = builder.clock(ClockMode::VirtualFrom(
            clock.start.saturating_mul(1_000_000_000),
        ));
    }
    for cluster in &scenario.clusters {
        let cluster_spec = cluster;
        let c = match &cluster.response {
            Some(resp) => {
                let mut answer = CalloutResponse::new(resp.status, resp.body_bytes(&base)?);
                for h in &resp.headers {
                    answer = answer.header(&h.name, &h.value()?);
                }
                let cluster = Cluster::respond(answer);
                match cluster_spec.latency()? {
                    Some(d) => cluster.latency(d),
                    None => cluster,
                }
            }
            None => match cluster_spec.grpc_address()? {
                // A real gRPC server: the harness's gRPC client talks to it as Envoy would.
                Some(address) => Cluster::grpc(address),
                None => Cluster::dead(),
            },
        };
        builder = builder.cluster(&cluster.name, c);
    }
    for entry in &scenario.chain {
        let spec = filter_spec(entry, &base, wasm_dir)?;
        builder = builder.filter(spec);
    }
    Ok(builder.build()?)
}

/// A chain entry as the harness runs it: its module, plugin name, root id, the Envoy run's vm_id
/// (`vmId`, else the plugin name, as meshward-rig configures it, so that `plugin_vm_id`, shared
/// data and queue lookups by vm_id agree), config and fail strategy. HTTP and TCP chains alike.
pub(crate) fn filter_spec(entry: &ChainEntry, base: &Path, wasm_dir: &Path) -> Result<FilterSpec> {
    let module = entry.module_path(base, wasm_dir);
    Ok(FilterSpec::from_file(&module)
        .with_context(|| {
            format!(
                "loading {} (build it with scripts/build-wasm.sh)",
                module.display()
            )
        })?
        .name(&entry.plugin_name())
        .root_id(&entry.root_id())
        .vm_id(&entry.vm_id())
        .config(entry.config_bytes(base)?)
        .vm_config(entry.vm_config_bytes()?.unwrap_or_default())
        .fail_strategy(fail_strategy(entry)?))
}

/// The chain entry's `failOpen` / `failurePolicy` (`reloadBackoff`: Envoy's default 1 s).
fn fail_strategy(entry: &ChainEntry) -> Result<FailStrategy> {
    Ok(match entry.failure_policy {
        None if entry.fail_open => FailStrategy::FailOpen,
        None | Some(FailurePolicy::FailClosed) => FailStrategy::FailClosed,
        Some(FailurePolicy::FailOpen) => FailStrategy::FailOpenAfterTrap,
        Some(FailurePolicy::FailReload) => FailStrategy::Reload {
            backoff: entry
                .reload_backoff()?
                .unwrap_or(std::time::Duration::from_secs(1)),
        },
    })
}

/// The harness listener's transport for a scenario's `listener.mtls`.
pub fn transport(mtls: Option<MtlsMode>) -> DownstreamTransport {
    match mtls {
        None => DownstreamTransport::Any,
        Some(MtlsMode::Strict) => DownstreamTransport::MutualTls,
        Some(MtlsMode::Permissive) => DownstreamTransport::Permissive,
        Some(MtlsMode::Disable) => DownstreamTransport::Plaintext,
    }
}

/// Turn a scenario request into a harness request.
pub fn to_request(spec: &RequestSpec) -> Result<Request> {
    let mut req = Request::new(&spec.method, &spec.path).authority(&spec.authority);
    for h in &spec.headers {
        req = req.header(&h.name, &h.value()?);
    }
    if let Some(body) = &spec.body {
        req = req.body(body.as_bytes().to_vec());
    }
    if let Some(tls) = &spec.tls {
        req = req.tls(match &tls.peer {
            // The Envoy run's client certificate has this subject (scenario/src/envoy.rs).
            Some(uri) => Tls {
                peer_subject: Some("CN=meshward-client".to_string()),
                ..Tls::peer(uri)
            },
            None => Tls::server_only(),
        });
    }
    if let Some(ip) = spec.source {
        // Envoy sees an ephemeral client port; the harness picks a fixed one.
        req = req.source(SocketAddr::new(ip, 40000));
    }
    Ok(req)
}

/// What the client and the upstream saw, in the scenario checker's terms.
pub fn observe(outcome: &Outcome, metrics: BTreeMap<String, i64>) -> Observed {
    Observed {
        refused: matches!(outcome.verdict, Verdict::Refused { .. }),
        status: outcome.response.status,
        reached_upstream: outcome.reached_upstream(),
        upstream_headers: outcome
            .upstream_request
            .as_ref()
            .map(|r| r.headers.clone())
            .unwrap_or_default(),
        response_headers: outcome.response.headers.clone(),
        body: outcome.response.body.clone(),
        metrics,
    }
}

fn run_case(host: &Host, case: &Case) -> Result<Observed> {
    let req = to_request(&case.request).with_context(|| format!("case `{}`", case.name))?;
    if let Some(step) = case.advance()? {
        host.advance(step);
    }
    let mut outcome = host.send(&req);
    for _ in 1..case.repeat.unwrap_or(1) {
        outcome = host.send(&req);
    }
    let metrics = host
        .metrics()
        .into_iter()
        .map(|m| (m.name, m.value))
        .collect();
    Ok(observe(&outcome, metrics))
}
