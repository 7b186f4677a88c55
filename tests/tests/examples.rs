//! The shipped examples stay true:
//!
//! - `policies/<filter>/schema.json` is what the filter's config types generate (schemars), and every
//!   example policy passes both that schema and the filter's real config parser; the schema and the
//!   parser also reject the same typical mistakes;
//! - `examples/istio/*.yaml` are exactly what `meshward wasmplugin` renders from the command in
//!   their first line, they validate against Istio's WasmPlugin CRD schema
//!   (`<repo>/../shared/reference/istio-crds-subset.yaml`), and their phases/priorities order the
//!   filters header-limits → jwt-authn → spiffe-authz → rate-limit; spiffe-authz-tcp's is a
//!   `type: NETWORK` plugin whose policy spiffe-authz's parser accepts compiled for TCP;
//! - `examples/envoy/bootstrap.yaml` starts in real Envoy and answers through all four filters;
//! - the scenarios of `benches/scenarios` (what `meshward bench` figures in BENCHMARKS.md come
//!   from) pass in the harness: a benchmark measures the request it claims to.
//!
//! Refresh the generated files with `MESHWARD_BLESS=1 cargo test -p meshward-tests --test examples`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use meshward_rig::{envoy_binary, Client, Request, Response, WorkDir};
use serde_json::{json, Value as Json};
use serde_yaml_ng::Value as Yaml;

// `meshward wasmplugin`: its flags (meshward-cli) and its renderer (meshward-oci).
use meshward_cli::wasmplugin::WasmPluginArgs;
use meshward_oci::wasmplugin::{self, Filter, Phase, PluginType};
use meshward_scenario::suite::{run_file, Targets};
use meshward_tests::crd::validate;
use meshward_tests::{jwt_token as token, repo};

const BLESS: &str = "MESHWARD_BLESS=1 cargo test -p meshward-tests --test examples";
const FILTERS: [&str; 4] = ["header-limits", "jwt-authn", "spiffe-authz", "rate-limit"];
/// The network filter: spiffe-authz's pluginConfig (and schema), compiled for connections.
const TCP_FILTER: &str = "spiffe-authz-tcp";

fn blessing() -> bool {
    std::env::var_os("MESHWARD_BLESS").is_some_and(|v| v == "1")
}

