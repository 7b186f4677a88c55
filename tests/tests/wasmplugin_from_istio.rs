//! `meshward wasmplugin --from-istio`: for every workload of a mesh scenario file (the example
//! mesh, and the TCP workload of tests/scenarios/mesh-tcp), the command line built from the
//! file's own `mesh` and `workload`, parsed by the command's own flags, renders WasmPlugins
//!
//! - whose pluginConfigs are byte for byte (canonical JSON) the configs the mesh scenario runner
//!   feeds the filters: `compile(select(…))` of the same inputs, and the configs of the chain
//!   scenarios the runner itself builds from the file (`chain_scenarios`);
//! - one per filter of the runner's chain (jwt-authn exactly when the runner runs it,
//!   spiffe-authz, and spiffe-authz-tcp for the TCP ports), with the workload's namespace and
//!   labels, images `<prefix>/<filter>:<tag>`, the default phases, `FAIL_CLOSE`;
//! - each valid under Istio's WasmPlugin CRD schema (`../shared/reference/istio-crds-subset.yaml`,
//!   made strict: unknown fields refused);
//!
//! and a CUSTOM policy that applies is refused, naming it, unless left to Istio.

use std::path::{Path, PathBuf};

use clap::Parser;
use meshward_cli::wasmplugin::{from_istio, FromIstio, WasmPluginCommand};
use meshward_mesh::resource::Action;
use meshward_mesh::{compile, select, CustomAnswer};
use meshward_oci::wasmplugin::{check_policy, Filter};
use meshward_scenario::mesh::{chain_scenarios, MeshScenario};
use meshward_tests::crd::validate;
use meshward_tests::repo;
use serde_json::{json, Value as Json};
use serde_yaml_ng::Value as Yaml;

#[derive(Parser)]
#[command(name = "meshward")]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Wasmplugin(WasmPluginCommand),
}

const PREFIX: &str = "oci://registry.example.com/meshward";

/// The mesh scenario files whose workloads are rendered.
fn scenario_files() -> Vec<PathBuf> {
    let dir = repo().join("examples/mesh");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "examples/mesh: {files:?}");
    files.push(repo().join("tests/scenarios/mesh-tcp/postgres.yaml"));
    files
}

/// Whether a CUSTOM AuthorizationPolicy applies to the file's workload.
fn custom_applies(scenario: &MeshScenario) -> bool {
    let loaded = scenario.resources().unwrap();
    let selection = select(
        &loaded.resources,
        &scenario.settings(),
        &scenario.workload(),
    );
    selection
        .authorization
        .iter()
        .any(|r| r.authorization().unwrap().action == Action::Custom)
}

/// `meshward wasmplugin --from-istio …` for the file's mesh and workload.
fn command_line(scenario: &MeshScenario, leave_custom: bool) -> Vec<String> {
    let base = scenario.path.parent().unwrap();
    let mut argv: Vec<String> = vec![
        "meshward".into(),
        "wasmplugin".into(),
        "--from-istio".into(),
    ];
    for r in &scenario.mesh.resources {
        argv.push(base.join(r).display().to_string());
    }
    let w = &scenario.workload;
    argv.extend([
        "--workload".into(),
        format!("{}/{}", w.namespace, w.service_account),
    ]);
    for (k, v) in &w.labels {
        argv.extend(["--label".into(), format!("{k}={v}")]);
    }
    for p in &w.tcp_ports {
        argv.extend(["--tcp-port".into(), p.to_string()]);
    }
    argv.extend([
        "--root-namespace".into(),
        scenario.mesh.root_namespace.clone(),
        "--image-prefix".into(),
        PREFIX.into(),
        "--tag".into(),
        "0.1.0".into(),
    ]);
    if leave_custom {
        argv.push("--leave-custom-to-istio".into());
    }
    argv
}

fn render(argv: &[String]) -> anyhow::Result<FromIstio> {
    let Sub::Wasmplugin(command) = Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")))
        .command;
    assert!(command.single.is_none(), "{}", argv.join(" "));
    from_istio(&command.from_istio)
}

