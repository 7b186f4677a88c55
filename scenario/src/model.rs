//! The scenario file format: one filter chain, many cases (see `meshward test --help` and
//! docs/scenarios.md). The same files drive the harness and the real-Envoy parity suites, so this
//! module is plain data: nothing here knows how a request is executed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    #[serde(default)]
    pub description: Option<String>,
    /// The HTTP connection manager settings both runs use.
    #[serde(default)]
    pub listener: ListenerSpec,
    /// Worker VMs (Envoy `--concurrency`); default 1.
    #[serde(default)]
    pub workers: Option<u32>,
    /// Upstream clusters the filters may call (JWKS servers…), by Envoy cluster name.
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
    /// Pin the harness's virtual clock to a date. Envoy's clock cannot be set, so a scenario with
    /// a clock runs in the harness only (`meshward test --envoy` says so for each such file).
    #[serde(default)]
    pub clock: Option<ClockSpec>,
    /// Filters in request order.
    pub chain: Vec<ChainEntry>,
    /// The chain must fail to start — a configuration the module rejects, a trap while it
    /// starts — in the harness and, with `--envoy`, in Envoy (which then refuses the whole
    /// configuration). Such a file has no cases and counts as one.
    #[serde(default)]
    pub start_fails: bool,
    #[serde(default)]
    pub cases: Vec<Case>,
    /// Where the file was read from: relative paths in it resolve against its directory.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClockSpec {
    /// Wall time at the start, in seconds since the Unix epoch.
    pub start: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerSpec {
    /// HCM `max_request_headers_kb` (Envoy default 60).
    #[serde(default)]
    pub max_request_headers_kb: Option<u32>,
    /// `common_http_protocol_options.max_headers_count` (Envoy default 100).
    #[serde(default)]
    pub max_headers_count: Option<u32>,
    /// A fixed port for the listener the cases use (the TLS one when any case uses TLS; the `mtls`
    /// one when set), for policies that match the destination port. Default: ephemeral in Envoy,
    /// 10000 in the harness.
    #[serde(default)]
    pub port: Option<u16>,
    /// HCM `use_remote_address` (Envoy default false: `source.address` is then taken from the last
    /// `x-forwarded-for` entry when the request has one).
    #[serde(default)]
    pub use_remote_address: bool,
    /// The listener's mTLS mode, as Istio's PeerAuthentication sets it. Absent: plaintext, TLS and
    /// mTLS callers are all taken (in Envoy: a plaintext listener, plus a TLS one when a case uses
    /// TLS). Set: one listener in that mode takes every case.
    #[serde(default)]
    pub mtls: Option<MtlsMode>,
}

/// `listener.mtls`: Istio PeerAuthentication's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// mTLS only: a plaintext caller, or TLS without a client certificate, is refused.
    Strict,
    /// Plaintext (no peer identity) or mTLS; TLS without a client certificate is refused.
    Permissive,
    /// Plaintext only: a caller that insists on TLS is refused.
    Disable,
}

/// A named upstream cluster a filter can call with `dispatch_http_call` (or, with `grpc`,
/// `dispatch_grpc_call` / `open_grpc_stream`). Exactly one of `response`, `down: true` and `grpc`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    pub name: String,
    /// The answer the cluster gives to every call (absent with `down: true` or `grpc`).
    #[serde(default)]
    pub response: Option<ClusterResponse>,
    /// Nothing listens: calls fail like a dead upstream.
    #[serde(default)]
    pub down: bool,
    /// A real gRPC server (plaintext HTTP/2) at this address (`host:port`, an IP address), in
    /// both worlds: Envoy's cluster speaks HTTP/2 to it. `${NAME}` in it is replaced from the
    /// environment when the scenario is loaded (`127.0.0.1:${MESHWARD_GRPC_ECHO}`); an unset
    /// variable is an error naming it.
    #[serde(default)]
    pub grpc: Option<String>,
    /// The cluster answers this late (`300ms`, `3s`; at most 10s): a slow JWKS server. The
    /// harness delays the answer on its virtual clock; in Envoy the upstream really waits.
    #[serde(default)]
    pub latency: Option<String>,
}

