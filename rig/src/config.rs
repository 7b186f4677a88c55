//! Envoy bootstrap generation. One [`EnvoyConfig`] describes the listeners (a plaintext one,
//! optionally a TLS one that asks for, but does not require, a client certificate, and optionally
//! one shaped as an Istio sidecar's for an mTLS mode: [`MtlsMode`]), the HTTP connection manager
//! settings they all share, the HTTP filter chain (wasm filters and raw native
//! filters, then the router) and the clusters (`upstream` plus any named extras, HTTP/1 or, for
//! gRPC servers, HTTP/2).
//!
//! Listener ports default to 0: Envoy binds an ephemeral port and [`crate::Envoy`] reads the real
//! one from the admin endpoint, so there is no pick-then-bind race between parallel tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::certs::Certs;

/// Listener names (and `stat_prefix`es) in every generated bootstrap.
pub const PLAINTEXT_LISTENER: &str = "plaintext";
pub const TLS_LISTENER: &str = "tls";
/// The listener of [`EnvoyConfig::transport`].
pub const TRANSPORT_LISTENER: &str = "transport";
/// The cluster every route points at.
pub const UPSTREAM_CLUSTER: &str = "upstream";

/// A proxy-wasm filter (`envoy.filters.http.wasm`, runtime V8, code from a local file).
#[derive(Debug, Clone)]
pub struct WasmFilter {
    /// Plugin name (`plugin_name`) and, unless set, root_id and vm_id.
    pub name: String,
    pub root_id: Option<String>,
    /// Plugins with the same vm_id and code share a VM (and shared data). Default: the name.
    pub vm_id: Option<String>,
    pub wasm: PathBuf,
    /// The plugin configuration, passed as a `google.protobuf.StringValue` (usually JSON).
    pub configuration: String,
    pub fail_open: bool,
    /// `vm_config.environment_variables.key_values`: what the module's WASI `environ_get` sees.
    pub env: Vec<(String, String)>,
    /// `vm_config.configuration` (a `google.protobuf.StringValue`): what `on_vm_start` may read.
    /// Part of the VM's key: plugins share a VM only if vm_id, code and this are all equal.
    /// `None`: the field is left out (an empty VM configuration).
    pub vm_configuration: Option<String>,
    /// `failure_policy` (Envoy's `FailurePolicy` enum name: `FAIL_CLOSED`, `FAIL_OPEN`,
    /// `FAIL_RELOAD`). `None`: the field is left out (Envoy's default, fail closed). Envoy refuses
    /// it together with `fail_open: true`.
    pub failure_policy: Option<String>,
    /// `reload_config.backoff.base_interval` in milliseconds (with `FAIL_RELOAD`; Envoy's
    /// default 1000): a failed VM is replaced only once this long (jittered up by as much as
    /// half) has passed since the thread's VM was last loaded.
    pub reload_backoff_ms: Option<u64>,
}

impl WasmFilter {
    pub fn new(name: &str, wasm: impl AsRef<Path>, configuration: &str) -> Self {
        Self {
            name: name.to_string(),
            root_id: None,
            vm_id: None,
            wasm: wasm.as_ref().to_path_buf(),
            configuration: configuration.to_string(),
            fail_open: false,
            env: Vec::new(),
            vm_configuration: None,
            failure_policy: None,
            reload_backoff_ms: None,
        }
    }

    /// Sets `vm_config.configuration` (the VM configuration `on_vm_start` reads).
    pub fn vm_configuration(mut self, configuration: &str) -> Self {
        self.vm_configuration = Some(configuration.to_string());
        self
    }

    /// Sets `failure_policy` (`FAIL_CLOSED`, `FAIL_OPEN`, `FAIL_RELOAD`).
    pub fn failure_policy(mut self, policy: &str) -> Self {
        self.failure_policy = Some(policy.to_string());
        self
    }

    /// Sets `reload_config.backoff.base_interval` (milliseconds) for `FAIL_RELOAD`.
    pub fn reload_backoff_ms(mut self, ms: u64) -> Self {
        self.reload_backoff_ms = Some(ms);
        self
    }

