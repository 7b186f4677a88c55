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
//! Errors name the `meshward wasmplugin` flag a value came from: that is where users give them.

use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value as Yaml};

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
}

/// The four meshward filters, and the bundle of all four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    HeaderLimits,
    JwtAuthn,
    SpiffeAuthz,
    RateLimit,
    /// `meshward.wasm`: the four checks in one module; its pluginConfig has one section per
    /// check (`headerLimits`, `jwtAuthn`, `spiffeAuthz`, `rateLimit`).
    Bundle,
}

impl Filter {
    /// Every separate filter, in chain order.
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
        }
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

/// The WasmPlugin YAML (no leading comment) for `args` with `policy` as pluginConfig.
pub fn render(args: &PluginOptions, policy: &Json) -> Result<String> {
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
            let (key, value) = parse_label(pair)?;
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
    spec.insert("type".into(), "HTTP".into());
    // Inbound traffic of the selected workloads: these filters guard the endpoint they sit in
    // front of, not the calls it makes.
    let mut server = Mapping::new();
    server.insert("mode".into(), "SERVER".into());
    spec.insert("match".into(), Yaml::Sequence(vec![Yaml::Mapping(server)]));
    spec.insert("pluginConfig".into(), to_yaml(policy));

    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), "extensions.istio.io/v1alpha1".into());
    doc.insert("kind".into(), "WasmPlugin".into());
    doc.insert("metadata".into(), Yaml::Mapping(metadata));
    doc.insert("spec".into(), Yaml::Mapping(spec));
    serde_yaml_ng::to_string(&Yaml::Mapping(doc)).context("writing YAML")
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
/// alphanumerics with `-`, `_`, `.` inside).
fn parse_label(pair: &str) -> Result<(&str, &str)> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| anyhow!("--selector {pair}: expected KEY=VALUE"))?;
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label) {
                bail!("--selector {pair}: `{prefix}` is not a DNS subdomain prefix");
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_value(name) {
        bail!("--selector {pair}: `{key}` is not a label key");
    }
    if !is_label_value(value) {
        bail!("--selector {pair}: `{value}` is not a label value");
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

fn check_dns_label(flag: &str, v: &str) -> Result<()> {
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