impl ClusterSpec {
    /// The address of a `grpc` cluster (`None` for the others), once `${NAME}`s were replaced
    /// ([`Scenario::load`] does that).
    pub fn grpc_address(&self) -> Result<Option<std::net::SocketAddr>> {
        let Some(text) = &self.grpc else {
            return Ok(None);
        };
        match text.parse() {
            Ok(addr) => Ok(Some(addr)),
            Err(_) => bail!(
                "cluster `{}`: grpc `{text}` is not an address (an IP address and a port: \
                 127.0.0.1:50051)",
                self.name
            ),
        }
    }

    /// Replaces each `${NAME}` in `grpc` with the environment variable `NAME`.
    fn expand_environment(&mut self) -> Result<()> {
        if let Some(text) = &self.grpc {
            self.grpc = Some(
                expand_variables(text, |name| std::env::var(name).ok())
                    .with_context(|| format!("cluster `{}`: grpc `{text}`", self.name))?,
            );
        }
        Ok(())
    }

    /// The cluster's `latency`, checked like a case's `advance`.
    pub fn latency(&self) -> Result<Option<std::time::Duration>> {
        short_duration(
            &format!("cluster `{}`: latency", self.name),
            self.latency.as_deref(),
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterResponse {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<HeaderSpec>,
    #[serde(default)]
    pub body: Option<String>,
    /// Body read from a file (relative to the scenario file).
    #[serde(default)]
    pub body_file: Option<PathBuf>,
}

/// `text` with each `${NAME}` replaced by `lookup(NAME)`; a name it does not know is an error
/// naming it, and so is a `${` without its `}`.
fn expand_variables(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            bail!("`${{` without its `}}`");
        };
        let name = &after[..end];
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None => bail!("the environment variable `{name}` is not set"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn default_status() -> u16 {
    200
}

/// One filter of the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChainEntry {
    /// A meshward filter by name (`header-limits` ⇒ `<wasm dir>/header_limits.wasm`).
    #[serde(default)]
    pub filter: Option<String>,
    /// Or a module path (relative to the scenario file), or an image `oci://registry/repo:tag`
    /// (or `@sha256:…`): pulled and checked as Istio's WasmPlugin fetcher would, and the very
    /// bytes Istio would load are run.
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// With an `oci://` module: the WasmPlugin `sha256` (the image manifest digest, 64 hex); a
    /// mismatch fails the file as Istio fails the plugin.
    #[serde(default)]
    pub sha256: Option<String>,
    /// With an `oci://` module: fetch over plain HTTP, as Istio does for registries listed in
    /// `WASM_INSECURE_REGISTRIES` (a registry on loopback).
    #[serde(default)]
    pub insecure_registry: bool,
    /// Plugin name and root id. Default: the filter name or the module's file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Root id, when it differs from the plugin name (modules that register their root context
    /// under a fixed id, as the AssemblyScript SDK's `registerRootContext(…, "add_header")`).
    #[serde(default)]
    pub root_id: Option<String>,
    /// VM id (scopes shared data and queues). Default: the plugin name — what the Envoy run
    /// configures, so both worlds scope shared data alike.
    #[serde(default)]
    pub vm_id: Option<String>,
    /// pluginConfig, inline (any YAML value; sent to the filter as JSON).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Or pluginConfig read from a file (relative to the scenario file), sent as is.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// Envoy `fail_open` (Istio failStrategy FAIL_OPEN). Default false: fail closed.
    #[serde(default)]
    pub fail_open: bool,
    /// `vm_config.configuration`, inline (any YAML value; sent as JSON, what `on_vm_start`
    /// reads). Part of the VM's identity: entries share a VM only if vm_id, module and this are
    /// all equal. Default: none (empty).
    #[serde(default)]
    pub vm_config: Option<serde_json::Value>,
    /// Envoy `failure_policy`: what the filter does once its VM failed (trapped). Default: Envoy's
    /// (fail closed). Not together with `failOpen: true` (Envoy refuses both).
    #[serde(default)]
    pub failure_policy: Option<FailurePolicy>,
    /// With `failurePolicy: FAIL_RELOAD`: Envoy `reload_config.backoff.base_interval` (`500ms`,
    /// `2s`; at most 10s). Default: Envoy's 1s.
    #[serde(default)]
    pub reload_backoff: Option<String>,
}

/// `chain[].failurePolicy`: Envoy's `envoy.extensions.wasm.v3.FailurePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailurePolicy {
    /// Every request through the failed plugin gets a 503 (Envoy's default).
    FailClosed,
    /// The failed plugin is skipped (as `failOpen: true`).
    FailOpen,
    /// The thread's failed VM is replaced by a fresh one (no more often than the reload backoff).
    FailReload,
}

impl FailurePolicy {
    /// The enum value's name in Envoy's configuration.
    pub fn envoy_name(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailReload => "FAIL_RELOAD",
        }
    }
}

/// One request and what must come of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    pub name: String,
    pub request: RequestSpec,
    pub expect: Expect,
    /// Send the same request this many times (expectations apply to the last one). Default 1.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Let this much time pass before the case (`500ms`, `2s`, ...): the harness advances its
    /// virtual clock, firing due ticks and timeouts in order; against Envoy the runner sleeps
    /// for as long, so keep steps short (at most [`MAX_ADVANCE_NANOS`]).
    #[serde(default)]
    pub advance: Option<String>,
}