/// Canonical JSON (serde_json's maps are sorted): what the filter receives, byte for byte.
fn bytes(v: &Json) -> String {
    serde_json::to_string(v).unwrap()
}

/// The WasmPlugin schema of tests/examples.rs, and a namespace required: every plugin
/// `--from-istio` renders names its workload's namespace.
fn wasmplugin_crd_schema() -> Json {
    let mut schema = meshward_tests::crd::wasmplugin_schema();
    schema["properties"]["metadata"]["required"] = json!(["name", "namespace"]);
    schema
}

/// The runner's configs of `filter` over every HTTP chain it builds from the file.
fn runner_configs(file: &Path, filter: &str) -> Vec<Json> {
    chain_scenarios(file)
        .unwrap()
        .iter()
        .flat_map(|s| s.chain.iter())
        .filter(|e| e.filter.as_deref() == Some(filter))
        .map(|e| e.config.clone().expect("inline config"))
        .collect()
}

#[test]
fn every_workload_renders_the_configs_the_runner_runs_and_valid_wasmplugins() {
    let schema = wasmplugin_crd_schema();
    let mut rendered_plugins = 0;
    for file in scenario_files() {
        let at = file.display().to_string();
        let scenario = MeshScenario::load(&file).unwrap();
        let argv = command_line(&scenario, custom_applies(&scenario));
        let out = render(&argv).unwrap_or_else(|e| panic!("{at}: {e:#}"));

        // What the runner compiles for the workload (`customAuthz: allow`, or no CUSTOM).
        let loaded = scenario.resources().unwrap();
        let selection = select(
            &loaded.resources,
            &scenario.settings(),
            &scenario.workload(),
        );
        let compiled = compile(&selection, CustomAnswer::Allows).unwrap();

        let w = &scenario.workload;
        let has_http = !chain_scenarios(&file).unwrap().is_empty();
        let mut expected: Vec<Filter> = Vec::new();
        if compiled.jwt_authn.is_some() {
            expected.push(Filter::JwtAuthn);
        }
        expected.push(Filter::SpiffeAuthz);
        if !w.tcp_ports.is_empty() {
            expected.push(Filter::SpiffeAuthzTcp);
        }
        let got: Vec<Filter> = out.plugins.iter().map(|p| p.filter).collect();
        assert_eq!(got, expected, "{at}");

        // The multi-document YAML is the plugins, in order.
        let docs: Vec<Yaml> = serde_yaml_ng::Deserializer::from_str(&out.yaml())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), out.plugins.len(), "{at}");

        for (plugin, doc) in out.plugins.iter().zip(&docs) {
            let name = plugin.filter.name();
            let doc: Json = serde_json::to_value(doc).unwrap();
            if let Err(e) = validate(&schema, &doc) {
                panic!("{at}: the {name} plugin violates the WasmPlugin CRD:\n{e}\n{doc:#}");
            }
            let spec = &doc["spec"];
            let config = &spec["pluginConfig"];
            assert_eq!(bytes(config), bytes(&plugin.config), "{at} {name}");

            // Byte for byte the configs the runner feeds the filters.
            let want = match plugin.filter {
                Filter::JwtAuthn => compiled.jwt_authn.as_ref().unwrap(),
                _ => &compiled.spiffe_authz,
            };
            assert_eq!(bytes(config), bytes(want), "{at} {name}");
            if has_http && plugin.filter != Filter::SpiffeAuthzTcp {
                let runner = runner_configs(&file, name);
                assert!(
                    runner.iter().any(|c| bytes(c) == bytes(config)),
                    "{at}: {name}'s config is none of the runner's"
                );
                if plugin.filter == Filter::JwtAuthn {
                    assert!(runner.iter().all(|c| bytes(c) == bytes(config)), "{at}");
                }
            }

            assert_eq!(spec["pluginName"], json!(name), "{at}");
            assert_eq!(
                doc["metadata"]["name"],
                json!(format!("meshward-{}-{name}", w.service_account)),
                "{at}"
            );
            assert_eq!(doc["metadata"]["namespace"], json!(w.namespace), "{at}");
            assert_eq!(spec["selector"]["matchLabels"], json!(w.labels), "{at}");
            assert_eq!(spec["url"], json!(format!("{PREFIX}/{name}:0.1.0")), "{at}");
            assert_eq!(spec["failStrategy"], json!("FAIL_CLOSE"), "{at}");
            let (phase, priority) = plugin.filter.default_placement();
            assert_eq!(spec["phase"], json!(phase.as_str()), "{at}");
            assert_eq!(spec["priority"], json!(priority), "{at}");
            match plugin.filter {
                Filter::SpiffeAuthzTcp => {
                    assert_eq!(spec["type"], json!("NETWORK"), "{at}");
                    let ports: Vec<Json> =
                        w.tcp_ports.iter().map(|p| json!({"number": p})).collect();
                    assert_eq!(spec["match"], json!([{"mode": "SERVER", "ports": ports}]));
                }
                _ => {
                    assert_eq!(spec["type"], json!("HTTP"), "{at}");
                    assert_eq!(spec["match"], json!([{"mode": "SERVER"}]), "{at}");
                }
            }
            rendered_plugins += 1;
        }
        // Without CUSTOM, the runner's HTTP chain has no other spiffe-authz config.
        if has_http && !custom_applies(&scenario) {
            for c in runner_configs(&file, "spiffe-authz") {
                assert_eq!(bytes(&c), bytes(&compiled.spiffe_authz), "{at}");
            }
        }
    }
    assert!(rendered_plugins >= 12, "{rendered_plugins} plugins");
}

