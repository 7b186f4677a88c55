//! `meshward check MODULE [--config FILE]`: what Envoy 1.40 would say about a module, before you
//! find it in a proxy log — and, for meshward's own filters, what the listener must provide for
//! the config to mean what it says (warnings: they do not change the exit status).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use meshward_harness::{check, FilterSpec};

#[derive(Args)]
pub struct CheckArgs {
    /// The proxy-wasm module (.wasm).
    module: PathBuf,
    /// pluginConfig file to run `proxy_on_configure` with.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Plugin name (Envoy `name`). Default: the module's file stem.
    #[arg(long)]
    name: Option<String>,
    /// Root id (Envoy `root_id`): the id the module registers its root context under, e.g.
    /// `add_header` for an AssemblyScript module that calls `registerRootContext(…,
    /// "add_header")`. Default: the plugin name.
    #[arg(long)]
    root_id: Option<String>,
    /// VM id (Envoy `vm_config.vm_id`). Default: empty, as in Envoy.
    #[arg(long)]
    vm_id: Option<String>,
}

/// Ok(true) when Envoy would load and configure the module.
pub fn run(args: CheckArgs) -> Result<bool> {
    let mut spec = FilterSpec::from_file(&args.module)?;
    if let Some(name) = &args.name {
        spec = spec.name(name);
    }
    if let Some(root_id) = &args.root_id {
        spec = spec.root_id(root_id);
    }
    if let Some(vm_id) = &args.vm_id {
        spec = spec.vm_id(vm_id);
    }
    let mut config = None;
    if let Some(file) = &args.config {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        config = Some(bytes.clone());
        spec = spec.config(bytes);
    }
    let report = check(&spec);
    let m = &report.module;
    println!("module: {}", args.module.display());
    println!(
        "plugin: {} (root id {})",
        spec.plugin_name(),
        args.root_id.as_deref().unwrap_or(&spec.plugin_name())
    );
    println!(
        "abi: {}",
        m.abi
            .map(|a| format!("{a:?}"))
            .unwrap_or_else(|| "none (no proxy_abi_version_* export)".into())
    );
    if m.unsupported_imports.is_empty() {
        println!("imports: all satisfied by Envoy 1.40");
    } else {
        println!("imports Envoy 1.40 does not provide:");
        for (module, name) in &m.unsupported_imports {
            println!("  {module}.{name}");
        }
    }
    if !m.missing_exports.is_empty() {
        println!("missing exports: {}", m.missing_exports.join(", "));
    }
    for line in &report.logs {
        println!("log [{}] {:?}: {}", line.plugin, line.level, line.message);
    }
    match &report.error {
        None => println!("on_configure: accepted"),
        Some(e) => println!("error: {e}"),
    }
    for line in listener_notices(&args.module, config.as_deref()) {
        println!("{line}");
    }
    Ok(report.is_ok() && m.unsupported_imports.is_empty() && m.missing_exports.is_empty())
}

/// What the listener must provide for a meshward filter's config to hold, one line each:
/// `notice: …` for what every such config relies on, `warning: … descriptors[i] …` for a part of
/// this config that a default listener turns into something else. The filter is recognised by the
/// module's file name (`spiffe_authz.wasm`, `rate-limit.wasm` …) or by the config's shape.
fn listener_notices(module: &Path, config: Option<&[u8]>) -> Vec<String> {
    let stem = module
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase().replace('-', "_"))
        .unwrap_or_default();
    let json: Option<serde_json::Value> = config.and_then(|c| serde_json::from_slice(c).ok());
    let has = |field: &str| json.as_ref().is_some_and(|j| j.get(field).is_some());
    let mut out = Vec::new();
    if stem.contains("spiffe_authz") || (has("policies") && !has("jwtRules")) {
        out.push(
            "notice: spiffe-authz: `connection.mtls` means only that the client presented a \
             certificate the TLS stack accepted. The listener must require and verify client \
             certificates — `require_client_certificate: true` and a `validation_context` that \
             trusts only the mesh CA (Istio: PeerAuthentication STRICT) — or any client can \
             present a self-signed certificate with any SPIFFE ID and be taken for that workload."
                .to_string(),
        );
        if let Some(policies) = json.as_ref().and_then(|j| j.get("policies")) {
            for (i, field) in source_ip_uses(policies) {
                out.push(format!(
                    "warning: spiffe-authz policies[{i}] uses {field}: that is the downstream \
                     address Envoy reports. Under the HTTP connection manager's default \
                     `use_remote_address: false` it is the last `x-forwarded-for` entry the \
                     client sent, so a client can pick the address a rule sees. Make sure the \
                     listener sets `use_remote_address: true`, or match on principals."
                ));
            }
        }
    }
    if stem.contains("rate_limit") || has("tokenBucket") {
        let descriptors = json
            .as_ref()
            .and_then(|j| j.get("descriptors"))
            .and_then(serde_json::Value::as_array);
        for (i, d) in descriptors.into_iter().flatten().enumerate() {
            if d.get("key").and_then(serde_json::Value::as_str) != Some("source.ip") {
                continue;
            }
            let stated = d
                .pointer("/sourceIp/trustedAddress")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("nothing");
            out.push(format!(
                "warning: rate-limit descriptors[{i}] (key source.ip): the key is the downstream \
                 address Envoy reports. Under the HTTP connection manager's default \
                 `use_remote_address: false` that is the last `x-forwarded-for` entry the client \
                 sent, so every client can pick its own bucket. The config states \
                 `trustedAddress: {stated}`: make sure the listener sets `use_remote_address: \
                 true` (with `xff_num_trusted_hops` equal to the trusted proxies in front)."
            ));
        }
    }
    out
}

