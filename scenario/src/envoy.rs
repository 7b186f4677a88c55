//! The Envoy target: a scenario's chain in a real Envoy 1.40 (meshward-rig), so that the very
//! file the harness runs is also checked against the proxy it models.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use meshward_rig::{
    self as envoy, Certs, Client, ClientCert, EchoUpstream, Envoy, EnvoyConfig, MtlsMode as Mode,
    WasmFilter,
};

use crate::check::Observed;
use crate::model::{Case, ChainEntry, MtlsMode, Scenario};
use crate::target::Target;

/// A running Envoy for one scenario, with its upstreams and certificates.
pub struct EnvoyTarget {
    // Field order is drop order: stop Envoy before its upstreams.
    envoy: Envoy,
    upstream: EchoUpstream,
    _clusters: Vec<EchoUpstream>,
    certs: Option<Certs>,
    client_certs: HashMap<String, ClientCert>,
    /// `listener.mtls` is set: every case goes to the listener of that mode.
    transport: bool,
    /// Read the wasm metrics after every case, not only for cases that check one (mesh files
    /// read the deciding policy from them).
    all_metrics: bool,
}

/// What Envoy runs for a scenario, before it starts: its configuration and the peers it needs.
struct Prepared {
    config: EnvoyConfig,
    upstream: EchoUpstream,
    clusters: Vec<EchoUpstream>,
    certs: Option<Certs>,
    client_certs: HashMap<String, ClientCert>,
    transport: bool,
}

impl EnvoyTarget {
    /// Start Envoy with the scenario's chain, listener settings and clusters.
    pub fn start(scenario: &Scenario, wasm_dir: &Path) -> Result<Self> {
        Self::start_with(scenario, Filters::Chain(wasm_dir))
    }

    /// Start Envoy with native HTTP filters in place of the scenario's wasm chain, and these
    /// HTTP connection manager fields (the native differential: what istiod would render); the
    /// scenario's listener settings, clusters and cases stay.
    pub fn start_native(
        scenario: &Scenario,
        filters: Vec<serde_json::Value>,
        hcm: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        Self::start_with(scenario, Filters::Native { filters, hcm })
    }

    fn start_with(scenario: &Scenario, filters: Filters<'_>) -> Result<Self> {
        let p = prepare(scenario, filters)?;
        let envoy = Envoy::start(&p.config)?;
        Ok(Self {
            envoy,
            upstream: p.upstream,
            _clusters: p.clusters,
            certs: p.certs,
            client_certs: p.client_certs,
            transport: p.transport,
            all_metrics: false,
        })
    }

    /// For a scenario whose chain must not start (`startFails`): Ok with Envoy's log when Envoy
    /// refused the configuration; an error when it started, or when Envoy itself is missing.
    pub fn expect_start_failure(scenario: &Scenario, wasm_dir: &Path) -> Result<String> {
        meshward_rig::envoy_binary()?;
        let p = prepare(scenario, Filters::Chain(wasm_dir))?;
        Ok(Envoy::validate_or_start_expect_failure(&p.config)?.log)
    }
}

/// What runs in the HTTP connection manager.
enum Filters<'a> {
    /// The scenario's wasm chain, modules looked up in this directory.
    Chain(&'a Path),
    /// Native filters and HCM fields instead.
    Native {
        filters: Vec<serde_json::Value>,
        hcm: serde_json::Map<String, serde_json::Value>,
    },
}