#[test]
fn a_custom_policy_is_refused_naming_it_unless_left_to_istio() {
    let file = repo().join("examples/mesh/ledger.yaml");
    let scenario = MeshScenario::load(&file).unwrap();
    assert!(custom_applies(&scenario));
    let e = format!("{:#}", render(&command_line(&scenario, false)).unwrap_err());
    assert!(
        e.starts_with(
            "workload payments/ledger: AuthorizationPolicy payments/ext-authz-payouts (CUSTOM, \
             provider `ext-authz-opa`) applies to the workload, and cannot be deployed as tested"
        ) && e.contains("--leave-custom-to-istio"),
        "{e}"
    );
    let out = render(&command_line(&scenario, true)).unwrap();
    let spiffe = out
        .plugins
        .iter()
        .find(|p| p.filter == Filter::SpiffeAuthz)
        .unwrap();
    let policy = spiffe.config["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "payments.ext-authz-payouts")
        .unwrap();
    assert_eq!(policy["action"], "AUDIT");
    assert!(
        out.notes.iter().any(|n| n.contains(
            "AuthorizationPolicy payments/ext-authz-payouts (CUSTOM, provider `ext-authz-opa`) stays with Istio"
        )),
        "{:#?}",
        out.notes
    );
    // The remote JWKS of payments/ledger-jwt: a note naming the cluster the sidecar needs.
    assert!(
        out.notes.iter().any(|n| n.starts_with(
            "jwksUri `https://idp.example.com/.well-known/jwks.json` (RequestAuthentication payments/ledger-jwt)"
        ) && n.contains("`outbound|443||idp.example.com`")),
        "{:#?}",
        out.notes
    );
}

#[test]
fn the_tcp_notes_are_those_of_the_filter_compiled_for_tcp() {
    let file = repo().join("tests/scenarios/mesh-tcp/postgres.yaml");
    let scenario = MeshScenario::load(&file).unwrap();
    let out = render(&command_line(&scenario, false)).unwrap();
    let tcp = out
        .plugins
        .iter()
        .find(|p| p.filter == Filter::SpiffeAuthzTcp)
        .unwrap();
    let notes = check_policy(Filter::SpiffeAuthzTcp, &tcp.config).unwrap();
    assert!(notes.len() >= 2, "{notes:#?}");
    for note in &notes {
        assert!(
            out.notes.contains(&format!("spiffe-authz-tcp: {note}")),
            "{note}\n{:#?}",
            out.notes
        );
    }
    // The HTTP plugin is not pinned: it never lands on a TCP port's chain, and the note says so.
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("cannot exclude the TCP ones")),
        "{:#?}",
        out.notes
    );
}
