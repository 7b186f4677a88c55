//! `meshward run`: one request through a chain, and what came of it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use meshward_scenario::harness;
use meshward_scenario::model::{ChainEntry, HeaderSpec, RequestSpec, Scenario, TlsSpec};
use meshward_scenario::wasm_dir;

#[derive(Args)]
pub struct RunArgs {
    /// Use the chain (and listener settings) of this scenario file.
    #[arg(long, conflicts_with_all = ["filter", "module"])]
    chain: Option<PathBuf>,
    /// A meshward filter by name (e.g. header-limits).
    #[arg(long, conflicts_with = "module")]
    filter: Option<String>,
    /// A proxy-wasm module file.
    #[arg(long)]
    module: Option<PathBuf>,
    /// pluginConfig JSON for --filter/--module.
    #[arg(long, conflicts_with = "config_file")]
    config: Option<String>,
    /// pluginConfig file for --filter/--module.
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// Request method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Request-target (path and query).
    #[arg(long, default_value = "/")]
    path: String,
    /// :authority.
    #[arg(long, default_value = "example.com")]
    authority: String,
    /// A request header `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    body: Option<String>,
    /// mTLS with a client certificate whose URI SAN is this (e.g. spiffe://cluster.local/ns/a/sa/b).
    #[arg(long)]
    peer: Option<String>,
    /// TLS without a client certificate.
    #[arg(long, conflicts_with = "peer")]
    tls: bool,
    /// Directory holding the filters' release .wasm files. Default: $MESHWARD_WASM_DIR, else the
    /// enclosing workspace's target/wasm32-wasip1/release, else (an installed meshward, when that
    /// holds none of them) the filters it carries.
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
    /// Also print every host call (`env.proxy_*`) each filter made for this request, in order.
    #[arg(long)]
    trace: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    let (scenario, wasm_dir) = chain_of(&args)?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!("header `{h}`: expected `name: value`");
        };
        headers.push(HeaderSpec {
            name: name.trim().to_string(),
            value: Some(value.trim_start().to_string()),
            repeat: None,
            times: None,
        });
    }
    let request = RequestSpec {
        method: args.method.clone(),
        path: args.path.clone(),
        authority: args.authority.clone(),
        headers,
        body: args.body.clone(),
        tls: match (&args.peer, args.tls) {
            (Some(p), _) => Some(TlsSpec {
                peer: Some(p.clone()),
            }),
            (None, true) => Some(TlsSpec { peer: None }),
            (None, false) => None,
        },
        source: None,
    };
    let host = harness::build_host(&scenario, &wasm_dir)?;
    host.trace(args.trace);
    let outcome = host.send(&harness::to_request(&request)?);
    println!("verdict: {:?}", outcome.verdict);
    if args.trace {
        // Only the request's own calls: configure-time calls happened before `send`.
        for r in host.hostcall_trace().iter().filter(|r| r.in_stream) {
            let detail = if r.detail.is_empty() {
                String::new()
            } else {
                format!(" {}", r.detail)
            };
            println!("hostcall [{}] {}{detail}", r.filter, r.hostcall);
        }
    }
    if let Some(up) = &outcome.upstream_request {
        println!("upstream request headers:");
        for (n, v) in &up.headers {
            println!("  {n}: {v}");
        }
    }
    println!("response: {}", outcome.response.status);
    for (n, v) in &outcome.response.headers {
        println!("  {n}: {v}");
    }
    println!("body: {}", String::from_utf8_lossy(&outcome.response.body));
    for line in &outcome.logs {
        println!("log [{}] {:?}: {}", line.plugin, line.level, line.message);
    }
    for m in host.metrics() {
        println!("metric {} = {}", m.name, m.value);
    }
    Ok(())
}

fn chain_of(args: &RunArgs) -> Result<(Scenario, PathBuf)> {
    if let Some(file) = &args.chain {
        let mut s = Scenario::load(file)?;
        meshward_scenario::oci::pull_modules(&mut s)?;
        let dir = wasm_dir(args.wasm_dir.as_deref(), file)?;
        return Ok((s, dir));
    }
    let here = std::env::current_dir().context("current directory")?;
    let dir = wasm_dir(args.wasm_dir.as_deref(), &here)?;
    if args.filter.is_none() && args.module.is_none() {
        bail!("give --chain FILE, --filter NAME or --module FILE");
    }
    let config = match (&args.config, &args.config_file) {
        (Some(c), _) => Some(serde_json::from_str(c).context("--config is not JSON")?),
        _ => None,
    };
    let entry = ChainEntry {
        filter: args.filter.clone(),
        module: args.module.as_ref().map(|m| here.join(m)),
        sha256: None,
        insecure_registry: false,
        name: None,
        root_id: None,
        vm_id: None,
        config,
        config_file: args.config_file.as_ref().map(|f| here.join(f)),
        fail_open: false,
        vm_config: None,
        failure_policy: None,
        reload_backoff: None,
    };
    let scenario = Scenario {
        description: None,
        listener: Default::default(),
        workers: None,
        clusters: Vec::new(),
        clock: None,
        chain: vec![entry],
        start_fails: false,
        cases: Vec::new(),
        path: here.join("cli"),
    };
    Ok((scenario, dir))
}