/// The longest `advance` a case may ask for: the Envoy runner really waits that long.
pub const MAX_ADVANCE_NANOS: u64 = 10_000_000_000;

impl Case {
    /// The case's `advance`, checked: a duration string no longer than [`MAX_ADVANCE_NANOS`].
    pub fn advance(&self) -> anyhow::Result<Option<std::time::Duration>> {
        short_duration(
            &format!("case `{}`: advance", self.name),
            self.advance.as_deref(),
        )
    }
}

/// A duration string of a scenario file (`500ms`, `2s`) that the Envoy run really waits for,
/// so at most [`MAX_ADVANCE_NANOS`]. `what` names the field in the error.
fn short_duration(what: &str, text: Option<&str>) -> Result<Option<std::time::Duration>> {
    let Some(text) = text else {
        return Ok(None);
    };
    match meshward_common::duration::parse_nanos(text) {
        Some(ns) if ns <= MAX_ADVANCE_NANOS => Ok(Some(std::time::Duration::from_nanos(ns))),
        Some(_) => bail!("{what} `{text}` is over 10s (the Envoy run would really wait that long)"),
        None => bail!("{what} `{text}` is not a duration (a number and a unit: 500ms, 2s)"),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestSpec {
    #[serde(default = "default_method")]
    pub method: String,
    /// The request-target, sent byte for byte.
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default)]
    pub headers: Vec<HeaderSpec>,
    #[serde(default)]
    pub body: Option<String>,
    /// Absent: plaintext. `{}`: TLS without a client certificate. `{peer: URI}`: mTLS.
    #[serde(default)]
    pub tls: Option<TlsSpec>,
    /// Client address (a loopback address, so that Envoy sees the same one).
    #[serde(default)]
    pub source: Option<IpAddr>,
}

pub(crate) fn default_method() -> String {
    "GET".to_string()
}
pub(crate) fn default_path() -> String {
    "/".to_string()
}
fn default_authority() -> String {
    "example.com".to_string()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsSpec {
    /// The URI SAN of the client certificate. Absent: no client certificate.
    #[serde(default)]
    pub peer: Option<String>,
}

/// A request header: `{name, value}` or a generated value `{name, repeat, times}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderSpec {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub repeat: Option<String>,
    #[serde(default)]
    pub times: Option<usize>,
}

impl HeaderSpec {
    /// The header's value, generated for `repeat`/`times`.
    pub fn value(&self) -> Result<String> {
        match (&self.value, &self.repeat, self.times) {
            (Some(v), None, None) => Ok(v.clone()),
            (None, Some(r), Some(n)) => Ok(r.repeat(n)),
            (None, None, None) => Ok(String::new()),
            _ => bail!(
                "header `{}`: give either `value` or both `repeat` and `times`",
                self.name
            ),
        }
    }
}

