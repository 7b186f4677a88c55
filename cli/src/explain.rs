//! `meshward explain`: one request against a mesh's Istio resources — what the `.wasm` filters
//! answer, and why: every applicable policy, each rule, the first condition that failed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use meshward_scenario::mesh::{
    CustomAuthz, MeshCase, MeshExpect, MeshRequest, MeshScenario, MeshSpec, WorkloadSpec,
};
use meshward_scenario::model::HeaderSpec;
use meshward_scenario::wasm_dir;

#[derive(Args)]
pub struct ExplainArgs {
    /// Take the mesh and the workload from this mesh scenario file (its cases are not run).
    #[arg(long, conflicts_with_all = ["resources", "workload"])]
    scenario: Option<PathBuf>,
    /// Istio YAML files or directories (without --scenario).
    #[arg(long, num_args = 1..)]
    resources: Vec<PathBuf>,
    /// The workload as NAMESPACE/SERVICEACCOUNT (without --scenario).
    #[arg(long)]
    workload: Option<String>,
    /// A workload label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The port the request arrives on (default: the scenario's workload port; required without
    /// --scenario).
    #[arg(long)]
    port: Option<u16>,
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// What a jwksUri answers: URI=FILE (repeatable).
    #[arg(long)]
    jwks: Vec<String>,
    /// The caller: `plaintext`, NAMESPACE/SERVICEACCOUNT (mTLS), or a spiffe:// URI (mTLS).
    #[arg(long)]
    from: String,
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long)]
    authority: Option<String>,
    /// A request header `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// The external authorizer's answer when a CUSTOM policy matches: allow or deny.
    #[arg(long)]
    custom_authz: Option<String>,
    /// Directory holding the filters' release .wasm files. Default: $MESHWARD_WASM_DIR, else the
    /// enclosing workspace's target/wasm32-wasip1/release, else (an installed meshward, when that
    /// holds none of them) the filters it carries.
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
}

pub fn run(args: ExplainArgs) -> Result<()> {
    let from = match args.from.as_str() {
        "plaintext" => serde_yaml_ng::Value::String("plaintext".into()),
        uri if uri.starts_with("spiffe://") => {
            let mut m = serde_yaml_ng::Mapping::new();
            m.insert("spiffe".into(), uri.into());
            serde_yaml_ng::Value::Mapping(m)
        }
        other => {
            let (ns, sa) = other
                .split_once('/')
                .context("--from: plaintext, NAMESPACE/SERVICEACCOUNT or spiffe://…")?;
            let mut m = serde_yaml_ng::Mapping::new();
            m.insert("namespace".into(), ns.into());
            m.insert("serviceAccount".into(), sa.into());
            serde_yaml_ng::Value::Mapping(m)
        }
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("-H `{h}`: `name: value`"))?;
        headers.push(HeaderSpec {
            name: name.trim().to_string(),
            value: Some(value.trim_start().to_string()),
            repeat: None,
            times: None,
        });
    }
    let custom_authz = match args.custom_authz.as_deref() {
        None => None,
        Some("allow") => Some(CustomAuthz::Allow),
        Some("deny") => Some(CustomAuthz::Deny),
        Some(other) => bail!("--custom-authz `{other}`: allow or deny"),
    };
    let mut scenario = match &args.scenario {
        Some(file) => MeshScenario::load(file)?,
        None => {
            let workload = args
                .workload
                .as_deref()
                .context("--workload NAMESPACE/SERVICEACCOUNT (or --scenario FILE)")?;
            let (namespace, sa) = workload
                .split_once('/')
                .context("--workload NAMESPACE/SERVICEACCOUNT")?;
            let mut labels = BTreeMap::new();
            for l in &args.labels {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("--label `{l}`: KEY=VALUE"))?;
                labels.insert(k.to_string(), v.to_string());
            }
            let mut jwks = BTreeMap::new();
            for j in &args.jwks {
                let (uri, file) = j
                    .rsplit_once('=')
                    .with_context(|| format!("--jwks `{j}`: URI=FILE"))?;
                jwks.insert(
                    uri.to_string(),
                    serde_json::from_value(serde_json::json!({"bodyFile": file}))?,
                );
            }
            if args.resources.is_empty() {
                bail!("--resources PATH… (or --scenario FILE)");
            }
            MeshScenario {
                description: None,
                mesh: MeshSpec {
                    resources: args.resources.clone(),
                    root_namespace: args.root_namespace.clone(),
                    trust_domain: args.trust_domain.clone(),
                    jwks,
                },
                workload: WorkloadSpec {
                    namespace: namespace.to_string(),
                    service_account: sa.to_string(),
                    labels,
                    port: args
                        .port
                        .context("--port (the port the request arrives on)")?,
                    tcp_ports: Vec::new(),
                },
                cases: Vec::new(),
                path: PathBuf::from("./explain"),
            }
        }
    };
    let port = args.port.unwrap_or(scenario.workload.port);
    if scenario.workload.tcp_ports.contains(&port) {
        bail!(
            "port {port} is a TCP port (workload.tcpPorts): `meshward explain` explains HTTP \
             requests; `meshward test -v` names the policy (and rule) that decides each \
             connection of a TCP case"
        );
    }
    scenario.cases = vec![MeshCase {
        name: "explain".into(),
        request: MeshRequest {
            from,
            port: args.port,
            method: args.method.clone(),
            path: args.path.clone(),
            authority: args.authority.clone(),
            headers,
            body: None,
            source: None,
            send: None,
            sni: None,
        },
        expect: MeshExpect {
            status: Some(200),
            ..MeshExpect::default()
        },
        custom_authz,
        stricter_than_istio: None,
    }];
    let wasm_dir = wasm_dir(args.wasm_dir.as_deref(), &scenario.path)?;
    print!(
        "{}",
        meshward_scenario::mesh::explain(&scenario, &wasm_dir)?
    );
    Ok(())
}
