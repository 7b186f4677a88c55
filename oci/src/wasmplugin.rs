//! Istio `WasmPlugin` resources (extensions.istio.io/v1alpha1) for one meshward filter, rendered
//! from a policy and an image reference (`meshward wasmplugin` is the command line over this).
//!
//! The defaults put the four filters in the order their contracts need (see docs/deploy.md):
//! header-limits → jwt-authn (both AUTHN, header-limits with the higher priority) → spiffe-authz
//! (AUTHZ, reads jwt-authn's identity) → rate-limit (STATS: after authorization, so that denied
//! requests spend no tokens). Within a phase Istio runs the higher `priority` first. The bundle
//! (`meshward`, one module running the four checks in that order, docs/bundle.md) goes where
//! header-limits goes: AUTHN, first.
//!
//! spiffe-authz-tcp is a network filter (`type: NETWORK`): Istio puts it in the listener's network
//! filter chain, in front of `tcp_proxy` (and, on HTTP ports, in front of the HTTP connection
//! manager), ordered by phase as the HTTP plugins are; its pluginConfig is checked here by the
//! filter's own parser ([`check_policy`]).
//!
//! Errors name the `meshward wasmplugin` flag a value came from: that is where users give them.

use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value as Yaml};
use spiffe_authz_core::Protocol;

/// What goes into one WasmPlugin besides the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginOptions {
    /// The meshward filter.
    pub filter: Filter,
    /// The module: oci://HOST/REPO:TAG (or @sha256:…), or an http(s):// or file:// URL.
    pub image: String,
    /// The expected checksum, 64 hex digits (for oci://, the image manifest digest).
    pub sha256: Option<String>,
    /// metadata.name (default: meshward-<filter>).
    pub name: Option<String>,
    /// metadata.namespace (default: none, i.e. kubectl's current namespace).
    pub namespace: Option<String>,
    /// Workload labels KEY=VALUE for selector.matchLabels (none: every workload).
    pub selectors: Vec<String>,
    /// Where Istio inserts the filter (default: [`Filter::default_placement`]).
    pub phase: Option<Phase>,
    /// Order within the phase, higher first (default: [`Filter::default_placement`]).
    pub priority: Option<i32>,
    /// Destination ports for `match[0].ports` (none: every inbound port of the workload).
    pub ports: Vec<u16>,
}

/// The four meshward HTTP filters, the bundle of all four, and spiffe-authz-tcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    HeaderLimits,
    JwtAuthn,
    SpiffeAuthz,
    RateLimit,
    /// `meshward.wasm`: the four checks in one module; its pluginConfig has one section per
    /// check (`headerLimits`, `jwtAuthn`, `spiffeAuthz`, `rateLimit`).
    Bundle,
    /// `spiffe_authz_tcp.wasm`: spiffe-authz's policies as a network filter for TCP services
    /// (the same pluginConfig, compiled for connections; decides on the client's first bytes).
    SpiffeAuthzTcp,
}

impl Filter {
    /// Every separate HTTP filter, in chain order.
    pub const ALL: [Filter; 4] = [
        Self::HeaderLimits,
        Self::JwtAuthn,
        Self::SpiffeAuthz,
        Self::RateLimit,
    ];