    /// Adds an environment variable to the VM (`vm_config.environment_variables.key_values`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn root_id(mut self, root_id: &str) -> Self {
        self.root_id = Some(root_id.to_string());
        self
    }

    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = Some(vm_id.to_string());
        self
    }

    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// The filter as a network filter (`envoy.filters.network.wasm`) of a listener's chain.
    pub fn to_network_json(&self) -> Result<Value> {
        let mut v = self.to_json()?;
        v["typed_config"]["@type"] =
            json!("type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm");
        Ok(v)
    }

    /// The filter as an entry of the HCM's `http_filters` (also for listeners a caller writes
    /// itself, as `meshward bench envoy` does).
    pub fn to_json(&self) -> Result<Value> {
        // Envoy resolves a relative code path against its own working directory: pin it.
        let wasm = std::path::absolute(&self.wasm)
            .with_context(|| format!("resolving {}", self.wasm.display()))?;
        let mut vm_config = json!({
            "vm_id": self.vm_id.as_deref().unwrap_or(&self.name),
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": wasm}},
        });
        if !self.env.is_empty() {
            let key_values: serde_json::Map<String, Value> = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            vm_config["environment_variables"] = json!({"key_values": key_values});
        }
        if let Some(configuration) = &self.vm_configuration {
            vm_config["configuration"] = json!({
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": configuration,
            });
        }
        let mut config = json!({
            "name": self.name,
            "root_id": self.root_id.as_deref().unwrap_or(&self.name),
            "vm_config": vm_config,
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": self.configuration,
            },
            "fail_open": self.fail_open,
        });
        if let Some(policy) = &self.failure_policy {
            config["failure_policy"] = json!(policy);
        }
        if let Some(ms) = self.reload_backoff_ms {
            config["reload_config"] =
                json!({"backoff": {"base_interval": format!("{}s", ms as f64 / 1000.0)}});
        }
        Ok(json!({
            "name": format!("wasm.{}", self.name),
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": config,
            }
        }))
    }
}

/// One entry of the HCM's `http_filters`, before the router.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    Wasm(WasmFilter),
    /// A native filter as Envoy's JSON (`{"name":…,"typed_config":{…}}`).
    Raw(Value),
}

impl HttpFilter {
    /// A native filter from YAML (e.g. an RBAC or local_ratelimit filter for benchmarks).
    pub fn raw_yaml(yaml: &str) -> Result<Self> {
        let value: Value = serde_yaml_ng::from_str(yaml).context("parsing a raw filter's YAML")?;
        Ok(Self::Raw(value))
    }
}

impl From<WasmFilter> for HttpFilter {
    fn from(filter: WasmFilter) -> Self {
        Self::Wasm(filter)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TlsListener {
    port: u16,
    cert_chain: PathBuf,
    private_key: PathBuf,
    ca: PathBuf,
}

impl TlsListener {
    pub(crate) fn new(certs: &Certs, port: u16) -> Self {
        Self {
            port,
            cert_chain: certs.server_cert_pem().clone(),
            private_key: certs.server_key_pem().clone(),
            ca: certs.ca_pem().clone(),
        }
    }

    /// The listener's `DownstreamTlsContext` (server certificate, client certificates verified
    /// against the rig's CA; `require_client_certificate` as given).
    pub(crate) fn transport_socket(&self, require_client_certificate: bool) -> Value {
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": require_client_certificate,
                "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"filename": self.cert_chain},
                        "private_key": {"filename": self.private_key},
                    }],
                    "validation_context": {"trusted_ca": {"filename": self.ca}},
                }
            }
        })
    }
}

/// A listener's mTLS mode, as Istio's PeerAuthentication sets it and its sidecar listener carries
/// it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    /// One filter chain with TLS that requires a client certificate.
    Strict,
    /// The `tls_inspector` and two filter chains: TLS (a client certificate required) and
    /// plaintext (`raw_buffer`), with the same HTTP connection manager.
    Permissive,
    /// One plaintext filter chain.
    Disable,
}

