//! Istio-native testing end to end: mesh scenario files (Istio YAML + a workload + cases) through
//! the built `.wasm` filters — the example mesh in the harness AND a real Envoy 1.40, a flipped
//! expectation failing with a readable diff, malformed resources failing with file, document,
//! field and line, and `meshward explain` naming the rule and the first failed condition.

use std::path::{Path, PathBuf};

use meshward_rig::default_wasm_dir;
use meshward_scenario::mesh::{explain, MeshScenario};
use meshward_scenario::suite::{run_file, FileReport, Targets};
use meshward_tests::{repo, yaml_files};

fn example_files() -> Vec<PathBuf> {
    yaml_files(&repo().join("examples/mesh"))
}

fn run(file: &Path, targets: Targets) -> FileReport {
    run_file(file, &default_wasm_dir(&repo()), targets, true)
}

#[test]
fn the_example_mesh_passes_in_the_harness_and_in_envoy() {
    let files = example_files();
    assert!(
        files.len() >= 4,
        "examples/mesh has {} scenario files",
        files.len()
    );
    let (mut passed, mut failed, mut text) = (0, 0, String::new());
    for file in &files {
        let report = run(file, Targets::HarnessAndEnvoy);
        passed += report.passed;
        failed += report.failed;
        text.push_str(&report.text);
    }
    println!("{text}\nexamples/mesh: {passed} passed, {failed} failed");
    assert_eq!(failed, 0, "{failed} case(s) failed:\n{text}");
    assert!(passed >= 60, "only {passed} cases in examples/mesh");
}

/// A temporary directory with a mesh scenario and its resources.
struct Mesh {
    dir: PathBuf,
}