    /// The filter's name: Istio `pluginName` (the adapters' root id) and policies/<name>/.
    pub fn name(self) -> &'static str {
        match self {
            Self::HeaderLimits => "header-limits",
            Self::JwtAuthn => "jwt-authn",
            Self::SpiffeAuthz => "spiffe-authz",
            Self::RateLimit => "rate-limit",
            Self::Bundle => "meshward",
            Self::SpiffeAuthzTcp => "spiffe-authz-tcp",
        }
    }

    /// The WasmPlugin `type`: which Envoy filter chain the module is written for (a module
    /// loaded as the other type has no context of the kind the proxy asks for).
    pub fn plugin_type(self) -> PluginType {
        match self {
            Self::SpiffeAuthzTcp => PluginType::Network,
            Self::HeaderLimits
            | Self::JwtAuthn
            | Self::SpiffeAuthz
            | Self::RateLimit
            | Self::Bundle => PluginType::Http,
        }
    }

    /// (phase, priority) that give header-limits → jwt-authn → spiffe-authz → rate-limit.
    pub fn default_placement(self) -> (Phase, i32) {
        match self {
            // Cheapest check first: oversized requests never reach signature verification.
            Self::HeaderLimits => (Phase::Authn, 1000),
            Self::JwtAuthn => (Phase::Authn, 900),
            Self::SpiffeAuthz => (Phase::Authz, 500),
            // STATS = after Istio's (and our) authorization filters.
            Self::RateLimit => (Phase::Stats, 100),
            // Its first check is header-limits; its own rate-limit runs after its own
            // authorization (Istio's AuthorizationPolicy enforcement, if also on, comes later).
            Self::Bundle => (Phase::Authn, 1000),
            // Network plugins are placed by phase too. istiod builds an inbound TCP chain as:
            // metadata exchange, CUSTOM (ext_authz) → AUTHN plugins → AUTHZ plugins → Istio's
            // network RBAC → STATS and UNSPECIFIED_PHASE plugins → Istio's TCP stats → tcp_proxy
            // (`buildCompleteNetworkFilters`, pilot/pkg/networking/core/networkfilter.go). Every
            // phase runs before tcp_proxy; AUTHZ is the authorization position, right before
            // Istio's own RBAC, as spiffe-authz's is in the HTTP chain.
            Self::SpiffeAuthzTcp => (Phase::Authz, 500),
        }
    }
}

/// WasmPlugin `type` (the CRD's enum, spelled as in the CRD by `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginType {
    /// `envoy.filters.http.wasm` in the HTTP connection manager: sees requests.
    Http,
    /// `envoy.filters.network.wasm` in the listener's filter chain: sees connections.
    Network,
}

impl PluginType {
    /// The CRD's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Network => "NETWORK",
        }
    }
}

impl fmt::Display for PluginType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WasmPlugin `phase` (the CRD's enum, spelled as in the CRD by `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Istio decides: the end of the chain, just before the router.
    Unspecified,
    /// Before Istio's authentication filters.
    Authn,
    /// After authentication, before Istio's authorization filters.
    Authz,
    /// After authorization, before Istio's stats filter.
    Stats,
}

impl Phase {
    /// Every phase, in the order Istio runs them.
    pub const ALL: [Phase; 4] = [Self::Unspecified, Self::Authn, Self::Authz, Self::Stats];

    /// The CRD's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "UNSPECIFIED_PHASE",
            Self::Authn => "AUTHN",
            Self::Authz => "AUTHZ",
            Self::Stats => "STATS",
        }
    }

    /// What the phase means (the CRD's documentation, shortened).
    pub fn description(self) -> &'static str {
        match self {
            Self::Unspecified => "Istio decides: the end of the chain, just before the router.",
            Self::Authn => "Before Istio's authentication filters.",
            Self::Authz => "After authentication, before Istio's authorization filters.",
            Self::Stats => "After authorization, before Istio's stats filter.",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy file as JSON: it must be one object (a pluginConfig).
pub fn read_policy(path: &Path) -> Result<Json> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Json =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if !value.is_object() {
        bail!("{}: a policy must be a JSON object", path.display());
    }
    Ok(value)
}

/// Checks `policy` with the filter's own parser where this crate has it, and returns what the
/// user should be told about it (empty: nothing).
///
/// spiffe-authz-tcp: the spiffe-authz config compiled for TCP (`Config::parse_for` with
/// [`Protocol::Tcp`]: unknown fields refused, errors naming the field), and its notes on rules
/// that read HTTP-only fields (an ALLOW rule reading one never matches a connection, a DENY or
/// AUDIT rule drops it and widens: what istiod's TCP builder renders, and what the filter
/// does). The other filters: nothing is checked here (`meshward wasmplugin --check-wasm` starts
/// the module itself).
pub fn check_policy(filter: Filter, policy: &Json) -> Result<Vec<String>> {
    match filter {
        Filter::SpiffeAuthzTcp => {
            let bytes = policy.to_string();
            let config = spiffe_authz_core::Config::parse_for(bytes.as_bytes(), Protocol::Tcp)
                .map_err(|e| anyhow!("--policy: {} refuses it: {e}", filter.name()))?;
            Ok(config.tcp_notes())
        }
        Filter::HeaderLimits
        | Filter::JwtAuthn
        | Filter::SpiffeAuthz
        | Filter::RateLimit
        | Filter::Bundle => Ok(Vec::new()),
    }
}