#[derive(Debug, Clone)]
struct TransportListener {
    mode: MtlsMode,
    /// `None`: an ephemeral port on 127.0.0.1.
    fixed: Option<SocketAddr>,
    tls: TlsListener,
}

/// What to put in a bootstrap. Build with [`EnvoyConfig::new`] and the setters.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    upstream: SocketAddr,
    /// Extra clusters: name, endpoint, whether it speaks HTTP/2 (a gRPC server).
    clusters: Vec<(String, SocketAddr, bool)>,
    filters: Vec<HttpFilter>,
    max_request_headers_kb: Option<u32>,
    max_headers_count: Option<u32>,
    plaintext_port: u16,
    tls: Option<TlsListener>,
    hcm_overrides: Map<String, Value>,
    concurrency: u32,
    component_log_levels: String,
    extra_listeners: Vec<Value>,
    transport: Option<TransportListener>,
}

impl EnvoyConfig {
    /// Router only, plaintext listener on an ephemeral port, `upstream` → `upstream_addr`,
    /// Envoy's default HCM limits, one worker thread, wasm logs at debug.
    pub fn new(upstream_addr: SocketAddr) -> Self {
        Self {
            upstream: upstream_addr,
            clusters: Vec::new(),
            filters: Vec::new(),
            max_request_headers_kb: None,
            max_headers_count: None,
            plaintext_port: 0,
            tls: None,
            hcm_overrides: Map::new(),
            concurrency: 1,
            component_log_levels: "wasm:debug".to_string(),
            extra_listeners: Vec::new(),
            transport: None,
        }
    }

    /// Appends an HTTP filter (request order = insertion order; the router comes last).
    pub fn filter(mut self, filter: impl Into<HttpFilter>) -> Self {
        self.filters.push(filter.into());
        self
    }