/// Compares a generated file with the committed one (or rewrites it under MESHWARD_BLESS=1).
fn check_generated(path: &Path, generated: &str) {
    if blessing() {
        std::fs::write(path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}; generate it with `{BLESS}`", path.display()));
    assert!(
        committed == generated,
        "{} is stale: refresh it with `{BLESS}` and review the diff.\n--- generated ---\n{generated}",
        path.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Policies: schema ⇔ config types ⇔ parser

fn schema_of(filter: &str) -> Json {
    let schema = match filter {
        "header-limits" => header_limits_core::Config::json_schema(),
        "jwt-authn" => jwt_authn_core::Config::json_schema(),
        "spiffe-authz" | TCP_FILTER => spiffe_authz_core::Config::json_schema(),
        "rate-limit" => rate_limit_core::Config::json_schema(),
        other => panic!("unknown filter {other}"),
    };
    schema.to_value()
}

/// The filter's own parser and validator (what on_configure runs): Err(reason) if it refuses.
fn parse_with_core(filter: &str, json: &str) -> Result<(), String> {
    let bytes = json.as_bytes();
    let result = match filter {
        "header-limits" => header_limits_core::Config::parse(bytes).map(drop),
        "jwt-authn" => jwt_authn_core::Config::parse(bytes).map(drop),
        "spiffe-authz" => spiffe_authz_core::Config::parse(bytes).map(drop),
        TCP_FILTER => {
            spiffe_authz_core::Config::parse_for(bytes, spiffe_authz_core::Protocol::Tcp).map(drop)
        }
        "rate-limit" => rate_limit_core::Config::parse(bytes).map(drop),
        other => panic!("unknown filter {other}"),
    };
    result.map_err(|e| e.to_string())
}

fn schema_path(filter: &str) -> PathBuf {
    repo().join("policies").join(filter).join("schema.json")
}

#[test]
fn benchmark_scenarios_meet_their_expectations() {
    let files = meshward_tests::yaml_files(&repo().join("benches/scenarios"));
    assert!(files.len() >= 10, "{} benchmark scenarios", files.len());
    let wasm_dir = meshward_rig::default_wasm_dir(&repo());
    for file in &files {
        let report = run_file(file, &wasm_dir, Targets::Harness, false);
        assert_eq!(report.failed, 0, "{}:\n{}", file.display(), report.text);
        assert!(report.passed > 0, "{}: no case", file.display());
    }
}

#[test]
fn policy_schemas_are_generated_from_the_config_types() {
    for filter in FILTERS {
        let schema = schema_of(filter);
        assert_eq!(schema["additionalProperties"], json!(false), "{filter}");
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        check_generated(&schema_path(filter), &text);
    }
}

/// The example policies of a filter (policies/<filter>/*.json except the schema).
fn example_policies(filter: &str) -> Vec<PathBuf> {
    let dir = repo().join("policies").join(filter);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != "schema.json"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_policies_satisfy_their_schema_and_their_parser() {
    for filter in FILTERS {
        let schema = schema_of(filter);
        let policies = example_policies(filter);
        assert!(policies.len() >= 2, "{filter}: {policies:?}");
        for path in policies {
            let text = std::fs::read_to_string(&path).unwrap();
            let doc: Json = serde_json::from_str(&text).unwrap();
            if let Err(e) = validate(&schema, &doc) {
                panic!("{} violates its schema:\n{e}", path.display());
            }
            if let Err(e) = parse_with_core(filter, &text) {
                panic!("{} is refused by {filter}: {e}", path.display());
            }
        }
    }
}

/// Documents both must accept, and mistakes both must refuse: the schema is no looser and no
/// stricter than the parser on what editors flag (names, types, enums, ranges, formats).
#[test]
fn schema_and_parser_agree_on_typical_documents() {
    let cases: &[(&str, bool, &str)] = &[
        ("header-limits", true, "{}"),
        (
            "header-limits",
            true,
            r#"{"maxRequestHeadersKb":8192,"headersWithUnderscoresAction":"DROP_HEADER"}"#,
        ),
        ("header-limits", false, r#"{"maxRequestHeadersKB":64}"#),
        ("header-limits", false, r#"{"maxRequestHeadersKb":0}"#),
        ("header-limits", false, r#"{"maxRequestHeadersKb":8193}"#),
        ("header-limits", false, r#"{"maxHeadersCount":"100"}"#),
        ("header-limits", false, r#"{"maxPathBytes":0}"#),
        (
            "header-limits",
            false,
            r#"{"headersWithUnderscoresAction":"allow"}"#,
        ),
        (
            "jwt-authn",
            true,
            r#"{"jwtRules":[{"issuer":"a","jwksUri":"https://idp/jwks","timeout":"1.5s","jwksCacheDuration":"10m"}]}"#,
        ),
        (
            "jwt-authn",
            true,
            r#"{"jwtRules":[{"issuer":"a","jwksUri":"https://idp/jwks","fromHeaders":[{"name":"x-token"}],"fromCookies":["session"]}]}"#,
        ),
        (
            "jwt-authn",
            false,
            r#"{"jwtRules":[{"issuer":"a","jwksUri":"https://idp/jwks","audience":["x"]}]}"#,
        ),
        (
            "jwt-authn",
            false,
            r#"{"jwtRules":[{"issuer":"","jwksUri":"https://idp/jwks"}]}"#,
        ),
        (
            "jwt-authn",
            false,
            r#"{"jwtRules":[{"issuer":"a","jwksUri":"https://idp/jwks","timeout":"5 s"}]}"#,
        ),
        (
            "jwt-authn",
            false,
            r#"{"jwtRules":[{"issuer":"a","jwksUri":"https://idp/jwks","fromCookies":["a b"]}]}"#,
        ),
        (
            "jwt-authn",
            false,
            r#"{"jwtRules":[{"issuer":"a","jwks":42}]}"#,
        ),
        ("jwt-authn", false, r#"{"clockSkewSeconds":3601}"#),
        (
            "spiffe-authz",
            true,
            r#"{"policies":[{"name":"p","action":"DENY","rules":[{"to":[{"operation":{"paths":["/a"]}}]}]}]}"#,
        ),
        (
            "spiffe-authz",
            false,
            r#"{"policies":[{"name":"p","action":"deny"}]}"#,
        ),
        (
            "spiffe-authz",
            false,
            r#"{"policies":[{"name":"p","rules":[{"from":[{"source":{"principal":["x"]}}]}]}]}"#,
        ),
        ("spiffe-authz", false, r#"{"requireMtls":"yes"}"#),
        (
            "spiffe-authz",
            false,
            r#"{"policies":[{"action":"ALLOW"}]}"#,
        ),
        (
            "rate-limit",
            true,
            r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"250ms"},"descriptors":[{"key":"request.headers[x-api-key]"},{"key":"request.auth.claims[org][team]"}]}"#,
        ),
        ("rate-limit", false, r#"{}"#),
        (
            "rate-limit",
            false,
            r#"{"tokenBucket":{"maxTokens":0,"fillInterval":"1s"}}"#,
        ),
        (
            "rate-limit",
            false,
            r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1 s"}}"#,
        ),
        (
            "rate-limit",
            false,
            r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"descriptors":[{"key":"source.port"}]}"#,
        ),
        (
            "rate-limit",
            false,
            r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"rateLimitHeaders":"draft"}"#,
        ),
        (
            "rate-limit",
            false,
            r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"maxKeys":0}"#,
        ),
        (
            "rate-limit",
            false,
            r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"statusCode":600}"#,
        ),
    ];
    for (filter, valid, text) in cases {
        let doc: Json = serde_json::from_str(text).unwrap();
        let by_schema = validate(&schema_of(filter), &doc);
        let by_parser = parse_with_core(filter, text);
        assert_eq!(
            by_schema.is_ok(),
            *valid,
            "{filter} schema on {text}: {by_schema:?}"
        );
        assert_eq!(
            by_parser.is_ok(),
            *valid,
            "{filter} parser on {text}: {by_parser:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The bundle's policies (meshward.wasm, docs/bundle.md): one section per filter

/// `policies/meshward/schema.json`: the four filters' schemas as the sections' schemas, their
/// definitions moved under `<section>.<name>` (so that equal names cannot collide) with every
/// `$ref` rewritten to match; no other key, and at least one section.
fn bundle_schema() -> Json {
    fn rewrite_refs(node: &mut Json, section: &str) {
        match node {
            Json::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match (key.as_str(), value) {
                        ("$ref", Json::String(target)) => {
                            if let Some(name) = target.strip_prefix("#/$defs/") {
                                *target = format!("#/$defs/{section}.{name}");
                            }
                        }
                        (_, value) => rewrite_refs(value, section),
                    }
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|i| rewrite_refs(i, section)),
            _ => {}
        }
    }
    let mut defs = serde_json::Map::new();
    let mut properties = serde_json::Map::new();
    let mut dialect = Json::Null;
    for (filter, section) in meshward_scenario::bundle::ORDER {
        let mut schema = schema_of(filter);
        rewrite_refs(&mut schema, section);
        let map = schema.as_object_mut().unwrap();
        if let Some(Json::Object(own)) = map.remove("$defs") {
            for (name, def) in own {
                defs.insert(format!("{section}.{name}"), def);
            }
        }
        dialect = map.remove("$schema").unwrap_or(Json::Null);
        properties.insert(section.to_string(), schema);
    }
    json!({
        "$schema": dialect,
        "title": "meshward bundle",
        "description": "pluginConfig of meshward.wasm: one section per check, each the separate filter's configuration (docs/bundle.md)",
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
        "minProperties": 1,
        "$defs": defs,
    })
}

#[test]
fn bundle_schema_is_composed_from_the_filters_schemas() {
    let text = serde_json::to_string_pretty(&bundle_schema()).unwrap() + "\n";
    check_generated(&schema_path("meshward"), &text);
}

/// The bundle's own parser (what its on_configure runs).
fn parse_bundle(json: &str) -> Result<(), String> {
    meshward::BundleConfig::parse(json.as_bytes())
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn bundle_policies_satisfy_the_schema_and_the_parser() {
    let schema = bundle_schema();
    let policies = example_policies("meshward");
    assert!(policies.len() >= 2, "{policies:?}");
    for path in policies {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Json = serde_json::from_str(&text).unwrap();
        if let Err(e) = validate(&schema, &doc) {
            panic!("{} violates its schema:\n{e}", path.display());
        }
        parse_bundle(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let cases: &[(bool, &str)] = &[
        (true, r#"{"headerLimits":{}}"#),
        (
            true,
            r#"{"spiffeAuthz":{"dryRun":true},"rateLimit":{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"}}}"#,
        ),
        (false, "{}"),
        (false, r#"{"jwtAuthN":{}}"#),
        (false, r#"{"headerLimits":null}"#),
        (false, r#"{"headerLimits":{"maxRequestHeadersKb":0}}"#),
        (false, r#"{"rateLimit":{}}"#),
        (
            false,
            r#"{"spiffeAuthz":{"policies":[{"name":"p","action":"deny"}]}}"#,
        ),
        (
            false,
            r#"{"jwtAuthn":{"jwtRules":[{"issuer":"a","jwks":42}]}}"#,
        ),
    ];
    for (valid, text) in cases {
        let doc: Json = serde_json::from_str(text).unwrap();
        let by_schema = validate(&schema, &doc);
        let by_parser = parse_bundle(text);
        assert_eq!(by_schema.is_ok(), *valid, "schema on {text}: {by_schema:?}");
        assert_eq!(by_parser.is_ok(), *valid, "parser on {text}: {by_parser:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Istio WasmPlugin examples

#[derive(Parser)]
#[command(name = "meshward wasmplugin")]
struct WasmPluginCommand {
    #[command(flatten)]
    args: WasmPluginArgs,
}

struct IstioExample {
    path: PathBuf,
    command_line: String,
    args: WasmPluginArgs,
    yaml: Yaml,
}

/// Every examples/istio/*.yaml with the `meshward wasmplugin` command of its first line.
fn istio_examples() -> Vec<IstioExample> {
    let dir = repo().join("examples/istio");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let command_line = text.lines().next().unwrap_or_default().to_string();
            let words = command_line
                .strip_prefix("# meshward wasmplugin ")
                .unwrap_or_else(|| {
                    panic!(
                        "{}: the first line must be `# meshward wasmplugin …`",
                        path.display()
                    )
                });
            let argv = std::iter::once("wasmplugin").chain(words.split_whitespace());
            let mut args = WasmPluginCommand::try_parse_from(argv)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .args;
            // Policy paths in the command are relative to the repository root.
            args.policy = repo().join(&args.policy);
            let yaml = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            IstioExample {
                path,
                command_line,
                args,
                yaml,
            }
        })
        .collect()
}

#[test]
fn istio_examples_are_what_meshward_wasmplugin_renders() {
    let examples = istio_examples();
    let mut covered: Vec<&str> = examples.iter().map(|e| e.args.filter.0.name()).collect();
    covered.sort_unstable();
    let mut all = FILTERS.to_vec();
    all.push(TCP_FILTER);
    all.sort_unstable();
    assert_eq!(covered, all, "one example per filter");
    for example in &examples {
        let stem = example.path.file_stem().unwrap().to_str().unwrap();
        assert_eq!(
            stem,
            example.args.filter.0.name(),
            "{}",
            example.path.display()
        );
        assert!(
            example.args.policy.starts_with(repo().join("policies")),
            "{}: the pluginConfig comes from policies/",
            example.path.display()
        );
        let policy = wasmplugin::read_policy(&example.args.policy).unwrap();
        let rendered = wasmplugin::render(&example.args.plugin(), &policy).unwrap();
        check_generated(
            &example.path,
            &format!("{}\n{rendered}", example.command_line),
        );
        // The pluginConfig is the policy file itself, and a policy the filter accepts.
        let rendered: Yaml = serde_yaml_ng::from_str(&rendered).unwrap();
        let plugin_config: Json = serde_json::to_value(&rendered["spec"]["pluginConfig"]).unwrap();
        assert_eq!(plugin_config, policy, "{}", example.path.display());
        let filter = example.args.filter.0.name();
        validate(&schema_of(filter), &plugin_config).unwrap();
        parse_with_core(filter, &plugin_config.to_string()).unwrap();
    }
}

/// The CRD's `x-kubernetes-validations` (CEL) rules that apply to what we render, in Rust.
fn check_cel_rules(spec: &Json) -> Result<(), String> {
    let set = ["selector", "targetRef", "targetRefs"]
        .iter()
        .filter(|k| spec.get(**k).is_some())
        .count();
    if set > 1 {
        return Err("only one of targetRefs or selector can be set".into());
    }
    if let Some(labels) = spec["selector"]["matchLabels"].as_object() {
        for (key, value) in labels {
            if key.is_empty()
                || key.contains('*')
                || value.as_str().is_some_and(|v| v.contains('*'))
            {
                return Err(format!("label {key}: empty or wildcard"));
            }
        }
    }
    let url = spec["url"].as_str().unwrap_or_default();
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    if !["", "http", "https", "oci", "file"].contains(&scheme) {
        return Err(format!(
            "url must have schema one of [http, https, file, oci]: {url}"
        ));
    }
    Ok(())
}

#[test]
fn istio_examples_validate_against_the_wasmplugin_crd() {
    let schema = meshward_tests::crd::wasmplugin_schema();
    let examples = istio_examples();
    assert_eq!(examples.len(), 5);
    for example in &examples {
        let doc: Json = serde_json::to_value(&example.yaml).unwrap();
        if let Err(e) = validate(&schema, &doc) {
            panic!(
                "{} violates the WasmPlugin CRD:\n{e}",
                example.path.display()
            );
        }
        check_cel_rules(&doc["spec"]).unwrap();
        assert_eq!(doc["spec"]["failStrategy"], "FAIL_CLOSE");
        let filter = example.args.filter.0;
        assert_eq!(doc["spec"]["type"], filter.plugin_type().as_str());
        match filter.plugin_type() {
            PluginType::Http => assert_eq!(doc["spec"]["match"], json!([{"mode": "SERVER"}])),
            // A network plugin names its TCP ports: without them Istio would also put it in
            // front of the HTTP connection manager of the workload's HTTP ports.
            PluginType::Network => {
                let server = &doc["spec"]["match"][0];
                assert_eq!(server["mode"], "SERVER");
                assert!(!server["ports"].as_array().unwrap().is_empty());
            }
        }
    }
    // The strict schema does refuse mistakes (else the loop above proves nothing).
    let good: Json = serde_json::to_value(&examples[0].yaml).unwrap();
    let mistakes: [(&str, Json); 5] = [
        ("/spec/failStratgy", json!("FAIL_CLOSE")),
        ("/spec/phase", json!("AUTHORIZATION")),
        ("/spec/sha256", json!("sha256:abc")),
        ("/spec/priority", json!(1_i64 << 40)),
        ("/kind", json!("EnvoyFilter")),
    ];
    for (pointer, value) in mistakes {
        let mut bad = good.clone();
        let (parent, leaf) = pointer.rsplit_once('/').unwrap();
        bad.pointer_mut(parent).unwrap()[leaf] = value;
        assert!(validate(&schema, &bad).is_err(), "{pointer} accepted");
    }
    let mut both = good["spec"].clone();
    both["targetRefs"] = json!([{"kind": "Service", "name": "orders"}]);
    assert!(check_cel_rules(&both).is_err());
}

#[test]
fn istio_phases_and_priorities_order_the_filters() {
    // Istio inserts AUTHN, then AUTHZ, then STATS plugins (UNSPECIFIED_PHASE: just before the
    // router); within a phase, higher priority first.
    let rank = |phase: &str| match phase {
        "AUTHN" => 0,
        "AUTHZ" => 1,
        "STATS" => 2,
        "UNSPECIFIED_PHASE" => 3,
        other => panic!("phase {other}"),
    };
    // The HTTP plugins only: a NETWORK plugin (spiffe-authz-tcp) sits in the listener's network
    // filter chain, not among them.
    let mut chain: Vec<(i32, i64, String)> = istio_examples()
        .iter()
        .filter(|e| e.args.filter.0.plugin_type() == PluginType::Http)
        .map(|e| {
            let spec = &e.yaml["spec"];
            (
                rank(spec["phase"].as_str().unwrap()),
                -spec["priority"].as_i64().unwrap(),
                spec["pluginName"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    chain.sort();
    let order: Vec<&str> = chain.iter().map(|(_, _, name)| name.as_str()).collect();
    assert_eq!(order, FILTERS);
    // The command's defaults give that order without flags.
    let mut defaults: Vec<(Phase, i32, &str)> = [
        Filter::RateLimit,
        Filter::SpiffeAuthz,
        Filter::JwtAuthn,
        Filter::HeaderLimits,
    ]
    .iter()
    .map(|f| {
        let (phase, priority) = f.default_placement();
        (phase, priority, f.name())
    })
    .collect();
    defaults.sort_by_key(|(phase, priority, _)| (rank(&phase.to_string()), -priority));
    let names: Vec<&str> = defaults.iter().map(|(_, _, n)| *n).collect();
    assert_eq!(names, FILTERS);
}

/// `meshward wasmplugin --filter meshward`: the bundle's WasmPlugin goes where header-limits goes
/// (AUTHN, priority 1000, its checks in their own order inside), named `meshward`, with the
/// sectioned policy as its pluginConfig; the CRD takes it.
#[test]
fn the_bundle_renders_as_one_wasmplugin() {
    let policy = repo().join("policies/meshward/all-four.json");
    let argv = [
        "wasmplugin",
        "--filter",
        "meshward",
        "--policy",
        policy.to_str().unwrap(),
        "--image",
        "oci://r.example/meshward/meshward:0.1.0",
    ];
    let args = WasmPluginCommand::try_parse_from(argv).unwrap().args;
    assert_eq!(args.filter.0, Filter::Bundle);
    let json = wasmplugin::read_policy(&args.policy).unwrap();
    let rendered = wasmplugin::render(&args.plugin(), &json).unwrap();
    let doc: Json =
        serde_json::to_value(serde_yaml_ng::from_str::<Yaml>(&rendered).unwrap()).unwrap();
    validate(&meshward_tests::crd::wasmplugin_schema(), &doc).unwrap();
    check_cel_rules(&doc["spec"]).unwrap();
    assert_eq!(doc["metadata"]["name"], "meshward");
    assert_eq!(doc["spec"]["pluginName"], "meshward");
    assert_eq!(doc["spec"]["phase"], "AUTHN");
    assert_eq!(doc["spec"]["priority"], 1000);
    assert_eq!(doc["spec"]["failStrategy"], "FAIL_CLOSE");
    assert_eq!(doc["spec"]["pluginConfig"], json);
    validate(&bundle_schema(), &doc["spec"]["pluginConfig"]).unwrap();
    parse_bundle(&doc["spec"]["pluginConfig"].to_string()).unwrap();
}

/// `meshward wasmplugin --filter spiffe-authz-tcp`: a `type: NETWORK` plugin named after the
/// filter, in the AUTHZ phase (before Istio's own network RBAC), with the selector, checksum and
/// ports given; the CRD takes it. A policy the filter would refuse is refused here, naming the
/// field; HTTP-only fields are not errors.
#[test]
fn spiffe_authz_tcp_renders_as_a_network_wasmplugin() {
    let digest = "cd".repeat(32);
    let render_tcp = |policy: &Path, extra: &[&str]| -> Result<String, String> {
        let argv = [
            "wasmplugin",
            "--filter",
            TCP_FILTER,
            "--policy",
            policy.to_str().unwrap(),
            "--image",
            "oci://r.example/meshward/spiffe-authz-tcp:0.1.0",
        ];
        let args = WasmPluginCommand::try_parse_from(argv.iter().chain(extra))
            .map_err(|e| e.to_string())?
            .args;
        assert_eq!(args.filter.0, Filter::SpiffeAuthzTcp);
        let json = wasmplugin::read_policy(&args.policy).map_err(|e| e.to_string())?;
        wasmplugin::render(&args.plugin(), &json).map_err(|e| format!("{e:#}"))
    };
    let policy = repo().join("policies/spiffe-authz/tcp-postgres.json");
    let rendered = render_tcp(
        &policy,
        &[
            "--selector",
            "app=postgres",
            "--sha256",
            &digest,
            "--port",
            "5432",
            "--port",
            "5433",
        ],
    )
    .unwrap();
    let doc: Json =
        serde_json::to_value(serde_yaml_ng::from_str::<Yaml>(&rendered).unwrap()).unwrap();
    let schema = meshward_tests::crd::wasmplugin_schema();
    validate(&schema, &doc).unwrap();
    check_cel_rules(&doc["spec"]).unwrap();
    let spec = &doc["spec"];
    assert_eq!(doc["metadata"]["name"], "meshward-spiffe-authz-tcp");
    assert_eq!(spec["type"], "NETWORK");
    assert_eq!(spec["pluginName"], TCP_FILTER);
    assert_eq!(spec["phase"], "AUTHZ");
    assert_eq!(spec["priority"], 500);
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"app": "postgres"}})
    );
    assert_eq!(spec["sha256"], json!(digest));
    assert_eq!(
        spec["match"],
        json!([{"mode": "SERVER", "ports": [{"number": 5432}, {"number": 5433}]}])
    );
    assert_eq!(
        spec["pluginConfig"],
        wasmplugin::read_policy(&policy).unwrap()
    );
    parse_with_core(TCP_FILTER, &spec["pluginConfig"].to_string()).unwrap();
    // The CRD refuses what the network plugin must not carry.
    for (pointer, value) in [
        ("/spec/type", json!("TCP")),
        ("/spec/match/0/ports/0/number", json!(0)),
        ("/spec/match/0/ports/0/port", json!(5432)),
    ] {
        let mut bad = doc.clone();
        let (parent, leaf) = pointer.rsplit_once('/').unwrap();
        bad.pointer_mut(parent).unwrap()[leaf] = value;
        assert!(validate(&schema, &bad).is_err(), "{pointer} accepted");
    }

    // A policy with HTTP-only fields renders (the command prints notes, cli/tests/cli.rs).
    render_tcp(
        &repo().join("policies/spiffe-authz/issue-example.json"),
        &[],
    )
    .unwrap();
    // A policy the filter refuses does not, and the error names the field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"policies":[{"name":"db","rules":[{"from":[{"source":{"principal":["x"]}}]}]}]}"#,
    )
    .unwrap();
    let e = render_tcp(&bad, &[]).unwrap_err();
    assert!(
        e.contains("spiffe-authz-tcp")
            && e.contains("field `policies[0].rules[0].from[0].source.principal`"),
        "{e}"
    );
    for ports in [["--port", "0"], ["--port", "70000"]] {
        assert!(render_tcp(&policy, &ports).is_err(), "accepted {ports:?}");
    }
    let twice = render_tcp(&policy, &["--port", "5432", "--port", "5432"]).unwrap_err();
    assert!(twice.contains("given twice"), "{twice}");
}

fn render_args(extra: &[&str]) -> Result<String, String> {
    let policy = repo().join("policies/header-limits/strict.json");
    let policy = policy.to_str().unwrap();
    let argv = [
        "wasmplugin",
        "--filter",
        "header-limits",
        "--policy",
        policy,
    ];
    let parsed =
        WasmPluginCommand::try_parse_from(argv.iter().chain(extra)).map_err(|e| e.to_string())?;
    let json = wasmplugin::read_policy(&parsed.args.policy).map_err(|e| e.to_string())?;
    wasmplugin::render(&parsed.args.plugin(), &json).map_err(|e| format!("{e:#}"))
}

#[test]
fn wasmplugin_command_checks_its_inputs() {
    let digest = "ab".repeat(32);
    let ok = render_args(&[
        "--image",
        "oci://r.example/m/hl:1",
        "--sha256",
        &format!("sha256:{}", digest.to_uppercase()),
    ])
    .unwrap();
    assert!(ok.contains(&format!("sha256: {digest}\n")), "{ok}");
    assert!(
        ok.contains("phase: AUTHN\n") && ok.contains("priority: 1000\n"),
        "{ok}"
    );
    let overridden = render_args(&[
        "--image",
        "oci://r/m:1",
        "--phase",
        "stats",
        "--priority",
        "-5",
    ])
    .unwrap();
    assert!(
        overridden.contains("phase: STATS\n") && overridden.contains("priority: -5\n"),
        "{overridden}"
    );
    for bad in [
        vec!["--image", "r.example/m/hl:1"],
        vec!["--image", "ftp://r/m"],
        vec!["--image", "oci://r/m:1", "--sha256", "abc"],
        vec![
            "--image",
            &format!("oci://r/m@sha256:{}", "cd".repeat(32)),
            "--sha256",
            &digest,
        ],
        vec!["--image", "oci://r/m:1", "--selector", "app"],
        vec!["--image", "oci://r/m:1", "--selector", "app=*"],
        vec![
            "--image",
            "oci://r/m:1",
            "--selector",
            "app=a",
            "--selector",
            "app=b",
        ],
        vec!["--image", "oci://r/m:1", "--namespace", "Shop"],
        vec!["--image", "oci://r/m:1", "--phase", "AUTHORIZATION"],
    ] {
        assert!(render_args(&bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The Envoy example

fn bootstrap_path() -> PathBuf {
    repo().join("examples/envoy/bootstrap.yaml")
}

/// (plugin name, configuration JSON) of every wasm filter in the bootstrap, in chain order.
fn wasm_filters(bootstrap: &Yaml) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for listener in bootstrap["static_resources"]["listeners"]
        .as_sequence()
        .unwrap()
    {
        for chain in listener["filter_chains"].as_sequence().unwrap() {
            for filter in chain["filters"].as_sequence().unwrap() {
                let hcm = &filter["typed_config"];
                for http in hcm["http_filters"].as_sequence().into_iter().flatten() {
                    let config = &http["typed_config"]["config"];
                    if let Some(name) = config["name"].as_str() {
                        let json = config["configuration"]["value"].as_str().unwrap();
                        out.push((name.to_string(), json.to_string()));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn envoy_example_configurations_are_valid_policies() {
    let text = std::fs::read_to_string(bootstrap_path()).unwrap();
    let bootstrap: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    let filters = wasm_filters(&bootstrap);
    let names: Vec<&str> = filters.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, FILTERS, "the example's chain order");
    for (name, config) in &filters {
        let doc: Json = serde_json::from_str(config).unwrap();
        validate(&schema_of(name), &doc).unwrap_or_else(|e| panic!("{name}: {e}"));
        parse_with_core(name, config).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Where the release .wasm files are: `$MESHWARD_WASM_DIR`, else `$CARGO_TARGET_DIR` or
/// `<repo>/target`, then `wasm32-wasip1/release`.
fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MESHWARD_WASM_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("wasm32-wasip1/release")
}

/// The example bootstrap made runnable beside other tests: every port moved to a free one (the
/// same old port ⇒ the same new port, so the cluster still reaches the upstream listener) and the
/// relative .wasm paths pointed at [`wasm_dir`]. Returns the YAML and the old → new port map.
fn relocated_bootstrap() -> (String, BTreeMap<u64, u16>) {
    let text = std::fs::read_to_string(bootstrap_path()).unwrap();
    let mut bootstrap: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    let mut ports = BTreeMap::new();
    let mut holders = Vec::new();
    let mut wasm_files = 0;
    relocate(&mut bootstrap, &mut ports, &mut holders, &mut wasm_files);
    assert_eq!(
        wasm_files, 4,
        "four wasm filters under target/wasm32-wasip1/release/"
    );
    drop(holders); // free the ports just before Envoy binds them
    (serde_yaml_ng::to_string(&bootstrap).unwrap(), ports)
}

fn relocate(
    node: &mut Yaml,
    ports: &mut BTreeMap<u64, u16>,
    holders: &mut Vec<TcpListener>,
    wasm_files: &mut usize,
) {
    match node {
        Yaml::Mapping(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), &value) {
                    (Some("port_value"), Yaml::Number(n)) => {
                        let old = n.as_u64().unwrap();
                        let new = *ports.entry(old).or_insert_with(|| {
                            // Held until every port is chosen, so that no two are the same.
                            let l = TcpListener::bind("127.0.0.1:0").unwrap();
                            let port = l.local_addr().unwrap().port();
                            holders.push(l);
                            port
                        });
                        *value = Yaml::from(new);
                    }
                    (Some("filename"), Yaml::String(f)) => {
                        if let Some(file) = f.strip_prefix("target/wasm32-wasip1/release/") {
                            let path = wasm_dir().join(file);
                            assert!(
                                path.is_file(),
                                "{} missing: build the filters with scripts/build-wasm.sh (or set MESHWARD_WASM_DIR)",
                                path.display()
                            );
                            *value = Yaml::from(path.to_str().unwrap());
                            *wasm_files += 1;
                        }
                    }
                    _ => relocate(value, ports, holders, wasm_files),
                }
            }
        }
        Yaml::Sequence(items) => {
            for item in items {
                relocate(item, ports, holders, wasm_files);
            }
        }
        _ => {}
    }
}

/// Envoy in its own process group, killed (and reaped) on drop.
struct RunningEnvoy {
    child: Child,
    log: PathBuf,
    _dir: WorkDir,
}

impl RunningEnvoy {
    fn start(bootstrap: &str, admin: SocketAddr, listener: SocketAddr) -> Self {
        let binary = envoy_binary().expect("Envoy 1.40 (scripts/setup.sh installs it)");
        let dir = WorkDir::new("examples-envoy-").unwrap();
        let config = dir.write("bootstrap.yaml", bootstrap).unwrap();
        let log = dir.path().join("envoy.log");
        let out = File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "info",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut envoy = Self {
            child,
            log,
            _dir: dir,
        };
        envoy.wait_ready(admin, listener);
        envoy
    }

    fn wait_ready(&mut self, admin: SocketAddr, listener: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Envoy exited with {status}:\n{}", self.log());
            }
            let ready = Client::plaintext(admin)
                .timeout(Duration::from_secs(2))
                .send(&Request::get("/ready").authority(Some("127.0.0.1")))
                .is_ok_and(|r| r.status == 200 && r.body_text().trim() == "LIVE");
            if ready && std::net::TcpStream::connect(listener).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Envoy not ready in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunningEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn envoy_example_answers_through_all_four_filters() {
    let (bootstrap, ports) = relocated_bootstrap();
    let addr = |old: u64| SocketAddr::from(([127, 0, 0, 1], ports[&old]));
    let envoy = RunningEnvoy::start(&bootstrap, addr(9901), addr(10000));
    let client = Client::plaintext(addr(10000)).timeout(Duration::from_secs(10));
    let send = |request: Request| -> Response {
        client
            .send(&request)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", envoy.log()))
    };
    let alice = format!("Bearer {}", token("rs256_alice"));
    let api = || Request::get("/api/orders");

    // Through all four: jwt-authn verified and forwarded `sub` (the upstream echoes it),
    // spiffe-authz allowed the request principal, rate-limit counted it.
    let ok = send(api().header("authorization", &alice));
    assert_eq!(ok.status, 200, "{ok:?}\n{}", envoy.log());
    assert_eq!(ok.body_text(), "hello from the upstream\n");
    assert_eq!(ok.header("x-upstream-saw-jwt-sub"), Some("alice"));
    assert_eq!(ok.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(ok.header("x-ratelimit-remaining"), Some("4"));

    // header-limits: a 5000-byte value is far below Envoy's own 60 KiB limit, above the policy's.
    let big = send(Request::get("/").header("x-big", "a".repeat(5000)));
    assert_eq!(big.status, 431, "{big:?}");
    let underscore = send(Request::get("/").header("x_under", "1"));
    assert_eq!(underscore.status, 400, "{underscore:?}");
    // jwt-authn: a token with a broken signature.
    let forged = send(api().header(
        "authorization",
        format!("Bearer {}", token("bad_signature")),
    ));
    assert_eq!(forged.status, 401, "{forged:?}");
    assert_eq!(forged.body_text(), "Jwt verification fails");
    // spiffe-authz: /api/* without a token, /admin for everyone, unlisted paths.
    assert_eq!(send(api()).status, 403);
    assert_eq!(
        send(Request::get("/admin").header("authorization", &alice)).status,
        403
    );
    assert_eq!(send(Request::get("/elsewhere")).status, 403);
    // Open pages pass anonymous, drawing from the shared default bucket (100/s).
    let public = send(Request::get("/"));
    assert_eq!(public.status, 200, "{public:?}");
    assert_eq!(public.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(public.header("x-upstream-saw-jwt-sub"), None);

    // rate-limit runs after authorization: the denied /admin request spent none of alice's 5
    // tokens, so 4 more pass and the next is refused.
    for remaining in (0..4).rev() {
        let r = send(api().header("authorization", &alice));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }
    let limited = send(api().header("authorization", &alice));
    assert_eq!(limited.status, 429, "{limited:?}");
}

#[test]
fn envoy_example_readme_uses_the_example_ports_and_a_valid_token() {
    let readme = std::fs::read_to_string(repo().join("examples/envoy/README.md")).unwrap();
    assert!(readme.contains(".venv/bin/envoy -c examples/envoy/bootstrap.yaml"));
    assert!(readme.contains("127.0.0.1:10000"));
    assert!(
        readme.contains(&token("rs256_alice")),
        "the README's token is the fixture's"
    );
}