/// The WasmPlugin YAML (no leading comment) for `args` with `policy` as pluginConfig. Fails on a
/// policy [`check_policy`] refuses.
pub fn render(args: &PluginOptions, policy: &Json) -> Result<String> {
    check_policy(args.filter, policy)?;
    let (default_phase, default_priority) = args.filter.default_placement();
    let mut metadata = Mapping::new();
    let name = args.name.clone().unwrap_or_else(|| match args.filter {
        Filter::Bundle => "meshward".to_string(),
        other => format!("meshward-{}", other.name()),
    });
    check_dns_label("--name", &name)?;
    metadata.insert("name".into(), name.into());
    if let Some(ns) = &args.namespace {
        check_dns_label("--namespace", ns)?;
        metadata.insert("namespace".into(), ns.as_str().into());
    }

    let mut spec = Mapping::new();
    if !args.selectors.is_empty() {
        let mut labels = Mapping::new();
        for pair in &args.selectors {
            let (key, value) = parse_label("--selector", pair)?;
            if labels.insert(key.into(), value.into()).is_some() {
                bail!("--selector {pair}: the label is given twice");
            }
        }
        let mut selector = Mapping::new();
        selector.insert("matchLabels".into(), Yaml::Mapping(labels));
        spec.insert("selector".into(), Yaml::Mapping(selector));
    }
    spec.insert("url".into(), check_url(&args.image)?.into());
    if let Some(sha) = &args.sha256 {
        spec.insert("sha256".into(), check_sha256(sha, &args.image)?.into());
    }
    spec.insert("pluginName".into(), args.filter.name().into());
    spec.insert(
        "phase".into(),
        args.phase.unwrap_or(default_phase).to_string().into(),
    );
    spec.insert(
        "priority".into(),
        args.priority.unwrap_or(default_priority).into(),
    );
    // A broken module or a rejected config must stop traffic, not wave it through.
    spec.insert("failStrategy".into(), "FAIL_CLOSE".into());
    spec.insert("type".into(), args.filter.plugin_type().as_str().into());
    // Inbound traffic of the selected workloads: these filters guard the endpoint they sit in
    // front of, not the calls it makes.
    let mut server = Mapping::new();
    server.insert("mode".into(), "SERVER".into());
    if !args.ports.is_empty() {
        server.insert("ports".into(), render_ports(&args.ports)?);
    }
    spec.insert("match".into(), Yaml::Sequence(vec![Yaml::Mapping(server)]));
    spec.insert("pluginConfig".into(), to_yaml(policy));

    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), "extensions.istio.io/v1alpha1".into());
    doc.insert("kind".into(), "WasmPlugin".into());
    doc.insert("metadata".into(), Yaml::Mapping(metadata));
    doc.insert("spec".into(), Yaml::Mapping(spec));
    serde_yaml_ng::to_string(&Yaml::Mapping(doc)).context("writing YAML")
}

/// `match[].ports`: `[{number: N}, …]`. The CRD keys the list by `number` (the API server refuses
/// a repeated port) and allows 1–65535.
fn render_ports(ports: &[u16]) -> Result<Yaml> {
    let mut out = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        if port == 0 {
            bail!("--port 0: expected a port number, 1-65535");
        }
        if ports.iter().take(i).any(|&p| p == port) {
            bail!("--port {port}: the port is given twice");
        }
        let mut selector = Mapping::new();
        selector.insert("number".into(), port.into());
        out.push(Yaml::Mapping(selector));
    }
    Ok(Yaml::Sequence(out))
}

/// JSON → YAML with object keys sorted, so that the output does not depend on whether some crate
/// in the build turned on serde_json's `preserve_order`.
fn to_yaml(json: &Json) -> Yaml {
    match json {
        Json::Null => Yaml::Null,
        Json::Bool(b) => Yaml::Bool(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into()
            } else if let Some(i) = n.as_i64() {
                i.into()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into()
            }
        }
        Json::String(s) => s.as_str().into(),
        Json::Array(items) => Yaml::Sequence(items.iter().map(to_yaml).collect()),
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Mapping::new();
            for key in keys {
                if let Some(value) = map.get(key) {
                    out.insert(key.as_str().into(), to_yaml(value));
                }
            }
            Yaml::Mapping(out)
        }
    }
}