/// The Envoy configuration and peers for a scenario's chain, listener settings and clusters.
fn prepare(scenario: &Scenario, filters: Filters<'_>) -> Result<Prepared> {
    let base = scenario.base_dir();
    let upstream = EchoUpstream::start()?;
    let mut config = EnvoyConfig::new(upstream.addr());
    if let Some(kb) = scenario.listener.max_request_headers_kb {
        config = config.max_request_headers_kb(kb);
    }
    if let Some(n) = scenario.listener.max_headers_count {
        config = config.max_headers_count(n);
    }
    if scenario.listener.use_remote_address {
        config = config.hcm_field("use_remote_address", serde_json::Value::Bool(true));
    }
    if let Some(workers) = scenario.workers {
        config = config.concurrency(workers);
    }
    let mut clusters = Vec::new();
    for cluster in &scenario.clusters {
        if let Some(addr) = cluster.grpc_address()? {
            // A real gRPC server the scenario's runner started: an HTTP/2 cluster to it.
            config = config.grpc_cluster(&cluster.name, addr);
            continue;
        }
        let addr = match &cluster.response {
            Some(resp) => {
                let status = resp.status;
                let body = resp.body_bytes(&base)?;
                let mut headers = Vec::new();
                for h in &resp.headers {
                    headers.push((h.name.clone(), h.value()?));
                }
                let latency = cluster.latency()?;
                let server = EchoUpstream::start_with(move |_| {
                    if let Some(d) = latency {
                        std::thread::sleep(d);
                    }
                    envoy::Response {
                        status,
                        headers: headers.clone(),
                        body: body.clone(),
                    }
                })?;
                let addr = server.addr();
                clusters.push(server);
                addr
            }
            None => dead_address()?,
        };
        config = config.cluster(&cluster.name, addr);
    }
    match filters {
        Filters::Chain(wasm_dir) => {
            for entry in &scenario.chain {
                config = config.filter(wasm_filter(entry, &base, wasm_dir)?);
            }
        }
        Filters::Native { filters, hcm } => {
            for f in filters {
                config = config.filter(envoy::HttpFilter::Raw(f));
            }
            for (k, v) in hcm {
                config = config.hcm_field(&k, v);
            }
        }
    }
    let mtls = scenario.listener.mtls;
    let needs_tls = scenario.cases.iter().any(|c| c.request.tls.is_some());
    let certs = if needs_tls || mtls.is_some() {
        Some(Certs::generate()?)
    } else {
        None
    };
    // A fixed port goes to the listener the cases use: the one of the mTLS mode when set, else
    // the TLS one when any case uses TLS.
    let port = scenario.listener.port;
    match (mtls, &certs) {
        (Some(mode), Some(certs)) => {
            config = config.transport(rig_mode(mode), certs, port.unwrap_or(0));
        }
        (Some(_), None) => anyhow::bail!("`listener.mtls` needs certificates"),
        (None, Some(certs)) => config = config.tls(certs, port.unwrap_or(0)),
        (None, None) => {
            if let Some(port) = port {
                config = config.plaintext_port(port);
            }
        }
    }
    let mut client_certs = HashMap::new();
    if let Some(certs) = &certs {
        for case in &scenario.cases {
            if let Some(peer) = case.request.tls.as_ref().and_then(|t| t.peer.as_ref()) {
                if !client_certs.contains_key(peer) {
                    client_certs.insert(
                        peer.clone(),
                        certs.client_cert(&[peer.as_str()], "meshward-client")?,
                    );
                }
            }
        }
    }
    Ok(Prepared {
        config,
        upstream,
        clusters,
        certs,
        client_certs,
        transport: mtls.is_some(),
    })
}

impl EnvoyTarget {
    /// Observe every wasm metric after every case (an admin request per case).
    pub fn with_all_metrics(mut self) -> Self {
        self.all_metrics = true;
        self
    }

    pub fn envoy(&self) -> &Envoy {
        &self.envoy
    }
}