    /// Adds a STATIC cluster (e.g. a JWKS server reached by `dispatch_http_call`).
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.to_string(), addr, false));
        self
    }

    /// Adds a STATIC cluster that speaks plaintext HTTP/2 to its endpoint (a gRPC server reached
    /// by `dispatch_grpc_call` / `open_grpc_stream`): `typed_extension_protocol_options` with
    /// `explicit_http_config.http2_protocol_options`.
    pub fn grpc_cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.to_string(), addr, true));
        self
    }

    /// HCM `max_request_headers_kb` (Envoy's default: 60).
    pub fn max_request_headers_kb(mut self, kb: u32) -> Self {
        self.max_request_headers_kb = Some(kb);
        self
    }

    /// HCM `common_http_protocol_options.max_headers_count` (Envoy's default: 100).
    pub fn max_headers_count(mut self, count: u32) -> Self {
        self.max_headers_count = Some(count);
        self
    }

    /// A fixed plaintext listener port (0 = ephemeral, the default).
    pub fn plaintext_port(mut self, port: u16) -> Self {
        self.plaintext_port = port;
        self
    }

    /// Adds the TLS listener (server cert from `certs`, client certs verified against its CA but
    /// optional, so "TLS without a client certificate" reaches the filters). Port 0 = ephemeral.
    pub fn tls(mut self, certs: &Certs, port: u16) -> Self {
        self.tls = Some(TlsListener::new(certs, port));
        self
    }

    /// Adds the listener of an Istio mTLS `mode` ([`crate::Envoy::transport_addr`]), beside the
    /// plaintext one, with the same HTTP filters. `certs` gives the server certificate and the CA
    /// client certificates must chain to (unused by [`MtlsMode::Disable`]).
    ///
    /// Port 0 = ephemeral on 127.0.0.1. A fixed port (for policies on `destination.port`) is bound
    /// on a random loopback address 127.x.y.z instead (drawn here, once per call), so that tests
    /// running in parallel with the same port do not collide; the rig's clients connect there.
    pub fn transport(mut self, mode: MtlsMode, certs: &Certs, port: u16) -> Self {
        self.transport = Some(TransportListener {
            mode,
            fixed: (port != 0).then(|| SocketAddr::new(random_loopback().into(), port)),
            tls: TlsListener::new(certs, port),
        });
        self
    }

    /// Sets a top-level field of the HttpConnectionManager (e.g. `normalize_path`,
    /// `merge_slashes`, `path_with_escaped_slashes_action`), overriding the generated one.
    pub fn hcm_field(mut self, field: &str, value: Value) -> Self {
        self.hcm_overrides.insert(field.to_string(), value);
        self
    }

    /// Worker threads (`--concurrency`; default 1).
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// `--component-log-level` (default `wasm:debug`, so filter logs at debug reach the log).
    pub fn component_log_levels(mut self, levels: &str) -> Self {
        self.component_log_levels = levels.to_string();
        self
    }

    /// Appends a listener given as Envoy's JSON (a `Listener`), beside the generated ones (e.g. the
    /// benchmark rig's one listener per configuration). Give it a unique `name`.
    pub fn raw_listener(mut self, listener: Value) -> Self {
        self.extra_listeners.push(listener);
        self
    }

    pub(crate) fn concurrency_arg(&self) -> u32 {
        self.concurrency
    }

    pub(crate) fn component_log_levels_arg(&self) -> &str {
        &self.component_log_levels
    }

    pub(crate) fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(crate) fn has_transport(&self) -> bool {
        self.transport.is_some()
    }

    /// The bootstrap as JSON (admin on 127.0.0.1:0).
    pub fn bootstrap(&self) -> Result<Value> {
        let mut listeners = vec![listener(
            PLAINTEXT_LISTENER,
            self.plaintext_port,
            self.hcm(PLAINTEXT_LISTENER)?,
            None,
        )];
        if let Some(tls) = &self.tls {
            listeners.push(listener(
                TLS_LISTENER,
                tls.port,
                self.hcm(TLS_LISTENER)?,
                Some(tls.transport_socket(false)),
            ));
        }
        if let Some(transport) = &self.transport {
            listeners.push(self.transport_listener(transport)?);
        }
        listeners.extend(self.extra_listeners.iter().cloned());
        let mut clusters = vec![cluster(UPSTREAM_CLUSTER, self.upstream, false)];
        clusters.extend(
            self.clusters
                .iter()
                .map(|(name, addr, http2)| cluster(name, *addr, *http2)),
        );
        Ok(json!({
            "admin": {"address": socket_address(0)},
            "static_resources": {"listeners": listeners, "clusters": clusters},
        }))
    }

    /// The listener of an mTLS mode, shaped as Istio's sidecar inbound listener for it.
    fn transport_listener(&self, transport: &TransportListener) -> Result<Value> {
        let hcm = self.hcm(TRANSPORT_LISTENER)?;
        let filters =
            json!([{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]);
        let mtls_chain = |matched: bool| {
            let mut chain = json!({
                "filters": filters.clone(),
                "transport_socket": transport.tls.transport_socket(true),
            });
            if matched {
                chain["filter_chain_match"] = json!({"transport_protocol": "tls"});
            }
            chain
        };
        let (listener_filters, chains) = match transport.mode {
            MtlsMode::Strict => (json!([]), json!([mtls_chain(false)])),
            // What the tls_inspector sees decides the chain: a ClientHello ⇒ "tls", else
            // "raw_buffer".
            MtlsMode::Permissive => (
                json!([{
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
                }]),
                json!([
                    mtls_chain(true),
                    {"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": filters},
                ]),
            ),
            MtlsMode::Disable => (json!([]), json!([{"filters": filters}])),
        };
        let address = match transport.fixed {
            Some(addr) => {
                json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
            }
            None => socket_address(0),
        };
        Ok(json!({
            "name": TRANSPORT_LISTENER,
            "stat_prefix": TRANSPORT_LISTENER,
            "address": address,
            "listener_filters": listener_filters,
            "filter_chains": chains,
        }))
    }

    fn hcm(&self, stat_prefix: &str) -> Result<Value> {
        let mut http_filters = Vec::with_capacity(self.filters.len() + 1);
        for filter in &self.filters {
            http_filters.push(match filter {
                HttpFilter::Wasm(wasm) => wasm.to_json()?,
                HttpFilter::Raw(raw) => raw.clone(),
            });
        }
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));
        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": {
                "name": "all",
                "virtual_hosts": [{
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER}}],
                }],
            },
            "http_filters": http_filters,
        });
        if let Some(kb) = self.max_request_headers_kb {
            hcm["max_request_headers_kb"] = json!(kb);
        }
        if let Some(count) = self.max_headers_count {
            hcm["common_http_protocol_options"] = json!({"max_headers_count": count});
        }
        if let Some(map) = hcm.as_object_mut() {
            for (field, value) in &self.hcm_overrides {
                map.insert(field.clone(), value.clone());
            }
        }
        Ok(hcm)
    }
}