/// `KEY=VALUE` under Kubernetes' label rules (optional `prefix/`, 63-character name and value,
/// alphanumerics with `-`, `_`, `.` inside); errors name `flag`.
pub fn parse_label<'a>(flag: &str, pair: &'a str) -> Result<(&'a str, &'a str)> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| anyhow!("{flag} {pair}: expected KEY=VALUE"))?;
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label) {
                bail!("{flag} {pair}: `{prefix}` is not a DNS subdomain prefix");
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_value(name) {
        bail!("{flag} {pair}: `{key}` is not a label key");
    }
    if !is_label_value(value) {
        bail!("{flag} {pair}: `{value}` is not a label value");
    }
    Ok((key, value))
}

fn is_label_value(v: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge(v.chars().next())
        && edge(v.chars().last())
}

fn is_dns_label(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

/// A `metadata.name` or `metadata.namespace` as the renderer takes it (an RFC 1123 label);
/// errors name `flag`.
pub fn check_dns_label(flag: &str, v: &str) -> Result<()> {
    if !is_dns_label(v) {
        bail!("{flag} {v}: must be a DNS label (lowercase letters, digits, `-`; at most 63)");
    }
    Ok(())
}

/// The URL schemes the WasmPlugin CRD allows.
fn check_url(url: &str) -> Result<&str> {
    let scheme_ok = ["oci://", "https://", "http://", "file://"]
        .iter()
        .any(|s| url.starts_with(s) && url.len() > s.len());
    if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("--image {url}: expected oci://HOST/REPO:TAG (or an http(s):// or file:// URL)");
    }
    Ok(url)
}