impl Mesh {
    fn new(name: &str, resources: &str, scenario: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("meshward-mesh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("res")).expect("temp dir");
        std::fs::write(dir.join("res/policies.yaml"), resources).expect("write resources");
        std::fs::write(dir.join("scenario.yaml"), scenario).expect("write scenario");
        Self { dir }
    }
    fn scenario(&self) -> PathBuf {
        self.dir.join("scenario.yaml")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const RESOURCES: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: payments}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ledger-read, namespace: payments}
spec:
  selector: {matchLabels: {app: ledger}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/checkout]}}]
    to: [{operation: {methods: [GET], paths: [\"/ledger/*\"]}}]
  - from: [{source: {namespaces: [ops]}}]
";

const HEAD: &str =
    "mesh: {resources: [res/]}\nworkload: {namespace: payments, serviceAccount: ledger, labels: {app: ledger}, port: 9080}\n";

#[test]
fn a_flipped_expectation_fails_with_a_readable_diff() {
    let mesh = Mesh::new(
        "flipped",
        RESOURCES,
        &format!(
            "{HEAD}cases:\n\
             - name: checkout reads the ledger\n  request: {{from: {{namespace: shop, serviceAccount: checkout}}, path: /ledger/42}}\n  expect: {{status: 200, decidedBy: \"payments/ledger-read rules[0]\"}}\n\
             - name: flipped\n  request: {{from: {{namespace: shop, serviceAccount: checkout}}, path: /ledger/42}}\n  expect: {{status: 403, decidedBy: payments/allow-nothing}}\n"
        ),
    );
    let report = run(&mesh.scenario(), Targets::Harness);
    assert_eq!((report.passed, report.failed), (1, 1), "{}", report.text);
    let text = &report.text;
    for line in [
        "FAIL  flipped",
        "decision: allowed by ALLOW AuthorizationPolicy payments/ledger-read rules[0]",
        "status:",
        "- expected: 403",
        "+ actual:   200",
        "decidedBy:",
        "- expected: payments/allow-nothing",
        "+ actual:   payments/ledger-read rules[0]",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn a_malformed_resource_names_file_document_field_and_line() {
    let bad = format!(
        "{RESOURCES}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: typo, namespace: payments}}\nspec:\n  rules:\n  - to:\n    - operation:\n        method: [GET]\n"
    );
    let mesh = Mesh::new(
        "malformed",
        &bad,
        &format!("{HEAD}cases:\n- name: any\n  request: {{from: plaintext}}\n  expect: {{status: 403}}\n"),
    );
    let report = run(&mesh.scenario(), Targets::Harness);
    assert_eq!(report.failed, 1, "{}", report.text);
    let text = &report.text;
    for part in [
        "res/policies.yaml: document 3 (line 16)",
        "field `spec.rules[0].to[0].operation.method`",
        "unknown field `method`",
        "at line 23",
    ] {
        assert!(text.contains(part), "missing `{part}` in:\n{text}");
    }
    // A field Istio has but meshward cannot evaluate is an error too, never dropped.
    let unsupported = format!(
        "{RESOURCES}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: td, namespace: payments}}\nspec:\n  action: DENY\n  rules: [{{from: [{{source: {{trustDomains: [evil.example]}}}}]}}]\n"
    );
    let mesh = Mesh::new(
        "unsupported",
        &unsupported,
        &format!("{HEAD}cases:\n- name: any\n  request: {{from: plaintext}}\n  expect: {{status: 403}}\n"),
    );
    let report = run(&mesh.scenario(), Targets::Harness);
    assert_eq!(report.failed, 1, "{}", report.text);
    assert!(
        report
            .text
            .contains("AuthorizationPolicy payments/td: field `spec.rules[0].from[0].source.trustDomains`: not supported"),
        "{}",
        report.text
    );
}

#[test]
fn explain_names_every_policy_rule_and_first_failed_condition() {
    let mesh = Mesh::new(
        "explain",
        RESOURCES,
        &format!(
            "{HEAD}cases:\n- name: web posts\n  request: {{from: {{namespace: web, serviceAccount: frontend}}, method: POST, path: /ledger/42}}\n  expect: {{status: 403}}\n"
        ),
    );
    let scenario = MeshScenario::load(&mesh.scenario()).expect("scenario");
    let text = explain(&scenario, &default_wasm_dir(&repo())).expect("explain");
    for line in [
        "request POST /ledger/42 from spiffe://cluster.local/ns/web/sa/frontend over mTLS",
        "mTLS on port 9080: PERMISSIVE (no PeerAuthentication: PERMISSIVE by default)",
        "result (the .wasm filters in the harness): 403 — 403: ALLOW policies apply and none matched",
        "  ALLOW AuthorizationPolicy payments/allow-nothing: no rules: matches nothing",
        "  ALLOW AuthorizationPolicy payments/ledger-read: no match",
        "    rules[0].from[0].source.principals: peer cluster.local/ns/web/sa/frontend is not in [cluster.local/ns/shop/sa/checkout]",
        "    rules[1].from[0].source.namespaces: peer namespace web is not in [ops]",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    // The same request from ops is allowed by the second rule.
    let mesh = Mesh::new(
        "explain-ok",
        RESOURCES,
        &format!(
            "{HEAD}cases:\n- name: ops posts\n  request: {{from: {{namespace: ops, serviceAccount: tool}}, method: POST, path: /x}}\n  expect: {{status: 200}}\n"
        ),
    );
    let scenario = MeshScenario::load(&mesh.scenario()).expect("scenario");
    let text = explain(&scenario, &default_wasm_dir(&repo())).expect("explain");
    assert!(
        text.contains("200 — allowed by ALLOW AuthorizationPolicy payments/ledger-read rules[1]"),
        "{text}"
    );
    assert!(text.contains("    rules[1]: matched"), "{text}");
}

/// Every AuthorizationPolicy and RequestAuthentication of the example mesh is one a cluster
/// accepts: its spec validates against Istio's CRD schema for its apiVersion (strict: no unknown
/// fields). PeerAuthentication has no schema in the reference subset; meshward's own types check it.
#[test]
fn the_example_resources_validate_against_istios_crds() {
    use meshward_tests::crd::{crd_schema, validate};
    let loaded = meshward_mesh::load(&[
        repo().join("examples/mesh/resources"),
        repo().join("tests/fixtures/mesh-tcp/resources"),
        repo().join("tests/fixtures/mesh-native/resources"),
    ])
    .expect("load");
    let mut checked = 0;
    for file in loaded
        .resources
        .iter()
        .map(|r| r.origin.file.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc: serde_json::Value =
                serde::Deserialize::deserialize(doc).expect("YAML document");
            let items = match doc["kind"].as_str() {
                Some("List") => doc["items"].as_array().cloned().unwrap_or_default(),
                _ => vec![doc],
            };
            for item in items {
                let crd = match item["kind"].as_str() {
                    Some("AuthorizationPolicy") => "authorizationpolicies.security.istio.io",
                    Some("RequestAuthentication") => "requestauthentications.security.istio.io",
                    _ => continue,
                };
                let version = item["apiVersion"]
                    .as_str()
                    .and_then(|a| a.strip_prefix("security.istio.io/"))
                    .expect("security.istio.io apiVersion");
                let schema = crd_schema(crd, version);
                let spec_schema = &schema["properties"]["spec"];
                if let Err(e) = validate(spec_schema, &item["spec"]) {
                    panic!(
                        "{}: {} {} violates the CRD:\n{e}",
                        file.display(),
                        item["kind"],
                        item["metadata"]["name"]
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} resources checked");
    // The strict schema does refuse a mistake (else the loop proves nothing).
    let schema = crd_schema("authorizationpolicies.security.istio.io", "v1");
    let typo = serde_json::json!({"rules": [{"to": [{"operation": {"method": ["GET"]}}]}]});
    assert!(validate(&schema["properties"]["spec"], &typo).is_err());
}

/// `meshward lint`: exit status on errors, warnings and `--strict`, on files written here.
#[test]
fn lint_fails_on_errors_and_on_warnings_only_with_strict() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: meshward_cli::LintArgs,
    }
    let lint = |dir: &Path, strict: bool| {
        let mut argv = vec!["lint".to_string(), dir.display().to_string()];
        if strict {
            argv.push("--strict".into());
        }
        meshward_cli::lint(Cmd::parse_from(argv).args).expect("lint runs")
    };
    // Warnings only: a principal ALLOW where mTLS is PERMISSIVE by default.
    let warned = Mesh::new("lint-warn", RESOURCES, HEAD);
    assert!(lint(&warned.dir.join("res"), false));
    assert!(!lint(&warned.dir.join("res"), true));
    // An error: a DENY on request principals with no RequestAuthentication, and a path that
    // normalization would change.
    let errors = Mesh::new(
        "lint-error",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-bots, namespace: payments}\nspec:\n  action: DENY\n  rules: [{from: [{source: {requestPrincipals: ['https://bots.example.com/*']}}], to: [{operation: {paths: ['/admin//x']}}]}]\n",
        HEAD,
    );
    assert!(!lint(&errors.dir.join("res"), false));
    let found = meshward_mesh::lint::lint(
        &meshward_mesh::load(&[errors.dir.join("res")])
            .expect("load")
            .resources,
        &meshward_mesh::MeshSettings::default(),
    );
    let text: Vec<String> = found.iter().map(|f| f.to_string()).collect();
    assert!(
        text.iter().any(|t| t.starts_with("error:")
            && t.contains("AuthorizationPolicy payments/deny-bots: field `spec.rules[0].from[0].source.requestPrincipals`")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with("error:")
            && t.contains("field `spec.rules[0].to[0].operation.paths[0]`")),
        "{text:#?}"
    );
    // STRICT everywhere: no permissive-mode warning.
    assert!(
        !text.iter().any(|t| t.contains("plaintext callers")),
        "{text:#?}"
    );
}

/// A CUSTOM policy delegates to an external authorizer meshward does not run: a case whose request
/// it matches must state the answer, and fails naming the policy when it does not; `deny` makes
/// the CUSTOM policy decide before any DENY or ALLOW.
#[test]
fn custom_needs_the_authorizers_answer() {
    let custom = format!(
        "{RESOURCES}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: opa, namespace: payments}}\nspec: {{action: CUSTOM, provider: {{name: opa}}, rules: [{{to: [{{operation: {{paths: [/ledger/*]}}}}]}}]}}\n"
    );
    let mesh = Mesh::new(
        "custom",
        &custom,
        &format!(
            "{HEAD}cases:\n\
             - name: no answer given\n  request: {{from: {{namespace: shop, serviceAccount: checkout}}, path: /ledger/1}}\n  expect: {{status: 200}}\n\
             - name: the authorizer allows\n  customAuthz: allow\n  request: {{from: {{namespace: shop, serviceAccount: checkout}}, path: /ledger/1}}\n  expect: {{status: 200, decidedBy: \"payments/ledger-read rules[0]\"}}\n\
             - name: the authorizer denies\n  customAuthz: deny\n  request: {{from: {{namespace: shop, serviceAccount: checkout}}, path: /ledger/1}}\n  expect: {{status: 403, decidedBy: payments/opa}}\n\
             - name: an answer nobody asks for\n  customAuthz: deny\n  request: {{from: {{namespace: ops, serviceAccount: tool}}, path: /other}}\n  expect: {{status: 200}}\n"
        ),
    );
    let report = run(&mesh.scenario(), Targets::HarnessAndEnvoy);
    assert_eq!((report.passed, report.failed), (2, 2), "{}", report.text);
    let text = &report.text;
    assert!(text.contains("FAIL  no answer given"), "{text}");
    assert!(
        text.contains("the external authorizer's answer for CUSTOM payments/opa (add customAuthz: allow|deny)"),
        "{text}"
    );
    assert!(text.contains("FAIL  an answer nobody asks for"), "{text}");
    assert!(
        text.contains("none matched: the external authorizer is never asked"),
        "{text}"
    );
}