fn socket_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn listener(name: &str, port: u16, hcm: Value, transport_socket: Option<Value>) -> Value {
    let mut chain = json!({
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
    });
    if let Some(ts) = transport_socket {
        chain["transport_socket"] = ts;
    }
    // A fixed listener stat_prefix: the default one is derived from the (ephemeral) address and
    // would be the same `127.0.0.1_0` for both listeners.
    json!({
        "name": name,
        "stat_prefix": name,
        "address": socket_address(port),
        "filter_chains": [chain],
    })
}

/// A loopback address 127.x.y.z with random x, y and z (z neither 0 nor 255), so that a fixed
/// port can be bound by several tests at once. The randomness is std's per-process hash keys
/// stirred with the time: enough to make a clash unlikely, without a dependency.
fn random_loopback() -> std::net::Ipv4Addr {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let [x, y, z, ..] = hasher.finish().to_le_bytes();
    std::net::Ipv4Addr::new(127, x, y, 1 + z % 254)
}

/// A STATIC cluster of one endpoint; `http2`: it speaks (plaintext) HTTP/2 to it.
fn cluster(name: &str, addr: SocketAddr, http2: bool) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(),
                "port_value": addr.port(),
            }}}}]}],
        },
    });
    if http2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_configuration_failure_policy_and_reload_backoff_reach_the_plugin_config() {
        let plain = WasmFilter::new("p", "/m.wasm", "{}").to_json().unwrap();
        let config = &plain["typed_config"]["config"];
        assert!(config["vm_config"].get("configuration").is_none());
        assert!(config.get("failure_policy").is_none());
        assert!(config.get("reload_config").is_none());
        let set = WasmFilter::new("p", "/m.wasm", "{}")
            .vm_configuration("vm")
            .failure_policy("FAIL_RELOAD")
            .reload_backoff_ms(2500)
            .to_json()
            .unwrap();
        let config = &set["typed_config"]["config"];
        assert_eq!(
            config["vm_config"]["configuration"],
            json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "vm"})
        );
        assert_eq!(config["failure_policy"], "FAIL_RELOAD");
        assert_eq!(
            config["reload_config"],
            json!({"backoff": {"base_interval": "2.5s"}})
        );
    }

    #[test]
    fn a_grpc_cluster_speaks_http2_and_the_others_do_not() {
        let addr: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let config = EnvoyConfig::new(addr)
            .cluster("jwks", addr)
            .grpc_cluster("grpc", addr);
        let bootstrap = config.bootstrap().unwrap();
        let clusters = bootstrap["static_resources"]["clusters"]
            .as_array()
            .unwrap();
        let by_name = |name: &str| {
            clusters
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no cluster {name}"))
        };
        let options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
        let grpc = by_name("grpc");
        assert_eq!(grpc["type"], "STATIC");
        assert_eq!(
            grpc["typed_extension_protocol_options"][options]["explicit_http_config"],
            json!({"http2_protocol_options": {}})
        );
        assert_eq!(
            grpc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"],
            50051
        );
        for plain in [UPSTREAM_CLUSTER, "jwks"] {
            assert!(by_name(plain)
                .get("typed_extension_protocol_options")
                .is_none());
        }
    }
}