/// 64 lowercase hex digits; a `sha256:` prefix (as `meshward image push` prints the manifest
/// digest) is dropped. Must agree with a digest pinned in the URL.
fn check_sha256(sha: &str, url: &str) -> Result<String> {
    let hex = sha
        .strip_prefix("sha256:")
        .unwrap_or(sha)
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("--sha256 {sha}: expected 64 hex digits");
    }
    if let Some((_, pinned)) = url.split_once("@sha256:") {
        if !pinned.eq_ignore_ascii_case(&hex) {
            bail!("--sha256 {sha} differs from the digest pinned in --image {url}");
        }
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(filter: Filter) -> PluginOptions {
        PluginOptions {
            filter,
            image: "oci://r.example/meshward/spiffe-authz-tcp:0.1.0".into(),
            sha256: None,
            name: None,
            namespace: None,
            selectors: Vec::new(),
            phase: None,
            priority: None,
            ports: Vec::new(),
        }
    }

    fn tcp_policy() -> Json {
        json!({"requireMtls": true, "policies": [{"name": "db-clients", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/orders/sa/orders"]}}],
             "to": [{"operation": {"ports": ["5432"]}}]}]}]})
    }

    fn rendered(args: &PluginOptions, policy: &Json) -> Yaml {
        serde_yaml_ng::from_str(&render(args, policy).unwrap()).unwrap()
    }

    #[test]
    fn spiffe_authz_tcp_renders_as_a_network_plugin_in_the_authz_phase() {
        let digest = "ab".repeat(32);
        let args = PluginOptions {
            sha256: Some(format!("sha256:{digest}")),
            namespace: Some("data".into()),
            selectors: vec!["app=postgres".into()],
            ports: vec![5432],
            ..options(Filter::SpiffeAuthzTcp)
        };
        let doc = rendered(&args, &tcp_policy());
        let spec = &doc["spec"];
        assert_eq!(doc["metadata"]["name"], "meshward-spiffe-authz-tcp");
        assert_eq!(doc["metadata"]["namespace"], "data");
        assert_eq!(spec["type"], "NETWORK");
        assert_eq!(spec["pluginName"], "spiffe-authz-tcp");
        assert_eq!(spec["phase"], "AUTHZ");
        assert_eq!(spec["priority"], 500);
        assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
        assert_eq!(spec["selector"]["matchLabels"]["app"], "postgres");
        assert_eq!(spec["sha256"], Yaml::from(digest));
        assert_eq!(spec["match"][0]["mode"], "SERVER");
        assert_eq!(spec["match"][0]["ports"][0]["number"], 5432);
        let config: Json = serde_json::to_value(&spec["pluginConfig"]).unwrap();
        assert_eq!(config, tcp_policy());
        // --phase and --priority still win.
        let moved = PluginOptions {
            phase: Some(Phase::Authn),
            priority: Some(7),
            ..options(Filter::SpiffeAuthzTcp)
        };
        let doc = rendered(&moved, &tcp_policy());
        assert_eq!(doc["spec"]["phase"], "AUTHN");
        assert_eq!(doc["spec"]["priority"], 7);
        assert!(doc["spec"]["match"][0].get("ports").is_none());
    }

    #[test]
    fn the_http_filters_stay_http_plugins() {
        for filter in Filter::ALL.into_iter().chain([Filter::Bundle]) {
            assert_eq!(filter.plugin_type(), PluginType::Http, "{filter:?}");
        }
        let policy = json!({"maxRequestHeadersKb": 64});
        let doc = rendered(&options(Filter::HeaderLimits), &policy);
        assert_eq!(doc["spec"]["type"], "HTTP");
        assert_eq!(
            serde_json::to_value(&doc["spec"]["match"]).unwrap(),
            json!([{"mode": "SERVER"}])
        );
    }

    #[test]
    fn a_config_spiffe_authz_tcp_refuses_fails_naming_the_field() {
        let cases = [
            (
                json!({"policies": [{"name": "p", "rules": [{"from": [{"source": {"principal": ["x"]}}]}]}]}),
                "policies[0].rules[0].from[0].source.principal",
            ),
            (
                json!({"policies": [{"name": "p", "action": "deny"}]}),
                "policies[0].action",
            ),
            (json!({"requireMTLS": true}), "requireMTLS"),
            (
                json!({"policies": [{"name": "p", "rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}]}),
                "policies[0].rules[0].to[0].operation.ports[0]",
            ),
        ];
        for (policy, field) in cases {
            let e = render(&options(Filter::SpiffeAuthzTcp), &policy).unwrap_err();
            let text = format!("{e:#}");
            assert!(
                text.contains(&format!("field `{field}`")) && text.contains("spiffe-authz-tcp"),
                "{policy}: {text}"
            );
        }
    }

    #[test]
    fn http_only_fields_are_accepted_with_notes() {
        let policy = json!({"policies": [
            {"name": "deny-admin", "action": "DENY", "rules": [
                {"from": [{"source": {"namespaces": ["legacy"]}}],
                 "to": [{"operation": {"paths": ["/admin/*"]}}]}]},
            {"name": "readers", "rules": [
                {"to": [{"operation": {"methods": ["GET"]}}]},
                {"from": [{"source": {"namespaces": ["orders"]}}]}]}]});
        render(&options(Filter::SpiffeAuthzTcp), &policy).unwrap();
        let notes = check_policy(Filter::SpiffeAuthzTcp, &policy).unwrap();
        assert_eq!(notes.len(), 2, "{notes:#?}");
        assert!(
            notes[0].contains("`deny-admin` rules[0]") && notes[0].contains("widens"),
            "{notes:#?}"
        );
        assert!(
            notes[1].contains("`readers` rules[0]") && notes[1].contains("never matches"),
            "{notes:#?}"
        );
        // The HTTP filter takes the same policy without a word.
        assert!(check_policy(Filter::SpiffeAuthz, &policy)
            .unwrap()
            .is_empty());
        assert!(check_policy(Filter::SpiffeAuthzTcp, &tcp_policy())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn ports_must_be_real_and_distinct() {
        for (ports, why) in [
            (vec![0], "--port 0"),
            (vec![5432, 5432], "--port 5432: the port is given twice"),
        ] {
            let args = PluginOptions {
                ports,
                ..options(Filter::SpiffeAuthzTcp)
            };
            let e = render(&args, &tcp_policy()).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