/// What must be observed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// The status the client got (200 = the echo upstream answered). Required unless `refused`.
    #[serde(default)]
    pub status: Option<u16>,
    /// The listener refused the connection: no HTTP response at all (then no `status`).
    #[serde(default)]
    pub refused: bool,
    /// Whether the request reached the upstream. Default: `status == 200`.
    #[serde(default)]
    pub upstream: Option<bool>,
    #[serde(default)]
    pub body: Option<BodyExpect>,
    #[serde(default)]
    pub upstream_headers: Option<HeaderExpect>,
    #[serde(default)]
    pub response_headers: Option<HeaderExpect>,
    /// Metric values (cumulative since the chain started) after this case.
    #[serde(default)]
    pub metrics: BTreeMap<String, i64>,
}

impl Expect {
    pub fn upstream(&self) -> bool {
        self.upstream.unwrap_or(self.status == Some(200))
    }

    /// A case gives exactly one of `status` and `refused: true`.
    fn validate(&self) -> Result<()> {
        match (self.status, self.refused) {
            (Some(_), false) => Ok(()),
            (None, true) if self.upstream != Some(true) => Ok(()),
            (None, true) => bail!("`expect.refused: true` cannot go with `upstream: true`"),
            (Some(_), true) => {
                bail!("`expect.refused: true` means no HTTP response: remove `expect.status`")
            }
            (None, false) => bail!("`expect` needs `status` (or `refused: true`)"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BodyExpect {
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub equals: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderExpect {
    #[serde(default)]
    pub present: Vec<String>,
    #[serde(default)]
    pub absent: Vec<String>,
    /// Name ⇒ the only value it must have (a header sent twice fails `equal`).
    #[serde(default)]
    pub equal: BTreeMap<String, String>,
}

impl Scenario {
    /// Read and check a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::from_yaml(&text, path)
    }

    /// Parse and check a scenario's text; `path` is where it was read from (relative paths in it
    /// resolve against its directory; errors name it).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow::anyhow!("{}: field `{}`: {}", path.display(), e.path(), e.inner())
        })?;
        scenario.path = path.to_path_buf();
        for cluster in &mut scenario.clusters {
            cluster
                .expand_environment()
                .with_context(|| format!("scenario {}", path.display()))?;
        }
        scenario
            .validate()
            .with_context(|| format!("scenario {}", path.display()))?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<()> {
        if self.chain.is_empty() {
            bail!("`chain` needs at least one filter");
        }
        if self.start_fails && !self.cases.is_empty() {
            bail!("`startFails: true` takes no `cases`: no request can run when the chain does not start");
        }
        if !self.start_fails && self.cases.is_empty() {
            bail!("`cases` needs at least one case (or `startFails: true`)");
        }
        for (i, entry) in self.chain.iter().enumerate() {
            if entry.filter.is_some() == entry.module.is_some() {
                bail!("chain[{i}]: give exactly one of `filter` and `module`");
            }
            if entry.config.is_some() && entry.config_file.is_some() {
                bail!("chain[{i}]: give at most one of `config` and `configFile`");
            }
            if entry.oci_reference().is_none()
                && (entry.sha256.is_some() || entry.insecure_registry)
            {
                bail!("chain[{i}]: `sha256` and `insecureRegistry` go with an `oci://` module");
            }
            if entry.fail_open && entry.failure_policy.is_some() {
                bail!("chain[{i}]: give at most one of `failOpen` and `failurePolicy` (Envoy refuses both)");
            }
            let backoff = entry
                .reload_backoff()
                .with_context(|| format!("chain[{i}]"))?;
            if backoff.is_some() && entry.failure_policy != Some(FailurePolicy::FailReload) {
                bail!("chain[{i}]: `reloadBackoff` goes with `failurePolicy: FAIL_RELOAD`");
            }
            if backoff.is_some_and(|b| b < std::time::Duration::from_millis(1)) {
                bail!("chain[{i}]: `reloadBackoff` must be at least 1ms (Envoy's base_interval)");
            }
        }
        for case in &self.cases {
            for h in &case.request.headers {
                h.value().with_context(|| format!("case `{}`", case.name))?;
            }
            case.expect
                .validate()
                .with_context(|| format!("case `{}`", case.name))?;
            case.advance()?;
        }
        for c in &self.clusters {
            let kinds = [c.response.is_some(), c.down, c.grpc.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                bail!(
                    "cluster `{}`: give exactly one of `response`, `down: true` and `grpc`",
                    c.name
                );
            }
            if c.latency()?.is_some() && c.response.is_none() {
                bail!("cluster `{}`: `latency` needs a `response`", c.name);
            }
            c.grpc_address()?;
        }
        Ok(())
    }

    /// The directory relative paths resolve against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

impl ChainEntry {
    /// Plugin name (and root id) of this entry.
    pub fn plugin_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        if let Some(f) = &self.filter {
            return f.clone();
        }
        self.module
            .as_ref()
            .and_then(|m| m.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "filter".to_string())
    }

    /// Root id of this entry: `rootId`, else the plugin name.
    pub fn root_id(&self) -> String {
        self.root_id.clone().unwrap_or_else(|| self.plugin_name())
    }

    /// VM id of this entry: `vmId`, else the plugin name.
    pub fn vm_id(&self) -> String {
        self.vm_id.clone().unwrap_or_else(|| self.plugin_name())
    }

    /// The `vmConfig` bytes for this entry (JSON), if any.
    pub fn vm_config_bytes(&self) -> Result<Option<Vec<u8>>> {
        match &self.vm_config {
            Some(v) => Ok(Some(serde_json::to_vec(v)?)),
            None => Ok(None),
        }
    }

    /// `reloadBackoff` as a duration, if given.
    pub fn reload_backoff(&self) -> Result<Option<std::time::Duration>> {
        short_duration("reloadBackoff", self.reload_backoff.as_deref())
    }

    /// The image reference when the module is `oci://…`.
    pub fn oci_reference(&self) -> Option<&str> {
        self.module
            .as_ref()
            .and_then(|m| m.to_str())
            .filter(|m| m.starts_with("oci://"))
    }

    /// The module file for this entry (an `oci://` module must have been pulled first:
    /// [`crate::oci::pull_modules`]).
    pub fn module_path(&self, base: &Path, wasm_dir: &Path) -> PathBuf {
        match (&self.filter, &self.module) {
            (Some(f), _) => wasm_dir.join(format!("{}.wasm", f.replace('-', "_"))),
            (None, Some(m)) => base.join(m),
            (None, None) => PathBuf::new(),
        }
    }

    /// The pluginConfig bytes for this entry.
    pub fn config_bytes(&self, base: &Path) -> Result<Vec<u8>> {
        if let Some(file) = &self.config_file {
            let p = base.join(file);
            return std::fs::read(&p).with_context(|| format!("reading config {}", p.display()));
        }
        match &self.config {
            Some(v) => Ok(serde_json::to_vec(v)?),
            None => Ok(Vec::new()),
        }
    }
}

impl ClusterResponse {
    pub fn body_bytes(&self, base: &Path) -> Result<Vec<u8>> {
        if let Some(file) = &self.body_file {
            let p = base.join(file);
            return std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
        }
        Ok(self.body.clone().unwrap_or_default().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(advance: Option<&str>) -> Case {
        let yaml = format!(
            "name: c\nrequest: {{path: /}}\nexpect: {{status: 200}}\n{}",
            advance
                .map(|a| format!("advance: {a}\n"))
                .unwrap_or_default()
        );
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    fn scenario(listener: &str, expect: &str) -> Result<Scenario> {
        let yaml = format!(
            "listener: {listener}\nchain: [{{filter: spiffe-authz}}]\n\
             cases: [{{name: c, request: {{path: /}}, expect: {expect}}}]\n"
        );
        Scenario::from_yaml(&yaml, Path::new("t.yaml"))
    }

    fn with_entry(entry: &str) -> Result<Scenario> {
        let yaml = format!(
            "chain: [{{filter: spiffe-authz, {entry}}}]\n\
             cases: [{{name: c, request: {{path: /}}, expect: {{status: 200}}}}]\n"
        );
        Scenario::from_yaml(&yaml, Path::new("t.yaml"))
    }

    #[test]
    fn chain_entries_take_a_vm_config_a_failure_policy_and_a_reload_backoff() {
        let s = with_entry("vmConfig: {v: 1}, failurePolicy: FAIL_RELOAD, reloadBackoff: 500ms")
            .unwrap();
        let entry = &s.chain[0];
        assert_eq!(entry.vm_config_bytes().unwrap().unwrap(), br#"{"v":1}"#);
        assert_eq!(entry.failure_policy, Some(FailurePolicy::FailReload));
        assert_eq!(
            entry.reload_backoff().unwrap(),
            Some(std::time::Duration::from_millis(500))
        );
        for (text, name) in [
            ("FAIL_CLOSED", "FAIL_CLOSED"),
            ("FAIL_OPEN", "FAIL_OPEN"),
            ("FAIL_RELOAD", "FAIL_RELOAD"),
        ] {
            let s = with_entry(&format!("failurePolicy: {text}")).unwrap();
            assert_eq!(s.chain[0].failure_policy.unwrap().envoy_name(), name);
        }
        let s = with_entry("name: x").unwrap();
        assert!(s.chain[0].vm_config_bytes().unwrap().is_none());
        assert!(s.chain[0].failure_policy.is_none());
    }

    #[test]
    fn failure_policy_knobs_are_checked_as_envoy_would() {
        let err = |entry: &str| format!("{:#}", with_entry(entry).unwrap_err());
        assert!(err("failurePolicy: FAIL_SOMETIMES").contains("FAIL_SOMETIMES"));
        assert!(err("failOpen: true, failurePolicy: FAIL_CLOSED")
            .contains("at most one of `failOpen` and `failurePolicy`"));
        assert!(err("reloadBackoff: 1s").contains("`reloadBackoff` goes with"));
        assert!(err("failurePolicy: FAIL_OPEN, reloadBackoff: 1s").contains("goes with"));
        assert!(err("failurePolicy: FAIL_RELOAD, reloadBackoff: 0s").contains("at least 1ms"));
        assert!(err("failurePolicy: FAIL_RELOAD, reloadBackoff: 11s").contains("over 10s"));
        assert!(with_entry("failOpen: false, failurePolicy: FAIL_CLOSED").is_ok());
    }

    #[test]
    fn listener_mtls_takes_istio_mode_names() {
        for (text, mode) in [
            ("STRICT", MtlsMode::Strict),
            ("PERMISSIVE", MtlsMode::Permissive),
            ("DISABLE", MtlsMode::Disable),
        ] {
            let s = scenario(&format!("{{mtls: {text}}}"), "{status: 200}").unwrap();
            assert_eq!(s.listener.mtls, Some(mode));
        }
        assert_eq!(scenario("{}", "{status: 200}").unwrap().listener.mtls, None);
        for bad in ["strict", "UNSET", "true"] {
            let e = format!(
                "{:#}",
                scenario(&format!("{{mtls: {bad}}}"), "{status: 200}").unwrap_err()
            );
            assert!(e.contains("listener.mtls"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_case_expects_a_status_or_a_refusal() {
        let refused = scenario("{}", "{refused: true}").unwrap();
        let expect = &refused.cases[0].expect;
        assert!(expect.refused && expect.status.is_none() && !expect.upstream());
        let ok = scenario("{}", "{status: 200}").unwrap();
        assert!(!ok.cases[0].expect.refused && ok.cases[0].expect.upstream());
        for (expect, why) in [
            ("{}", "needs `status`"),
            ("{refused: false}", "needs `status`"),
            ("{refused: true, status: 403}", "remove `expect.status`"),
            ("{refused: true, upstream: true}", "upstream: true"),
        ] {
            let e = format!("{:#}", scenario("{}", expect).unwrap_err());
            assert!(e.contains("case `c`") && e.contains(why), "{expect}: {e}");
        }
    }

    #[test]
    fn advance_is_a_short_duration() {
        assert_eq!(case(None).advance().unwrap(), None);
        assert_eq!(
            case(Some("1100ms")).advance().unwrap(),
            Some(std::time::Duration::from_millis(1100))
        );
        assert_eq!(
            case(Some("10s")).advance().unwrap(),
            Some(std::time::Duration::from_secs(10))
        );
        let long = case(Some("11s")).advance().unwrap_err().to_string();
        assert!(long.contains("over 10s"), "{long}");
        let bad = case(Some("soon")).advance().unwrap_err().to_string();
        assert!(bad.contains("not a duration"), "{bad}");
    }

    fn with_cluster(cluster: &str) -> Result<Scenario> {
        let yaml = format!(
            "clusters: [{cluster}]\nchain: [{{filter: spiffe-authz}}]\n\
             cases: [{{name: c, request: {{path: /}}, expect: {{status: 200}}}}]\n"
        );
        Scenario::from_yaml(&yaml, Path::new("t.yaml"))
    }

    #[test]
    fn a_cluster_is_a_response_a_dead_one_or_a_grpc_server() {
        for ok in [
            "{name: a, response: {status: 200}}",
            "{name: a, down: true}",
            "{name: a, grpc: \"127.0.0.1:50051\"}",
            "{name: a, response: {status: 200}, latency: 5ms}",
        ] {
            with_cluster(ok).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        for (bad, why) in [
            ("{name: a}", "cluster `a`: give exactly one of"),
            (
                "{name: a, down: true, grpc: \"127.0.0.1:1\"}",
                "cluster `a`: give exactly one of",
            ),
            (
                "{name: a, response: {}, grpc: \"127.0.0.1:1\"}",
                "cluster `a`: give exactly one of",
            ),
            (
                "{name: a, grpc: \"127.0.0.1:1\", latency: 5ms}",
                "`latency` needs a `response`",
            ),
            (
                "{name: a, grpc: \"localhost:50051\"}",
                "cluster `a`: grpc `localhost:50051` is not an address",
            ),
        ] {
            let e = format!("{:#}", with_cluster(bad).unwrap_err());
            assert!(e.contains(why), "{bad}: {e}");
        }
        let s = with_cluster("{name: g, grpc: \"127.0.0.1:50051\"}").unwrap();
        assert_eq!(
            s.clusters[0].grpc_address().unwrap(),
            Some("127.0.0.1:50051".parse().unwrap())
        );
        let plain = with_cluster("{name: a, down: true}").unwrap();
        assert_eq!(plain.clusters[0].grpc_address().unwrap(), None);
    }

    #[test]
    fn grpc_addresses_take_variables_from_the_environment() {
        let env = |name: &str| (name == "PORT").then(|| "50051".to_string());
        assert_eq!(
            expand_variables("127.0.0.1:${PORT}", env).unwrap(),
            "127.0.0.1:50051"
        );
        assert_eq!(expand_variables("no variable", env).unwrap(), "no variable");
        let unset = expand_variables("127.0.0.1:${NOPE}", env)
            .unwrap_err()
            .to_string();
        assert!(unset.contains("`NOPE` is not set"), "{unset}");
        let open = expand_variables("127.0.0.1:${PORT", env)
            .unwrap_err()
            .to_string();
        assert!(open.contains("without its"), "{open}");
        // Through a scenario file: the error names the cluster and the variable.
        let e = format!(
            "{:#}",
            with_cluster("{name: g, grpc: \"127.0.0.1:${MESHWARD_TEST_UNSET_VARIABLE_7Q}\"}")
                .unwrap_err()
        );
        assert!(
            e.contains("cluster `g`") && e.contains("`MESHWARD_TEST_UNSET_VARIABLE_7Q` is not set"),
            "{e}"
        );
        std::env::set_var("MESHWARD_TEST_GRPC_PORT_3K", "50052");
        let s =
            with_cluster("{name: g, grpc: \"127.0.0.1:${MESHWARD_TEST_GRPC_PORT_3K}\"}").unwrap();
        assert_eq!(s.clusters[0].grpc.as_deref(), Some("127.0.0.1:50052"));
    }
}