/// The spiffe-authz fields that read `source.address` (`ipBlocks`, `notIpBlocks`, `when` on
/// `source.ip`), as (policy index, field name), once per policy and field.
fn source_ip_uses(policies: &serde_json::Value) -> Vec<(usize, &'static str)> {
    let mut out = Vec::new();
    for (i, policy) in policies.as_array().into_iter().flatten().enumerate() {
        let rules = policy.get("rules").and_then(serde_json::Value::as_array);
        let mut fields: Vec<&'static str> = Vec::new();
        for rule in rules.into_iter().flatten() {
            let sources = rule.get("from").and_then(serde_json::Value::as_array);
            for from in sources.into_iter().flatten() {
                for field in ["ipBlocks", "notIpBlocks"] {
                    if from.pointer(&format!("/source/{field}")).is_some()
                        && !fields.contains(&field)
                    {
                        fields.push(field);
                    }
                }
            }
            let conditions = rule.get("when").and_then(serde_json::Value::as_array);
            let when_source_ip = conditions
                .into_iter()
                .flatten()
                .any(|c| c.get("key").and_then(serde_json::Value::as_str) == Some("source.ip"));
            if when_source_ip && !fields.contains(&"`when` source.ip") {
                fields.push("`when` source.ip");
            }
        }
        out.extend(fields.into_iter().map(|f| (i, f)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notices(module: &str, config: &str) -> Vec<String> {
        listener_notices(Path::new(module), Some(config.as_bytes()))
    }

    #[test]
    fn spiffe_authz_configs_get_the_client_certificate_notice() {
        let n = notices(
            "target/wasm32-wasip1/release/spiffe_authz.wasm",
            r#"{"policies":[]}"#,
        );
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(n[0].starts_with("notice: spiffe-authz: `connection.mtls`"));
        assert!(n[0].contains("require_client_certificate: true"));
        assert!(n[0].contains("validation_context"));
        assert!(n[0].contains("STRICT"));
        // By the config's shape, whatever the file is called.
        assert_eq!(notices("authz.wasm", r#"{"policies":[]}"#), n);
        assert_eq!(listener_notices(Path::new("spiffe-authz.wasm"), None), n);
    }

    #[test]
    fn spiffe_authz_source_address_rules_are_named_in_a_warning() {
        let config = r#"{"policies":[
            {"name":"a","rules":[{"from":[{"source":{"principals":["x/ns/a/sa/b"]}}]}]},
            {"name":"b","rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/8"]}},
                                         {"source":{"notIpBlocks":["10.1.0.0/16"]}}],
                                  "when":[{"key":"source.ip","values":["10.0.0.1"]}]},
                                 {"from":[{"source":{"ipBlocks":["10.2.0.0/16"]}}]}]}]}"#;
        let n = notices("spiffe_authz.wasm", config);
        assert_eq!(n.len(), 4, "{n:?}");
        assert!(n[1].starts_with("warning: spiffe-authz policies[1] uses ipBlocks"));
        assert!(n[2].starts_with("warning: spiffe-authz policies[1] uses notIpBlocks"));
        assert!(n[3].starts_with("warning: spiffe-authz policies[1] uses `when` source.ip"));
        assert!(n[3].contains("x-forwarded-for"));
    }

    #[test]
    fn rate_limit_source_ip_descriptors_are_named_in_a_warning() {
        let config = r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"descriptors":[
            {"key":"source.principal"},
            {"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}},
            {"key":"request.headers[x-api-key]"},
            {"key":"source.ip"}]}"#;
        let n = notices("rate_limit.wasm", config);
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(n[0].starts_with("warning: rate-limit descriptors[1] (key source.ip)"));
        assert!(n[0].contains("use_remote_address: false"));
        assert!(n[0].contains("x-forwarded-for"));
        assert!(n[0].contains("`trustedAddress: USE_REMOTE_ADDRESS`"));
        assert!(n[1].starts_with("warning: rate-limit descriptors[3] (key source.ip)"));
        assert!(n[1].contains("`trustedAddress: nothing`"));
        assert_eq!(notices("limits.wasm", config), n);
    }

    #[test]
    fn other_configs_get_nothing() {
        let rl = r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},
            "descriptors":[{"key":"source.principal"}]}"#;
        assert!(notices("rate_limit.wasm", rl).is_empty());
        assert!(notices("header_limits.wasm", r#"{"maxRequestHeadersKb":64}"#).is_empty());
        assert!(notices("jwt_authn.wasm", r#"{"jwtRules":[]}"#).is_empty());
        assert!(listener_notices(Path::new("x.wasm"), None).is_empty());
        assert!(notices("rate_limit.wasm", "not json").is_empty());
    }
}