impl Target for EnvoyTarget {
    /// Send one case's request and observe what the client and the upstream saw.
    fn run_case(&self, case: &Case) -> Result<Observed> {
        if let Some(step) = case.advance()? {
            // Envoy's clock is the wall clock: let the time really pass.
            std::thread::sleep(step);
        }
        let spec = &case.request;
        let mut request = envoy::Request::new(&spec.method, spec.path.as_bytes())
            .authority(Some(&spec.authority));
        for h in &spec.headers {
            request = request.header(h.name.as_bytes(), h.value()?.as_bytes());
        }
        if let Some(body) = &spec.body {
            request = request.body(body.as_bytes());
        }
        let mut client = self.client(case)?;
        if let Some(ip) = spec.source {
            client = client.source_ip(ip);
        }
        let mut response = None;
        let mut reached = false;
        for _ in 0..case.repeat.unwrap_or(1) {
            let before = self.upstream.received().len();
            response = Some(
                client
                    .send_or_refused(&request)
                    .with_context(|| format!("case `{}`", case.name))?,
            );
            reached = self.upstream.received().len() > before;
        }
        // A refused connection is an observation (no HTTP response), not an error.
        let (refused, response) = match response.context("repeat: 0")? {
            Ok(response) => (false, response),
            Err(_) => (true, envoy::Response::default()),
        };
        let upstream_headers = if reached {
            self.upstream
                .received()
                .last()
                .map(|h| h.headers.clone())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let metrics = if case.expect.metrics.is_empty() && !self.all_metrics {
            BTreeMap::new()
        } else {
            self.envoy
                .wasm_metrics()?
                .into_iter()
                .map(|(k, v)| (k, i64::try_from(v).unwrap_or(i64::MAX)))
                .collect()
        };
        Ok(Observed {
            refused,
            status: response.status,
            reached_upstream: reached,
            upstream_headers,
            response_headers: response.headers.clone(),
            body: response.body.clone(),
            metrics,
        })
    }
}

impl EnvoyTarget {
    /// The client of a case: plaintext or TLS (with the case's client certificate), to the
    /// listener of the mTLS mode when the scenario sets one, else to the plaintext or TLS one.
    fn client(&self, case: &Case) -> Result<Client> {
        let tls = match &case.request.tls {
            None => None,
            Some(tls) => {
                let certs = self
                    .certs
                    .as_ref()
                    .context("TLS case without certificates")?;
                let cert = tls.peer.as_ref().and_then(|p| self.client_certs.get(p));
                Some((certs, cert))
            }
        };
        if self.transport {
            let addr = self
                .envoy
                .transport_addr()
                .context("Envoy has no listener for `listener.mtls`")?;
            return match tls {
                None => Ok(Client::plaintext(addr)),
                Some((certs, cert)) => Client::tls(addr, certs, cert),
            };
        }
        match tls {
            None => Ok(self.envoy.client()),
            Some((certs, cert)) => self.envoy.tls_client(certs, cert),
        }
    }
}

/// The rig's listener for a scenario's `listener.mtls`.
fn rig_mode(mode: MtlsMode) -> Mode {
    match mode {
        MtlsMode::Strict => Mode::Strict,
        MtlsMode::Permissive => Mode::Permissive,
        MtlsMode::Disable => Mode::Disable,
    }
}

/// An address nothing listens on (a port bound and released at once).
fn dead_address() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// One chain entry as the wasm filter Envoy loads (HTTP here, network in [`crate::tcp`]).
pub(crate) fn wasm_filter(entry: &ChainEntry, base: &Path, wasm_dir: &Path) -> Result<WasmFilter> {
    let module = entry.module_path(base, wasm_dir);
    let configuration = String::from_utf8(entry.config_bytes(base)?)
        .context("pluginConfig must be UTF-8 for Envoy's StringValue")?;
    let mut filter = WasmFilter::new(&entry.plugin_name(), &module, &configuration)
        .root_id(&entry.root_id())
        .vm_id(&entry.vm_id())
        .fail_open(entry.fail_open);
    if let Some(bytes) = entry.vm_config_bytes()? {
        let vm_configuration =
            String::from_utf8(bytes).context("vmConfig must be UTF-8 for Envoy's StringValue")?;
        filter = filter.vm_configuration(&vm_configuration);
    }
    if let Some(policy) = entry.failure_policy {
        filter = filter.failure_policy(policy.envoy_name());
    }
    if let Some(backoff) = entry.reload_backoff()? {
        filter = filter.reload_backoff_ms(backoff.as_millis().try_into().unwrap_or(u64::MAX));
    }
    Ok(filter)
}
